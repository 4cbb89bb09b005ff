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

Raw pixel distance is blind to scale: a patient's image stored as ``a * x + b`` (a set kept at
another brightness or contrast, or in units a method's renderer chose: HaBa's hallucinators grow
its images to 1e7 and more) lies far from ``x`` and passes as fresh, though anyone can rescale it,
and networks with instance norm learn from it what they learn from ``x``. :func:`standardized`
z-scores every image over its own pixels first; distances there are 0 for such a copy (any
``a > 0``, any ``b``) and sqrt(2 (1 - r)) in general, r the Pearson correlation of the two images.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

NEAR_COPY_QUANTILE = 0.05


def flat(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(len(x), -1).cpu().numpy().astype(np.float32)


def standardized(rows: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (a constant row becomes zeros): the images
    up to brightness and contrast."""
    rows = rows.astype(np.float64)
    centred = rows - rows.mean(1, keepdims=True)
    std = centred.std(1, keepdims=True)
    return (centred / np.where(std > 0, std, 1.0)).astype(np.float32)


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
