"""``kcenter``: greedy k-center (farthest-point) selection of real train images (spec new_methods.md §3.4).

Per class, in the expert ConvNet's feature space (:mod:`mddbench.methods.coreset`, a deviation from
DeepCore's ImageNet-pretrained ResNet-18 at 224 px, recorded in every set's meta): the first centre is
one image drawn uniformly at random, then every further pick is the image farthest from its nearest
centre, until ``ipc`` images (the first counts), as ``deepcore/methods/kcentergreedy.py`` L8-65 (the
2-approximation greedy of Sener & Savarese 2018; their robust MIP variant is not implemented).

The first centre: DeepCore draws ``np.random.randint(0, n)`` after ``np.random.seed(random_seed)``, the
same seed for every class (and a time-based seed by default). Ours is ``torch.randint(n)`` from the task's
seeded generator, one draw per class in class order: the selection is deterministic given the seed.
"""
from __future__ import annotations

from typing import Any

import torch

from mddbench.api.method import Task
from mddbench.methods.coreset import CoresetSelection, k_center_order
from mddbench.registry import register_method


@register_method("kcenter")
class KCenterGreedy(CoresetSelection):
    summary = "coreset: per class, greedy farthest-point (k-center) real images from a seeded random start"

    def order(self, task: Task, features: torch.Tensor) -> list[int]:
        first = int(torch.randint(len(features), (1,), generator=task.generator))
        return k_center_order(features, task.ipc, first)

    def describe(self, task: Task) -> dict[str, Any]:
        return {"rule": "k-center greedy, first centre uniform from the task's generator"}
