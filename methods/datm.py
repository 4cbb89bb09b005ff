"""DATM: Difficulty-Aligned Trajectory Matching (Guo et al., ICLR'24), docs/methods.md 4.9.

MTT on flat (GSAM, FTD-style) experts with four changes, as in the official ``DATM.py``:

1. **A growing start-epoch window** (``Sequential_Generation``): at iteration ``it`` the start epoch is
   drawn from ``[min_start_epoch, upper)`` with ``upper = current_max_start_epoch + int((max_start_epoch -
   current_max_start_epoch) * it / expansion_end_epoch)`` capped at ``max_start_epoch``
   (:func:`start_window`); without sequential generation the window is ``[min, max)`` throughout.
2. **Initialisation from correctly classified real images** (``init="correct"``, the official
   ``pix_init: samples_predicted_correctly``): per class, shuffle the class's real images and keep the
   first ``ipc`` that the first expert at its final snapshot classifies correctly, then the next expert
   if the class runs short (:func:`pick_correct`). If no expert classifies enough of them, the rest are
   random real images of the class, with a logged warning.
3. **Learnable soft labels**: raw logits (N, K) initialised, per image, as the mean final-snapshot
   logits of the experts that classify it correctly (:func:`soft_label_init`), optimised with SGD
   (``lr_y``, momentum ``momentum_y`` 0.9); the student and the evaluation train with soft cross-entropy.
4. **Loss gating**: the image, step-size and label optimisers step only when the normalised loss is at
   most ``threshold``; otherwise the gradients are dropped.

Presets: the official CIFAR-10 ConvIN configs by ipc band (below 10 -> ipc 1, 10..49 -> ipc 10,
50 and up -> ipc 50), ZCA off (the medical precedent HoP-TM). Budgets shrink the window with the
trajectories (``quick`` experts have 12 epochs): every window epoch is scaled by the ratio of the
fitted to the official ``max_start_epoch``, and ``expansion_end_epoch`` by the ratio of iterations, so
the window grows over the same fraction of the run.

Deviations: the expert is drawn at random each iteration (the official code cycles through shuffled
buffer files); the label logits use the same rule for every ``init`` (the official ``pix_init: real``
takes one expert's logits); an image that no expert classifies correctly (only in the fallback) starts
from its hard label written as logits with 90 % confidence on its class; the evaluation keeps protocol
v1's batch of 256 (DATM's own evaluation uses 128).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import torch

from mddbench.api.budgets import Budget, budget_value
from mddbench.api.method import Task
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE
from mddbench.memory import micro_batch
from mddbench.nn.unroll import MatchResult, Student
from mddbench.registry import register_method
from mddbench.trajectory.experts import Trajectories
from mddbench.trajectory.matching import Step, TrajectoryMatching, fit_start, ipc_band

log = logging.getLogger(__name__)

# configs/CIFAR10/ConvIN: IPC1 has Sequential_Generation off (its current_max is unused, set to max).
DATM_ROWS: dict[int, dict[str, Any]] = {
    1: dict(syn_steps=80, expert_epochs=2, min_start_epoch=0, current_max_start_epoch=4, max_start_epoch=4,
            expansion_end_epoch=1000, sequential_generation=False, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01,
            lr_y=5.0, threshold=1.1, batch_syn=10),
    10: dict(syn_steps=80, expert_epochs=2, min_start_epoch=0, current_max_start_epoch=10, max_start_epoch=20,
             expansion_end_epoch=1000, sequential_generation=True, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.01,
             lr_y=2.0, threshold=1.0, batch_syn=100),
    50: dict(syn_steps=80, expert_epochs=2, min_start_epoch=0, current_max_start_epoch=20, max_start_epoch=40,
             expansion_end_epoch=2000, sequential_generation=True, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
             lr_y=2.0, threshold=1.0, batch_syn=500),
}
INITS = ("correct", "real", "noise")


# ------------------------------------------------------------------------------------ pure parts
def start_window(it: int, min_start: int, current_max: int, max_start: int, expansion_end: int,
                 sequential: bool = True) -> tuple[int, int]:
    """The half-open start-epoch window ``[low, high)`` at iteration ``it`` (never empty)."""
    if sequential:
        high = min(current_max + int((max_start - current_max) * it / expansion_end), max_start)
    else:
        high = max_start
    return min_start, max(high, min_start + 1)


def pick_correct(predictors: Sequence[Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor, label: int,
                 n: int, batch: int = 256) -> torch.Tensor:
    """Positions (ascending) of up to ``n`` images classified as ``label``: the first predictor first, scanning
    ``images`` in order in batches, then the next predictor over the images not yet picked."""
    picked = torch.zeros(len(images), dtype=torch.bool)
    for predict in predictors:
        for lo in range(0, len(images), batch):
            short = n - int(picked.sum())
            if short <= 0:
                return torch.nonzero(picked).flatten()
            idx = torch.arange(lo, min(lo + batch, len(images)))
            idx = idx[~picked[idx]]
            if len(idx):
                right = predict(images[idx]).argmax(1).cpu() == label
                picked[idx[right][:short]] = True
    return torch.nonzero(picked).flatten()


def soft_label_init(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, the mean of the experts' logits (E, N, K) over the experts that classify it as ``labels``.

    An image no expert gets right starts from its hard label: logits giving its class 90 % probability.
    """
    n_classes = logits.shape[-1]
    right = (logits.argmax(-1) == labels).to(logits.dtype)  # (E, N)
    count = right.sum(0)
    mean_right = (logits * right[..., None]).sum(0) / count.clamp_min(1)[:, None]
    margin = math.log(0.9 * max(n_classes - 1, 1) / 0.1)
    hard = torch.nn.functional.one_hot(labels, n_classes).to(logits.dtype) * margin
    return torch.where(count[:, None] > 0, mean_right, hard)


# ---------------------------------------------------------------------------------------- budgets
OFFICIAL_ITERATIONS = 10000

def _scaled_window(base: dict[str, Any]) -> dict[str, Any]:
    """The trajectory family's budget ``base`` plus DATM's window scaled to it.

    Each window epoch is multiplied by fitted / official ``max_start_epoch`` and ``expansion_end_epoch``
    by budget / official iterations. Scalers read the official values (``Method.resolve``), so the fitted
    window is computed from the budget's own ``expert_epochs``.
    """
    def fitted(hp: dict, b: Budget) -> int:
        return fit_start(dict(hp, expert_epochs=base.get("expert_epochs", hp["expert_epochs"])), b)

    def window_epoch(key: str) -> Callable[[dict, Budget], int]:
        return lambda hp, b: round(hp[key] * fitted(hp, b) / hp["max_start_epoch"])

    def expansion_end(hp: dict, b: Budget) -> int:
        return max(1, round(hp["expansion_end_epoch"] * budget_value(base["iterations"], hp, b) / OFFICIAL_ITERATIONS))

    return dict(base, min_start_epoch=window_epoch("min_start_epoch"),
                current_max_start_epoch=window_epoch("current_max_start_epoch"), expansion_end_epoch=expansion_end)


@register_method("datm")
class DATM(TrajectoryMatching):
    summary = "trajectory matching on flat experts: growing start window, correct-pred init, soft labels, gating"
    flat_experts = True
    label_type = "soft"  # evaluated with its learned label logits (soft cross-entropy)
    defaults = dict(TrajectoryMatching.defaults, iterations=OFFICIAL_ITERATIONS, init="correct", momentum_y=0.9,
                    **DATM_ROWS[10])
    limits = dict(momentum_y=MOMENTUM, lr_y=NON_NEGATIVE, threshold=NON_NEGATIVE, min_start_epoch=NON_NEGATIVE,
                  current_max_start_epoch=AT_LEAST_1, expansion_end_epoch=AT_LEAST_1)
    budgets = {name: _scaled_window(base) for name, base in TrajectoryMatching.budgets.items()}

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        return dict(DATM_ROWS[ipc_band(ipc)])

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["init"] not in INITS:
            raise ConfigError(f"datm init must be one of {', '.join(INITS)}; got {hp['init']!r}")
        if not 0 <= hp["min_start_epoch"] < hp["max_start_epoch"]:
            raise ConfigError(f"datm needs 0 <= min_start_epoch < max_start_epoch, got {hp['min_start_epoch']} "
                              f"and {hp['max_start_epoch']}")
        if hp["expansion_end_epoch"] < 1:
            raise ConfigError("expansion_end_epoch must be at least 1")

    # ----------------------------------------------------------------------------------- hooks
    def window(self, task: Task, it: int) -> tuple[int, int]:
        hp = task.hp
        return start_window(it, hp["min_start_epoch"], hp["current_max_start_epoch"], hp["max_start_epoch"],
                            hp["expansion_end_epoch"], hp["sequential_generation"])

    def segment(self, it: int, task: Task, experts: Trajectories) -> tuple[int, int, int]:
        low, high = self.window(task, it)
        e = int(torch.randint(len(experts), (1,), generator=task.generator))
        start = int(torch.randint(low, high, (1,), generator=task.generator))
        return e, start, start + task.hp["expert_epochs"]

    def initial_images(self, task: Task, experts: Trajectories) -> torch.Tensor:
        if task.hp["init"] != "correct":
            return task.initial_images(task.hp["init"])
        predictors = expert_predictors(task, experts)
        per_class = []
        for c in range(task.n_classes):
            pool = task.data.sample_class(c, len(task.data.class_indices()[c]), task.generator)  # shuffled
            with torch.no_grad():
                chosen = pick_correct(predictors, pool, c, task.ipc)
            if len(chosen) < task.ipc:
                log.warning("datm: the experts classify only %d of class %d's %d train images correctly; the other "
                            "%d initial images are random real images of the class", len(chosen), c, len(pool),
                            task.ipc - len(chosen))
                rest = torch.ones(len(pool), dtype=torch.bool)
                rest[chosen] = False
                chosen = torch.cat([chosen, torch.nonzero(rest).flatten()[:task.ipc - len(chosen)]])
            per_class.append(pool[chosen.to(pool.device)])
        return torch.cat(per_class).to(task.device)

    def initial_labels(self, task: Task, experts: Trajectories, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = torch.stack([predict(images.detach()) for predict in expert_predictors(task, experts)])
        return soft_label_init(logits, task.hard_labels()).requires_grad_(True)

    def extra_state(self, task: Task, state: dict) -> dict[str, Any]:
        return {"opt_y": torch.optim.SGD([state["labels"]], lr=task.hp["lr_y"], momentum=task.hp["momentum_y"])}

    def accept(self, task: Task, state: dict, result: MatchResult) -> bool:
        return result.loss <= task.hp["threshold"]

    def after_step(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        return {"window_high": self.window(task, step.it)[1]}


def expert_predictors(task: Task, experts: Trajectories, batch: int = 256
                      ) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """One logits function per expert at its final snapshot, fed in batches moved to the device.

    The network's own initialisation is never used, so it comes from a throwaway generator: the task's is untouched.
    """
    student = Student(task.network(generator=torch.Generator()))

    def predictor(flat: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def predict(x: torch.Tensor) -> torch.Tensor:  # at most ``batch``, fewer where the memory budget says so
            size = min(batch, micro_batch(student.net, x[:2].to(flat.device), "predict"))
            return torch.cat([student(flat, x[i:i + size].to(flat.device)) for i in range(0, len(x), size)])
        return predict

    return [predictor(experts.final(e).to(task.device)) for e in range(len(experts))]
