"""The one unroll engine of every trajectory method (MTT, SMDD, FTD, DATM, SeqMatch, HaBa, PTM).

A student network runs functionally from a flat parameter vector (MTT's ReparamModule, here
``torch.func.functional_call``). :func:`match` unrolls it for ``steps`` SGD steps on minibatches of
the synthetic set (per-sample DSA, hard or soft labels, learnable step size), scores the end point
with the normalised parameter distance ``||w_N - target||^2 / ||start - target||^2`` (optionally
masked, for SMDD), and backpropagates into the images, the step size and soft labels.

``keep_steps`` asks for the student's parameters after given steps (HoP-TM's midpoint ``w_{N//2}``):
``loss_fn`` then also receives ``points={k: w_k}`` (with their graph, so a loss on them trains the images)
and :class:`MatchResult` carries them detached in ``points``. Without ``keep_steps`` nothing changes.

``memory="full"`` keeps the whole unroll graph (exact gradient, memory linear in steps).
``memory="constant"`` is TESLA's gradient (as in DATM_tesla.py): the forward pass keeps only each
step's parameters and random state; a second pass recomputes one step at a time. It drops the
dependence of later steps' parameters on earlier images, so it is an approximation. A kept point
``w_k = start - lr * sum_{i<k} g_i`` gets the same approximation: its gradient reaches the images and
``lr`` through the gradients ``g_i`` of the steps before it (each at its recorded, detached ``w_i``),
i.e. exactly what the constant unroll of the first ``k`` steps gives for a loss on its end point; it changes
the method; trajectory methods choose it where a full unroll would not fit (``FULL_UNROLL_BYTES`` in
:mod:`mddbench.trajectory.matching`) and otherwise on request (``--hp unroll_memory=constant``). Each
recomputed step runs in micro-batches within the activation budget (:mod:`mddbench.memory`): the step's
gradient is a mean over its images, so its parts add up to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

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
    points: dict[int, torch.Tensor] = field(default_factory=dict)  # keep_steps' parameters (detached)


def _step_batch(source: Source, idx: torch.Tensor, augment: DSA | None, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = source.batch(idx, generator)
    if augment is not None:
        x = augment(x, generator)
    return x, y


def match(student: Student, source: Source, lr: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
          steps: int, generator: torch.Generator, batch: int | None = None, augment: DSA | None = None,
          memory: str = "full", mask: torch.Tensor | None = None, weight: float = 1.0,
          loss_fn: Callable[..., torch.Tensor] = param_distance, keep_steps: Sequence[int] = ()) -> MatchResult:
    """Unroll the student from ``start``, score against ``target``, accumulate ``weight * dloss`` into grads.

    Gradients reach every leaf the source's images and labels depend on, and ``lr`` when it
    requires grad. Nothing is stepped: the caller owns the optimisers. ``keep_steps``: steps ``k`` in
    ``0..steps`` whose parameters ``w_k`` (``w_0 = start``) ``loss_fn`` receives as ``points={k: w_k}``.
    """
    start, target = start.detach(), target.detach()
    keep = sorted(set(keep_steps))
    if keep and not 0 <= keep[0] <= keep[-1] <= steps:
        raise ValueError(f"keep_steps must lie in 0..{steps}, got {list(keep_steps)}")
    schedule = minibatches(len(source), batch, steps, generator)
    if memory == "full":
        w = start.clone().requires_grad_(True)
        points = {0: w} if 0 in keep else {}
        ces = []
        for k, idx in enumerate(schedule, 1):
            x, y = _step_batch(source, idx, augment, generator)
            ce = cross_entropy(student(w, x), y)
            g = torch.autograd.grad(ce, w, create_graph=True)[0]
            w = w - lr * g
            ces.append(ce.detach())
            if k in keep:
                points[k] = w
        loss = loss_fn(w, start, target, mask, points=points) if keep else loss_fn(w, start, target, mask)
        kept = graph_mb(loss)
        (weight * loss).backward()
        return MatchResult(float(loss.detach()), w.detach(), float(torch.stack(ces).mean()) if ces else 0.0, kept,
                           {k: p.detach() for k, p in points.items()})
    if memory == "constant":
        return _match_constant(student, source, lr, start, target, schedule, generator, augment, mask, weight, loss_fn,
                               keep)
    raise ValueError(f"memory must be 'full' or 'constant', got {memory!r}")


def _parts(n: int, micro: int) -> list[slice]:
    return [slice(i, min(i + micro, n)) for i in range(0, n, micro)]


def _match_constant(student, source, lr, start, target, schedule, generator, augment, mask, weight, loss_fn,
                    keep: Sequence[int] = ()) -> MatchResult:
    """TESLA: one forward pass without a graph, then one recomputed step at a time.

    A kept point ``w_k`` (``0 < k < steps``) is a leaf here: its gradient ``d_k`` joins ``d_end`` in the
    vector every step ``i < k`` is backpropagated with, and ``lr`` gets ``d_k . (-sum_{i<k} g_i)``."""
    lr_value = lr.detach()
    w = start.clone()
    points, states, ces = [], [], []
    grad_sum = torch.zeros_like(start)
    sums_before: dict[int, torch.Tensor] = {}  # kept step k -> sum of the g_i before it
    micro = None
    for i, idx in enumerate(schedule):
        if i in keep:
            sums_before[i] = grad_sum.clone()
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
    if keep:  # inner points are leaves of their own; w_0 is the constant start, w_N the end
        kept = {k: end if k == len(schedule) else start if k == 0 else points[k].clone().requires_grad_(True)
                for k in keep}
        loss = loss_fn(end, start, target, mask, points=kept)
        inner = [k for k in keep if 0 < k < len(schedule)]
        grads = torch.autograd.grad(loss, [end] + [kept[k] for k in inner], allow_unused=True)
        d_end = grads[0] if grads[0] is not None else torch.zeros_like(end)
        d_kept = {k: d for k, d in zip(inner, grads[1:]) if d is not None}
    else:
        kept, d_kept = {}, {}
        loss = loss_fn(end, start, target, mask)
        d_end = torch.autograd.grad(loss, end)[0]  # dloss/dend; end = start - lr * sum(g_i)
    if lr.requires_grad:  # d loss / d lr = d_end . (-sum g_i) (+ d_k . (-sum_{i<k} g_i) per kept point)
        d_lr = (d_end * -grad_sum).sum()
        for k, d in d_kept.items():
            d_lr = d_lr + (d * -sums_before[k]).sum()
        (weight * d_lr.detach() * lr).backward()
    replay = torch.Generator()
    v = (-lr_value * d_end * weight).detach()
    peak = 0.0
    for i, (idx, state, w_i) in enumerate(zip(schedule, states, points)):
        if d_kept:  # the kept points after step i also depend on its gradient
            later = [d for k, d in d_kept.items() if k > i]
            v = (-lr_value * (d_end + sum(later)) * weight).detach() if later else \
                (-lr_value * d_end * weight).detach()
        replay.set_state(state)
        w_req = w_i.detach().requires_grad_(True)
        x, y = _step_batch(source, idx, augment, replay)
        parts = _parts(len(x), micro or len(x))
        for i, p in enumerate(parts):  # the step's gradient is a mean over images: its parts add up
            g = torch.autograd.grad(cross_entropy(student(w_req, x[p]), y[p]), w_req, create_graph=True)[0]
            s = (g * v).sum() * ((p.stop - p.start) / len(x))
            peak = max(peak, graph_mb(s))
            s.backward(retain_graph=i < len(parts) - 1)  # the images' augmentation graph serves every part
    return MatchResult(float(loss.detach()), end.detach(), float(torch.stack(ces).mean()) if ces else 0.0, peak,
                       {k: p.detach() for k, p in kept.items()})
