"""PNG views of synthetic sets: a grid of images per class (3D volumes: the middle axial slice)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mddbench.api.saved import resolve_artifact  # noqa: E402
from mddbench.api.synset import SyntheticSet  # noqa: E402
from mddbench.data.dataset import denormalize  # noqa: E402
from mddbench.errors import ArtifactError  # noqa: E402


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


def _spec(name):
    """The registered dataset a set names, or None (a plugin's or an unknown one: shown without it)."""
    from mddbench.data.dataset import get_spec
    from mddbench.errors import MddError

    try:
        return get_spec(name) if isinstance(name, str) else None
    except MddError:
        return None


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _normalisation_fits(norm, channels: int) -> bool:
    try:
        return all(len(norm[k]) == channels and all(isinstance(v, (int, float)) for v in norm[k])
                   for k in ("mean", "std"))
    except (TypeError, KeyError):
        return False


def show_synset(artifact: str | Path, output: str | Path | None = None) -> Path:
    path = resolve_artifact(artifact)
    synset = SyntheticSet.load(path)
    meta = synset.meta
    spec = _spec(meta.get("dataset"))
    synset.check(spec)  # images that fit the dataset the set names, labels among its classes
    labels = synset.hard_labels()
    n_classes = spec.n_classes if spec else max(int(labels.max()) + 1, _int(meta.get("n_classes")))
    norm = meta.get("normalisation")
    if norm is not None and not _normalisation_fits(norm, synset.images.shape[1]):
        raise ArtifactError(f"{path}: its metadata's normalisation {norm!r} is not a mean and a std per channel")
    per_class = [torch.nonzero(labels == c).flatten() for c in range(n_classes)]
    cols = max(1, max(len(i) for i in per_class))
    x = displayable(synset.images, meta).numpy()  # matplotlib takes arrays, not tensors
    fig, axes = plt.subplots(n_classes, cols, figsize=(1.3 * cols + 1.5, 1.3 * n_classes + 0.6), squeeze=False)
    names = meta.get("label_names") or (spec.label_names if spec else [])
    names = list(names) + [str(c) for c in range(len(names), n_classes)]
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
