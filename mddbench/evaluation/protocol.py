"""Evaluation protocol v1: train fresh networks on a synthetic set, test them on the real test split.

the benchmark's protocol (docs/methods.md): ``n_models`` freshly initialised networks, ``epochs`` passes over the set,
SGD (momentum 0.9, weight decay 5e-4) at the set's learned step size (0.01 otherwise), lr x0.1 at
half time with the optimiser re-created as in the official code, batch 256, DSA augmentation,
hard or soft cross-entropy, and the *final* epoch's network is scored (never the best epoch).
Model ``i`` draws its initialisation, data order and augmentation from its own named seed
streams, so a seed fixes every number and models can be trained one by one (engine "loop", the
reference) or side by side as one packed network (engine "batched", :mod:`mddbench.nn.batched`),
with the same numbers up to float rounding. Both engines run the one loop of :mod:`mddbench.nn.training`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import RealData
from mddbench.errors import ConfigError
from mddbench.evaluation.metrics import METRICS, classification_metrics, summarize
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE, check
from mddbench.memory import micro_batch
from mddbench.nn.augment import DEFAULT_STRATEGY, DSA
from mddbench.nn.batched import NotPackable, activation_bytes, stack_networks, unstack_into
from mddbench.nn.networks import create_network
from mddbench.nn.training import train
from mddbench.seeding import generator as seeded

PROTOCOL = "v1"
ENGINES = ("auto", "loop", "batched")
CPU_PACK_BYTES = 2 << 30  # activation memory one packed training step may take on the CPU


@dataclass(frozen=True)
class EvalConfig:
    model: str = "convnet"
    n_models: int = 10
    epochs: int = 1000
    lr: float = 0.01  # used when the synthetic set has no learned step size
    batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa_strategy: str = DEFAULT_STRATEGY
    protocol: str = PROTOCOL
    min_steps: int = 0  # train at least this many SGD steps: more epochs for a set of several batches

    def __post_init__(self):
        for name, limit in (("n_models", AT_LEAST_1), ("epochs", AT_LEAST_1), ("lr", POSITIVE), ("batch", AT_LEAST_1),
                            ("momentum", MOMENTUM), ("weight_decay", NON_NEGATIVE)):
            check(f"evaluation {name}", getattr(self, name), limit)

    def with_(self, **kw) -> "EvalConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def for_set(self, n_images: int) -> "EvalConfig":
        """The config with ``epochs`` raised so that ``n_images`` give at least ``min_steps`` SGD steps."""
        per_epoch = max(1, math.ceil(n_images / self.batch))
        return replace(self, epochs=max(self.epochs, math.ceil(self.min_steps / per_epoch)))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    config: EvalConfig
    per_model: list[dict[str, float | None]]  # None: that model's training diverged
    seconds: float = 0.0
    engine: str = "loop"  # how the networks were trained: same numbers up to float rounding, recorded

    def summary(self) -> dict[str, dict]:
        return {k: summarize([m[k] for m in self.per_model]) for k in METRICS}


def model_streams(seed: int, index: int, model: str) -> tuple[torch.Generator, torch.Generator]:
    """(initialisation, data-order-and-augmentation) generators of evaluation model ``index``."""
    return seeded(seed, "eval-init", model, index), seeded(seed, "eval-data", model, index)


def epoch_schedule(synset: SyntheticSet, config: EvalConfig) -> Iterator[tuple[int, float, bool]]:
    """(leading images to train on, learning rate, whether the optimiser is created afresh) per epoch.

    Phase by phase; a fresh SGD at each phase start and at half time (lr x0.1), as the official
    code re-creates it there, which also resets the momentum.
    """
    for end, lr in synset.phases(config.lr):
        for epoch in range(config.epochs):
            decayed = config.epochs > 1 and epoch >= config.epochs // 2
            yield end, lr * 0.1 if decayed else lr, epoch == 0 or (decayed and epoch == config.epochs // 2)


def train_networks(nets: list[torch.nn.Module], synset: SyntheticSet, config: EvalConfig,
                   data_gens: list[torch.Generator], device: torch.device, bar: tqdm | None = None,
                   probe: torch.Tensor | None = None) -> list[torch.nn.Module]:
    """Train one network or several side by side (packed, :mod:`mddbench.nn.batched`) on a synthetic set.

    Network ``i`` draws from ``data_gens[i]``; ``probe`` checks the packing. The loop is
    :func:`mddbench.nn.training.train`, along :func:`epoch_schedule` with a fresh SGD where it says so.
    """
    n = len(nets)
    renderer = synset.make_renderer()
    if renderer is not None:
        renderer = renderer.to(device)
    model = nets[0] if n == 1 else stack_networks(nets, probe)

    def schedule():
        for end, lr, fresh in epoch_schedule(synset, config):
            if fresh:
                opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)
            yield end, opt

    train(model, synset.images.to(device), synset.labels.to(device), schedule(), config.batch, data_gens,
          DSA(config.dsa_strategy), renderer, after_epoch=None if bar is None else lambda: bar.update(n))
    return nets if n == 1 else unstack_into(model, nets)


def train_on_synset(net: torch.nn.Module, synset: SyntheticSet, config: EvalConfig, data_gen: torch.Generator,
                    device: torch.device, bar: tqdm | None = None) -> torch.nn.Module:
    """Train one network (the reference path; also used for ``real``, with the full train split)."""
    return train_networks([net], synset, config, [data_gen], device, bar)[0]


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int | None = None) -> np.ndarray:
    """Class probabilities of ``net`` on ``x``, ``batch`` items at a time (default: the memory budget's)."""
    net.eval()
    batch = batch or micro_batch(net, x[:2].to(device), "predict")
    out = [torch.softmax(net(x[i:i + batch].to(device)).float(), 1).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def score(net: torch.nn.Module, data: RealData, device: torch.device) -> dict[str, float | None]:
    """The network's metrics on the real splits; all None when its training diverged.

    A normalisation-free network (LeNet, AlexNet) can blow up at a synthetic set's learned step size;
    that is a finding about the set, so the model is recorded as diverged rather than scored or fatal.
    """
    probs = {split: predict(net, data.x[split], device) for split in ("test", "val")}
    if not all(np.isfinite(p).all() for p in probs.values()):
        return dict.fromkeys(METRICS)
    test = classification_metrics(probs["test"], data.y["test"].numpy())
    val = classification_metrics(probs["val"], data.y["val"].numpy())
    return {"test_acc": test["acc"], "val_acc": val["acc"], "auc": test["auc"], "balanced_acc": test["balanced_acc"],
            "val_balanced_acc": val["balanced_acc"]}


def pack_size(net: torch.nn.Module, probe: torch.Tensor, synset: SyntheticSet, config: EvalConfig,
              device: torch.device) -> int:
    """How many networks to train side by side so that their training activations fit a budget.

    A packed step holds every network's batch at once: ``real`` (batches of 256 real images) at
    112 px would need tens of GB for ten networks, while small synthetic sets pack all of them.
    """
    step = 2 * activation_bytes(net, probe) * min(config.batch, len(synset))  # x2: backward's own buffers
    budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else CPU_PACK_BYTES
    return max(1, int(budget // step))


def _networks_per_pack(engine: str, network: Callable[[int], torch.nn.Module], synset: SyntheticSet,
                       config: EvalConfig, device: torch.device, probe: torch.Tensor) -> int:
    """1 for the one-by-one loop; more when the networks can be packed ("batched" or "auto")."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown evaluation engine {engine!r}; choose {', '.join(ENGINES)}")
    if engine == "loop" or config.n_models < 2 or (engine == "auto" and device.type != "cuda"):
        return 1  # auto: packing pays on a GPU; on CPUs the step is compute-bound (benchmarks/bench_eval.py)
    first = network(0)
    try:
        stack_networks([first, network(1)], probe)
    except NotPackable as exc:
        if engine == "batched":
            raise NotPackable(f"cannot train these networks together: {exc}; use engine 'loop' or 'auto'") from exc
        return 1
    return min(config.n_models, pack_size(first, probe, synset, config, device))


def evaluate(synset: SyntheticSet, data: RealData, config: EvalConfig = EvalConfig(), seed: int = 0,
             device: torch.device | str = "cpu", progress: bool = True, engine: str = "auto") -> EvalResult:
    """Train ``config.n_models`` networks on ``synset`` and score each on the real splits.

    ``engine``: "loop" trains the networks one by one (the reference path); "batched" trains them
    side by side as one packed network (:mod:`mddbench.nn.batched`; the same numbers up to float
    rounding; refused for networks that cannot be packed, e.g. with BatchNorm); "auto" packs them
    on a GPU when possible and uses the loop on a CPU, where a training step of ConvNet-128 is
    compute-bound and packing measured no faster. Packs are sized to a memory budget (:func:`pack_size`).
    """
    import time

    device = torch.device(device)
    spec = data.spec
    synset.check(spec)  # a set made for other data, or crafted, is refused before any training
    config = config.for_set(len(synset.images))
    start = time.perf_counter()

    def network(i: int) -> torch.nn.Module:
        return create_network(config.model, spec.channels, spec.n_classes, spec.size, spec.dims,
                              generator=model_streams(seed, i, config.model)[0], device=device)

    probe = torch.randn(2, spec.channels, *(spec.size,) * spec.dims, generator=torch.Generator().manual_seed(0))
    size = _networks_per_pack(engine, network, synset, config, device, probe.to(device))
    engine = "batched" if size > 1 else "loop"
    per_model: list[dict[str, float]] = []
    total = config.n_models * config.epochs * len(synset.phases(config.lr))
    with tqdm(total=total, desc=f"evaluate {config.model} x{config.n_models} ({engine})", unit="ep",
              disable=not progress, leave=False) as bar:
        for first in range(0, config.n_models, size):
            pack = range(first, min(first + size, config.n_models))
            nets = train_networks([network(i) for i in pack], synset, config,
                                  [model_streams(seed, i, config.model)[1] for i in pack], device, bar)
            per_model += [score(net, data, device) for net in nets]
            scored = [m["test_acc"] for m in per_model if m["test_acc"] is not None]
            bar.set_postfix(acc=f"{100 * np.mean(scored):.2f} %" if scored else "-",  # % as in the printed table
                            diverged=len(per_model) - len(scored))
    return EvalResult(config, per_model, time.perf_counter() - start, engine)
