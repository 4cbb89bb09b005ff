"""The figure a reviewer looks at before a set leaves the hospital: every synthetic image beside its
nearest real training image, with their distance; 3D volumes as middle axial slices. The pairs come from
the pixel space of the audit that finds more near copies (raw or standardized: a set stored at another
brightness or contrast is a copy only in the second), so the figure shows what the table warns of."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mddbench.data.dataset import RealData  # noqa: E402
from mddbench.report.keys import selects_real  # noqa: E402
from mddbench.report.show import displayable  # noqa: E402

PAIRS_PER_ROW = 4
SPACES = {"pixel": "RMS distance in std units",
          "pixel_standardized": "RMS distance of per-channel z-scored images (each shown scaled to its own range)"}


def figure_space(memorisation: dict[str, Any]) -> str:
    """The pixel space whose nearest neighbours the figure pairs: the one with the larger near-copy share
    (raw pixels on a tie, and for audits made before the standardized space existed)."""
    spaces = [s for s in SPACES if s in memorisation]
    return max(spaces, key=lambda s: memorisation[s]["near_copy_share"])  # max keeps the first on a tie


def figure_pairs(record: dict[str, Any]) -> tuple[str, list[int], list[float]]:
    """(space, nearest training image of every synthetic image, their distance) that the figure draws."""
    space = figure_space(record["memorisation"])
    found = record["memorisation"][space]
    return space, found["nearest_train_index"], found["distance"]["per_image"]


def nearest_figure(images: torch.Tensor, labels: torch.Tensor, data: RealData, record: dict[str, Any],
                   output: str | Path, max_pairs: int = 64) -> Path:
    """PNG of (synthetic, nearest train image) pairs; near copies' distances in red."""
    space, idx, dist = figure_pairs(record)
    pixel = record["memorisation"][space]
    n = min(len(images), max_pairs)
    # raw pixels: shown as the data's normalisation maps them; standardized: each image scaled to its own range
    norm = {"normalisation": {"mean": list(data.mean), "std": list(data.std)}} if space == "pixel" else {}
    syn = displayable(images[:n], norm).numpy()
    real = displayable(data.x["train"][torch.as_tensor(idx[:n])], norm).numpy()
    cols = min(n, PAIRS_PER_ROW)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.3 * cols + 0.4, 1.35 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    real_labels = data.y["train"][torch.as_tensor(idx[:n])].tolist()
    for i in range(n):
        r, c = divmod(i, cols)
        for j, img in enumerate((syn[i], real[i])):
            ax = axes[r, 2 * c + j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        near = dist[i] <= pixel["threshold"]
        axes[r, 2 * c].set_title(f"synthetic {i} (class {int(labels[i])})", fontsize=6)
        axes[r, 2 * c + 1].set_title(f"train {idx[i]} (class {real_labels[i]}): d={dist[i]:.3f}", fontsize=6,
                                     color="red" if near else "black")
    shown = f"{n} of {len(images)}" if n < len(images) else f"{n}"
    slices = " - middle axial slices" if images.ndim == 5 else ""
    real = selects_real(record.get("method", ""))
    construction = " (real train images: 100 % by construction)" if real else ""
    fig.suptitle(f"{record.get('method', '?')} on {record.get('dataset', '?')}, ipc {record.get('ipc', '?')}: "
                 f"{shown} synthetic images beside their nearest training image{slices}\n"
                 f"d = {SPACES[space]}; red: near copy (d <= {pixel['threshold']:.3f}, the 5th percentile "
                 f"of held-out images' d); near copies {100 * pixel['near_copy_share']:.1f} %{construction}",
                 fontsize=7)
    fig.tight_layout()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
