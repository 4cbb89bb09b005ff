"""Expert trajectories: networks trained on the real train split, every epoch's parameters kept.

Two recipes, both from the official code: MTT's (plain SGD, no momentum, no weight decay, DSA)
and FTD's flat one (GSAM, sharpness-aware, with ``rho`` and ``alpha``). A buffer is cached under
a key that hashes everything that shapes it (dataset and its checksum, resolution, normalisation,
network, recipe, seed, epochs), one safetensors file per expert beside a readable ``meta.json``.
Building is resumable expert by expert, and a buffer with more experts reuses the ones it has.
The cache lives in ``OUT/experts`` unless ``--expert-cache`` or ``$MDDBENCH_EXPERTS`` names one
folder for every output folder, so that all runs compare against the same experts.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mddbench.api.budgets import Budget
from mddbench.atomic import locked, replacing, set_aside, write_json
from mddbench.data.dataset import RealData
from mddbench.errors import ConfigError
from mddbench.evaluation.protocol import score
from mddbench.ids import identity_digest
from mddbench.nn.augment import DEFAULT_STRATEGY, DSA
from mddbench.nn.networks import create_network, flat_parameters
from mddbench.nn.training import constant_schedule, gsam_step, sgd_step, train
from mddbench.seeding import generator as seeded

CACHE_FORMAT = 1
log = logging.getLogger(__name__)
ENV_EXPERTS = "MDDBENCH_EXPERTS"


def expert_cache(folder: str | os.PathLike | None, out: str | os.PathLike) -> Path:
    """The expert cache: ``folder`` (``--expert-cache``), else ``$MDDBENCH_EXPERTS``, else ``out/experts``.

    Experts built twice need not be bit-identical (thread counts change float summation order),
    so output folders that should be compared share one cache rather than each building its own.
    """
    folder = folder or os.environ.get(ENV_EXPERTS)
    return Path(folder).expanduser() if folder else Path(out) / "experts"


@dataclass(frozen=True)
class ExpertRecipe:
    """How experts are trained. ``n_experts``/``epochs`` of None take the budget's values."""

    model: str = "convnet"
    optimizer: str = "sgd"  # "sgd" (MTT) or "gsam" (FTD's flat experts)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch: int = 256
    dsa_strategy: str = DEFAULT_STRATEGY
    rho: float = 0.01  # GSAM perturbation radius
    alpha: float = 0.3  # GSAM surrogate-gap weight
    adaptive: bool = True  # ASAM-style element-wise scaling of the perturbation
    n_experts: int | None = None
    epochs: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in ("sgd", "gsam"):
            raise ConfigError(f"expert optimizer must be 'sgd' or 'gsam', got {self.optimizer!r}")

    def for_budget(self, budget: Budget) -> "ExpertRecipe":
        return replace(self, n_experts=self.n_experts or budget.experts, epochs=self.epochs or budget.expert_epochs)

    def shaping(self) -> dict:
        """The fields that shape a trajectory (not how many experts there are)."""
        d = asdict(self)
        d.pop("n_experts")
        if self.optimizer == "sgd":
            for k in ("rho", "alpha", "adaptive"):
                d.pop(k)
        return d


MTT_RECIPE = ExpertRecipe()
FLAT_RECIPE = ExpertRecipe(optimizer="gsam")


@dataclass(frozen=True)
class Pretraining:
    """What every expert of a buffer learns before its trajectory starts (SeqMatch: the earlier subsets).

    ``ident`` says what it is (hashed into the cache key, kept in meta.json); ``run(net, generator)``
    trains the fresh network with the expert's data generator, which the trajectory then draws on from.
    Its experts are seeded from ``key`` alone (the ident holds the recipe and its seed), as SeqMatch's
    own cache seeded them before they moved here.
    """

    ident: dict
    run: Callable[[torch.nn.Module, torch.Generator], None]

    @property
    def key(self) -> str:
        return identity_digest(self.ident)


# ------------------------------------------------------------------------------------- training
def train_expert(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: ExpertRecipe, epochs: int,
                 generator: torch.Generator, bar: tqdm | None = None) -> torch.Tensor:
    """Train ``net`` on (x, y) and return its flat parameters at init and after every epoch, (epochs+1, P)."""
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    snapshots = [flat_parameters(net).cpu()]

    def gsam(backward: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> None:
        gsam_step(list(net.parameters()), backward, opt, recipe.rho, recipe.alpha, recipe.adaptive)

    def snapshot() -> None:
        snapshots.append(flat_parameters(net).cpu())
        if bar is not None:
            bar.update(1)

    train(net, x, y, constant_schedule(opt, epochs, len(x)), recipe.batch, [generator], DSA(recipe.dsa_strategy),
          step=gsam if recipe.optimizer == "gsam" else sgd_step, after_epoch=snapshot)
    return torch.stack(snapshots)


# -------------------------------------------------------------------------------------- buffers
class Trajectories:
    """A loaded expert buffer: ``len(self)`` experts, each an (epochs+1, P) tensor of snapshots."""

    def __init__(self, trajectories: list[torch.Tensor], meta: dict):
        self.trajectories = trajectories
        self.meta = meta

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def epochs(self) -> int:
        return self.trajectories[0].shape[0] - 1

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        return self.trajectories[expert][epoch]

    def final(self, expert: int) -> torch.Tensor:
        return self.trajectories[expert][-1]


def cache_key(data: RealData, recipe: ExpertRecipe, pretraining: Pretraining | None = None) -> str:
    spec = data.spec
    ident = {"format": CACHE_FORMAT, "dataset": spec.name, "checksum": data.checksum, "size": spec.size,
             "dims": spec.dims, "channels": spec.channels, "mean": [round(v, 6) for v in data.mean],
             "std": [round(v, 6) for v in data.std], "recipe": recipe.shaping()}
    if pretraining is not None:
        ident["pretraining"] = pretraining.key
    return identity_digest(ident, 20)


class ExpertProvider:
    """Finds a matching cached buffer or builds the missing experts; ``task.experts(recipe[, pretraining])``."""

    def __init__(self, root: Path, data: RealData, budget: Budget, device: torch.device, progress: bool = True):
        self.root = Path(root)
        self.data = data
        self.budget = budget
        self.device = device
        self.progress = progress
        self.build_seconds = 0.0
        self.used: list[str] = []

    def folder(self, recipe: ExpertRecipe, pretraining: Pretraining | None = None) -> Path:
        recipe = recipe.for_budget(self.budget)
        key = cache_key(self.data, recipe, pretraining)
        return self.root / f"{self.data.spec.name}_{recipe.model}_{recipe.optimizer}_{key}"

    def missing(self, recipe: ExpertRecipe) -> list[int]:
        """The experts of ``recipe`` not yet in the cache (an empty list: the buffer is complete)."""
        recipe = recipe.for_budget(self.budget)
        folder = self.folder(recipe)
        return [i for i in range(recipe.n_experts) if not (folder / f"expert_{i:03d}.safetensors").exists()]

    def __call__(self, recipe: ExpertRecipe = MTT_RECIPE, pretraining: Pretraining | None = None) -> Trajectories:
        recipe = recipe.for_budget(self.budget)
        folder = self.folder(recipe, pretraining)
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "meta.json"
        with locked(folder / ".lock"):  # concurrent jobs wait for one builder instead of racing
            meta = self._read_meta(meta_path, recipe, pretraining)
            size = flat_parameters(self._network(recipe, torch.Generator().manual_seed(0), "cpu")).numel()
            found = {i: t for i in range(recipe.n_experts)
                     if (t := read_trajectory(folder / f"expert_{i:03d}.safetensors", recipe.epochs, size)) is not None}
            missing = [i for i in range(recipe.n_experts) if i not in found]
            if missing:
                found.update(self._build(recipe, folder, missing, meta, meta_path, pretraining))
            unscored = [i for i in found if str(i) not in meta["experts"]]
            if unscored:  # meta.json was missing or unreadable, or a crash fell between an expert and its entry
                self._rescore(recipe, found, unscored, meta, meta_path)
        self.used.append(folder.name)
        return Trajectories([found[i] for i in range(recipe.n_experts)], meta)

    def _network(self, recipe: ExpertRecipe, generator: torch.Generator, device) -> torch.nn.Module:
        s = self.data.spec
        return create_network(recipe.model, s.channels, s.n_classes, s.size, s.dims, generator=generator,
                              device=device)

    def _read_meta(self, meta_path: Path, recipe: ExpertRecipe, pretraining: Pretraining | None) -> dict:
        """The folder's meta.json, or a fresh one when it is missing or unreadable (the broken one is kept aside).

        Everything in it but the expert scores follows from the recipe and the data, and the scores are
        recomputed from the experts' final parameters, so nothing that cannot be remade is lost.
        """
        fresh = {"key": cache_key(self.data, recipe, pretraining), "dataset": self.data.spec.name,
                 "data_checksum": self.data.checksum,
                 "normalisation": {"mean": list(self.data.mean), "std": list(self.data.std)},
                 "recipe": recipe.shaping(), "experts": {}}
        if pretraining is not None:
            fresh["pretraining"] = pretraining.ident
        if not meta_path.exists():
            return fresh
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            why = None if isinstance(meta, dict) and isinstance(meta.get("experts"), dict) and \
                meta.get("key") == fresh["key"] else "it is not this folder's meta.json (key or experts missing)"
        except (OSError, ValueError) as exc:
            why = f"it cannot be read ({type(exc).__name__}: {exc})"
        if why is None:
            return meta
        log.warning("mddbench: %s: %s; kept as %s and rebuilt from the recipe and the expert files", meta_path, why,
                    set_aside(meta_path).name)
        return fresh

    def _rescore(self, recipe: ExpertRecipe, found: dict, unscored: list[int], meta: dict, meta_path: Path) -> None:
        log.warning("mddbench: %s had no entry for expert(s) %s; scoring them from their final parameters",
                    meta_path, ", ".join(map(str, unscored)))
        for i in unscored:
            net = self._network(recipe, torch.Generator().manual_seed(0), self.device)
            torch.nn.utils.vector_to_parameters(found[i][-1].to(self.device), net.parameters())
            scores = score(net, self.data, self.device)
            meta["experts"][str(i)] = {**{k: None if v is None else round(v, 4) for k, v in scores.items()},
                                       "built_on": "unknown (scored again from the stored final parameters)"}
        write_json(meta_path, meta, indent=2)

    def _build(self, recipe: ExpertRecipe, folder: Path, missing: list[int], meta: dict, meta_path: Path,
               pretraining: Pretraining | None) -> dict[int, torch.Tensor]:
        start, built = time.perf_counter(), {}
        spec, data = self.data.spec, self.data.to(self.device)
        x, y = data.x["train"], data.y["train"]
        desc = f"experts {spec.name} {recipe.optimizer} ({len(missing)} x {recipe.epochs} ep)"
        with tqdm(total=len(missing) * recipe.epochs, desc=desc, unit="ep", disable=not self.progress) as bar:
            seed = (pretraining.key,) if pretraining is not None else (meta["key"], recipe.seed)
            for i in missing:
                net = self._network(recipe, seeded(*seed, "init", i), self.device)
                data_gen = seeded(*seed, "data", i)
                if pretraining is not None:
                    pretraining.run(net, data_gen)
                traj = train_expert(net, x, y, recipe, recipe.epochs, data_gen, bar)
                if not torch.isfinite(traj).all():
                    raise ConfigError(f"expert {i} diverged (non-finite parameters); lower the expert lr")
                with replacing(folder / f"expert_{i:03d}.safetensors") as tmp:
                    save_file({"trajectory": traj.contiguous()}, str(tmp))
                meta["experts"][str(i)] = {**{k: round(v, 4) for k, v in score(net, self.data, self.device).items()},
                                           "built_on": _device_name(self.device)}
                write_json(meta_path, meta, indent=2)
                built[i] = traj
        self.build_seconds += time.perf_counter() - start
        return built


def read_trajectory(path: Path, epochs: int | None = None, size: int | None = None) -> torch.Tensor | None:
    """One expert's (epochs+1, P) snapshots, or None when the file is missing or broken (then built again).

    A broken file (truncated, not safetensors, another shape, non-finite) is renamed ``*.corrupt`` with a
    warning: an expert is remade from its seeds, so nothing that cannot be remade is lost.
    """
    if not path.is_file():
        return None
    try:
        traj = load_file(str(path))["trajectory"]
        expected = f"({'' if epochs is None else epochs + 1}, {'' if size is None else size})"
        if traj.ndim != 2 or (epochs is not None and traj.shape[0] != epochs + 1) or (
                size is not None and traj.shape[1] != size):
            why = f"its trajectory has shape {tuple(traj.shape)}, expected {expected}"
        elif not bool(torch.isfinite(traj).all()):
            why = "its trajectory has NaN or infinite values"
        else:
            return traj
    except (SafetensorError, KeyError, OSError) as exc:
        why = f"it is truncated or not an expert file ({type(exc).__name__})"
    log.warning("mddbench: expert file %s is unusable: %s; kept as %s and built again", path, why,
                set_aside(path).name)
    return None


def _device_name(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def mean_expert_accuracy(meta: dict) -> float:
    accs = [e["test_acc"] for e in meta.get("experts", {}).values()]
    return sum(accs) / len(accs) if accs else math.nan
