"""One job from its description to its records: prepare, distill (resumable), evaluate, record.

The job's identity is :mod:`mddbench.run.job`, its records :mod:`mddbench.run.record`, the check that stored
records still describe it :mod:`mddbench.run.stale`.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mddbench import __version__, memory
from mddbench.api.budgets import Budget, canonical_budget, get_budget
from mddbench.api.loop import peak_memory_mb
from mddbench.api.method import Method, Task
from mddbench.api.saved import load_with_data, own_seed
from mddbench.api.synset import SyntheticSet
from mddbench.atomic import ensure_writable, locked, set_aside, write_json
from mddbench.data.dataset import DatasetSpec, RealData, get_spec, load_dataset
from mddbench.errors import ArtifactError, ConfigError, CorruptRunState, DistillationDiverged, MddError, MethodError
from mddbench.evaluation.protocol import EvalConfig, evaluate
from mddbench.limits import AT_LEAST_1, NON_NEGATIVE, POSITIVE, check
from mddbench.registry import METHODS, NETWORKS, load_plugins
from mddbench.results.failures import FailureTable, failure_record
from mddbench.results.store import ResultStore, stored_artifact
from mddbench.run.job import ARTIFACT, Job, budget_label_of, resolve_device, write_job_file
from mddbench.run.record import file_digest, git_commit, make_record, provenance
from mddbench.run.stale import as_json, changed_values, stale_message, stale_record
from mddbench.seeding import generator as seeded

log = logging.getLogger(__name__)


def check_ipc(ipc: int | None, method: Method, data: RealData) -> None:
    if not method.uses_ipc:
        return
    if ipc is None or not isinstance(ipc, int) or ipc < 1:
        raise ConfigError(f"--ipc must be a positive integer (images per class), got {ipc!r}")
    counts = data.class_counts()
    smallest = min(counts)
    if ipc > smallest:
        c = counts.index(smallest)
        raise ConfigError(f"--ipc {ipc} is larger than class {c} ({data.spec.label_names[c]!r}) of "
                          f"{data.spec.name}, which has {smallest} train images")


@dataclass
class Prepared:
    job: Job
    method: Method
    spec: DatasetSpec
    data: RealData
    hp: dict[str, Any]
    device: torch.device
    budget: Budget


def check_options(job: Job) -> None:
    """The job's numeric options, as the command line checks them (a Job may also be made in Python)."""
    for flag, value, limit in (("--eval-n-models", job.eval_n_models, AT_LEAST_1),
                               ("--eval-epochs", job.eval_epochs, AT_LEAST_1),
                               ("--time-budget", job.time_budget, POSITIVE),
                               ("--snapshot-every", job.snapshot_every, NON_NEGATIVE)):
        check(flag, value, limit)


def prepare(job: Job) -> Prepared:
    """Validate every input of a job before any expensive work."""
    check_options(job)
    load_plugins(list(job.plugins))
    method = METHODS.get(job.method)()
    spec = get_spec(job.dataset)
    spec.check_distillable()
    budget = get_budget(job.budget)
    for model in job.eval_models:
        NETWORKS.get(model)  # an unknown evaluation network fails here, not after distilling
    device = resolve_device(job.device)
    ensure_writable(Path(job.out))
    data = load_dataset(spec, job.data_root)
    check_ipc(job.ipc, method, data)
    hp = method.resolve(spec, job.ipc or 0, budget, dict(job.hparams))
    if method.expert_recipes(hp):
        ensure_writable(job.experts_dir, "--expert-cache")
    p = Prepared(job, method, spec, data, hp, device, budget)
    for model in job.eval_models:
        eval_config(p, model)  # impossible evaluation settings fail here, not after distilling
    return p


def distill(p: Prepared) -> SyntheticSet:
    """Distill (or load the finished artifact of) a prepared job."""
    from mddbench.trajectory.experts import ExpertProvider

    job, run_dir = p.job, p.job.run_dir
    check_run_folder(p)
    artifact = run_dir / ARTIFACT
    if artifact.is_file():
        try:
            synset = SyntheticSet.load(artifact)
            if synset.meta.get("job_id") == job.job_id:
                return synset
        except ArtifactError as exc:  # this run's own output: distilling again (from its checkpoints) remakes it
            log.warning("mddbench: %s; kept as %s, the set is distilled again", exc, set_aside(artifact).name)
    ensure_writable(run_dir)
    write_job_file(job)
    write_json(run_dir / "hparams.json", as_json(p.hp), indent=2)  # what check_run_folder compares with
    budget = p.budget
    experts = ExpertProvider(job.experts_dir, p.data, budget, p.device, progress=job.progress)

    def new_task() -> Task:
        return Task(spec=p.spec, data=p.data.to(p.device), ipc=job.ipc or 0, hp=p.hp, budget=budget, seed=job.seed,
                    device=p.device, generator=seeded(job.seed, "distill", job.method), run_dir=run_dir,
                    experts=experts, snapshot_every=job.snapshot_every, time_budget=job.time_budget,
                    progress=job.progress)

    if p.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(p.device)
    start = time.perf_counter()
    task = new_task()
    try:
        synset = distilled(p.method, task)
    except CorruptRunState as exc:  # a checkpoint that does not fit was half-restored: start the method afresh
        log.warning("mddbench: %s: %s; kept as %s, the method starts again", exc.path, exc.what,
                    set_aside(exc.path).name)
        task = new_task()
        synset = distilled(p.method, task)
    wall = time.perf_counter() - start - experts.build_seconds
    loops = task.loops
    synset.meta.update({
        "job_id": job.job_id, "method": job.method, "dataset": p.spec.name, "ipc": job.ipc, "seed": job.seed,
        "budget": job.budget, "budget_version": budget.version, "hparams": p.hp, "label_type": synset.label_type, "data_checksum": p.data.checksum,
        "normalisation": {"mean": list(p.data.mean), "std": list(p.data.std)}, "shape": list(p.spec.shape),
        "n_classes": p.spec.n_classes, "version": __version__, "git_commit": git_commit(),
        "distill_seconds": round(sum(r.seconds for r in loops) if loops else wall, 3),
        "iterations": sum(r.iterations for r in loops) if loops else None,
        "updates": _total([r.updates for r in loops]),
        "stopped_by_time": any(r.stopped_by_time for r in loops),
        "peak_memory_mb": round(max([r.peak_mb for r in loops] + [peak_memory_mb(p.device)]), 1),
        "device": str(p.device),
        "experts": experts.used, "time_budget": job.time_budget, "lr": synset.lr,
        "overrides": dict(job.hparams),
    })
    if p.method.shareable:
        synset.save(artifact)
    return synset


def distilled(method: Method, task: Task) -> SyntheticSet:
    """``method.distill(task)``, with its set checked; anything else is a MethodError that names the method
    (a plugin's bug must not become a traceback that names none, an exit without a record, or a record of a
    set that is not what was asked for)."""
    name = method.name
    try:
        synset = method.distill(task)
    except (MddError, KeyboardInterrupt):
        raise
    except SystemExit as exc:
        raise MethodError(f"method {name!r} called exit({exc.code!r}) inside distill; a method returns its set or "
                          "raises, it never ends the process (no record was written)") from exc
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise MethodError(f"method {name!r} failed in distill: {type(exc).__name__}: {exc} (at {frame.filename}:"
                          f"{frame.lineno}; --verbose shows the traceback; no record was written)") from exc
    problems = set_problems(method, task, synset)
    if problems:
        raise MethodError(f"method {name!r} returned a set that cannot be recorded: {'; '.join(problems)}")
    return synset


def set_problems(method: Method, task: Task, synset: Any) -> list[str]:
    """What is wrong with a set ``method`` returned for ``task`` (none: it may be recorded)."""
    if not isinstance(synset, SyntheticSet):
        return [f"distill returned {type(synset).__name__}, not a SyntheticSet"]
    problems = synset.problems(task.spec)
    expected, k = method.images_per_class(task), task.spec.n_classes
    if problems or expected is None:
        return problems
    if synset.label_type == "hard":
        counts = torch.bincount(synset.labels, minlength=k).tolist()
        if any(n != expected for n in counts):
            held = ", ".join(f"{n} of class {c}" for c, n in enumerate(counts))
            problems.append(f"{expected} image(s) of each class were asked for, it holds {held}")
    elif len(synset) != expected * k:
        problems.append(f"{expected} image(s) of each of {k} classes were asked for, it holds {len(synset)}")
    return problems


def _total(counts: list[int | None]) -> int | None:
    """The sum of the loops' update counts; None when no loop counted (its method has no gate)."""
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def eval_config(p: Prepared, model: str) -> EvalConfig:
    return evaluation_config(model, p.budget, p.method.eval_overrides(p.budget), p.job.eval_n_models,
                             p.job.eval_epochs)


def evaluation_config(model: str, budget: Budget, method_overrides: dict[str, Any], n_models: int | None,
                      epochs: int | None) -> EvalConfig:
    """The protocol's evaluation at a budget: the budget's size, the method's declared changes, then the
    user's overrides of the size (which make the budget ``<name>-custom``)."""
    cfg = EvalConfig(model=model, n_models=budget.eval_models, epochs=budget.eval_epochs).with_(**method_overrides)
    return cfg.with_(n_models=n_models, epochs=epochs)


def evaluate_saved(artifact: str | Path, models: tuple[str, ...] = ("convnet",), budget: str | None = None,
                   seed: int | None = None, eval_n_models: int | None = None, eval_epochs: int | None = None,
                   data_root: str | None = None, out: str = "mddbench_out", device: str = "auto",
                   progress: bool = True, record: bool = True) -> list[dict[str, Any]]:
    """`mddbench eval`: evaluate a saved set against the data it was made from, and record it.

    Its method is believed only for a file a run of this store recorded (:func:`provenance`); the job id
    is the run's for that file at its own budget and seed, else one that names what differs."""
    synset, data, artifact = load_with_data(artifact, data_root, "evaluate")
    memory.reset_chosen()
    explicit_seed = seed is not None
    seed = own_seed(synset, artifact) if seed is None else seed
    meta = synset.meta
    store_path = Path(out) / "results.sqlite"
    meta = {**meta, **provenance(artifact, meta, store_path)}
    budget_name = canonical_budget(budget or meta.get("budget", "quick"))
    budget_def = get_budget(budget_name)
    label = budget_label_of(budget_name, eval_n_models, eval_epochs)
    job_id = meta.get("job_id", "external")
    if meta["provenance"] != "recorded run":  # never the id of the run the file claims to come from
        job_id = f"external-{file_digest(artifact)[:16]}"
    if label != meta.get("budget") or explicit_seed:
        job_id = f"{job_id}:eval-{label}-s{seed}"
    if record:
        ensure_writable(Path(out))
    torch_device = resolve_device(device)
    records = []
    for model in models:
        cfg = evaluation_config(NETWORKS.canonical(model), budget_def, {}, eval_n_models, eval_epochs)
        result = evaluate(synset, data, cfg, seed=seed,
                          device=torch_device, progress=progress)
        records.append(make_record({"method": "external", "ipc": None, **meta}, data.spec, result, label,
                                   stored_artifact(artifact, out), job_id))
    if record:
        store = ResultStore(store_path)
        for r in records:
            store.add(r)
    return records


def build_experts(job: Job) -> list[tuple[Any, Any, Any]]:
    """`mddbench buffers`: the expert buffers ``job``'s method reads at its budget, built or found;
    [(provider, recipe, trajectories)]."""
    from mddbench.trajectory.experts import ExpertProvider

    p = prepare(job)
    recipes = p.method.expert_recipes(p.hp)
    if not recipes:
        raise ConfigError(f"{job.method} matches no expert trajectories; buffers are built for methods that do "
                          f"(see `mddbench list methods`)")
    provider = ExpertProvider(job.experts_dir, p.data, p.budget, p.device, progress=job.progress)
    return [(provider, recipe, provider(recipe)) for recipe in recipes]


def _saved_record(path: Path, job: Job, cfg: EvalConfig) -> dict[str, Any] | None:
    """The record an earlier attempt wrote beside its set but could not store, if it is this job's and whole."""
    from mddbench.results.store import validate

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        validate(record)
    except (OSError, ValueError, ConfigError):
        return None
    return record if record.get("job_id") == job.job_id and record.get("eval_config") == cfg.as_dict() else None


def check_run_folder(p: Prepared) -> None:
    """The same check for what a run folder holds: its set, checkpoints and saved records come from the
    values in RUN/hparams.json (written beside job.json), or in the set of a folder older than that file."""
    run_dir = p.job.run_dir
    path, then = run_dir / "hparams.json", None
    if path.is_file():
        then = json.loads(path.read_text(encoding="utf-8"))
    elif (run_dir / ARTIFACT).is_file():
        try:
            then = SyntheticSet.load(run_dir / ARTIFACT).meta.get("hparams")
        except ArtifactError:
            then = None
    if isinstance(then, dict):
        diff = changed_values(as_json(p.hp), then)
        if diff:
            raise ConfigError(stale_message(f"{run_dir} (its set or checkpoints)", p.job.budget, diff))


def failure_of(p: Prepared, eval_models: list[str], message: str) -> dict[str, Any]:
    """The failure a diverged distillation of ``p`` leaves in the store instead of the records of ``eval_models``."""
    job = p.job
    return failure_record(
        job_id=job.job_id, method=job.method, label_type=p.method.label_type, dataset=p.spec.name, dims=p.spec.dims,
        ipc=job.ipc, seed=job.seed, eval_models=eval_models, protocol=eval_config(p, eval_models[0]).protocol,
        budget=job.budget_label, budget_version=p.budget.version, overrides=dict(job.hparams),
        time_budget=job.time_budget, message=message, hparams=as_json(p.hp), version=__version__,
        git_commit=git_commit(), device=str(p.device))


def run_job(job: Job) -> list[dict[str, Any]]:
    """Distill, evaluate with every requested network, record; returns the records.

    Each record is written to the run folder before it goes into the store, so a store that fails
    (full disk, a lock) loses no evaluation: the rerun stores the saved record instead of redoing it.
    """
    p = prepare(job)
    memory.reset_chosen()  # the record says what this run's loops used
    store = ResultStore(Path(job.out) / "results.sqlite")
    todo = [m for m in job.eval_models if not store.has(job.job_id, m)]
    records = [r for r in store.records(job_id=job.job_id) if r["eval_model"] in job.eval_models]
    stale = stale_record(job, records, as_json(p.hp))
    if stale:
        raise ConfigError(stale_message(stale[0], job.budget, stale[1]))
    if not todo:
        return records
    store.check_writable()
    job.run_dir.mkdir(parents=True, exist_ok=True)
    def waiting() -> None:
        log.warning("mddbench: another process is running %s; waiting for its records", job.run_name)

    with locked(job.run_dir / ".lock", waiting):  # identical runs at once: one distills, the others wait
        done = [r for r in store.records(job_id=job.job_id) if r["eval_model"] in todo]
        if done:
            log.warning("mddbench: %s was finished by another process meanwhile", job.run_name)
            records += done
            todo = [m for m in todo if m not in {r["eval_model"] for r in done}]
        return records + _distill_and_evaluate(p, store, todo) if todo else records


def _distill_and_evaluate(p: Prepared, store: ResultStore, todo: list[str]) -> list[dict[str, Any]]:
    """The records of ``todo`` (evaluation networks) for a prepared job whose run folder this process holds."""
    job, records = p.job, []
    try:
        synset = distill(p)
    except DistillationDiverged as exc:  # no record: the failure says the seed was lost (mddbench.results.failures)
        exc.failure = failure_of(p, todo, str(exc))
        try:
            FailureTable(store).add(exc.failure)
        except (OSError, sqlite3.Error) as store_exc:  # the divergence is what the user must hear of
            log.warning("mddbench: could not store the failure in %s (%s)", store.path, store_exc)
        raise
    artifact = job.run_dir / ARTIFACT
    for model in todo:
        cfg = eval_config(p, model)
        saved = job.run_dir / f"result_{model}.json"
        record = _saved_record(saved, job, cfg)
        if record is None:
            result = evaluate(synset, p.data, cfg, seed=job.seed, device=p.device, progress=job.progress)
            record = make_record(synset.meta, p.spec, result, job.budget_label,
                                 stored_artifact(artifact, job.out) if p.method.shareable else None)
            if p.method.shareable:
                record["artifact_sha256"] = file_digest(artifact)
            write_json(saved, record, indent=2)
        try:
            store.add(record)
        except (OSError, sqlite3.Error, ConfigError) as exc:
            raise ConfigError(f"could not add the {model} record to {store.path} ({exc}); it is kept in {saved}: "
                              f"fix the store and run the same command again to store it") from exc
        records.append(record)
    return records
