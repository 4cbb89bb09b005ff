"""``demo``: a small dataset generated on the fly, the offline default for a first run.

Four classes of 28x28 greyscale "scans": a speckled, smoothly varying tissue background with
(0) nothing, (1) a bright round nodule, (2) a dark cyst with a bright rim, (3) a patch of oriented
fibrous streaks. Lesion contrast, size, position and the background vary, and some lesions are
faint, so a ConvNet learns it well from the full set but not from two images per class.
It is generated deterministically from a fixed seed: every install sees the same bytes.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from mddbench.data.dataset import SPLITS, DatasetSpec, RawArrays
from mddbench.registry import register_dataset

SIZE = 28
PER_CLASS = {"train": 150, "val": 25, "test": 50}
LABELS = ("normal", "nodule", "cyst", "fibrosis")
SEED = 20241126


def _smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Low-frequency random field by bilinear upsampling of a coarse grid, values ~N(0, 1)."""
    coarse = rng.standard_normal((n, cells, cells))
    t = np.linspace(0, cells - 1, SIZE)
    i0 = np.floor(t).astype(int).clip(0, cells - 2)
    w = (t - i0)[None, :]
    rows = coarse[:, i0, :] * (1 - w[..., None]) + coarse[:, i0 + 1, :] * w[..., None]
    return rows[:, :, i0] * (1 - w[:, None, :]) + rows[:, :, i0 + 1] * w[:, None, :]


def _images(rng: np.random.Generator, label: int, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    img = 0.45 + 0.12 * _smooth_field(rng, n, 5)
    img *= 1 + 0.25 * rng.standard_normal((n, SIZE, SIZE)) * rng.uniform(0.1, 0.8, (n, 1, 1))  # speckle
    strength = rng.uniform(0.1, 0.5, (n, 1, 1))
    cy, cx = rng.uniform(7, 21, (2, n, 1, 1))
    r = rng.uniform(3.0, 6.5, (n, 1, 1))
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    if label == 1:  # nodule: soft bright disc
        img += strength * np.exp(-(d / r) ** 4)
    elif label == 2:  # cyst: dark interior, bright rim
        img -= strength * np.exp(-(d / (0.8 * r)) ** 4)
        img += 0.7 * strength * np.exp(-((d - r) / 1.2) ** 2)
    elif label == 3:  # fibrosis: oriented streaks inside a soft patch
        theta = rng.uniform(0, np.pi, (n, 1, 1))
        freq = rng.uniform(0.6, 1.1, (n, 1, 1))
        streak = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3, (n, 1, 1)))
        img += 0.8 * strength * streak * np.exp(-(d / (1.6 * r)) ** 2)
    img = (img - 0.45) * rng.uniform(0.8, 1.25, (n, 1, 1)) + 0.45 + rng.uniform(-0.08, 0.08, (n, 1, 1))
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def generate(seed: int = SEED) -> RawArrays:
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split in SPLITS:
        xs = [_images(rng, c, PER_CLASS[split]) for c in range(len(LABELS))]
        ys = [np.full(PER_CLASS[split], c, dtype=np.uint8) for c in range(len(LABELS))]
        order = rng.permutation(sum(len(x) for x in xs))
        images[split] = np.concatenate(xs)[order]
        labels[split] = np.concatenate(ys)[order, None]
    h = hashlib.md5()
    for split in SPLITS:
        h.update(images[split].tobytes())
        h.update(labels[split].tobytes())
    return RawArrays(images, labels, h.hexdigest(), None)


@lru_cache(maxsize=1)
def _generated() -> RawArrays:
    """Generated once per process (a second or two): loading never changes the arrays."""
    return generate()


def _load(spec: DatasetSpec, root: Path, offline: bool) -> RawArrays:
    return _generated()


register_dataset("demo", DatasetSpec(
    name="demo",
    title="demo (generated 1x28x28 scans, 4 classes)",
    source="generated",
    dims=2,
    channels=1,
    size=SIZE,
    label_names=LABELS,
    task="multi-class",
    license="CC0 (generated)",
    citation="mddbench",
    description=__doc__.strip(),
    load=_load,
    n_samples={s: n * len(LABELS) for s, n in PER_CLASS.items()},
    where="nothing to download: generated on the fly",
))
