"""The trajectory-matching family's one distillation loop (MTT; SMDD, FTD, DATM, SeqMatch, HaBa, PTM subclass it).

Per iteration (:meth:`TrajectoryMatching.match_step`, the only one): choose an expert and a segment
``[start_epoch, target_epoch]``, unroll the student from the segment's start on the synthetic set
(:func:`mddbench.nn.unroll.match`), and step the images and the learned step size on the normalised
parameter distance. Subclasses change it only through the hooks: which experts (``recipe``), how the
set starts (``initial_images``, ``initial_labels``, ``extra_state``), what happens before the
iteration (``before_step``: PTM's retraining resets), which segment (``segment``) and how many
student steps (``steps``), where the student's minibatches come from (``source``: HaBa renders
them, SeqMatch puts its frozen subsets in front), which parameters count (``mask``, fixed before the
unroll), which intermediate student parameters the scoring also sees (``keep_steps``: HoP-TM's
midpoint), how the end point is scored (``loss_fn``, which may look at the end point, as SMDD's pruning
does, and at the kept points) and weighted (``match_weight``), a term added before the optimisers step (``extra_loss``:
HaBa's club term, PTM's overlap term), whether to step (``accept``), what happens after a step
(``after_step``), what an iteration logs (``metrics``) and what is returned (``result``). The
optimisers are the state's ``opt_*`` entries: all are zeroed before the unroll and stepped together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from mddbench.api.budgets import Budget, official_share
from mddbench.api.loop import distill_loop
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE
from mddbench.memory import per_item_bytes
from mddbench.nn.augment import DEFAULT_STRATEGY
from mddbench.nn.networks import create_network
from mddbench.nn.unroll import MatchResult, Source, Student, TensorSource, match, param_distance
from mddbench.trajectory.experts import FLAT_RECIPE, MTT_RECIPE, ExpertRecipe, Trajectories

# CIFAR-10 rows of the official tables (docs/methods.md 4.5; the shared spec/methods.md, outside the repository),
# the transfer it recommends for data without published values, ZCA off as in the medical precedent (HoP-TM).
MTT_IPC1 = dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01)
MTT_IPC10 = dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001)
MTT_IPC50 = dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.001)


def ipc_band(ipc: int) -> int:
    """The official row an ipc falls in: below 10 the ipc-1 row, 10..49 the ipc-10 row, 50 and up the ipc-50 row."""
    return 1 if ipc < 10 else 10 if ipc < 50 else 50


def mtt_preset(ipc: int) -> dict[str, Any]:
    """Official rows by ipc (banded by :func:`ipc_band`)."""
    return dict({1: MTT_IPC1, 10: MTT_IPC10, 50: MTT_IPC50}[ipc_band(ipc)])


def expert_steps_per_epoch(spec: DatasetSpec, batch: int = MTT_RECIPE.batch) -> int | None:
    """SGD steps an expert takes per epoch (None when the train split's size is not known in advance)."""
    n = (spec.n_samples or {}).get("train")
    return math.ceil(n / batch) if n else None


def fit_steps_to_experts(hp: dict, spec: DatasetSpec, expert_lr: float) -> dict[str, Any]:
    """Ours, for small datasets: never unroll more student steps than the expert took over the segment,
    and keep the student's step size fixed there, at the experts' own learning rate ``expert_lr``.

    The official rows come from CIFAR (196 expert steps per epoch). BreastMNIST's 546 images give 3
    steps per epoch, so 2 expert epochs are 6 SGD steps, and 30-50 student steps overshoot the target
    many times over. Even with the steps matched, the expert moves so little that the normalised loss
    is very sensitive to the step size (d loss / d lr ~ 700 at lr 0.001, against ~15 for CIFAR): one
    official lr_lr step drives the learned step size negative and the run diverges within three
    iterations (measured on BreastMNIST ipc 10). With the step size fixed the loss falls steadily.

    The fixed value is the experts' rate (budget version 4), not the row's initial ``lr_teacher``: the
    ipc-10 and ipc-50 rows start at 0.001 so that a learned step size can grow over 30 student steps
    that stand for 392 expert steps. Fixed, 0.001 makes the student walk a tenth of the expert's rate
    over as many steps, and the set is then evaluated at 0.001 as well. Chosen on val (RetinaMNIST
    ipc 10, leaderboards/README.md "The step size at ipc 10"); at ipc 1 and 2 every row already starts at the rate.
    """
    per_epoch = expert_steps_per_epoch(spec)
    if per_epoch is None or hp["expert_epochs"] * per_epoch >= hp["syn_steps"]:
        return {}
    return {"syn_steps": hp["expert_epochs"] * per_epoch, **fixed_step_size(expert_lr)}


def fixed_step_size(expert_lr: float) -> dict[str, float]:
    """The student's step size, not learned (``lr_lr`` 0) and at the experts' rate: see :func:`fit_steps_to_experts`."""
    return {"lr_lr": 0.0, "lr_teacher": expert_lr}


def fit_start(hp: dict, budget: Budget) -> int:
    """Clamp the start window so segments fit the budget's trajectories (quick/smoke experts are short)."""
    return max(1, min(hp["max_start_epoch"], budget.expert_epochs - hp["expert_epochs"]))


@dataclass
class Step:
    """One matching iteration as ``after_step`` and ``metrics`` see it (the optimisers have run)."""

    it: int
    expert: int
    start_epoch: int
    target_epoch: int
    steps: int  # student steps unrolled
    result: MatchResult
    loss: float  # match_weight * the match loss + the extra term's weighted value
    extra: dict[str, Any]  # what extra_loss logs
    stepped: bool


# A ``full`` unroll keeps every student step's graph; above this (most of the 3 GB a run may take) a
# trajectory method unrolls in ``constant`` memory unless told otherwise (benchmarks/bench_unroll.py).
FULL_UNROLL_BYTES = 2 << 30
UNROLL_GRAPH_FACTOR = 2.0  # a step's graph against its forward activations (measured: bench_unroll --size 112)


class TrajectoryMatching(Method):
    flat_experts = False  # FTD, DATM and PTM match GSAM ("flat") experts
    defaults: dict[str, Any] = dict(
        iterations=5000, syn_steps=20, expert_epochs=3, max_start_epoch=25, lr_img=1000.0, lr_lr=1e-5,
        lr_teacher=0.01, momentum_img=0.5, batch_syn=0, init="real", dsa_strategy=DEFAULT_STRATEGY,
        model="convnet", unroll_memory="full", expert_alpha=0.3, expert_rho=0.01,
        experts="default")  # "sgd" or "flat" to match other experts than the method's own (e.g. MTT on flat ones)
    limits = dict(iterations=NON_NEGATIVE, syn_steps=AT_LEAST_1, expert_epochs=AT_LEAST_1, max_start_epoch=AT_LEAST_1,
                  lr_img=POSITIVE, lr_lr=NON_NEGATIVE, lr_teacher=POSITIVE, momentum_img=MOMENTUM,
                  batch_syn=NON_NEGATIVE, expert_alpha=NON_NEGATIVE, expert_rho=NON_NEGATIVE)  # batch_syn 0: all
    budgets = {
        "quick": dict(iterations=official_share, syn_steps=lambda hp, b: min(hp["syn_steps"], 20),
                      max_start_epoch=fit_start),
        "smoke": dict(iterations=6, syn_steps=3, expert_epochs=1, max_start_epoch=fit_start),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        return mtt_preset(ipc)

    def resolve(self, spec: DatasetSpec, ipc: int, budget: Budget, overrides: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """The values resolve as for every method; then ``unroll_memory`` is ``constant`` where a ``full``
        unroll's graph would pass :data:`FULL_UNROLL_BYTES` (112 px from ipc 2 at quick: 13 GB at ipc 10),
        unless the user chose it. A rule of the dataset, ipc and budget, never of the machine, so a job
        resolves alike everywhere; the resolved mode is in every run's hparams."""
        hp = super().resolve(spec, ipc, budget, overrides)
        if "unroll_memory" not in (overrides or {}) and hp["unroll_memory"] == "full" \
                and self.full_unroll_bytes(hp, spec, ipc) > FULL_UNROLL_BYTES:
            hp["unroll_memory"] = "constant"
        return hp

    def unroll_steps(self, hp: dict) -> int:
        """The most student steps one matching iteration unrolls."""
        return hp["syn_steps"]

    def full_unroll_bytes(self, hp: dict, spec: DatasetSpec, ipc: int) -> float:
        """What a ``full`` unroll keeps for its backward pass: per step, every synthetic image of the
        minibatch's activations, once for the step and once for its gradient (create_graph)."""
        net = create_network(hp["model"], spec.channels, spec.n_classes, spec.size, spec.dims)
        images = hp["batch_syn"] or ipc * spec.n_classes
        per_item = per_item_bytes(net, torch.zeros(2, *spec.shape))
        return UNROLL_GRAPH_FACTOR * self.unroll_steps(hp) * images * per_item

    def adapt(self, hp: dict, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        return fit_steps_to_experts(hp, spec, self.recipe(hp).lr)

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        self.check_window(hp, budget)
        if hp["unroll_memory"] not in ("full", "constant"):
            raise ConfigError("unroll_memory is 'full' (exact) or 'constant' (TESLA's approximation)")
        if hp.get("experts", "default") not in ("default", "sgd", "flat"):
            raise ConfigError("experts is 'default' (the method's own), 'sgd' (MTT's) or 'flat' (FTD's GSAM experts)")

    def check_window(self, hp: dict, budget: Budget) -> None:
        """The segments this method draws must fit the budget's expert trajectories."""
        need = hp["max_start_epoch"] + hp["expert_epochs"]
        if need > budget.expert_epochs:
            raise ConfigError(f"{self.name}: max_start_epoch {hp['max_start_epoch']} + expert_epochs "
                              f"{hp['expert_epochs']} needs trajectories of {need} epochs, the {budget.name} budget's "
                              f"experts have {budget.expert_epochs}")

    # ------------------------------------------------------------------------------------- hooks
    def recipe(self, hp: dict) -> ExpertRecipe:
        if hp.get("experts", "default") == "flat" or (hp.get("experts", "default") == "default" and self.flat_experts):
            return replace(FLAT_RECIPE, model=hp["model"], alpha=hp["expert_alpha"], rho=hp["expert_rho"])
        return replace(MTT_RECIPE, model=hp["model"])

    def expert_recipes(self, hp: dict) -> list[ExpertRecipe]:
        return [self.recipe(hp)]

    def initial_images(self, task: Task, experts: Trajectories) -> torch.Tensor:
        return task.initial_images(task.hp["init"])

    def initial_labels(self, task: Task, experts: Trajectories, images: torch.Tensor) -> torch.Tensor:
        return task.hard_labels()

    def extra_state(self, task: Task, state: dict) -> dict[str, Any]:
        """Entries added to the state after the images, labels, step size and the two optimisers (checkpointed)."""
        return {}

    def before_step(self, task: Task, state: dict, it: int) -> None:
        """Runs first in every iteration, before the segment is drawn (PTM: the complement's resets)."""

    def segment(self, it: int, task: Task, experts: Trajectories) -> tuple[int, int, int]:
        """(expert, start epoch, target epoch): MTT draws the expert and ``start ~ U{0..max_start-1}``."""
        hp, g = task.hp, task.generator
        e = int(torch.randint(len(experts), (1,), generator=g))
        start = int(torch.randint(hp["max_start_epoch"], (1,), generator=g))
        return e, start, start + hp["expert_epochs"]

    def steps(self, task: Task, start: int, target: int) -> int:
        return task.hp["syn_steps"]

    def source(self, task: Task, state: dict) -> Source:
        """Where the student's minibatches come from (the synthetic images; HaBa renders them from its bases)."""
        return TensorSource(state["images"], state["labels"])

    def mask(self, task: Task, state: dict, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        return None

    def keep_steps(self, task: Task, steps: int) -> tuple[int, ...]:
        """Student steps whose parameters ``loss_fn`` also receives, as ``points={k: w_k}`` (none: MTT)."""
        return ()

    def loss_fn(self, task: Task, state: dict) -> Callable[..., torch.Tensor]:
        """``(end, start, target, mask[, points]) -> loss`` scoring the unroll's end point (MTT: the normalised
        distance); ``points`` is passed when :meth:`keep_steps` asks for any."""
        return param_distance

    def match_weight(self, task: Task) -> float:
        """The factor on the match loss's gradient and on its share of the logged ``loss`` (PTM: beta1)."""
        return 1.0

    def extra_loss(self, task: Task, state: dict) -> tuple[torch.Tensor | None, float, dict[str, Any]]:
        """``(term, weight, metrics)``: a term computed after the unroll and backpropagated as ``weight * term``
        before the optimisers step (None: nothing added), and what to log about it. ``weight * term`` is
        added to the logged ``loss``. A term without a graph was backpropagated by the method itself (HaBa's,
        in chunks) and is only logged."""
        return None, 0.0, {}

    def accept(self, task: Task, state: dict, result: MatchResult) -> bool:
        return True

    def after_step(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        """Runs after the optimisers (stepped or not); returns metrics logged after :meth:`metrics`' own."""
        return {}

    def metrics(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        """What an iteration logs (after ``after_step`` ran, so ``syn_lr`` is the value it leaves)."""
        return {"loss": step.loss, **step.extra, "student_ce": step.result.ce,
                "syn_lr": float(state["syn_lr"].detach()), "expert": step.expert, "start_epoch": step.start_epoch,
                "target_epoch": step.target_epoch, "stepped": int(step.stepped)}

    def result(self, task: Task, state: dict) -> SyntheticSet:
        return task.synset(state["images"], state["labels"], lr=float(state["syn_lr"].detach()))

    # -------------------------------------------------------------------------------------- loop
    def setup(self, task: Task) -> tuple[dict[str, Any], Trajectories, Student]:
        hp = task.hp
        experts = task.experts(self.recipe(hp))
        images = self.initial_images(task, experts).detach().clone().requires_grad_(True)
        labels = self.initial_labels(task, experts, images)
        syn_lr = torch.tensor(float(hp["lr_teacher"]), device=task.device).requires_grad_(True)
        state: dict[str, Any] = {
            "images": images, "labels": labels, "syn_lr": syn_lr,
            "opt_img": torch.optim.SGD([images], lr=hp["lr_img"], momentum=hp["momentum_img"]),
            "opt_lr": torch.optim.SGD([syn_lr], lr=hp["lr_lr"], momentum=0.5),
        }
        state.update(self.extra_state(task, state))
        return state, experts, Student(task.network())

    def match_step(self, task: Task, state: dict, experts: Trajectories, student: Student, it: int
                   ) -> tuple[MatchResult, dict[str, Any]]:
        self.before_step(task, state, it)
        e, t0, t1 = self.segment(it, task, experts)
        start = experts.snapshot(e, t0).to(task.device)
        target = experts.snapshot(e, t1).to(task.device)
        optimisers = [o for k, o in state.items() if k.startswith("opt_")]
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        steps, weight = self.steps(task, t0, t1), self.match_weight(task)
        res = match(student, self.source(task, state), state["syn_lr"], start, target, steps=steps,
                    generator=task.generator, batch=task.hp["batch_syn"] or None, augment=task.augment,
                    memory=task.hp["unroll_memory"], mask=self.mask(task, state, start, target), weight=weight,
                    loss_fn=self.loss_fn(task, state), keep_steps=self.keep_steps(task, steps))
        term, term_weight, extra = self.extra_loss(task, state)
        if term is not None and term.requires_grad:
            (term_weight * term).backward()
        stepped = self.accept(task, state, res)
        if stepped:
            for opt in optimisers:
                opt.step()
        loss = weight * res.loss + (term_weight * float(term.detach()) if term is not None else 0.0)
        step = Step(it, e, t0, t1, steps, res, loss, extra, stepped)
        after = self.after_step(task, state, step)
        return res, {**self.metrics(task, state, step), **after}

    def distill(self, task: Task) -> SyntheticSet:
        state, experts, student = self.setup(task)

        def step(it: int) -> dict[str, Any]:
            return self.match_step(task, state, experts, student, it)[1]

        distill_loop(task, task.hp["iterations"], state, step, lambda: self.result(task, state), name=self.name)
        return self.result(task, state)

