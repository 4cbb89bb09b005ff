"""DC: Dataset Condensation with Gradient Matching (Zhao, Mopuri, Bilen, ICLR'21), docs/methods.md 4.1.

Every iteration draws a fresh network. For each of ``outer_loop`` rounds: per class, the gradient
of the cross-entropy on a real class batch (``batch_real`` images, all of the class if it has
fewer) and on that class's synthetic images is taken with respect to every parameter; the
synthetic side keeps its graph, the layer-wise distance (:func:`match_loss`) is summed over
classes, and the images take one SGD step. Between rounds the network trains ``inner_loop``
epochs on the synthetic set. This module exports that machinery; DSA (``methods/dsa.py``) only
overrides the two augmentation hooks, :meth:`DC.matching_views` and
:meth:`DC.training_augment`.

Loops for any ipc (:func:`loops`). The official ``get_loops`` knows ipc 1, 10, 20, 30, 40, 50
(a later revision adds 100 -> (50, 10)) and exits otherwise. Our rule:

- ``outer_loop = min(ipc, 50)``: the table's outer loop is the ipc itself, up to 50;
- ``inner_loop``: linear interpolation of the table's inner loops between its anchors
  (10, 50), (20, 25), (30, 20), (40, 15), (50, 10), rounded half up, held at 50 below ipc 10
  and at 10 above 50. The inner loop only runs *between* outer rounds, so at ipc 1 (one round) it
  never runs and we return the official placeholder 1; at ipc 2..9 it takes the ipc-10 value,
  the nearest official row where it runs. So ipc 2 -> (2, 50), 5 -> (5, 50), 15 -> (15, 38),
  100 -> (50, 10) (the official value for 100).

Both loops are hyperparameters (``outer_loop``, ``inner_loop``) preset from the rule, so
``--hp`` can override them.

BN trick: when the distillation model has BatchNorm, each outer round first forwards 16 real
images per class in train mode (the layers' own running-average update, as in the official code)
and then freezes every BN layer (eval mode) for the matching; the inner-loop training puts the
network back in train mode. The default model is ConvNet with instance norm, which needs none.

Budgets: ``paper`` is the official run. ``quick`` keeps the loop structure but scales everything
down: the budget's share of the official iterations (2 %: 20 iterations of ``outer_loop`` rounds
each), a tenth of the inner epochs (at least 1) and 64 real images per class; ipc 10 on
BreastMNIST then costs about four minutes of one core. ``smoke``: 6 iterations, one inner epoch,
8 real images per class.

Deviations from the official code: every random draw (network initialisation, real batches,
data order, augmentation) comes from ``task.generator`` instead of time-based reseeding; the
logged ``loss`` is the official ``loss_avg`` (matching loss per class and outer round, averaged
over the iteration), and ``loss_first`` the first round's (on the untrained network); the image
step backpropagates into the images only (the official code also fills the network's gradients,
which the inner loop zeroes before use). Nothing else is intended to differ.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mddbench.api.budgets import Budget, official_share
from mddbench.api.loop import distill_loop
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE
from mddbench.memory import grad_in_micro_batches, micro_batch
from mddbench.nn.augment import DSA
from mddbench.nn.losses import cross_entropy
from mddbench.nn.networks import has_batchnorm
from mddbench.nn.training import constant_schedule, train
from mddbench.registry import register_method

EPS = 1e-6
OFFICIAL_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
_ANCHORS = sorted((ipc, inner) for ipc, (_, inner) in OFFICIAL_LOOPS.items() if ipc >= 10)


def loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for any ipc; the rule is in the module docstring."""
    outer = min(ipc, 50)
    if outer == 1:
        return 1, 1
    inner = np.interp(ipc, [a for a, _ in _ANCHORS], [b for _, b in _ANCHORS])
    return outer, int(inner + 0.5)


# ------------------------------------------------------------------------------------ distances
def distance_wb(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """Sum over output rows of 1 - cos(real row, synthetic row); 1-D tensors (bias, norm) give 0.

    Weights are viewed as [out, everything else]: conv [out, in*k*k] (or in*k*k*k in 3D), linear as
    it is.
    """
    if g_real.ndim < 2:
        return torch.zeros((), device=g_real.device, dtype=g_real.dtype)
    r = g_real.reshape(g_real.shape[0], -1)
    s = g_syn.reshape(g_syn.shape[0], -1)
    return (1 - (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + EPS)).sum()


def match_loss(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], metric: str = "ours"
               ) -> torch.Tensor:
    """DC's ``match_loss``: 'ours' (layer-wise, :func:`distance_wb`), 'mse' or 'cos' over all gradients."""
    if metric == "ours":
        return torch.stack([distance_wb(r, s) for r, s in zip(g_real, g_syn)]).sum()
    r = torch.cat([g.reshape(-1) for g in g_real])
    s = torch.cat([g.reshape(-1) for g in g_syn])
    if metric == "mse":
        return ((s - r) ** 2).sum()
    if metric == "cos":
        return 1 - (r * s).sum() / (r.norm() * s.norm() + EPS)
    raise ConfigError(f"unknown dis_metric {metric!r}; use 'ours', 'mse' or 'cos'")


DISTANCES = ("ours", "mse", "cos")


# ------------------------------------------------------------------------------------- helpers
@torch.no_grad()
def freeze_batchnorm(net: torch.nn.Module, real: torch.Tensor) -> None:
    """DC's BN trick: one train-mode forward of real images updates the running stats, then freeze."""
    net.train()
    net(real)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def class_gradients(net: torch.nn.Module, x: torch.Tensor, c: int, create_graph: bool = False
                    ) -> tuple[torch.Tensor, ...]:
    """Gradient of the cross-entropy of ``x`` (all of class ``c``) with respect to every parameter."""
    y = torch.full((len(x),), c, dtype=torch.long, device=x.device)
    params = list(net.parameters())
    if create_graph:  # the synthetic side: ipc images, kept whole for the graph to the images
        return torch.autograd.grad(cross_entropy(net(x), y), params, create_graph=True)
    # the real side, a target without a graph: summed over micro-batches within the memory budget
    return grad_in_micro_batches(lambda part: cross_entropy(net(x[part]), y[part]), len(x),
                                 micro_batch(net, x, "real-gradient"), params)


# -------------------------------------------------------------------------------------- method
@register_method("dc")
class DC(Method):
    """DC's loop; DSA changes only how real and synthetic images are viewed (augmentation)."""

    summary = "gradient matching: layer-wise gradient distance per class on fresh networks (noise init)"

    defaults: dict[str, Any] = dict(
        iterations=1000, lr_img=0.1, momentum_img=0.5, lr_net=0.01, batch_real=256, batch_train=256,
        outer_loop=10, inner_loop=50, init="noise", dis_metric="ours", model="convnet", bn_images=16)
    limits = dict(iterations=NON_NEGATIVE, lr_img=POSITIVE, momentum_img=MOMENTUM, lr_net=POSITIVE,
                  batch_real=AT_LEAST_1, batch_train=AT_LEAST_1, outer_loop=AT_LEAST_1, inner_loop=NON_NEGATIVE,
                  bn_images=AT_LEAST_1)
    budgets = {
        "quick": dict(iterations=official_share,
                      inner_loop=lambda hp, b: max(1, hp["inner_loop"] // 10), batch_real=64),
        "smoke": dict(iterations=6, inner_loop=1, batch_real=8),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        outer, inner = loops(ipc)
        return {"outer_loop": outer, "inner_loop": inner}

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["dis_metric"] not in DISTANCES:
            raise ConfigError(f"unknown dis_metric {hp['dis_metric']!r}; use {', '.join(DISTANCES)}")
        if hp["outer_loop"] < 1 or hp["inner_loop"] < 0:
            raise ConfigError("outer_loop must be >= 1 and inner_loop >= 0")

    # ----------------------------------------------------------------------------------- hooks
    def matching_views(self, task: Task, real: torch.Tensor, syn: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The real and synthetic class batches the gradients are taken on (DC: as they are)."""
        return real, syn

    def training_augment(self, task: Task) -> DSA | None:
        """The augmentation of the inner loop's minibatches (DC: none)."""
        return None

    # ------------------------------------------------------------------------------------ loop
    def matching_loss(self, task: Task, net: torch.nn.Module, images: torch.Tensor, backward: bool = False
                      ) -> torch.Tensor:
        """Summed gradient distance over classes for the network as it stands. ``backward``: each class's
        term goes into ``images.grad`` as soon as it is computed, so only one class's double-backward graph
        is alive at a time (the sum's gradient, in a third of the memory at 3 classes), and the sum is
        returned detached."""
        hp, ipc = task.hp, task.ipc
        loss = torch.zeros((), device=task.device)
        for c in range(task.n_classes):
            real, syn = self.matching_views(task, task.real_batch(c, hp["batch_real"]),
                                            images[c * ipc:(c + 1) * ipc])
            g_real = class_gradients(net, real, c)
            g_syn = class_gradients(net, syn, c, create_graph=True)
            term = match_loss(g_syn, g_real, hp["dis_metric"])
            if backward:
                term.backward(inputs=[images])  # the network's gradients are not needed
                term = term.detach()
            loss = loss + term
        return loss

    def train_network(self, task: Task, net: torch.nn.Module, opt: torch.optim.Optimizer,
                      images: torch.Tensor, labels: torch.Tensor) -> None:
        """``inner_loop`` shuffled epochs of plain SGD on the (detached) synthetic set."""
        train(net, images, labels, constant_schedule(opt, task.hp["inner_loop"], len(images)), task.hp["batch_train"],
              [task.generator], self.training_augment(task))

    def iteration(self, task: Task, state: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
        hp = task.hp
        images, opt_img = state["images"], state["opt_img"]
        net = task.network()
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])
        bn = has_batchnorm(net)
        losses = []
        for ol in range(hp["outer_loop"]):
            if bn:
                freeze_batchnorm(net, torch.cat([task.real_batch(c, hp["bn_images"]) for c in range(task.n_classes)]))
            opt_img.zero_grad(set_to_none=True)
            loss = self.matching_loss(task, net, images, backward=True)
            opt_img.step()
            losses.append(float(loss.detach()))
            if ol == hp["outer_loop"] - 1:
                break
            self.train_network(task, net, opt_net, images.detach().clone(), labels)
        return {"loss": sum(losses) / (len(losses) * task.n_classes), "loss_first": losses[0] / task.n_classes}

    def distill(self, task: Task) -> SyntheticSet:
        hp = task.hp
        images, labels, state = task.image_state()
        distill_loop(task, hp["iterations"], state, lambda it: self.iteration(task, state, labels),
                     lambda: task.synset(images, labels), name=self.name)
        return task.synset(images, labels)

