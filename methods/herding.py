"""``herding``: the real train images whose running mean best follows the class mean (spec new_methods.md §3.3).

Per class, in the expert ConvNet's feature space (:mod:`mddbench.methods.coreset`, a deviation from
DeepCore's ResNet-18 recorded in every set's meta): pick ``i`` takes the image x minimising
``||(i + 1) mu - sum_{s picked} phi_s - phi_x||``, so that the mean of the first ``i + 1`` picks is as
close to the class mean mu as one more image can bring it (Welling 2009; iCaRL's exemplars).

**DeepCore's herding (``deepcore/methods/herding.py`` L82) takes the argmax of that distance**, the image
that moves the running sum *farthest* from (i + 1) mu; we implement the textbook argmin. ``--hp
direction=argmax`` reproduces DeepCore's choice (scripts/oracle_coresets.py compares both). No feature
normalisation (DeepCore; iCaRL L2-normalises). Deterministic given the features: no random draw.
"""
from __future__ import annotations

from typing import Any

import torch

from mddbench.api.budgets import Budget
from mddbench.api.method import Task
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.methods.coreset import CoresetSelection, herding_order
from mddbench.registry import register_method


@register_method("herding")
class Herding(CoresetSelection):
    summary = "coreset: per class, the real images whose running mean tracks the class mean (argmin herding)"
    defaults: dict[str, Any] = dict(CoresetSelection.defaults, direction="argmin")

    def check(self, hp: dict[str, Any], spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["direction"] not in ("argmin", "argmax"):
            raise ConfigError(f"herding: direction is 'argmin' (textbook herding, the default) or 'argmax' "
                              f"(DeepCore's herding.py L82), got {hp['direction']!r}")

    def order(self, task: Task, features: torch.Tensor) -> list[int]:
        return herding_order(features, task.ipc, task.hp["direction"])

    def describe(self, task: Task) -> dict[str, Any]:
        return {"rule": f"herding, {task.hp['direction']} of ||(i+1) mu - sum picked - phi_x||"}
