"""Jobs: one (method, dataset, ipc, seed, budget) cell run end to end as an independent unit.

A :class:`Job` names every input of a run, so a grid can be spread over machines; its id is a
hash of what determines the result (not of where files go). ``run_job`` loads the data, builds or
reuses experts, distills (resuming from the run folder's checkpoint), saves the synthetic set,
evaluates it under protocol v1 for each evaluation network, and adds one record per network to
the results store. A finished step is never redone: rerunning a job is cheap and idempotent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__, memory
from .allocator import applied_setting
from .atomic import set_aside, write_json
from .budgets import Budget, canonical_budget, get_budget
from .data import DatasetSpec, RealData, get_spec, load_dataset
from .errors import ArtifactError, ConfigError, CorruptRunState, DistillationDiverged
from .evaluate import EvalConfig, EvalResult, evaluate
from .failures import FailureTable, failure_record
from .ids import identity_digest
from .limits import AT_LEAST_1, NON_NEGATIVE, POSITIVE, check
from .loop import peak_memory_mb
from .method import Method, Task
from .registry import DATASETS, METHODS, NETWORKS, load_plugins
from .results import RECORD_SCHEMA, ResultStore, artifact_path, stored_artifact
from .saved import load_with_data
from .seeding import generator as seeded
from .synset import SyntheticSet

ARTIFACT = "synset.safetensors"
SEED_LIMIT = 2**63  # the results store keeps seeds as SQLite integers (signed 64 bit)
log = logging.getLogger(__name__)


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
        from .experts import expert_cache

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


def ensure_writable(folder: Path, option: str = "--out") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a probe of its own: runs that share an --out (a sweep's workers, two shells) must not
        # unlink each other's probe
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to {folder} ({exc.strerror or exc}); choose another {option}") from exc


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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


def write_job_file(job: Job) -> None:
    """``RUN/job.json``: every input of the job, so a run folder says what made it."""
    write_json(job.run_dir / "job.json", {"job_id": job.job_id, **asdict(job)}, indent=2, default=str)


def distill(p: Prepared) -> SyntheticSet:
    """Distill (or load the finished artifact of) a prepared job."""
    from .experts import ExpertProvider

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
        synset = p.method.distill(task)
    except CorruptRunState as exc:  # a checkpoint that does not fit was half-restored: start the method afresh
        log.warning("mddbench: %s: %s; kept as %s, the method starts again", exc.path, exc.what,
                    set_aside(exc.path).name)
        task = new_task()
        synset = p.method.distill(task)
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
    meta = synset.meta
    store_path = Path(out) / "results.sqlite"
    meta = {**meta, **provenance(artifact, meta, store_path)}
    budget_name = canonical_budget(budget or meta.get("budget", "quick"))
    budget_def = get_budget(budget_name)
    label = budget_label_of(budget_name, eval_n_models, eval_epochs)
    job_id = meta.get("job_id", "external")
    if meta["provenance"] != "recorded run":  # never the id of the run the file claims to come from
        job_id = f"external-{file_digest(artifact)[:16]}"
    if label != meta.get("budget") or seed is not None:
        job_id = f"{job_id}:eval-{label}-s{seed}"
    if record:
        ensure_writable(Path(out))
    torch_device = resolve_device(device)
    records = []
    for model in models:
        cfg = evaluation_config(NETWORKS.canonical(model), budget_def, {}, eval_n_models, eval_epochs)
        result = evaluate(synset, data, cfg, seed=seed if seed is not None else meta.get("seed", 0),
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
    from .experts import ExpertProvider

    p = prepare(job)
    recipes = p.method.expert_recipes(p.hp)
    if not recipes:
        raise ConfigError(f"{job.method} matches no expert trajectories; buffers are built for methods that do "
                          f"(see `mddbench list methods`)")
    provider = ExpertProvider(job.experts_dir, p.data, p.budget, p.device, progress=job.progress)
    return [(provider, recipe, provider(recipe)) for recipe in recipes]


def make_record(meta: dict[str, Any], spec: DatasetSpec, result: EvalResult, budget: str,
                artifact: str | None, job_id: str | None = None) -> dict[str, Any]:
    """One complete result record (benchmark.md's fields) from a synthetic set's metadata."""
    ipc = meta.get("ipc")
    return {
        "job_id": job_id or meta["job_id"], "method": meta["method"], "dataset": spec.name,
        "resolution": spec.size, "dims": spec.dims, "channels": spec.channels,
        "ipc": "full" if ipc is None else ipc,
        "eval_model": result.config.model, "protocol": result.config.protocol, "budget": budget,
        "seed": meta.get("seed", 0), "label_type": meta.get("label_type", "hard"), "metrics": result.summary(),
        "eval_config": result.config.as_dict(), "eval_seconds": round(result.seconds, 3),
        "eval_engine": result.engine, "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        **{k: meta.get(k) for k in ("hparams", "data_checksum", "version", "distill_seconds", "iterations",
                                    "updates", "stopped_by_time", "peak_memory_mb", "device", "git_commit",
                                    "experts")},
        "budget_version": meta.get("budget_version") or 1,
        "distill_budget": meta.get("budget"), "time_budget": meta.get("time_budget"), "learned_lr": meta.get("lr"),
        "overrides": meta.get("overrides") or {},
        **{k: meta[k] for k in ("claimed_method", "provenance", "artifact_sha256") if k in meta},
        "artifact": artifact, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "record_schema": RECORD_SCHEMA, "environment": environment(meta.get("device")),
    }


def environment(device: str | None = None) -> dict[str, Any]:
    """What a result ran on, beyond the code version: interpreter, libraries, the device's name, and the
    CPU's model and ATen's CPU kernel level (``cpu_capability``): a seeded run repeats itself on one
    machine, while a CPU whose kernels round differently may end in another set. Also the allocator
    setting, and the activation budget with the micro-batch size it gave each loop
    (:mod:`mddbench.memory`): they change float summation order, never what is computed."""
    import platform

    import numpy

    name = platform.processor() or platform.machine()
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "device": str(device) if device else None, "device_name": name, "platform": platform.platform(),
            "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "allocator": applied_setting(), "memory": memory.chosen()}


def _cpu_model() -> str | None:
    """The CPU's model name where Linux says it (None elsewhere: ``device_name`` has what Python knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def file_digest(path: str | Path) -> str:
    """sha256 of a file: what `eval` compares to tell the set a run recorded from one edited since."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def provenance(artifact: Path, meta: dict[str, Any], store_path: Path) -> dict[str, Any]:
    """What a set's own metadata may be believed about: its method, only when a run of this store
    recorded this very file (same sha256; for records older than the digest, the same file). Any other
    set is evaluated as ``external``, its claim kept as ``claimed_method``: a file that says ``ptm`` is
    not ranked as PTM."""
    claimed = meta.get("method", "external")
    if claimed != "external" and store_path.is_file() and meta.get("job_id"):
        from .results import ResultStore

        digest = file_digest(artifact)
        for r in ResultStore(store_path, create=False).records(job_id=meta["job_id"]):
            recorded = artifact_path(r, store_path.parent)
            same = (r.get("artifact_sha256") == digest if r.get("artifact_sha256")
                    else recorded is not None and recorded.is_file() and recorded.samefile(artifact))
            if same and r.get("method") == claimed:
                return {"method": claimed, "provenance": "recorded run", "artifact_sha256": digest}
    return {"method": "external", "claimed_method": claimed, "provenance": "unverified file"}


def _saved_record(path: Path, job: Job, cfg: EvalConfig) -> dict[str, Any] | None:
    """The record an earlier attempt wrote beside its set but could not store, if it is this job's and whole."""
    from .results import validate

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        validate(record)
    except (OSError, ValueError, ConfigError):
        return None
    return record if record.get("job_id") == job.job_id and record.get("eval_config") == cfg.as_dict() else None


def resolved_hparams(job: Job) -> dict[str, Any]:
    """The hyperparameters the job would run with now, as a record stores them (JSON values)."""
    method = METHODS.get(job.method)()
    return as_json(method.resolve(get_spec(job.dataset), job.ipc or 0, get_budget(job.budget), dict(job.hparams)))


def as_json(hp: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(hp, default=str))


def changed_values(now: dict[str, Any], then: dict[str, Any]) -> str:
    """``key old -> new`` for every value that differs ('' when none does)."""
    keys = sorted(k for k in set(now) | set(then) if now.get(k, "unset") != then.get(k, "unset"))
    text = ", ".join(f"{k} {then.get(k, 'unset')} -> {now.get(k, 'unset')}" for k in keys[:5])
    return text + (", ..." if len(keys) > 5 else "")


def stale_message(what: str, budget: str, diff: str | None) -> str:
    return (f"{what} ran with other values than the job resolves now{f' ({diff})' if diff else ''}: a default "
            f"changed without a new version of the {budget} budget. Bump `version` of {budget!r} in "
            f"mddbench/budgets.py (every job at that budget then gets a new id and runs afresh; old records keep "
            f"their own tables), or use another --out.")


def stale_record(job: Job, records: list[dict[str, Any]], now: dict[str, Any] | None = None
                 ) -> tuple[str, str] | None:
    """(which record, what changed) for the first stored record of this job id that is not this job's result,
    else None: the job id names only the overrides, so a default changed without its budget's version
    cannot be told apart by id. ``now``: the job's resolved values (as JSON), when the caller has them."""
    for r in records:
        if isinstance(r.get("hparams"), dict):  # a record that does not say what it ran: nothing to compare
            now = resolved_hparams(job) if now is None else now
            diff = changed_values(now, r["hparams"])
            if diff:
                return f"{job.run_name}'s stored record {r['id']}", diff
    return None


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
    store = ResultStore(Path(job.out) / "results.sqlite")
    todo = [m for m in job.eval_models if not store.has(job.job_id, m)]
    records = [r for r in store.records(job_id=job.job_id) if r["eval_model"] in job.eval_models]
    stale = stale_record(job, records, as_json(p.hp))
    if stale:
        raise ConfigError(stale_message(stale[0], job.budget, stale[1]))
    if not todo:
        return records
    store.check_writable()
    try:
        synset = distill(p)
    except DistillationDiverged as exc:  # no record: the failure says the seed was lost (mddbench.failures)
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
