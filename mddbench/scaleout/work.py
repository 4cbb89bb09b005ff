"""What a sweep hands its executors, and how one piece runs in a worker: an expert build or a job
(:class:`Work`), its :class:`Result`, and :func:`execute`. The scheduler (:mod:`mddbench.scaleout.sweep`)
and the executors (:mod:`mddbench.scaleout.local`, :mod:`mddbench.scaleout.ray_cluster`) both build on it.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mddbench.allocator import configure_allocator
from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec, load_dataset
from mddbench.errors import MddError
from mddbench.run.job import Job, resolve_device
from mddbench.run.pipeline import run_job
from mddbench.trajectory.experts import ExpertProvider, ExpertRecipe


@dataclass(frozen=True)
class ExpertBuild:
    """One expert buffer to build: a recipe on a dataset, into an expert cache."""

    dataset: str
    budget: str
    recipe: ExpertRecipe
    experts_dir: str
    folder: str  # the buffer's folder name in the cache (content-addressed)
    data_root: str | None = None

    def run(self, device: str, progress: bool = False) -> None:
        data = load_dataset(get_spec(self.dataset), self.data_root)
        ExpertProvider(Path(self.experts_dir), data, get_budget(self.budget), resolve_device(device), progress)(
            self.recipe)


@dataclass(frozen=True)
class Work:
    """A unit the scheduler hands to an executor: an expert build or a job, with the keys it needs."""

    key: str
    experts: ExpertBuild | None = None
    job: Job | None = None
    needs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"experts {self.experts.folder}" if self.experts else self.job.run_name


@dataclass
class Result:
    """What a finished work hands back: its records (jobs), or why it failed."""

    key: str
    ok: bool
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] | None = None  # (remote executors) the files it made, by path under their root
    failure: dict[str, Any] | None = None  # a job whose distillation diverged: what the store keeps of it


def execute(work: Work, device: str, threads: int) -> Result:
    """Run one work in this process with ``threads`` threads; a failure becomes a Result, never an exception.
    The process's thread count is restored afterwards: a one-slot sweep runs its works in the caller's process,
    whose later work (a notebook's, a test's) must not inherit the sweep's threads."""
    configure_allocator()  # a worker on another node did not inherit the driver's setting
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if device.startswith("cuda:") and torch.cuda.is_available():
            torch.cuda.set_device(device)  # anything that says just "cuda" means this worker's GPU too
        if work.experts is not None:
            work.experts.run(device)
            return Result(work.key, True)
        return Result(work.key, True, records=run_job(replace(work.job, device=device, progress=False)))
    except MddError as exc:
        return Result(work.key, False, str(exc), failure=getattr(exc, "failure", None))
    except Exception:  # a crashing job must not take the sweep down; its traceback is kept
        return Result(work.key, False, traceback.format_exc(limit=5))
    finally:
        torch.set_num_threads(previous)


def usable_cores() -> int:
    """Cores this process may run on (respects taskset and CPU affinity), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
