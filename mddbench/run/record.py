"""A result record: what a run measured, with where it came from (code, machine, provenance of its set)."""
from __future__ import annotations

import hashlib
import math
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mddbench import memory
from mddbench.allocator import applied_setting
from mddbench.api.budgets import BUDGETS
from mddbench.data.dataset import DatasetSpec
from mddbench.evaluation.protocol import PROTOCOL, EvalResult
from mddbench.ids import identity_digest
from mddbench.registry import DATASETS, METHODS, NETWORKS
from mddbench.results.store import METRIC_NAMES, RECORD_SCHEMA, artifact_path, record_id

PROTOCOLS = (PROTOCOL,)  # every evaluation protocol a record may name (one so far)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def make_record(meta: dict[str, Any], spec: DatasetSpec, result: EvalResult, budget: str,
                artifact: str | None, job_id: str | None = None) -> dict[str, Any]:
    """One complete result record (the benchmark's fields) from a synthetic set's metadata."""
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
        **{k: meta[k] for k in ("claimed_method", "provenance", "artifact_sha256", "extractor") if k in meta},
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
        from mddbench.results.store import ResultStore

        digest = file_digest(artifact)
        for r in ResultStore(store_path, create=False).records(job_id=meta["job_id"]):
            recorded = artifact_path(r, store_path.parent)
            same = (r.get("artifact_sha256") == digest if r.get("artifact_sha256")
                    else recorded is not None and recorded.is_file() and recorded.samefile(artifact))
            if same and r.get("method") == claimed:
                return {"method": claimed, "provenance": "recorded run", "artifact_sha256": digest}
    return {"method": "external", "claimed_method": claimed, "provenance": "unverified file"}


# ------------------------------------------------------------------------ what a record claims
def claimed_job_ids(record: dict[str, Any]) -> list[str] | None:
    """The job ids a record's own content makes (method, dataset, ipc, seed, budget and its version, overrides,
    time budget, an overridden evaluation size): what :attr:`Job.job_id` computed when the run made it. A
    ``-custom`` budget does not say which of the evaluation's size and length was overridden, so each reading
    gives one. None for an evaluation of a saved set (``mddbench eval``), whose id names the file instead."""
    if record.get("method") == "external" or str(record.get("job_id", "")).startswith("external"):
        return None
    budget = str(record["budget"])
    config = record.get("eval_config") or {}
    sizes = [(None, None)]
    if budget.endswith("-custom"):
        n, epochs = config.get("n_models"), config.get("epochs")
        sizes = [(n, epochs), (n, None), (None, epochs)]
    version = record.get("budget_version") or 1
    ids = []
    for n_models, epochs in sizes:
        ident = {"method": record["method"], "dataset": record["dataset"],
                 "ipc": None if record["ipc"] == "full" else record["ipc"], "seed": record["seed"],
                 "budget": budget.removesuffix("-custom"), "hparams": sorted((record.get("overrides") or {}).items()),
                 "time_budget": record.get("time_budget"), "eval_n_models": n_models, "eval_epochs": epochs}
        ids.append(identity_digest(ident if version == 1 else {**ident, "budget_version": version}))
    return ids


def claimed_job_id(record: dict[str, Any]) -> str | None:
    """The job id a record's content makes when it names no ``-custom`` budget (the first reading otherwise)."""
    ids = claimed_job_ids(record)
    return None if ids is None else ids[0]


def record_problems(record: dict[str, Any]) -> list[str]:
    """What a (valid) record's own content contradicts: a forged or edited record, refused by ``merge``.

    Its summary must recompute from its per-model values, its ids from its content, and its method,
    dataset, protocol and budget must be ones this installation knows (load a plugin's method first)."""
    problems = []
    for name, stat in record["metrics"].items():
        if name not in METRIC_NAMES or not isinstance(stat, dict):
            continue
        values = np.array([v for v in stat["per_model"] if v is not None], dtype=float)
        values = values[np.isfinite(values)]
        mean, std = stat.get("mean"), stat.get("std")
        if len(values) and not (isinstance(mean, (int, float)) and math.isclose(mean, values.mean(), abs_tol=1e-6)
                                and isinstance(std, (int, float)) and math.isclose(std, values.std(), abs_tol=1e-6)):
            problems.append(f"its {name} mean {mean!r} and std {std!r} are not those of its per-model values "
                            f"({values.mean():.6f}, {values.std():.6f})")
    rid = record_id(record["job_id"], record["eval_model"])
    if record.get("id") not in (None, rid):
        problems.append(f"its id {record['id']!r} is not the one its job id and network make ({rid})")
    for registry, field in ((METHODS, "method"), (DATASETS, "dataset"), (NETWORKS, "eval_model")):
        if record[field] != "external" and record[field] not in registry:
            problems.append(f"its {field} {record[field]!r} is unknown here"
                            + (" (load its plugin: --plugin FILE)" if field == "method" else ""))
    if record["protocol"] not in PROTOCOLS:
        problems.append(f"its protocol {record['protocol']!r} is not one of {', '.join(PROTOCOLS)}")
    if str(record["budget"]).removesuffix("-custom") not in BUDGETS:
        problems.append(f"its budget {record['budget']!r} is unknown here")
    if not problems:
        claimed = claimed_job_ids(record)
        if claimed is not None and record["job_id"] not in claimed:
            problems.append(f"its job id {record['job_id']!r} is not the one its content makes ({claimed[0]})")
    return problems
