"""Classification metrics, MedMNIST-compatible: accuracy, macro one-vs-rest AUC, balanced accuracy."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

# val_balanced_acc: what open values are chosen on where a class dominates (records before it lack it)
METRICS = ("test_acc", "val_acc", "auc", "balanced_acc", "val_balanced_acc")


def auc(probs: np.ndarray, y: np.ndarray) -> float:
    """MedMNIST's getAUC: binary -> AUC of the positive-class score; multi-class -> macro one-vs-rest.

    Classes without positives or without negatives in ``y`` are skipped (sklearn would raise).
    """
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1])) if len(np.unique(y)) == 2 else math.nan
    scores = [roc_auc_score(y == c, probs[:, c]) for c in range(probs.shape[1]) if 0 < (y == c).sum() < len(y)]
    return float(np.mean(scores)) if scores else math.nan


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy warns when a class is never predicted
        bal = float(balanced_accuracy_score(y, pred))
    return {"acc": float((pred == y).mean()), "auc": auc(probs, y), "balanced_acc": bal}


def summarize(values: list[float | None]) -> dict:
    """mean and std (ddof=0, the DC-Bench convention) over evaluation models.

    A model whose training diverged has no score (None): it stays in ``per_model`` as a gap, is
    left out of mean, std and ``n``, and is counted in ``diverged``, so a table can say so.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return {"per_model": [None if v is None else float(v) for v in values],
            "mean": float(arr.mean()) if len(arr) else math.nan, "std": float(arr.std()) if len(arr) else math.nan,
            "n": int(len(arr)), "diverged": len(values) - len(arr)}
