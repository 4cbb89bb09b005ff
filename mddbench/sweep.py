"""Sweeps: a grid of independent jobs, safe to kill and restart.

``mddbench sweep --methods ... --datasets ... --ipc 1 2 10 --seeds 0 1`` expands the grid into
:class:`~mddbench.runner.Job` s, skips every job whose records are all in the store, builds the
expert buffers the remaining jobs need once per dataset (one builder, all cores), then runs the
jobs in ``--jobs`` worker processes, each with its share of the cores. A killed sweep loses at
most the iterations since each job's last checkpoint: finished evaluations are records, and the
store ignores a record it already has, so a restart neither loses nor duplicates anything.
"""
from __future__ import annotations

import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from .budgets import get_budget
from .data import get_spec, load_dataset
from .errors import MddError
from .experts import ExpertProvider
from .registry import METHODS, load_plugins
from .results import ResultStore
from .runner import Job, resolve_device, run_job


def expand(methods: list[str], datasets: list[str], ipcs: list[int], seeds: list[int], **job_kw) -> list[Job]:
    """The grid as jobs; `real` needs no ipc, so it gets one job per dataset and seed."""
    jobs = []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                if method == "real":
                    jobs.append(Job(method=method, dataset=dataset, ipc=None, seed=seed, **job_kw))
                else:
                    jobs += [Job(method=method, dataset=dataset, ipc=ipc, seed=seed, **job_kw) for ipc in ipcs]
    return jobs


def pending(jobs: list[Job], store: ResultStore) -> list[Job]:
    return [j for j in jobs if not all(store.has(j.job_id, m) for m in j.eval_models)]


def build_experts(jobs: list[Job], progress: bool = True) -> None:
    """Build every expert buffer the jobs need, once per (dataset, recipe), before the jobs start."""
    seen = set()
    for job in jobs:
        method = METHODS.get(job.method)()
        spec = get_spec(job.dataset)
        budget = get_budget(job.budget)
        hp = method.resolve(spec, job.ipc or 0, budget, dict(job.hparams))
        for recipe in method.expert_recipes(hp):
            key = (job.dataset, job.budget, recipe)
            if key in seen:
                continue
            seen.add(key)
            data = load_dataset(spec, job.data_root)
            ExpertProvider(job.experts_dir, data, budget, resolve_device(job.device), progress)(recipe)


@dataclass
class Outcome:
    job: Job
    ok: bool
    message: str = ""


def _run(job: Job, threads: int) -> Outcome:
    torch.set_num_threads(threads)
    try:
        run_job(job)
        return Outcome(job, True)
    except MddError as exc:
        return Outcome(job, False, str(exc))
    except Exception:  # a crashing job must not take the sweep down; its traceback is kept
        return Outcome(job, False, traceback.format_exc(limit=5))


def usable_cores() -> int:
    """Cores this process may run on (respects taskset and CPU affinity), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_sweep(jobs: list[Job], workers: int = 1, progress: bool = True) -> list[Outcome]:
    if not jobs:
        return []
    load_plugins(list(jobs[0].plugins))
    out = Path(jobs[0].out)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending(jobs, ResultStore(out / "results.sqlite"))
    skipped = len(jobs) - len(todo)
    if progress and skipped:
        print(f"{skipped} of {len(jobs)} jobs already have their records; {len(todo)} to run")
    if not todo:
        return []
    build_experts(todo, progress)
    todo = [replace(j, progress=False) for j in todo]
    cores = usable_cores()
    threads = max(1, cores // max(1, workers))
    outcomes = []
    with tqdm(total=len(todo), desc="sweep", unit="job", disable=not progress) as bar:
        if workers <= 1:
            for job in todo:
                outcomes.append(_run(job, threads))
                bar.update(1)
                bar.set_postfix(failed=sum(not o.ok for o in outcomes))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_run, job, threads) for job in todo]
                for future in as_completed(futures):
                    outcomes.append(future.result())
                    bar.update(1)
                    bar.set_postfix(failed=sum(not o.ok for o in outcomes))
    return outcomes
