"""How good the experts are: every snapshot of a buffer scored on a real split (val by default).

Trajectory methods match these snapshots, so a buffer worth matching should span from near chance
(epoch 0) to clearly above the majority-class predictor (balanced accuracy 1 / classes) by its last
epoch. ``mddbench buffers --report`` prints the table; choose budgets on val, never on test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mddbench.data.dataset import RealData
from mddbench.evaluation.metrics import classification_metrics
from mddbench.evaluation.protocol import predict
from mddbench.nn.networks import create_network
from mddbench.trajectory.experts import ExpertRecipe, Trajectories


@dataclass(frozen=True)
class EpochQuality:
    epoch: int
    acc: tuple[float, ...]  # one per expert
    balanced_acc: tuple[float, ...]
    majority_share: float  # of the predictions, pooled over experts (1.0: every image gets one class)


def snapshot_scores(traj: Trajectories, data: RealData, recipe: ExpertRecipe, device: torch.device,
                    split: str = "val") -> list[EpochQuality]:
    """Accuracy and balanced accuracy of every expert at every epoch on ``split``."""
    spec = data.spec
    net = create_network(recipe.model, spec.channels, spec.n_classes, spec.size, spec.dims, device=device)
    x, y = data.x[split], data.y[split].numpy()
    rows = []
    for epoch in range(traj.epochs + 1):
        acc, bal, top = [], [], []
        for e in range(len(traj)):
            torch.nn.utils.vector_to_parameters(traj.snapshot(e, epoch).to(device), net.parameters())
            probs = predict(net, x, device)
            m = classification_metrics(probs, y)
            acc.append(m["acc"])
            bal.append(m["balanced_acc"])
            top.append(np.bincount(probs.argmax(1), minlength=spec.n_classes).max() / len(y))
        rows.append(EpochQuality(epoch, tuple(acc), tuple(bal), float(np.mean(top))))
    return rows


def report_rows(rows: list[EpochQuality]) -> list[tuple]:
    """(epoch, mean acc, mean / min / max balanced accuracy, share of the most predicted class), in %."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    return [(r.epoch, pct(np.mean(r.acc)), pct(np.mean(r.balanced_acc)), pct(min(r.balanced_acc)),
             pct(max(r.balanced_acc)), pct(r.majority_share)) for r in rows]
