"""A job: what one run is (method, dataset, ipc, seed, budget, overrides), its identity and its folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mddbench.api.budgets import canonical_budget, get_budget
from mddbench.atomic import write_json
from mddbench.errors import ConfigError
from mddbench.ids import identity_digest
from mddbench.registry import DATASETS, METHODS, NETWORKS, load_plugins

ARTIFACT = "synset.safetensors"


SEED_LIMIT = 2**63  # the results store keeps seeds as SQLite integers (signed 64 bit)


@dataclass(frozen=True)
class Job:
    method: str
    dataset: str
    ipc: int | None = 2  # None: the `real` row ("full")
    seed: int = 0
    budget: str = "quick"
    hparams: tuple[tuple[str, str], ...] = ()
    eval_models: tuple[str, ...] = ("convnet",)
    eval_n_models: int | None = None  # overrides of the budget's evaluation size (recorded)
    eval_epochs: int | None = None
    time_budget: float | None = None  # stop distilling after this many seconds
    snapshot_every: int = 0
    data_root: str | None = None
    out: str = "mddbench_out"
    expert_cache: str | None = None  # None: $MDDBENCH_EXPERTS, else OUT/experts
    device: str = "auto"
    plugins: tuple[str, ...] = ()
    progress: bool = True

    def __post_init__(self) -> None:
        """Names become the registered ones (``BreastMNIST`` is ``breastmnist``, an alias its target), so
        every spelling of a cell gets the same job id and lands in the same row; a seed the store cannot
        hold fails here, before any work."""
        load_plugins(list(self.plugins))
        canonical = {"method": METHODS.canonical(self.method), "dataset": DATASETS.canonical(self.dataset),
                     "budget": canonical_budget(self.budget),
                     "eval_models": tuple(NETWORKS.canonical(m) for m in self.eval_models)}
        for name, value in canonical.items():
            object.__setattr__(self, name, value)
        if not METHODS.get(self.method).uses_ipc:  # the whole train split: one job whatever --ipc says
            object.__setattr__(self, "ipc", None)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"--seed must be an integer from 0 to {SEED_LIMIT - 1}, got {self.seed!r}")

    def identity(self) -> dict[str, Any]:
        """What determines the result (not where files go or how it is shown)."""
        ident = {"method": self.method, "dataset": self.dataset, "ipc": self.ipc, "seed": self.seed,
                 "budget": self.budget, "hparams": sorted(self.hparams), "time_budget": self.time_budget,
                 "eval_n_models": self.eval_n_models, "eval_epochs": self.eval_epochs}
        version = get_budget(self.budget).version
        return ident if version == 1 else {**ident, "budget_version": version}  # version-1 ids stay as they were

    @property
    def job_id(self) -> str:
        return identity_digest(self.identity())

    @property
    def run_name(self) -> str:
        ipc = "full" if self.ipc is None else f"ipc{self.ipc}"
        return f"{self.method}_{self.dataset}_{ipc}_s{self.seed}_{self.budget}_{self.job_id[:8]}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / "runs" / self.run_name

    @property
    def experts_dir(self) -> Path:
        from mddbench.trajectory.experts import expert_cache

        return expert_cache(self.expert_cache, self.out)

    @property
    def budget_label(self) -> str:
        return budget_label_of(self.budget, self.eval_n_models, self.eval_epochs)


def budget_label_of(budget: str, eval_n_models: int | None, eval_epochs: int | None) -> str:
    """The budget as recorded: a budget with overridden evaluation size is not that budget."""
    return budget if eval_n_models is None and eval_epochs is None else f"{budget}-custom"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA device; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]")
    return torch.device(name)


def write_job_file(job: Job) -> None:
    """``RUN/job.json``: every input of the job, so a run folder says what made it."""
    write_json(job.run_dir / "job.json", {"job_id": job.job_id, **asdict(job)}, indent=2, default=str)
