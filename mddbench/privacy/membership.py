"""Membership inference: attack scores of a trained network and how well they separate members.

The loss attack (Yeom et al. 2018) scores an example by minus its cross-entropy under the attacked
network: members, seen in training, tend to have a lower loss. The confidence in the true class is
``exp(-loss)``, a monotone function of it, so the "confidence attack" has the same ROC and is the
same attack. Following Carlini et al. (2022), an attack is judged by its true-positive rate at a
low false-positive rate, not only by its AUC.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from mddbench.errors import ConfigError
from mddbench.memory import micro_batch

LOW_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}


@torch.no_grad()
def loss_scores(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(minus the per-example cross-entropy, whether the prediction is right) for every example,
    ``batch`` at a time (default: the memory budget's, :mod:`mddbench.memory`)."""
    net.eval()
    batch = batch or micro_batch(net, x[:2].to(device), "predict")
    scores, correct = [], []
    for i in range(0, len(x), batch):
        logits = net(x[i:i + batch].to(device)).float().cpu()
        target = y[i:i + batch].cpu()
        scores.append(-F.cross_entropy(logits, target, reduction="none"))
        correct.append(logits.argmax(1) == target)
    return torch.cat(scores).numpy().astype(np.float64), torch.cat(correct).numpy()


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """The highest true-positive rate of a threshold attack ("member" when score > t) whose
    false-positive rate is at most ``fpr``.

    At most ``k = floor(fpr * n_nonmembers)`` non-members may score above the threshold, so the best
    threshold sits at the (k+1)-th highest non-member score: members strictly above it are caught.
    With fewer than ``1 / fpr`` non-members, k = 0: no false positive at all is allowed.
    """
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if not (0 <= fpr < 1) or len(members) == 0 or len(nonmembers) == 0:
        raise ConfigError(f"tpr_at_fpr needs members, non-members and 0 <= fpr < 1 (got fpr={fpr})")
    if np.isnan(members).any() or np.isnan(nonmembers).any():
        return math.nan
    k = math.floor(fpr * len(nonmembers) + 1e-9)  # 1e-9: 0.29 * 100 is 28.999999999999996 in floats
    threshold = np.sort(nonmembers)[::-1][k]
    return float((members > threshold).mean())


def attack_metrics(members: np.ndarray, nonmembers: np.ndarray) -> dict[str, float]:
    """AUC and the true-positive rates at 1 % and 0.1 % false positives, all in [0, 1]."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        return {"auc": math.nan, **dict.fromkeys(LOW_FPRS, math.nan)}
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    out = {"auc": float(roc_auc_score(labels, np.r_[members, nonmembers]))}
    out.update({name: tpr_at_fpr(members, nonmembers, fpr) for name, fpr in LOW_FPRS.items()})
    return out
