"""Shared helpers for method tests: tiny datasets, one-call distillation, small evaluations.

Tiny generated datasets (registered once, on import) keep method tests to seconds on two cores:
``tiny28`` (1x28x28, 3 classes), ``tiny112`` (3x112x112, 3 classes) and ``tiny3d`` (1x12^3,
3 classes). Class content differs by a class-specific pattern, so a distilled set can beat noise.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from conftest import SHARED_DATA

from mddbench.api.budgets import get_budget
from mddbench.api.loop import MetricsLog, read_log
from mddbench.api.method import Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import SPLITS, DatasetSpec, RawArrays, RealData, load_dataset
from mddbench.evaluation.protocol import EvalConfig, evaluate
from mddbench.registry import DATASETS, METHODS
from mddbench.seeding import generator as seeded
from mddbench.trajectory.experts import ExpertProvider


def _tiny_arrays(size: int, dims: int, channels: int, per_class: dict[str, int], n_classes: int = 3) -> RawArrays:
    rng = np.random.default_rng(size * 10 + dims)
    shape = (size,) * dims
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * dims, indexing="ij"))
    images, labels = {}, {}
    for split in SPLITS:
        xs, ys = [], []
        for c in range(n_classes):
            n = per_class[split]
            pattern = np.cos((c + 1) * np.pi * grid[0]) * (1 if c != 1 else -1) + (c - 1) * 0.5 * grid[-1]
            x = 0.5 + 0.18 * pattern[None] + 0.2 * rng.standard_normal((n,) + shape)
            x = np.clip(x, 0, 1) * 255
            if channels == 3:
                x = np.repeat(x[..., None], 3, axis=-1)
            xs.append(x.astype(np.uint8))
            ys.append(np.full((n, 1), c, dtype=np.uint8))
        images[split], labels[split] = np.concatenate(xs), np.concatenate(ys)
    digest = hashlib.md5(b"".join(images[s].tobytes() for s in SPLITS)).hexdigest()
    return RawArrays(images, labels, digest)


def _register(name: str, size: int, dims: int, channels: int, per_class: dict[str, int]) -> None:
    if name in DATASETS:
        return
    arrays = _tiny_arrays(size, dims, channels, per_class)
    DATASETS.register(name, DatasetSpec(
        name=name, title=name, source="generated", dims=dims, channels=channels, size=size,
        label_names=("a", "b", "c"), task="multi-class", license="test", citation="test", description="test",
        load=lambda spec, root, offline: arrays, n_samples={s: 3 * n for s, n in per_class.items()}))


_register("tiny28", 28, 2, 1, {"train": 40, "val": 10, "test": 20})
_register("tiny112", 112, 2, 3, {"train": 3, "val": 2, "test": 3})
_register("tiny3d", 12, 3, 1, {"train": 12, "val": 3, "test": 6})


def load(name: str) -> RealData:
    root = SHARED_DATA if (SHARED_DATA / f"{name}.npz").exists() else None
    return load_dataset(name, root)


def make_task(method: str, dataset: str = "tiny28", ipc: int = 2, budget: str = "smoke",
              hp: dict[str, Any] | None = None, run_dir: Path | None = None, seed: int = 0,
              expert_root: Path | None = None, **task_kw) -> tuple[Any, Task]:
    """A method instance and its task, as the runner would build them (no CLI, no store)."""
    m = METHODS.get(method)()
    data = load(dataset)
    b = get_budget(budget)
    resolved = m.resolve(data.spec, ipc, b, hp or {})
    experts = ExpertProvider(expert_root or (run_dir or Path("/tmp")) / "experts", data, b, torch.device("cpu"),
                             progress=False) if expert_root or run_dir else None
    task = Task(spec=data.spec, data=data, ipc=ipc, hp=resolved, budget=b, seed=seed, device=torch.device("cpu"),
                generator=seeded(seed, "distill", method), run_dir=run_dir, experts=experts, progress=False,
                **task_kw)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    return m, task


def distill(method: str, **kw) -> tuple[SyntheticSet, Task]:
    m, task = make_task(method, **kw)
    return m.distill(task), task


def log_rows(task: Task, name: str) -> list[dict]:
    return read_log(task.run_dir / f"{name}_log.jsonl")


def noise_like(synset: SyntheticSet, seed: int = 0) -> SyntheticSet:
    """The same number of Gaussian noise images with the same labels (the bar every method must clear)."""
    g = torch.Generator().manual_seed(seed)
    return SyntheticSet(torch.randn(synset.images.shape, generator=g), synset.hard_labels())


def small_eval(synset: SyntheticSet, data: RealData, n_models: int = 3, epochs: int = 60, seed: int = 0) -> float:
    """Mean test accuracy under protocol v1 with a small budget."""
    res = evaluate(synset, data, EvalConfig(n_models=n_models, epochs=epochs), seed=seed, progress=False)
    return res.summary()["test_acc"]["mean"]


def falls(values: list[float], window: int = 5) -> bool:
    """The mean of the last ``window`` values is below the mean of the first ``window``."""
    return float(np.mean(values[-window:])) < float(np.mean(values[:window]))


def interrupted_at(it: int, monkeypatch, run: Callable[[], Any]) -> None:
    """Run ``run`` with a KeyboardInterrupt raised right after iteration ``it`` is logged (a crash mid-run), and
    check that it stopped there; the log is restored afterwards, so the next call resumes normally."""
    import pytest

    original = MetricsLog.write

    def crash(self, **row):
        original(self, **row)
        if row.get("it") == it:
            raise KeyboardInterrupt

    monkeypatch.setattr(MetricsLog, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(MetricsLog, "write", original)
