"""Memorisation: how close synthetic images lie to real training images, against a yardstick.

The yardstick is the held-out real images (val and test): new patients from the same population.
Their distances to their nearest training image say how close an image can be to the training set
without being one of its patients; a synthetic image closer than the 5th percentile of those
distances is a *near copy*. A set of fresh real images would therefore score about 5 % by
construction, a set of copies 100 %. Where the data hold near-duplicates across splits (several
frames of one lesion in train and test), that percentile is tiny and the share misses images that
are visibly a patient's; the *distance ratio* (median synthetic distance over median held-out
distance: 0 for copies, about 1 for fresh patients) does not depend on that tail.

Distances are Euclidean, reported as root mean square per coordinate (L2 / sqrt(dimension)): in
pixel space that is in units of the dataset's per-channel std (the normalisation every method works
in), comparable across resolutions and 2D/3D. The nearest-neighbour search is scikit-learn's
brute-force ``NearestNeighbors`` (float64-accurate distances, chunked memory).

Raw pixel distance depends on scale: a patient's image stored as ``a * x + b`` (another brightness
or contrast, per channel or for the whole image) lies far from ``x`` and passes as fresh, though
anyone can rescale it, and networks with instance norm learn from it what they learn from ``x``;
and a set whose values leave the data's range (HaBa's renderer reaches 1e7 and more) has raw
distances that say nothing. :func:`standardized` z-scores every channel of every image over its own
pixels first: such a copy (any ``a > 0`` and ``b`` per channel) is at distance 0 there, and two
images lie at sqrt(2 (1 - r)), r the mean over channels of their Pearson correlations. A copy with
inverted contrast (``a < 0``) is at distance 2; all constant images are at 0 from each other.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

NEAR_COPY_QUANTILE = 0.05
# the spaces an audit measures near copies in: record key -> what a table or a terminal line calls it
SPACE_LABELS = {"pixel": "pixel", "pixel_standardized": "standardized pixel", "embedding": "embedding"}


def flat(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(len(x), -1).cpu().numpy().astype(np.float32)


def standardized(x: torch.Tensor) -> np.ndarray:
    """The images flattened, each channel of each image minus its mean over its pixels and over its
    standard deviation (a constant channel becomes zeros): the images up to the brightness and contrast
    of every channel. Float32, one copy (a 112 px folder dataset's train split is gigabytes)."""
    channels = x.shape[1] if x.dim() > 2 else 1  # (N, C, ...) images; (N, D) rows are one channel
    rows = x.detach().reshape(len(x), channels, -1).cpu().numpy().astype(np.float32, copy=True)
    rows -= rows.mean(2, keepdims=True, dtype=np.float64).astype(np.float32)
    std = np.sqrt(np.mean(np.square(rows), axis=2, keepdims=True, dtype=np.float64)).astype(np.float32)
    rows /= np.where(std > 0, std, np.float32(1.0))
    return rows.reshape(len(x), -1)


def nearest(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RMS distance, index) of every query's nearest reference row; ties go to the lowest index."""
    search = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(reference)
    _, idx = search.kneighbors(queries)
    idx = idx[:, 0]
    exact = np.sqrt(((queries.astype(np.float64) - reference[idx].astype(np.float64)) ** 2).mean(1))
    return exact, idx  # recomputed directly: an exact copy is at distance 0, not at rounding error


def near_copies(synthetic: np.ndarray, train: np.ndarray, heldout: np.ndarray,
                quantile: float = NEAR_COPY_QUANTILE) -> dict:
    """Distances of synthetic and held-out rows to their nearest training row, and the near-copy share."""
    syn_d, syn_i = nearest(synthetic, train)
    held_d, _ = nearest(heldout, train)
    threshold = float(np.quantile(held_d, quantile))
    return {
        "near_copy_share": float((syn_d <= threshold).mean()),
        "distance_ratio": float(np.median(syn_d) / max(float(np.median(held_d)), 1e-12)),
        "threshold": threshold,
        "quantile": quantile,
        "heldout_distance": {"median": float(np.median(held_d)), "min": float(held_d.min()), "n": len(held_d)},
        "distance": {"median": float(np.median(syn_d)), "min": float(syn_d.min()),
                     "per_image": [_round(v) for v in syn_d]},
        "nearest_train_index": [int(i) for i in syn_i],
    }


def _round(v: float) -> float:
    return float(f"{v:.6g}") if math.isfinite(v) else v
