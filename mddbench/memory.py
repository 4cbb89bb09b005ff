"""Memory bounded by design: an activation budget, and the micro-batches that keep every pass inside it.

A training step's peak memory is its activations: at 112 px one ConvNetD5 map of a batch of 256
(256 x 128 x 112 x 112 float32) is 1.6 GB, and one SGD step held 7.3 GB. Every loop that pushes a
batch through a network therefore runs it in *micro-batches* no larger than the budget allows:

- a training step (:func:`mddbench.nn.training.train`: evaluation, ``real``, experts with SGD or GSAM,
  DC's and CAFE's inner loops, the privacy audit's networks) sums each micro-batch's share of the
  mean loss into the gradients before the optimiser steps, so the update is the full batch's up to
  float summation order (:func:`backward_in_micro_batches`);
- a gradient taken on real images (DC's matching target) adds the micro-batches' gradients;
- a pass without gradients (prediction, DM's and CAFE's real embeddings) runs chunk by chunk.

This is exact because the networks normalise per sample (instance norm: one GroupNorm group per
channel), so a sample's output never depends on the rest of its batch. A network with BatchNorm
keeps whole batches (its statistics are the batch's), and :func:`micro_batch` says so.

The budget (:func:`budget_bytes`): ``--memory-budget MiB`` or ``$MDDBENCH_MEMORY_BUDGET``; otherwise
automatic, a quarter of the free GPU memory on a GPU and, on the CPU, an eighth of the available
memory capped at :data:`CPU_CAP` (1 GiB), so that two sweep workers on a small machine stay well
inside it. A micro-batch holds ``budget / (2 x bytes autograd keeps per item)`` items (x2: the
backward pass's own buffers), measured once per architecture and input shape on a two-item probe.
At 28 px a ConvNet batch of 256 fits whole, so those paths compute exactly what they did before;
at 112 px a step runs as micro-batches of about 16 images. What was chosen is recorded with every
run (:func:`chosen`), beside the budget.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from mddbench.errors import ConfigError

ENV = "MDDBENCH_MEMORY_BUDGET"
CPU_CAP = 1 << 30
_state: dict[str, float] = {}
_per_item: dict[tuple, float] = {}
_chosen: dict[str, int | str] = {}


_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def graph_mb(root: torch.Tensor, exclude: set[int] = frozenset()) -> float:
    """Bytes of the distinct storages that ``root``'s autograd graph saved for its backward pass.

    ``exclude``: storage pointers not to count (e.g. the network's own parameters).

    Walks the graph and reads each node's ``_saved_*`` tensors (device independent). A
    ``saved_tensors_hooks`` census would be simpler but, returning the tensor itself, makes every
    node that saved its own output hold itself: a reference cycle gc cannot see, which leaked
    the student's start parameters on every matching iteration.
    """
    storages: dict[int, int] = {}
    seen: set = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names = _SAVED_NAMES.get(type(node))
        if names is None:
            names = _SAVED_NAMES[type(node)] = tuple(n for n in dir(node) if n.startswith("_saved_"))
        for name in names:
            try:
                value = getattr(node, name)
            except RuntimeError:  # already freed by a backward pass
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, torch.Tensor):
                    st = t.untyped_storage()
                    if st.data_ptr() not in exclude:
                        storages[st.data_ptr()] = st.nbytes()
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return sum(storages.values()) / 2**20


def set_budget(mib: float | None) -> None:
    """Fix the activation budget of this process (and, through the environment, of its workers)."""
    if mib is None:
        return
    if not mib > 0:
        raise ConfigError(f"the memory budget must be a positive number of MiB, got {mib}")
    _state["mib"] = float(mib)
    os.environ[ENV] = f"{float(mib):g}"


def _override_mib() -> float | None:
    if "mib" in _state:
        return _state["mib"]
    raw = os.environ.get(ENV, "").strip()
    if not raw or raw.lower() == "auto":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${ENV} must be a number of MiB or 'auto', got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"${ENV} must be a positive number of MiB, got {raw!r}")
    return value


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def budget_bytes(device: torch.device | str = "cpu") -> int:
    """Bytes of activations one pass may hold on ``device`` (the rule is in the module docstring)."""
    override = _override_mib()
    if override is not None:
        return int(override * 2**20)
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 4)
    available = available_bytes()
    return CPU_CAP if available is None else int(min(CPU_CAP, available // 8))


def budget_mib(device: torch.device | str = "cpu") -> float:
    return round(budget_bytes(device) / 2**20, 1)


def has_batchnorm(net: torch.nn.Module) -> bool:
    """Whether ``net`` normalises over its batch (its statistics need whole batches)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def per_item_bytes(net: torch.nn.Module, sample: torch.Tensor, forward: Callable | None = None) -> float:
    """Bytes autograd keeps per input item for ``forward`` (``net`` itself by default), measured once per
    architecture, parameter shapes and item shape on (at most) two items of ``sample``."""
    key = (type(net).__qualname__, getattr(forward, "__name__", None),
           tuple((name, tuple(p.shape)) for name, p in net.named_parameters()),
           tuple(sample.shape[1:]), sample.dtype, sample.device.type)
    if key not in _per_item:
        probe = sample[:2].detach().clone().requires_grad_(True)  # a graph even where parameters are frozen
        params = {p.untyped_storage().data_ptr() for p in net.parameters()}
        with torch.enable_grad():  # callers may be inside no_grad (prediction, real embeddings)
            outs = (forward or net)(probe)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            root = sum(o.sum() for o in outs)  # one root: a storage several outputs share counts once
        total = graph_mb(root, exclude=params) * 2**20
        _per_item[key] = max(1.0, total / len(probe))
    return _per_item[key]


def micro_batch(net: torch.nn.Module, sample: torch.Tensor, purpose: str, forward: Callable | None = None,
                graphs: int = 1) -> int:
    """How many items of ``sample``'s shape one pass of ``net`` may take at once (at least 1).

    A network with BatchNorm gets no limit (its batch statistics need the whole batch); ``purpose``
    names the loop in the run's record (:func:`chosen`); ``graphs``: how many forward passes' worth a
    pass keeps (a recomputed unroll step: its forward, its gradient's graph and the double backward).
    """
    if has_batchnorm(net):
        _chosen[purpose] = "whole batch (BatchNorm)"
        return 1 << 62
    size = max(1, int(budget_bytes(sample.device) // (2 * graphs * per_item_bytes(net, sample, forward))))
    _chosen[purpose] = min(size, int(_chosen[purpose])) if isinstance(_chosen.get(purpose), int) else size
    return size


def chosen() -> dict[str, object]:
    """The budget and the micro-batch sizes this process has used, by loop (for the run's record)."""
    return {"budget_mib": budget_mib(), "budget_source": "set" if _override_mib() is not None else "auto",
            "micro_batch": dict(sorted(_chosen.items()))}


def reset_chosen() -> None:
    _chosen.clear()


def backward_in_micro_batches(loss_of: Callable[[slice], torch.Tensor], size: int, micro: int) -> torch.Tensor:
    """``loss_of(slice)`` is the mean loss of those items; accumulate the gradient of the mean over all
    ``size`` items into ``.grad`` in micro-batches of ``micro``, and return that mean (detached).

    One micro-batch computes exactly the full-batch loss; several weigh each part by its share.
    """
    if size <= micro:
        loss = loss_of(slice(None))
        loss.backward()
        return loss.detach()
    total = torch.zeros(())
    for start in range(0, size, micro):
        part = slice(start, min(start + micro, size))
        loss = loss_of(part) * ((part.stop - part.start) / size)
        loss.backward()
        total = total + loss.detach().cpu()
    return total


def grad_in_micro_batches(loss_of: Callable[[slice], torch.Tensor], size: int, micro: int,
                          params: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The gradient of the mean loss over ``size`` items with respect to ``params``, without a graph,
    summed over micro-batches of ``micro`` (each part weighed by its share)."""
    if size <= micro:
        return tuple(g.detach() for g in torch.autograd.grad(loss_of(slice(None)), params))
    total: list[torch.Tensor] | None = None
    for start in range(0, size, micro):
        part = slice(start, min(start + micro, size))
        grads = torch.autograd.grad(loss_of(part) * ((part.stop - part.start) / size), params)
        total = [g.detach() for g in grads] if total is None else [t.add_(g) for t, g in zip(total, grads)]
    return tuple(total)


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, micro: int) -> torch.Tensor:
    """``fn(x)`` for a pass without gradients, computed ``micro`` items at a time and concatenated."""
    if len(x) <= micro:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(micro)])


def backward_through_features(features_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                              loss_of: Callable[[torch.Tensor], torch.Tensor], micro: int) -> torch.Tensor:
    """``loss_of(features_of(x)).backward()`` within the budget, for a loss that couples the items (a
    contrastive or pairwise term cannot be split into per-item parts): gradient caching.

    With more than ``micro`` items the features are computed without a graph in chunks, the loss and its
    gradient with respect to them once, then each chunk's features again with its graph, backpropagating
    that chunk's share of the gradient. The gradients equal the whole batch's up to float summation order
    (``features_of`` must treat items independently: no BatchNorm, no dropout). Gradients reach ``x``'s own
    graph where it has one. Returns the loss (detached)."""
    if len(x) <= micro:
        loss = loss_of(features_of(x))
        loss.backward()
        return loss.detach()
    with torch.no_grad():
        cached = torch.cat([features_of(part) for part in x.split(micro)])
    cached.requires_grad_(True)
    loss = loss_of(cached)
    loss.backward()  # the loss's own parameters (e.g. a classifier head) get their gradients here
    grads = cached.grad
    parts = list(zip(x.split(micro), grads.split(micro)))
    for i, (part, grad) in enumerate(parts):
        features_of(part).backward(grad, retain_graph=x.requires_grad and i < len(parts) - 1)
    return loss.detach()
