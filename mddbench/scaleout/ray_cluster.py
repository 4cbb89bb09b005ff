"""The Ray executor: a sweep's works as Ray tasks on a cluster (``mddbench sweep --executor ray``).

Every work (an expert build, a job's distillation and evaluation) is one Ray task that declares
its CPUs and GPUs. A task runs in a scratch folder on its node and hands back its records and the
files it made; this process (the driver) writes the files into its own ``--out`` (run folders) and
expert cache, and alone adds the records to its SQLite store. Experts travel to the nodes that need
them through Ray's object store, unless ``--shared-experts`` says the expert cache is a folder every
node mounts (then tasks build and read it there, as local workers do). A task whose worker dies is
retried (``max_retries``); a killed driver is restarted like any sweep and skips finished cells.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from mddbench.allocator import ENV as ALLOCATOR_ENV
from mddbench.atomic import is_temporary, locked, replacing
from mddbench.errors import ConfigError
from mddbench.memory import ENV as MEMORY_ENV
from mddbench.run.job import ARTIFACT, write_job_file
from mddbench.scaleout.work import ExpertBuild, Result, Work, execute

INSTALL_HINT = 'pip install -e ".[ray]"  (or pip install "ray==2.60.*")'
SCRATCH_ENV = "MDDBENCH_RAY_SCRATCH"


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed; install it with {INSTALL_HINT}, "
                          f"or run the sweep with the local executor (drop --executor ray)") from exc
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (Ray itself would retry for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        host_port = address[len("ray://"):] if address.startswith("ray://") else None
        if host_port is None:
            return
    else:
        host_port = address
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach a Ray cluster at --ray-address {address} ({exc}); start one with "
                          f"`ray start --head` and pass the address it prints (host:port), or leave out "
                          f"--ray-address to start a Ray instance on this machine") from exc


def pack(root: Path, under: str = "") -> dict[str, bytes]:
    """Every file below ``root`` (not lock files), keyed by its path relative to root's parent."""
    prefix = Path(under) if under else Path(root.name)
    return {str(prefix / p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock" and not is_temporary(p)}


def unpack(files: dict[str, bytes], root: Path, keep_existing: bool = False) -> None:
    """Write ``files`` below ``root``, each atomically (a reader never sees half a file)."""
    for rel, data in files.items():
        path = root / rel
        if keep_existing and path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:  # per-process temporary name: two tasks on a node may write the same file
            tmp.write_bytes(data)


def unpack_experts(files: dict[str, bytes], experts_dir: Path) -> None:
    """Expert files (``FOLDER/expert_000.safetensors``, ...) into a cache, each buffer under its lock, so a
    job reading the buffer meanwhile waits instead of building the experts that are still arriving."""
    by_folder: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        by_folder.setdefault(Path(rel).parts[0], {})[rel] = data
    for folder, part in by_folder.items():
        (experts_dir / folder).mkdir(parents=True, exist_ok=True)
        with locked(experts_dir / folder / ".lock"):
            meta = {k: v for k, v in part.items() if Path(k).name == "meta.json"}
            unpack(part, experts_dir, keep_existing=True)  # a buffer that has (some) experts keeps them
            unpack(meta, experts_dir)  # and takes the meta of the complete buffer


def scratch_root() -> Path:
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "mddbench-ray")


def forwarded_environment() -> dict[str, str]:
    """The settings this driver's workers must start with on every node: the allocator's (glibc reads its
    ``MALLOC_*_`` variables when a process starts) and an activation budget set on the driver."""
    names = (ALLOCATOR_ENV, MEMORY_ENV, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_")
    return {name: os.environ[name] for name in names if name in os.environ}


def run_remote(work: Work, device: str, threads: int, shared_experts: bool, *experts: dict[str, bytes] | Result
               ) -> Result:
    """The body of every Ray task: run ``work`` in this node's scratch folder, hand back what it made."""
    scratch = scratch_root()
    experts_dir = None
    if not shared_experts:
        experts_dir = scratch / "experts"
        for shipped in experts:  # the buffers this job needs: cached files from the driver, or their build's Result
            unpack_experts(shipped.files if isinstance(shipped, Result) else shipped, experts_dir)
    if work.experts is not None:
        build = work.experts if shared_experts else replace(work.experts, experts_dir=str(experts_dir))
        result = execute(replace(work, experts=build), device, threads)
        if result.ok and not shared_experts:
            result.files = pack(experts_dir / build.folder)
        return result
    job = work.job
    out = scratch / "jobs" / job.job_id  # fixed per job: a retry on this node resumes from its checkpoint
    job = replace(job, out=str(out), expert_cache=job.expert_cache if shared_experts else str(experts_dir))
    result = execute(replace(work, job=job), device, threads)
    if result.ok:
        result.files = pack(job.run_dir, under=str(job.run_dir.relative_to(out))) if job.run_dir.exists() else {}
        shutil.rmtree(out, ignore_errors=True)
    return result


class RayExecutor:
    """Works as Ray tasks; records and files come back to this process."""

    def __init__(self, address: str | None = None, device: str = "auto", cpus_per_job: float = 1,
                 gpus_per_job: float | None = None, shared_experts: bool = False, max_retries: int = 3):
        ray = self.ray = import_ray()
        if address:
            check_reachable(address)
        if not ray.is_initialized():
            try:
                start = {} if address else {"include_dashboard": False}  # options of a new instance only
                ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": forwarded_environment()},
                         **start)
            except (ConnectionError, RuntimeError) as exc:
                raise ConfigError(f"could not connect to the Ray cluster at {address or 'this machine'}: {exc}; "
                                  "check the address that `ray start --head` printed") from exc
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
        most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
        if gpus_per_job is None:
            gpus_per_job = 0 if device == "cpu" else 1 if device.startswith("cuda") or most_gpus else 0
        where = f"the Ray cluster at {address}" if address else "the local Ray instance"
        if gpus_per_job > most_gpus:
            raise ConfigError(f"each job asks for {gpus_per_job:g} GPU(s) but the largest node of {where} has "
                              f"{most_gpus:g}; ask for fewer with --gpus-per-job (0: --device cpu) or add GPU nodes")
        if cpus_per_job > most_cpus:
            raise ConfigError(f"each job asks for {cpus_per_job:g} CPU(s) but the largest node of {where} has "
                              f"{most_cpus:g}; lower --cpus-per-job")
        if device.startswith("cuda") and not gpus_per_job:
            raise ConfigError(f"--device {device} with --gpus-per-job 0: give the jobs a GPU or use --device cpu")
        self.device = "cuda:0" if gpus_per_job else "cpu"  # Ray shows a task only the GPUs it was given
        self.threads = max(1, int(cpus_per_job))
        self.shared_experts = shared_experts
        self.slots = 1 << 30  # Ray queues tasks until the cluster has room; submit whatever is ready
        self.task = ray.remote(run_remote).options(num_cpus=cpus_per_job, num_gpus=gpus_per_job,
                                                   max_retries=max_retries, retry_exceptions=False)
        self.max_retries = max_retries
        self.shipped: dict[str, Any] = {}  # work key -> ObjectRef of the expert files a job needs

    def provide(self, key: str, build: ExpertBuild) -> None:
        if not self.shared_experts:
            self.shipped[key] = self.ray.put(pack(Path(build.experts_dir) / build.folder))

    def submit(self, work: Work) -> Future:
        needs = [] if self.shared_experts else [self.shipped[k] for k in work.needs]
        ref = self.task.remote(work, self.device, self.threads, self.shared_experts, *needs)
        if work.experts is not None:
            self.shipped[work.key] = ref  # jobs read the build's files straight from the object store
        return ref.future()

    def collect(self, future: Future, work: Work) -> Result:
        try:
            result = future.result()
        except self.ray.exceptions.RayTaskError as exc:  # the task's own code raised outside execute()
            return Result(work.key, False, f"its Ray task raised: {exc}")
        except self.ray.exceptions.RayError as exc:
            return Result(work.key, False, f"its Ray worker died {self.max_retries + 1} times "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); look for the cause "
                          "with `ray logs` or in the node's /tmp/ray/session_latest/logs (out of memory is "
                          "common: give each job more with --cpus-per-job), then rerun the same sweep")
        if result.ok and result.files is not None:
            if work.experts is not None:
                unpack_experts(result.files, Path(work.experts.experts_dir))
            else:
                unpack(result.files, Path(work.job.out))
                if (work.job.run_dir / "job.json").exists():  # the run folder names this machine's paths
                    write_job_file(work.job)
                result.records = [self._home(r, work) for r in result.records]
        result.files = None
        return result

    @staticmethod
    def _home(record: dict, work: Work) -> dict:
        """The record as if run here: its artifact is the copy in this process's --out (a schema-1 record's
        absolute path is rewritten; schema 2's path is relative to --out already)."""
        if record.get("artifact") and Path(record["artifact"]).is_absolute():
            record = {**record, "artifact": str(work.job.run_dir / ARTIFACT)}
            result_file = work.job.run_dir / f"result_{record['eval_model']}.json"
            if result_file.exists():
                result_file.write_text(json.dumps(record, indent=2))
        return record

    def close(self) -> None:
        """Leave the cluster to the next driver (a Ray instance this process started ends with it)."""
