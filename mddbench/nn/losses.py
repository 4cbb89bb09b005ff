"""The classification loss every loop trains with: hard labels, or soft label logits (DATM)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard labels, or DATM's soft cross-entropy with label logits."""
    if labels.is_floating_point():
        return -(F.softmax(labels, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, labels)
