"""DM: Distribution Matching (Zhao & Bilen, WACV'23), docs/methods.md 4.3.

Every iteration draws a fresh randomly initialised network (parameters frozen, train mode) and,
per class, matches the mean embedding (``net.embed``: the features before the classifier) of a
real batch with that of the class's synthetic images, both through one siamese DSA draw
(:meth:`DSA.pair`); the loss is the sum over classes of the squared distance of the means, and
one SGD step (lr_img 1, momentum 0.5) moves the images. No network is ever trained.

Deviations from the official ``main_DM.py``: every random draw (network, real batches, DSA) comes
from the task's generator instead of time-based reseeding; a class smaller than ``batch_real``
contributes all its images (the official BatchNorm path reshapes to ``batch_real`` per class and
would break); networks with BatchNorm see all classes in one forward pass as in the official
code, split back by each class's own count.

Budgets: ``quick`` runs its share of the official iterations (2 %: 400) with 128 real images per
class (BreastMNIST ipc 10: about 280 single-thread CPU seconds); ``smoke`` 10 with 16.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch

from mddbench.api.budgets import official_share
from mddbench.api.loop import distill_loop
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE
from mddbench.memory import in_chunks, micro_batch
from mddbench.nn.augment import DEFAULT_STRATEGY, DSA
from mddbench.nn.networks import has_batchnorm
from mddbench.registry import register_method

R = TypeVar("R")


# ------------------------------------------------------------------------- shared with CAFE
def class_views(images: torch.Tensor, n_classes: int) -> list[torch.Tensor]:
    """The class-major synthetic set as one view per class (gradients flow to ``images``)."""
    return list(images.chunk(n_classes))


def siamese_batches(task: Task, syn: list[torch.Tensor], batch_real: int, augment: DSA | None
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per class: a fresh real batch and the class's synthetic images, through one shared DSA draw."""
    reals, syns = [], []
    for c, s in enumerate(syn):
        r = task.real_batch(c, batch_real)
        if augment is not None:
            r, s = augment.pair(r, s, task.generator)
        reals.append(r)
        syns.append(s)
    return reals, syns


def per_class(fn: Callable[[torch.Tensor], list[torch.Tensor]], batches: list[torch.Tensor], joint: bool,
              reduce: Callable[[list[torch.Tensor]], R]) -> list[R]:
    """``reduce(fn(batch))`` for every class batch.

    ``fn`` returns tensors with a leading batch axis. ``joint=True`` runs one forward pass over all
    classes and splits the outputs back by each class's count (BatchNorm must see mixed batches, as
    in the official code); otherwise one pass per class keeps only one class's activations alive.
    """
    if not joint:
        return [reduce(fn(b)) for b in batches]
    counts = [len(b) for b in batches]
    outs = [t.split(counts) for t in fn(torch.cat(batches))]
    return [reduce([o[c] for o in outs]) for c in range(len(batches))]


def dm_loss(net: torch.nn.Module, reals: list[torch.Tensor], syns: list[torch.Tensor]) -> torch.Tensor:
    """sum_c || mean embed(real_c) - mean embed(syn_c) ||^2, real embeddings without gradient."""
    joint = has_batchnorm(net)

    def mean_embedding(outs: list[torch.Tensor]) -> torch.Tensor:
        return outs[0].mean(0)

    def embed(x: torch.Tensor) -> list[torch.Tensor]:
        return [net.embed(x)]

    def embed_in_chunks(x: torch.Tensor) -> list[torch.Tensor]:  # no graph: within the memory budget
        return [in_chunks(net.embed, x, micro_batch(net, x, "embed", net.embed))]

    with torch.no_grad():
        real = torch.stack(per_class(embed if joint else embed_in_chunks, reals, joint, mean_embedding))
    syn = torch.stack(per_class(embed, syns, True, mean_embedding))
    return ((real - syn) ** 2).sum()


def dsa_or_none(strategy: str) -> DSA | None:
    """The siamese augmentation, or None for 'none' (the official ``--dsa_strategy none`` switches DSA off)."""
    return None if strategy.lower() in ("", "none") else DSA(strategy)


# ---------------------------------------------------------------------------------- method
@register_method("dm")
class DM(Method):
    summary = "distribution matching: mean embeddings of fresh random networks, siamese DSA"
    defaults: dict[str, Any] = dict(
        iterations=20000, lr_img=1.0, momentum_img=0.5, batch_real=256, init="real",
        dsa_strategy=DEFAULT_STRATEGY, model="convnet")
    limits = dict(iterations=NON_NEGATIVE, lr_img=POSITIVE, momentum_img=MOMENTUM, batch_real=AT_LEAST_1)
    budgets = {
        "quick": dict(iterations=official_share, batch_real=128),
        "smoke": dict(iterations=10, batch_real=16),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        """The readme's CIFAR-10 rows: lr_img 1 up to ipc 50, 10 from ipc 100."""
        return {"lr_img": 10.0} if ipc >= 100 else {}

    def distill(self, task: Task) -> SyntheticSet:
        hp = task.hp
        images, labels, state = task.image_state()
        augment = dsa_or_none(hp["dsa_strategy"])

        def step(it: int) -> dict[str, Any]:
            net = task.network(generator=task.generator).train().requires_grad_(False)
            reals, syns = siamese_batches(task, class_views(images, task.n_classes), hp["batch_real"], augment)
            loss = dm_loss(net, reals, syns)
            state["opt_img"].zero_grad(set_to_none=True)
            loss.backward()
            state["opt_img"].step()
            return {"loss": loss.detach()}

        distill_loop(task, hp["iterations"], state, step, lambda: task.synset(images, labels), name=self.name)
        return task.synset(images, labels)
