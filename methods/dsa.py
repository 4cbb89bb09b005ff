"""DSA: Differentiable Siamese Augmentation (Zhao & Bilen, ICML'21), docs/methods.md 4.2 and 2.2.

DC (``methods/dc.py``) with augmentation in two places: in the matching step each class's real
batch and synthetic batch go through one identical transform (:meth:`mddbench.nn.augment.DSA.pair`:
the same op group and one parameter draw shared by every image of both batches), and the inner
loop trains the network with ordinary per-sample DSA. Everything else, loops included, is DC's;
the official readme runs DSA with ``--init real``, which is the default here.

Deviation from the official code: the siamese pairing shares one draw from ``task.generator``
instead of reseeding the global RNG with the same time-based seed twice.
"""
from __future__ import annotations

from typing import Any

import torch

from mddbench.api.method import Task
from mddbench.nn.augment import DEFAULT_STRATEGY
from mddbench.nn.augment import DSA as DSAugment
from mddbench.registry import register_method

from .dc import DC


@register_method("dsa")
class DSA(DC):
    summary = "gradient matching with siamese augmentation of real and synthetic batches (real init)"
    defaults: dict[str, Any] = dict(DC.defaults, init="real", dsa_strategy=DEFAULT_STRATEGY)

    def matching_views(self, task: Task, real: torch.Tensor, syn: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        return task.augment.pair(real, syn, task.generator)

    def training_augment(self, task: Task) -> DSAugment:
        return task.augment
