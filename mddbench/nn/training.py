"""The one loop that trains a network on tensors: evaluation, experts, DC's and CAFE's inner loops.

Every epoch draws a shuffled order of the leading ``end`` items from the network's generator and
walks it in minibatches; each minibatch is rendered (a synthetic set's renderer, when it has one),
augmented (DSA, per sample) and fed to ``loss``, and ``step`` applies the update (plain SGD's
zero-grad / backward / step by default; FTD's experts use GSAM, :func:`gsam_step`). The schedule says, epoch by epoch,
how many items to train on and with which optimiser, so evaluation can re-create its SGD at half
time and at every stage of a sequential set while the other callers keep one optimiser.

A minibatch larger than the activation budget allows runs as micro-batches whose gradients add up
to the minibatch's (:mod:`mddbench.memory`): ``step`` receives a ``backward`` that fills ``.grad``
and returns the minibatch's mean loss, never the loss tensor itself.

Several networks packed into one (:mod:`mddbench.nn.batched`) train side by side: network ``i`` draws
its order, renderer draws and augmentation from ``generators[i]`` in the order a lone network draws
them, and the loss is the sum of the networks' own mean losses, so each gets its own gradient.
"""
from __future__ import annotations

from itertools import repeat
from typing import Callable, Iterable, Protocol, Sequence

import torch

from mddbench.memory import backward_in_micro_batches, micro_batch
from mddbench.nn.augment import DSA, Draw
from mddbench.nn.batched import augment_together
from mddbench.nn.losses import cross_entropy


class Renderer(Protocol):
    """Turns stored tensors into training images (e.g. HaBa: base x random hallucinator)."""

    def render(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> "Renderer": ...


# per epoch: (leading items to train on, the optimiser that steps)
Schedule = Iterable[tuple[int, torch.optim.Optimizer]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (backward: accumulates the minibatch's gradient into .grad and returns its mean loss, optimiser)
Step = Callable[[Callable[[], torch.Tensor], torch.optim.Optimizer], None]


def constant_schedule(optimizer: torch.optim.Optimizer, n_epochs: int, n_items: int) -> Schedule:
    """``n_epochs`` epochs over all ``n_items`` with one optimiser."""
    return repeat((n_items, optimizer), n_epochs)


def sgd_step(backward: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> None:
    opt.zero_grad(set_to_none=True)
    backward()
    opt.step()


def gsam_step(params: Sequence[torch.Tensor], backward: Callable[[], torch.Tensor], opt: torch.optim.Optimizer,
              rho: float, alpha: float, adaptive: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """One GSAM step (Zhuang et al. 2022, as FTD's buffer uses it).

    g = grad at w; perturb w by e = rho * s * g / ||s * g|| with s = |w| (adaptive) or 1, and
    e scaled by s once more (ASAM); g' = grad at w + e; subtract alpha times the component of g
    orthogonal to g'; undo the perturbation; let the base optimiser step with the result.
    ``backward()`` accumulates the loss's gradient into the parameters' ``.grad`` (in micro-batches,
    :mod:`mddbench.memory`) and returns the loss.
    """
    params = list(params)

    def gradient() -> tuple[torch.Tensor, list[torch.Tensor]]:
        for p in params:
            p.grad = None
        value = backward()
        return value, [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    loss, grads = gradient()
    with torch.no_grad():
        if adaptive:
            norm = torch.sqrt(sum(((p.abs() * g) ** 2).sum() for p, g in zip(params, grads)))
            perturb = [rho * p * p * g / (norm + eps) for p, g in zip(params, grads)]
        else:
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
            perturb = [rho * g / (norm + eps) for g in grads]
        for p, e in zip(params, perturb):
            p.add_(e)
    _, grads_p = gradient()
    with torch.no_grad():
        for p, e in zip(params, perturb):
            p.sub_(e)
        inner = sum((g * gp).sum() for g, gp in zip(grads, grads_p))
        n_old = torch.sqrt(sum((g ** 2).sum() for g in grads))
        n_new = torch.sqrt(sum((gp ** 2).sum() for gp in grads_p))
        cosine = inner / (n_old * n_new + eps)
        for p, g, gp in zip(params, grads, grads_p):
            vertical = g - cosine * n_old * gp / (n_new + eps)
            p.grad = gp - alpha * vertical
    opt.step()
    return loss.detach()


def _draw_batch(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, renderer: Renderer | None,
                augment: DSA | None, generator: torch.Generator) -> tuple[torch.Tensor, list[Draw], torch.Tensor]:
    """One network's next batch: its images (rendered), its augmentation draw, its labels."""
    x = images[idx]
    if renderer is not None:
        x = renderer.render(x, generator)
    return x, augment.sample(x, generator) if augment is not None else [], labels[idx]


def train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, schedule: Schedule, batch: int,
          generators: list[torch.Generator], augment: DSA | None = None, renderer: Renderer | None = None,
          loss: Loss = cross_entropy, step: Step = sgd_step,
          after_epoch: Callable[[], None] | None = None) -> None:
    """Train ``model`` (``len(generators)`` packed networks) on (images, labels) along ``schedule``.

    ``after_epoch`` runs after every epoch (experts keep a snapshot there). The model is put in
    train mode; the data stays where it is, so it must be on the model's device.
    """
    n = len(generators)
    model.train()
    micro = None
    for end, opt in schedule:
        orders = [torch.randperm(end, generator=g).split(batch) for g in generators]
        for idxs in zip(*orders):
            xs, draws, ys = zip(*(_draw_batch(images, labels, idx.to(images.device), renderer, augment, g)
                                  for idx, g in zip(idxs, generators)))
            xs, y = augment_together(augment, xs, draws), torch.cat(ys)
            x = xs[0] if n == 1 else torch.cat(xs, 1)
            if micro is None:
                micro = micro_batch(model, x, "train")
            labels_of = y if n == 1 else y.unflatten(0, (n, len(x)))  # packed: network-major

            def part_loss(part: slice) -> torch.Tensor:
                logits = model(x[part])
                if n == 1:
                    return loss(logits, labels_of[part])
                logits = logits.view(len(logits), n, -1).transpose(0, 1).reshape(-1, logits.shape[1] // n)
                return loss(logits, labels_of[:, part].flatten(0, 1)) * n  # every network's own mean loss

            step(lambda: backward_in_micro_batches(part_loss, len(x), micro), opt)
        if after_epoch is not None:
            after_epoch()
