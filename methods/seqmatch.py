"""SeqMatch: Sequential Subset Matching (Du, Shi, Zhou, NeurIPS'23), the MTT variant; docs/methods.md 4.10.

The ipc budget is split into K subsets (:func:`split_ipc`, 50 over 3 -> 17/17/16) distilled one after
another. Stage 1 is MTT on the standard SGD experts. Stage k >= 2 matches *later-stage* experts: each
starts from a network trained sequentially on the frozen earlier subsets (S1, then S1+S2, ..., each
phase with that subset's learned lr under the evaluation schedule, ``prev_train_epochs`` epochs) and
then trains on the real data for ``stage_expert_epochs`` epochs, a snapshot per epoch. The student
unrolls on [frozen S1..S(k-1), learnable Sk]; only Sk and its step size move. The result keeps
``stages`` and ``stage_lrs``, so evaluation trains sequentially on S1, S1+S2, ... as the official code.

Every stage is its own :func:`distill_loop` (``seqmatch_stage<k>``: own checkpoint, log and
generator, derived from the task generator up front so a resumed run repeats an uninterrupted
one); a finished stage is stored as ``seqmatch_stage<k>.safetensors`` and never rerun, and the
later-stage experts are built and cached by the task's :class:`~mddbench.trajectory.experts.ExpertProvider`
(lock, ``meta.json``, scores) as a buffer with a :class:`~mddbench.trajectory.experts.Pretraining` on the
earlier subsets, keyed by their content.

Hyperparameters: each stage uses the official MTT row for the *subset's* ipc (run.sh's CIFAR-10
ipc 50, K=3 run uses the ipc-10 row: 30 steps, lr_img 100, lr_teacher 0.001, start < 20), stage 1
with ``lr_teacher`` and ``max_start_epoch``, later stages with ``lr_teacher_later`` (0.01) and
``stage_max_start`` (one value per later stage, the last repeated). The official start intervals
``0-20`` / ``0-10`` of stages 2 / 3 draw ``randint(0, end - M)``, which is MTT's
``max_start_epoch`` = end - M: [18, 8] with M = 2 on 20-epoch later-stage experts. The quick and
smoke budgets scale the later-stage experts (``stage_experts``, ``stage_expert_epochs``) and the
earlier-subset training before them (``prev_train_epochs``, official: a full 1000-epoch
evaluation run; here the budget's evaluation epochs). A subset's minibatch (``batch_syn`` 0) is
classes x ipc_k as in the official code.

Deviation: stage 1 is plain MTT, start ~ U{0..max_start_epoch-1} (the official stage 1 draws from
``0-20`` as ``randint(0, 20 - M)``, M epochs narrower). SeqMatch needs ipc >= 2K; below that it
runs K=1, i.e. plain MTT, and says so in a log line.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mddbench.api.budgets import Budget
from mddbench.api.method import Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.evaluation.protocol import EvalConfig, train_on_synset
from mddbench.limits import AT_LEAST_1, POSITIVE
from mddbench.nn.unroll import Source, TensorSource
from mddbench.registry import register_method
from mddbench.trajectory.experts import Pretraining, Trajectories
from mddbench.trajectory.matching import TrajectoryMatching, mtt_preset

log = logging.getLogger(__name__)


def split_ipc(ipc: int, n_subsets: int) -> list[int]:
    """ipc split as evenly as possible over the subsets, the earlier ones taking the remainder."""
    base, extra = divmod(ipc, n_subsets)
    return [base + (i < extra) for i in range(n_subsets)]


def effective_subsets(ipc: int, n_subsets: int) -> int:
    """K when every subset gets at least 2 images per class, else 1 (plain MTT)."""
    return n_subsets if ipc >= 2 * n_subsets else 1


def append(prefix: SyntheticSet | None, subset: SyntheticSet) -> SyntheticSet:
    """``prefix``'s subsets then ``subset``: one set that evaluation trains on cumulatively, each stage with its lr."""
    if prefix is None:
        return SyntheticSet(subset.images.cpu(), subset.labels.cpu(), lr=subset.lr, stages=[len(subset)],
                            stage_lrs=[subset.lr])
    return SyntheticSet(torch.cat([prefix.images.cpu(), subset.images.cpu()]),
                        torch.cat([prefix.labels.cpu(), subset.labels.cpu()]), lr=subset.lr,
                        stages=prefix.stages + [len(subset)], stage_lrs=prefix.stage_lrs + [subset.lr])


def _scale_stage_epochs(hp: dict, budget: Budget) -> int:
    """Later-stage experts shortened like the budget's experts (official 20 of 50 epochs)."""
    return max(hp["expert_epochs"] + 1, round(hp["stage_expert_epochs"] * budget.expert_epochs / 50))


def _scale_prev_epochs(hp: dict, budget: Budget) -> int:
    """Training on the earlier subsets is an evaluation run: the budget's evaluation epochs."""
    return min(hp["prev_train_epochs"], budget.eval_epochs)


def _fit_stage_starts(hp: dict, budget: Budget) -> list[int]:
    room = hp["stage_expert_epochs"] - hp["expert_epochs"]
    return [max(1, min(t, room)) for t in hp["stage_max_start"]]


class _Stage(TrajectoryMatching):
    """One subset: MTT hooks on the stage's task, the earlier subsets frozen in front of the student's set.

    Its ``result`` is the cumulative set (frozen subsets + this one), so snapshots and the NaN guard's
    last good set are complete sequential sets.
    """

    def __init__(self, name: str, frozen: SyntheticSet | None):
        self.name = name
        self.frozen = frozen

    def result(self, task: Task, state: dict) -> SyntheticSet:
        return append(self.frozen, super().result(task, state))

    def source(self, task: Task, state: dict) -> Source:
        if self.frozen is None:
            return super().source(task, state)
        x, y = self.frozen.images.to(task.device), self.frozen.labels.to(task.device)
        return TensorSource(torch.cat([x, state["images"]]), torch.cat([y, state["labels"]]))


@register_method("seqmatch")
class SeqMatch(TrajectoryMatching):
    work_unit = "iterations per stage"
    summary = "sequential subset matching: K subsets, each matched to later-stage experts, evaluated in sequence"
    defaults: dict[str, Any] = dict(
        TrajectoryMatching.defaults, n_subsets=2, lr_teacher_later=0.01, stage_max_start=[18, 8],
        stage_expert_epochs=20, stage_experts=100, prev_train_epochs=1000)
    limits = dict(n_subsets=AT_LEAST_1, lr_teacher_later=POSITIVE, stage_max_start=AT_LEAST_1,
                  stage_expert_epochs=AT_LEAST_1, stage_experts=AT_LEAST_1, prev_train_epochs=AT_LEAST_1)
    budgets = {
        "quick": dict(TrajectoryMatching.budgets["quick"],  # iterations: per stage
                      stage_experts=lambda hp, b: min(hp["stage_experts"], b.experts),
                      stage_expert_epochs=_scale_stage_epochs, prev_train_epochs=_scale_prev_epochs,
                      stage_max_start=lambda hp, b: _fit_stage_starts(
                          dict(hp, stage_expert_epochs=_scale_stage_epochs(hp, b)), b)),
        "smoke": dict(TrajectoryMatching.budgets["smoke"], stage_experts=2, stage_expert_epochs=2,
                      prev_train_epochs=_scale_prev_epochs, stage_max_start=_fit_stage_starts),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        k = 3 if ipc >= 50 else 2
        return dict(mtt_preset(split_ipc(ipc, effective_subsets(ipc, k))[0]), n_subsets=k)

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["n_subsets"] < 1:
            raise ConfigError("seqmatch: n_subsets must be at least 1")
        starts = hp["stage_max_start"]
        if not isinstance(starts, list) or not starts or not all(isinstance(t, int) and t >= 1 for t in starts):
            raise ConfigError(f"seqmatch: stage_max_start must be a non-empty list of positive ints, got {starts!r}")
        if max(starts) + hp["expert_epochs"] > hp["stage_expert_epochs"]:
            raise ConfigError(f"seqmatch: stage_max_start {starts} + expert_epochs {hp['expert_epochs']} needs "
                              f"later-stage trajectories longer than stage_expert_epochs {hp['stage_expert_epochs']}")

    def subsets(self, task: Task) -> list[int]:
        k = effective_subsets(task.ipc, task.hp["n_subsets"])
        if k < task.hp["n_subsets"]:
            log.warning("seqmatch: ipc %d < 2 x n_subsets (%d): running one subset, i.e. plain MTT",
                        task.ipc, task.hp["n_subsets"])
        return split_ipc(task.ipc, k)

    # ------------------------------------------------------------------------------------ stages
    def stage_hp(self, task: Task, k: int, ipc_k: int) -> dict[str, Any]:
        hp = dict(task.hp, batch_syn=task.hp["batch_syn"] or task.n_classes * ipc_k)
        if k > 1:
            starts = hp["stage_max_start"]
            hp.update(lr_teacher=hp["lr_teacher_later"], max_start_epoch=starts[min(k - 2, len(starts) - 1)])
        return hp

    def stage_experts(self, task: Task, k: int, prefix: SyntheticSet) -> Trajectories:
        """Experts that first learn the earlier subsets (sequentially), then train on the real data."""
        hp = task.hp
        recipe = self.recipe(hp)
        ident = {"images": hashlib.sha256(prefix.images.cpu().numpy().tobytes()).hexdigest(),
                 "labels": prefix.labels.cpu().tolist(), "stages": prefix.stages, "lrs": prefix.stage_lrs,
                 "recipe": recipe.shaping(), "epochs": hp["stage_expert_epochs"], "prev": hp["prev_train_epochs"],
                 "data": task.data.checksum, "seed": task.seed}
        config = EvalConfig(model=hp["model"], epochs=hp["prev_train_epochs"], dsa_strategy=hp["dsa_strategy"])

        def learn_prefix(net: torch.nn.Module, generator: torch.Generator) -> None:
            train_on_synset(net, prefix, config, generator, task.device)

        recipe = replace(recipe, n_experts=hp["stage_experts"], epochs=hp["stage_expert_epochs"])
        return task.experts(recipe, Pretraining(ident, learn_prefix))

    def run_stage(self, task: Task, k: int, ipc_k: int, prefix: SyntheticSet | None, seed: int, n_stages: int
                  ) -> SyntheticSet:
        """Distill subset ``k`` after the frozen ``prefix``; returns the cumulative set S1..Sk."""
        name = f"{self.name}_stage{k}"
        path: Path | None = task.run_dir / f"{name}.safetensors" if task.run_dir is not None else None
        if path is not None and path.is_file():
            return SyntheticSet.load(path)
        experts = task.experts if prefix is None else (lambda recipe: self.stage_experts(task, k, prefix))
        budget = task.time_budget / n_stages if task.time_budget is not None else None
        stage_task = replace(task, ipc=ipc_k, hp=self.stage_hp(task, k, ipc_k), experts=experts, time_budget=budget,
                             generator=torch.Generator().manual_seed(seed))
        result = _Stage(name, prefix).distill(stage_task)
        if path is not None:
            result.save(path)
        return result

    def distill(self, task: Task) -> SyntheticSet:
        ipcs = self.subsets(task)
        seeds = torch.randint(2 ** 62, (len(ipcs),), generator=task.generator).tolist()
        synset = None
        for k, (ipc_k, seed) in enumerate(zip(ipcs, seeds), 1):
            synset = self.run_stage(task, k, ipc_k, synset, seed, len(ipcs))
        return synset
