"""PNG views of synthetic sets: a grid of images per class (3D volumes: the middle axial slice)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .data import denormalize  # noqa: E402
from .errors import ArtifactError  # noqa: E402
from .synset import SyntheticSet  # noqa: E402


def resolve_artifact(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "synset.safetensors"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (give a .safetensors synthetic set or a run folder)")
    return path


def displayable(images: torch.Tensor, meta: dict) -> torch.Tensor:
    """(N, H, W, C) in [0, 1]: denormalised, 3D reduced to the middle slice, 1 channel kept grey."""
    norm = meta.get("normalisation")
    x = images.float()
    if x.ndim == 5:
        x = x[:, :, x.shape[2] // 2]
    if norm:
        x = denormalize(x, norm["mean"], norm["std"])
    else:
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.permute(0, 2, 3, 1)


def show_synset(artifact: str | Path, output: str | Path | None = None) -> Path:
    path = resolve_artifact(artifact)
    synset = SyntheticSet.load(path)
    meta = synset.meta
    labels = synset.hard_labels()
    n_classes = int(meta.get("n_classes") or int(labels.max()) + 1)
    per_class = [torch.nonzero(labels == c).flatten() for c in range(n_classes)]
    cols = max(1, max(len(i) for i in per_class))
    x = displayable(synset.images, meta).numpy()  # matplotlib takes arrays, not tensors
    fig, axes = plt.subplots(n_classes, cols, figsize=(1.3 * cols + 1.5, 1.3 * n_classes + 0.6), squeeze=False)
    names = meta.get("label_names") or [str(c) for c in range(n_classes)]
    for c in range(n_classes):
        for j in range(cols):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(per_class[c]):
                img = x[per_class[c][j]]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(str(names[c])[:18], fontsize=8)
    title = f"{meta.get('method', '?')} on {meta.get('dataset', '?')}, ipc {meta.get('ipc', '?')}"
    if synset.renderer:
        title += f" (stored {synset.renderer} bases)"
    if x.ndim == 4 and synset.images.ndim == 5:
        title += " - middle axial slices"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(output) if output else path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
