"""The method interface: what a distillation method declares and what it is handed.

A method is a class with a name, its official default hyperparameters (``defaults``, the
``paper`` budget), presets per dataset and ipc (``presets``), scaled-down values per budget
(``budgets``), and ``distill(task) -> SyntheticSet``. The :class:`Task` hands it everything: the
real data by class, the dataset spec, ipc, resolved hyperparameters, networks, augmentation,
lazy expert trajectories, the device, a seeded generator, and the distillation loop (progress,
metrics log, checkpoints, resume, NaN guard). A method never parses the CLI or writes results.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from mddbench.api.budgets import Budget, official_share
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec, RealData
from mddbench.errors import ConfigError
from mddbench.limits import ANY, Limit
from mddbench.limits import check as check_limit
from mddbench.nn.augment import DEFAULT_STRATEGY, DSA
from mddbench.nn.networks import create_network
from mddbench.registry import METHODS


class Method:
    name: ClassVar[str] = "?"
    summary: ClassVar[str] = ""  # one line for `mddbench list methods`
    label_type: ClassVar[str] = "hard"
    work_unit: ClassVar[str] = "iterations"  # what ``iterations`` counts (budget parity compares its share)
    supports_3d: ClassVar[bool] = True
    shareable: ClassVar[bool] = True  # False when the "synthetic" set is real patient data (`real`)
    uses_ipc: ClassVar[bool] = True  # False: the method takes the whole train split (no --ipc; records say "full")
    reference: ClassVar[bool] = False  # a reference row (an upper bound), shown but never ranked against methods
    # the set is real train images, selected not synthesised (`random`, the coresets, `real`): every image is a
    # near copy of a patient by construction, and the privacy tables say so beside the figure
    selects_real: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    # valid ranges of numeric hyperparameters, checked by resolve(); merged with those of the base classes
    limits: ClassVar[dict[str, Limit]] = {}
    # per-budget values; a value may be a callable (hp, budget) -> value that scales the preset
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}


    def images_per_class(self, task: "Task") -> int | None:
        """How many images of each class the set :meth:`distill` returns holds (checked before anything is
        recorded; a method that stores something else, e.g. HaBa's bases, says so here). None: unchecked
        (a method without ipc, such as ``real``)."""
        return task.ipc if self.uses_ipc else None
    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        """Official per-dataset/ipc values that differ from ``defaults`` (paper budget)."""
        return {}

    def adapt(self, hp: dict[str, Any], spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        """Changes to the presets that depend on the data itself (e.g. its size); applied before budgets."""
        return {}

    def check(self, hp: dict[str, Any], spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        """Raise ConfigError for settings this method cannot run."""
        if spec.dims == 3 and not self.supports_3d:
            raise ConfigError(f"{self.name} does not support 3D datasets such as {spec.name}")

    def expert_recipes(self, hp: dict[str, Any]) -> list:
        """The expert buffers (``ExpertRecipe``) this method reads, so a sweep can build them once first."""
        return []

    def eval_overrides(self, budget: Budget) -> dict[str, Any]:
        """Changes to the evaluation config (e.g. `real` trains for budget.real_epochs)."""
        return {}

    def distill(self, task: "Task") -> SyntheticSet:
        raise NotImplementedError

    # ------------------------------------------------------------------------ hyperparameters
    def resolve(self, spec: DatasetSpec, ipc: int, budget: Budget, overrides: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """defaults <- presets(dataset, ipc) <- adapt(data) <- budget scaling <- user overrides (known keys only).

        A budget entry's constants apply first; every scaler (a callable) then reads those and the official
        values, never another scaler's result, so the entry's order does not matter (a scaler that depends
        on another one calls it)."""
        hp = dict(self.defaults)
        hp.update(self.presets(spec, ipc))
        hp.update(self.adapt(hp, spec, ipc))
        entry = self.budgets.get(budget.name)
        if entry is None:  # a budget the method has no entry for (a plugin's): only the iteration share
            entry = {"iterations": official_share} if budget.share is not None and "iterations" in hp else {}
        hp.update({key: value for key, value in entry.items() if not callable(value)})
        seen = dict(hp)
        hp.update({key: value(seen, budget) for key, value in entry.items() if callable(value)})
        for key, value in (overrides or {}).items():
            if key not in hp:
                known = ", ".join(sorted(hp)) or "(none)"
                raise ConfigError(f"{self.name} has no hyperparameter {key!r}; known: {known}")
            hp[key] = coerce(value, hp[key], key)
        limits = self.hp_limits()
        for key, value in hp.items():
            check_limit(f"{self.name}: hyperparameter {key}", value, limits.get(key, ANY))
        self.check(hp, spec, ipc, budget)
        return hp

    @classmethod
    def hp_limits(cls) -> dict[str, Limit]:
        """The declared ranges of this method and its base classes (a subclass's declaration wins)."""
        merged: dict[str, Limit] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("limits", {}))
        return merged


METHODS.expects = Method  # every registered method is a Method, a plugin's too (a clear error otherwise)


def coerce(value: Any, like: Any, key: str) -> Any:
    """Parse a CLI string (JSON, else plain string) and check it against the default's type."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if like is None or value is None or isinstance(value, type(like)):
        return value
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"hyperparameter {key!r} expects {type(like).__name__}, got {value!r}")


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--hp expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key in out:
            raise ConfigError(f"--hp {key} given twice")
        out[key.strip()] = value.strip()
    return out


@dataclass
class Task:
    """Everything a method needs to distill one synthetic set."""

    spec: DatasetSpec
    data: RealData
    ipc: int
    hp: dict[str, Any]
    budget: Budget
    seed: int
    device: torch.device
    generator: torch.Generator
    run_dir: Path | None = None  # where checkpoints, logs and snapshots go (None: nowhere)
    experts: Callable[..., Any] | None = None  # experts(recipe) -> Trajectories (built or cached)
    checkpoint_every: int = 50
    snapshot_every: int = 0  # save the synthetic set every n iterations (accuracy-vs-time curves)
    time_budget: float | None = None  # stop distilling after this many seconds
    progress: bool = True
    loops: list[Any] = field(default_factory=list)  # each distill_loop's LoopResult, in order (the runner sums them)

    @property
    def n_classes(self) -> int:
        return self.spec.n_classes

    def network(self, name: str | None = None, generator: torch.Generator | None = None, **kw) -> torch.nn.Module:
        """A fresh network (the method's ``model`` hyperparameter by default) on the task's device."""
        s = self.spec
        return create_network(name or self.hp.get("model", "convnet"), s.channels, s.n_classes, s.size, s.dims,
                              generator=generator or self.generator, device=self.device, **kw)

    @property
    def augment(self) -> DSA:
        return DSA(self.hp.get("dsa_strategy", DEFAULT_STRATEGY))

    def hard_labels(self, ipc: int | None = None) -> torch.Tensor:
        return torch.arange(self.n_classes, device=self.device).repeat_interleave(ipc or self.ipc)

    def initial_images(self, init: str = "real", ipc: int | None = None) -> torch.Tensor:
        """ipc images per class, class-major: random real images or Gaussian noise."""
        ipc = ipc or self.ipc
        if init == "real":
            x = torch.cat([self.data.sample_class(c, ipc, self.generator) for c in range(self.n_classes)])
        elif init == "noise":
            x = torch.randn((self.n_classes * ipc,) + self.spec.shape, generator=self.generator)
        else:
            raise ConfigError(f"unknown init {init!r}; use 'real' or 'noise'")
        return x.to(self.device)

    def real_batch(self, c: int, n: int) -> torch.Tensor:
        """``n`` random real train images of class ``c`` on the device."""
        return self.data.sample_class(c, n, self.generator).to(self.device, non_blocking=True)

    def image_state(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Learnable images (``hp['init']``), their hard labels, and the loop state holding them and their
        SGD optimiser (``hp['lr_img']``, ``hp['momentum_img']``): the start of every image-optimising method."""
        images = self.initial_images(self.hp["init"]).detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([images], lr=self.hp["lr_img"], momentum=self.hp["momentum_img"])
        return images, self.hard_labels(), {"images": images, "opt_img": opt}

    def synset(self, images: torch.Tensor, labels: torch.Tensor, **kw) -> SyntheticSet:
        return SyntheticSet(images.detach().clone(), labels.detach().clone(), **kw)
