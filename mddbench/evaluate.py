"""Evaluation protocol v1: train fresh networks on a synthetic set, test them on the real test split.

benchmark.md's protocol: ``n_models`` freshly initialised networks, ``epochs`` passes over the set,
SGD (momentum 0.9, weight decay 5e-4) at the set's learned step size (0.01 otherwise), lr x0.1 at
half time with the optimiser re-created as in the official code, batch 256, DSA augmentation,
hard or soft cross-entropy, and the *final* epoch's network is scored (never the best epoch).
Model ``i`` draws its initialisation, data order and augmentation from its own named seed
streams, so a seed fixes every number and models can be trained one by one or all together.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from .augment import DEFAULT_STRATEGY, DSA
from .data import RealData
from .metrics import classification_metrics, summarize
from .networks import create_network
from .seeding import generator as seeded
from .synset import SyntheticSet, cross_entropy

PROTOCOL = "v1"


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

    def with_(self, **kw) -> "EvalConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    config: EvalConfig
    per_model: list[dict[str, float]]
    seconds: float = 0.0

    def summary(self) -> dict[str, dict]:
        keys = ("test_acc", "val_acc", "auc", "balanced_acc")
        return {k: summarize([m[k] for m in self.per_model]) for k in keys}


def model_streams(seed: int, index: int, model: str) -> tuple[torch.Generator, torch.Generator]:
    """(initialisation, data-order-and-augmentation) generators of evaluation model ``index``."""
    return seeded(seed, "eval-init", model, index), seeded(seed, "eval-data", model, index)


def train_on_synset(net: torch.nn.Module, synset: SyntheticSet, config: EvalConfig, data_gen: torch.Generator,
                    device: torch.device, bar: tqdm | None = None) -> torch.nn.Module:
    """The one training loop on a synthetic set (also used for ``real``, with the full train split)."""
    aug = DSA(config.dsa_strategy)
    renderer = synset.make_renderer()
    if renderer is not None:
        renderer = renderer.to(device)
    images, labels = synset.images.to(device), synset.labels.to(device)
    net.train()
    for end, lr in synset.phases(config.lr):
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
        for epoch in range(config.epochs):
            if epoch == config.epochs // 2 and config.epochs > 1:
                opt = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=config.momentum,
                                      weight_decay=config.weight_decay)
            for idx in torch.randperm(end, generator=data_gen).split(config.batch):
                idx = idx.to(device)
                x = images[idx]
                if renderer is not None:
                    x = renderer.render(x, data_gen)
                x = aug(x, data_gen)
                loss = cross_entropy(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if bar is not None:
                bar.update(1)
    return net


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1024) -> np.ndarray:
    net.eval()
    out = [torch.softmax(net(x[i:i + batch].to(device)).float(), 1).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def score(net: torch.nn.Module, data: RealData, device: torch.device) -> dict[str, float]:
    test = classification_metrics(predict(net, data.x["test"], device), data.y["test"].numpy())
    val = classification_metrics(predict(net, data.x["val"], device), data.y["val"].numpy())
    return {"test_acc": test["acc"], "val_acc": val["acc"], "auc": test["auc"], "balanced_acc": test["balanced_acc"]}


def evaluate(synset: SyntheticSet, data: RealData, config: EvalConfig = EvalConfig(), seed: int = 0,
             device: torch.device | str = "cpu", progress: bool = True) -> EvalResult:
    """Train ``config.n_models`` networks on ``synset`` one by one (the reference path)."""
    import time

    device = torch.device(device)
    spec = data.spec
    start = time.perf_counter()
    per_model = []
    total = config.n_models * config.epochs * len(synset.phases(config.lr))
    with tqdm(total=total, desc=f"evaluate {config.model} x{config.n_models}", unit="ep", disable=not progress,
              leave=False) as bar:
        for i in range(config.n_models):
            init_gen, data_gen = model_streams(seed, i, config.model)
            net = create_network(config.model, spec.channels, spec.n_classes, spec.size, spec.dims,
                                 generator=init_gen, device=device)
            train_on_synset(net, synset, config, data_gen, device, bar)
            per_model.append(score(net, data, device))
            bar.set_postfix(acc=f"{np.mean([m['test_acc'] for m in per_model]):.3f}")
    return EvalResult(config, per_model, time.perf_counter() - start)
