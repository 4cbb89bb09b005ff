"""Sweeps: a grid of independent jobs, safe to kill and restart.

``mddbench sweep --methods ... --datasets ... --ipc 1 2 10 --seeds 0 1`` expands the grid into
:class:`~mddbench.run.job.Job` s and skips every job whose records are all in the store. The rest
becomes a plan of :class:`Work`: one expert build per (dataset, recipe) the jobs' methods declare
(``Method.expert_recipes``) and is not cached yet, and one job each, which needs its own experts
only. :func:`schedule` hands every piece of work to an executor as soon as what it needs exists,
so expert recipes build in parallel and a job starts when its own experts are done. The executor
decides only *how* work runs: worker processes on this machine (:mod:`mddbench.scaleout.local`) or
Ray tasks on a cluster (:mod:`mddbench.scaleout.ray_cluster`); in both, the records come back to this
process, which adds them to the store. A killed sweep loses at most the iterations since each
job's last checkpoint: finished evaluations are records, and the store ignores a record it
already has, so a restart neither loses nor duplicates anything.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec, load_dataset
from mddbench.errors import ConfigError
from mddbench.registry import METHODS, load_plugins
from mddbench.results.failures import FailureTable
from mddbench.results.store import ResultStore
from mddbench.run.job import Job
from mddbench.run.stale import stale_message, stale_record
from mddbench.scaleout.local import LocalExecutor
from mddbench.scaleout.work import ExpertBuild, Result, Work
from mddbench.trajectory.experts import ExpertProvider


def expand(methods: list[str], datasets: list[str], ipcs: list[int], seeds: list[int], **job_kw) -> list[Job]:
    """The grid as jobs; a method that takes no ipc (`real`) gets one job per dataset and seed."""
    jobs: dict[str, Job] = {}
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                for ipc in ipcs:
                    job = Job(method=method, dataset=dataset, ipc=ipc, seed=seed, **job_kw)
                    jobs.setdefault(job.job_id, job)
    return list(jobs.values())


def pending(jobs: list[Job], store: ResultStore) -> list[Job]:
    """The jobs that lack records; jobs whose stored records ran under other values than they resolve now
    stop the sweep before anything runs, all of them named (:func:`mddbench.run.stale.stale_record`)."""
    stored = {j.job_id: store.records(job_id=j.job_id) for j in jobs}
    stale = [s for s in (stale_record(j, stored[j.job_id]) for j in jobs) if s]
    if stale:
        what = "; ".join(f"{name} ({diff})" for name, diff in stale[:5])
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise ConfigError(stale_message(f"{len(stale)} cell(s): {what}{more}", jobs[0].budget, None))
    return [j for j in jobs if not set(j.eval_models) <= {r["eval_model"] for r in stored[j.job_id]}]


# ------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    works: list[Work]  # expert builds first, then jobs
    cached: dict[str, ExpertBuild] = field(default_factory=dict)  # needed, already complete in the cache


def plan(jobs: list[Job]) -> Plan:
    """Expert builds (once per buffer, by what each method declares) and jobs that need them."""
    builds: dict[str, ExpertBuild] = {}
    cached: dict[str, ExpertBuild] = {}
    job_works = []
    data_cache: dict[tuple[str, str | None], Any] = {}
    for job in jobs:
        method = METHODS.get(job.method)()
        spec = get_spec(job.dataset)
        budget = get_budget(job.budget)
        hp = method.resolve(spec, job.ipc or 0, budget, dict(job.hparams))
        needs = []
        for recipe in method.expert_recipes(hp):
            data_key = (job.dataset, job.data_root)
            if data_key not in data_cache:
                data_cache[data_key] = load_dataset(spec, job.data_root)
            provider = ExpertProvider(job.experts_dir, data_cache[data_key], budget, torch.device("cpu"), False)
            build = ExpertBuild(job.dataset, job.budget, recipe, str(job.experts_dir),
                                provider.folder(recipe).name, job.data_root)
            key = f"experts:{Path(build.experts_dir).resolve() / build.folder}"
            if key not in builds and key not in cached:
                (builds if provider.missing(recipe) else cached)[key] = build
            needs.append(key)
        job_works.append(Work(job.job_id, job=job, needs=tuple(needs)))
    return Plan([Work(k, experts=b) for k, b in builds.items()] + job_works, cached)


class Executor(Protocol):
    """How works run; the scheduling (what runs when, what is recorded) is :func:`schedule`'s."""

    slots: int  # how many works may be in flight at once

    def provide(self, key: str, build: ExpertBuild) -> None:
        """A needed expert buffer that is already cached (a remote executor ships it to its workers)."""

    def submit(self, work: Work) -> Future: ...

    def collect(self, future: Future, work: Work) -> Result:
        """The finished future's Result (files brought home, records as this machine's store keeps them)."""

    def close(self) -> None: ...

    # optional: ``interrupt()`` passes a KeyboardInterrupt of the sweep on to the works in flight (see
    # LocalExecutor.interrupt); an executor without it has nothing to pass on


@dataclass
class Outcome:
    job: Job
    ok: bool
    message: str = ""


def schedule(p: Plan, executor: Executor, store: ResultStore, progress: bool = True) -> list[Outcome]:
    """Run a plan: each work as soon as its needs are done; records go to ``store`` from here only."""
    for key, build in p.cached.items():
        executor.provide(key, build)
    waiting = list(p.works)
    done: set[str] = set(p.cached)
    failed: dict[str, str] = {}
    running: dict[Future, Work] = {}
    outcomes: list[Outcome] = []
    with tqdm(total=len(p.works), desc="sweep", unit="work", disable=not progress) as bar:
        while waiting or running:
            for work in [w for w in waiting if any(n in failed for n in w.needs)]:
                waiting.remove(work)
                why = "; ".join(f"{n.split(os.sep)[-1]}: {failed[n]}" for n in work.needs if n in failed)
                outcomes.append(Outcome(work.job, False, f"its experts could not be built ({why})"))
                bar.update(1)
            for work in [w for w in waiting if all(n in done for n in w.needs)]:
                if len(running) >= executor.slots:
                    break
                waiting.remove(work)
                running[executor.submit(work)] = work
            if not running:
                if waiting:  # cannot happen: every need is a work of this plan
                    raise RuntimeError(f"unsatisfiable needs: {[w.needs for w in waiting]}")
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                work = running.pop(future)
                result = executor.collect(future, work)
                for record in result.records:
                    store.add(record)
                if result.failure is not None:  # run_job stored it where it ran: on another machine, maybe
                    FailureTable(store).add(result.failure)
                if result.ok:
                    done.add(work.key)
                else:
                    failed[work.key] = result.message.strip()
                if work.job is not None:
                    outcomes.append(Outcome(work.job, result.ok, result.message))
                bar.update(1)
                bar.set_postfix(failed=len(failed))
    return outcomes


def run_sweep(jobs: list[Job], workers: int = 1, progress: bool = True, executor: Executor | None = None,
              threads: int | None = None) -> list[Outcome]:
    """Run the jobs that lack records; ``executor`` defaults to ``workers`` local processes."""
    if not jobs:
        return []
    load_plugins(list(jobs[0].plugins))
    out = Path(jobs[0].out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "results.sqlite")
    todo = pending(jobs, store)
    skipped = len(jobs) - len(todo)
    if progress and skipped:
        print(f"{skipped} of {len(jobs)} jobs already have their records; {len(todo)} to run")
    if not todo:
        return []
    the_plan = plan(todo)
    if executor is None:

        executor = LocalExecutor(workers, todo[0].device, threads)
    try:
        return schedule(the_plan, executor, store, progress)
    except KeyboardInterrupt:
        interrupt = getattr(executor, "interrupt", None)  # a Ray driver's tasks end with it: nothing to pass on
        if interrupt is not None:
            interrupt()
        raise
    finally:
        executor.close()
