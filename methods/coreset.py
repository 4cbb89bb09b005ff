"""Coreset selection, shared by the `herding` and `kcenter` rows (spec new_methods.md §3).

A coreset row returns ``ipc`` *real* train images per class, class-major, with hard labels, chosen
greedily in a feature space: :func:`herding_order` (DeepCore ``deepcore/methods/herding.py`` L63-87)
and :func:`k_center_order` (DeepCore ``deepcore/methods/kcentergreedy.py`` L8-65, Sener & Savarese
2018). Both work on one class's feature matrix at a time (DeepCore's ``--balance``, its main.py default),
with the budget ``ipc`` per class instead of DeepCore's fraction; Euclidean distance, no feature
normalisation (as DeepCore). This module registers nothing; the two rows are ``methods/herding.py``
and ``methods/kcenter.py``.

**The feature extractor is ours, a deviation from DeepCore** (spec §3.5): the harness's own expert
ConvNet, i.e. the final snapshot of expert ``expert`` (0) of the default MTT buffer (``MTT_RECIPE``: SGD,
lr 0.01, DSA, trained on the real train split for the budget's ``expert_epochs``; the same, cached
trajectories the trajectory rows match), embedded with ``net.embed`` (the features before the
classifier, as DM and CAFE embed; 1152-d for a 28 px ConvNet, 2048-d at 32 px), in eval mode without gradients.
DeepCore trains a ResNet-18 from scratch for 40 epochs (herding) or fine-tunes an ImageNet-pretrained
torchvision ResNet-18 at 224 px (k-center, spec §3.2); neither is comparable with the benchmark's
ConvNet, and ImageNet weights are unavailable offline. The choice is kept in the set's meta
(``extractor``) and so in every record of it. Networks with BatchNorm are refused: an expert keeps
its parameters only, not BatchNorm's running statistics.

Budgets: no iterations, so nothing to share (as ``random``: :func:`mddbench.api.parity.method_share`
is None). The selection is exact at every budget; the extractor's training is the budget's expert
buffer, the same that every trajectory row gets, so its scaling is the budget's own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from mddbench.api.budgets import Budget
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import NON_NEGATIVE
from mddbench.memory import in_chunks, micro_batch
from mddbench.nn.networks import create_network, has_batchnorm
from mddbench.trajectory.experts import MTT_RECIPE, ExpertRecipe

DEVIATION = ("feature extractor: the harness's expert ConvNet (final snapshot of an MTT expert, net.embed) "
             "instead of DeepCore's ResNet-18 (trained from scratch for herding, ImageNet-pretrained for k-center)")


# ------------------------------------------------------------------------------------ selection
def herding_order(features: torch.Tensor, k: int, direction: str = "argmin") -> list[int]:
    """Herding on one class's features (n, d): ``k`` distinct row indices in the order picked.

    Pick ``i`` (0-based) takes, among the unpicked rows x, the one whose distance
    ``||(i + 1) mu - sum_{s picked} phi_s - phi_x||`` is smallest (``argmin``: textbook herding, the row that
    brings the running mean of the picks closest to the class mean mu) or largest (``argmax``: what
    DeepCore's herding.py L82 does). Ties go to the first index. Computed in float64.
    """
    if direction not in ("argmin", "argmax"):
        raise ConfigError(f"herding direction is 'argmin' (textbook) or 'argmax' (DeepCore's), got {direction!r}")
    f = features.detach().to(torch.float64)
    n = len(f)
    _check_k(k, n)
    mu = f.mean(0)
    total = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool, device=f.device)
    blocked = float("inf") if direction == "argmin" else float("-inf")
    order: list[int] = []
    for i in range(k):
        dist = torch.linalg.vector_norm((i + 1) * mu - total - f, dim=1).masked_fill(taken, blocked)
        p = int(dist.argmin() if direction == "argmin" else dist.argmax())
        order.append(p)
        taken[p] = True
        total += f[p]
    return order


def k_center_order(features: torch.Tensor, k: int, first: int) -> list[int]:
    """Greedy k-center (farthest-point traversal) on one class's features (n, d), starting at row ``first``
    (which counts toward ``k``): every further pick is the unpicked row farthest from its nearest pick.
    Ties go to the first index; ``k`` distinct indices in the order picked. Computed in float64."""
    f = features.detach().to(torch.float64)
    n = len(f)
    _check_k(k, n)
    if not 0 <= first < n:
        raise ConfigError(f"k-center's first centre must be a row of the class (0..{n - 1}), got {first}")
    order = [first]
    nearest = torch.linalg.vector_norm(f - f[first], dim=1)
    for _ in range(k - 1):
        nearest[order] = -1.0  # picked rows are never picked again, even where rows coincide
        p = int(nearest.argmax())
        order.append(p)
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(f - f[p], dim=1))
    return order


def covering_radius(features: torch.Tensor, picked: list[int] | torch.Tensor) -> float:
    """max over rows of the distance to the nearest picked row (what k-center greedily keeps small)."""
    f = features.detach().to(torch.float64)
    return float(torch.cdist(f, f[torch.as_tensor(picked, device=f.device)]).min(1).values.max())


def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ConfigError(f"cannot select {k} of {n} rows")


# ------------------------------------------------------------------------------------- the rows
class CoresetSelection(Method):
    """A row that selects ``ipc`` real train images per class in the expert's feature space."""

    label_type = "hard"
    work_unit = "selection (no iterations)"
    selects_real = True  # real patient images, as `random`'s: every one a near copy by construction
    defaults: dict[str, Any] = dict(model="convnet", expert=0)
    limits = dict(expert=NON_NEGATIVE)

    def recipe(self, hp: dict) -> ExpertRecipe:
        return replace(MTT_RECIPE, model=hp["model"])

    def expert_recipes(self, hp: dict) -> list[ExpertRecipe]:
        return [self.recipe(hp)]

    def check(self, hp: dict[str, Any], spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        experts = self.recipe(hp).for_budget(budget).n_experts
        if hp["expert"] >= experts:
            raise ConfigError(f"{self.name}: expert {hp['expert']} does not exist: the {budget.name} budget's buffer "
                              f"has {experts} experts (0..{experts - 1})")
        net = create_network(hp["model"], spec.channels, spec.n_classes, spec.size, spec.dims)
        if has_batchnorm(net):
            raise ConfigError(f"{self.name}: model {hp['model']!r} has BatchNorm, whose running statistics an expert "
                              "does not keep; use a model without it (the default, convnet)")
        if not hasattr(net, "embed"):
            raise ConfigError(f"{self.name}: model {hp['model']!r} has no embed(); the selection needs its features")

    def order(self, task: Task, features: torch.Tensor) -> list[int]:
        """The picks (row indices of ``features``, one class's) in the order chosen."""
        raise NotImplementedError

    def describe(self, task: Task) -> dict[str, Any]:
        """What the set's meta says about the selection beyond the extractor."""
        return {}

    def distill(self, task: Task) -> SyntheticSet:
        check_class_sizes(task)  # before any expert is trained
        net = extractor(task, self.recipe(task.hp))
        x = task.data.x["train"]
        chosen = []
        for idx in task.data.class_indices():
            idx = idx.to(x.device)
            features = embed(net, x[idx].to(task.device))
            chosen.append(idx[torch.as_tensor(self.order(task, features), device=idx.device)])
        picked = torch.cat(chosen)
        meta = {"extractor": {"network": task.hp["model"], "expert_recipe": "mtt", "expert": task.hp["expert"],
                              "snapshot": "final", "embedding": f"net.embed ({features.shape[1]} dims)",
                              "deviation": DEVIATION},
                "selection": {"train_indices": picked.tolist(), **self.describe(task)}}
        return task.synset(x[picked].to(task.device), task.hard_labels(), meta=meta)


def check_class_sizes(task: Task) -> None:
    """ConfigError naming the smallest class when it holds fewer train images than ``ipc``."""
    counts = task.data.class_counts()
    small = min(range(len(counts)), key=counts.__getitem__)
    if counts[small] < task.ipc:
        names = task.spec.label_names
        name = f" ({names[small]})" if small < len(names) else ""
        raise ConfigError(f"ipc {task.ipc} is larger than class {small}{name}, which has {counts[small]} train "
                          f"images; a coreset selects distinct real images, so use --ipc {counts[small]} or less")


def extractor(task: Task, recipe: ExpertRecipe) -> torch.nn.Module:
    """The expert network at its final snapshot, in eval mode (its own initialisation is never used: a
    throwaway generator, the task's is untouched)."""
    if task.experts is None:
        raise ConfigError("a coreset row needs the expert trajectories (the task has no expert provider)")
    flat = task.experts(recipe).final(task.hp["expert"])
    net = task.network(task.hp["model"], generator=torch.Generator())
    torch.nn.utils.vector_to_parameters(flat.to(task.device), net.parameters())
    return net.eval()


@torch.no_grad()
def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net.embed`` of every image, in chunks the memory budget allows."""
    return in_chunks(net.embed, x, micro_batch(net, x[:2], "embed", net.embed))
