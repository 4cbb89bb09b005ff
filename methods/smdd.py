"""SMDD: MTT with pruning of difficult-to-match parameters (Li, Togo, Ogawa, Haseyama), docs/methods.md 4.6.

**A reconstruction.** The repository linked as SMDD's code (``Guang000/mtt-distillation``) is an
unmodified MTT fork with no pruning code, and the method section of the companion paper ("Dataset
Distillation Using Parameter Pruning", arXiv 2209.14609) could not be checked, so this follows the
documented reconstruction of docs/methods.md 4.6, not the authors' code:

1. run MTT (:mod:`mddbench.trajectory.matching`, the official CIFAR-10 rows by ipc);
2. after the student unroll, take each parameter's discrepancy ``e_j = (w_N[j] - target[j])^2``;
3. drop the hardest-to-match entries: the top ``prune_ratio`` of ``e`` (over all parameters, per
   iteration) and, when ``prune_threshold`` is set, every entry with ``e_j > prune_threshold``;
4. score ``sum(m * e) / sum(m * (start - target)^2)`` with the kept mask ``m``, which is detached
   (no gradient flows through the choice of parameters);
5. with ``prune_cumulative`` an entry once pruned stays pruned for the rest of the run (the mask is
   part of the checkpointed state). Each iteration prunes afresh on top of the old mask, so long
   cumulative runs prune more and more: the logged ``pruned_frac`` shows how much.

Defaults (ours, since the paper's values are unverified): ``prune_ratio`` 0.01 (1 % of the
parameters, "a few" in the abstract's words), no threshold, not cumulative. Every iteration logs
``pruned`` (how many parameters the loss ignored) and ``pruned_frac``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from mddbench.api.budgets import Budget
from mddbench.api.method import Task
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import NON_NEGATIVE, Limit
from mddbench.nn.unroll import Student, param_distance
from mddbench.registry import register_method
from mddbench.trajectory.matching import Step, TrajectoryMatching


def prune_mask(discrepancy: torch.Tensor, ratio: float, threshold: float | None = None) -> torch.Tensor:
    """Boolean keep-mask: False for the ``floor(ratio * n)`` largest entries and for entries above ``threshold``."""
    keep = torch.ones_like(discrepancy, dtype=torch.bool)
    k = math.floor(ratio * discrepancy.numel() + 1e-9)
    if k > 0:
        keep[discrepancy.topk(k).indices] = False
    if threshold is not None:
        keep &= discrepancy <= threshold
    return keep


@register_method("smdd")
class SMDD(TrajectoryMatching):
    summary = "MTT pruning hard-to-match parameters from the loss (reconstruction: the official repo has no pruning)"
    defaults = dict(TrajectoryMatching.defaults, prune_ratio=0.01, prune_threshold=None, prune_cumulative=False)
    limits = dict(prune_ratio=Limit(0, 1, high_open=True), prune_threshold=NON_NEGATIVE)

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["prune_threshold"] is not None and not (isinstance(hp["prune_threshold"], (int, float))
                                                      and hp["prune_threshold"] >= 0):
            raise ConfigError(f"prune_threshold must be null or a number >= 0, got {hp['prune_threshold']!r}")

    def setup(self, task: Task) -> tuple[dict[str, Any], Any, Student]:
        state, experts, student = super().setup(task)
        state["kept"] = torch.ones(student.size, dtype=torch.bool, device=task.device)  # the cumulative mask
        state["pruned"] = torch.zeros((), dtype=torch.long)  # how many the last loss ignored
        return state, experts, student

    def loss_fn(self, task: Task, state: dict) -> Callable[..., torch.Tensor]:
        hp = task.hp

        def pruned_distance(end: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
            keep = prune_mask((end.detach() - target) ** 2, hp["prune_ratio"], hp["prune_threshold"])
            if hp["prune_cumulative"]:
                keep &= state["kept"]
                state["kept"].copy_(keep)
            state["pruned"].fill_(int((~keep).sum()))
            m = keep.to(end.dtype)
            return param_distance(end, start, target, m if mask is None else m * mask)

        return pruned_distance

    def after_step(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        pruned = int(state["pruned"])
        return {"pruned": pruned, "pruned_frac": pruned / state["kept"].numel()}
