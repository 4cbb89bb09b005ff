"""The one unroll engine of every trajectory method (MTT, SMDD, FTD, DATM, SeqMatch, HaBa, PTM).

A student network runs functionally from a flat parameter vector (MTT's ReparamModule, here
``torch.func.functional_call``). :func:`match` unrolls it for ``steps`` SGD steps on minibatches of
the synthetic set (per-sample DSA, hard or soft labels, learnable step size), scores the end point
with the normalised parameter distance ``||w_N - target||^2 / ||start - target||^2`` (optionally
masked, for SMDD), and backpropagates into the images, the step size and soft labels.

``memory="full"`` keeps the whole unroll graph (exact gradient, memory linear in steps).
``memory="constant"`` is TESLA's gradient (as in DATM_tesla.py): the forward pass keeps only each
step's parameters and random state; a second pass recomputes one step at a time. It drops the
dependence of later steps' parameters on earlier images, so it is an approximation; it changes
the method; trajectory methods choose it where a full unroll would not fit (``FULL_UNROLL_BYTES`` in
:mod:`mddbench.trajectory.matching`) and otherwise on request (``--hp unroll_memory=constant``). Each
recomputed step runs in micro-batches within the activation budget (:mod:`mddbench.memory`): the step's
gradient is a mean over its images, so its parts add up to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch.func import functional_call

from mddbench.memory import graph_mb, micro_batch
from mddbench.nn.augment import DSA
from mddbench.nn.losses import cross_entropy


class Student:
    """Calls ``net`` with parameters taken from one flat vector."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.numels = [p.numel() for _, p in net.named_parameters()]
        self.size = sum(self.numels)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        views = {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}
        return functional_call(self.net, views, (x,))


class Source(Protocol):
    """Where the student's minibatches come from (a tensor of images, or rendered images)."""

    def __len__(self) -> int: ...

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class TensorSource:
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.images.device)
        return self.images[idx], self.labels[idx]


def minibatches(n: int, batch: int | None, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """MTT's schedule: shuffled chunks of the set, reshuffled whenever they run out."""
    batch = batch or n
    out: list[torch.Tensor] = []
    chunks: list[torch.Tensor] = []
    while len(out) < steps:
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        out.append(chunks.pop())
    return out


def param_distance(end: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised parameter distance ||end - target||^2 / ||start - target||^2 (masked sums for SMDD)."""
    num = (end - target) ** 2
    den = (start - target) ** 2
    if mask is not None:
        num, den = num * mask, den * mask
    return num.sum() / den.sum().clamp_min(1e-12)


@dataclass
class MatchResult:
    loss: float
    end: torch.Tensor  # the student's final parameters (detached)
    ce: float  # mean student cross-entropy over the unroll
    graph_mb: float = 0.0  # tensors autograd kept for the backward pass (what grows with the steps)




def _step_batch(source: Source, idx: torch.Tensor, augment: DSA | None, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = source.batch(idx, generator)
    if augment is not None:
        x = augment(x, generator)
    return x, y


def match(student: Student, source: Source, lr: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
          steps: int, generator: torch.Generator, batch: int | None = None, augment: DSA | None = None,
          memory: str = "full", mask: torch.Tensor | None = None, weight: float = 1.0,
          loss_fn: Callable[..., torch.Tensor] = param_distance) -> MatchResult:
    """Unroll the student from ``start``, score against ``target``, accumulate ``weight * dloss`` into grads.

    Gradients reach every leaf the source's images and labels depend on, and ``lr`` when it
    requires grad. Nothing is stepped: the caller owns the optimisers.
    """
    start, target = start.detach(), target.detach()
    schedule = minibatches(len(source), batch, steps, generator)
    if memory == "full":
        w = start.clone().requires_grad_(True)
        ces = []
        for idx in schedule:
            x, y = _step_batch(source, idx, augment, generator)
            ce = cross_entropy(student(w, x), y)
            g = torch.autograd.grad(ce, w, create_graph=True)[0]
            w = w - lr * g
            ces.append(ce.detach())
        loss = loss_fn(w, start, target, mask)
        kept = graph_mb(loss)
        (weight * loss).backward()
        return MatchResult(float(loss.detach()), w.detach(), float(torch.stack(ces).mean()) if ces else 0.0, kept)
    if memory == "constant":
        return _match_constant(student, source, lr, start, target, schedule, generator, augment, mask, weight, loss_fn)
    raise ValueError(f"memory must be 'full' or 'constant', got {memory!r}")


def _parts(n: int, micro: int) -> list[slice]:
    return [slice(i, min(i + micro, n)) for i in range(0, n, micro)]


def _match_constant(student, source, lr, start, target, schedule, generator, augment, mask, weight, loss_fn
                    ) -> MatchResult:
    """TESLA: one forward pass without a graph, then one recomputed step at a time."""
    lr_value = lr.detach()
    w = start.clone()
    points, states, ces = [], [], []
    grad_sum = torch.zeros_like(start)
    micro = None
    for idx in schedule:
        states.append(generator.get_state())
        w_req = w.detach().requires_grad_(True)
        with torch.no_grad():
            x, y = _step_batch(source, idx, augment, generator)
        if micro is None:  # a recomputed step keeps the forward graph, its gradient's graph and the double
            # backward's buffers: about 4 forwards (counted as 2, MTT and PTM at 112 px ipc 10 peaked at 3.3 and
            # 3.1 GB, benchmarks/bench_memory.py)
            micro = micro_batch(student.net, x, "unroll", graphs=4)
        ce, g = torch.zeros(()), torch.zeros_like(w)
        for p in _parts(len(x), micro):  # the mean loss's gradient, part by part (one part: exactly as whole)
            share = (p.stop - p.start) / len(x)
            ce_p = cross_entropy(student(w_req, x[p]), y[p]) * share
            g = g + torch.autograd.grad(ce_p, w_req)[0]
            ce = ce + ce_p.detach().cpu()
        points.append(w.detach())
        grad_sum += g
        w = (w - lr_value * g).detach()
        ces.append(ce.detach())
    end = w.detach().requires_grad_(True)
    loss = loss_fn(end, start, target, mask)
    d_end = torch.autograd.grad(loss, end)[0]  # dloss/dend; end = start - lr * sum(g_i)
    if lr.requires_grad:  # d loss / d lr = d_end . (-sum g_i)
        (weight * (d_end * -grad_sum).sum().detach() * lr).backward()
    replay = torch.Generator()
    v = (-lr_value * d_end * weight).detach()
    peak = 0.0
    for idx, state, w_i in zip(schedule, states, points):
        replay.set_state(state)
        w_req = w_i.detach().requires_grad_(True)
        x, y = _step_batch(source, idx, augment, replay)
        parts = _parts(len(x), micro or len(x))
        for i, p in enumerate(parts):  # the step's gradient is a mean over images: its parts add up
            g = torch.autograd.grad(cross_entropy(student(w_req, x[p]), y[p]), w_req, create_graph=True)[0]
            s = (g * v).sum() * ((p.stop - p.start) / len(x))
            peak = max(peak, graph_mb(s))
            s.backward(retain_graph=i < len(parts) - 1)  # the images' augmentation graph serves every part
    return MatchResult(float(loss.detach()), end.detach(), float(torch.stack(ces).mean()) if ces else 0.0, peak)
