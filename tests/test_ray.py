"""Sweeps through a real Ray cluster (started here on 127.0.0.1 with 2 CPUs): the same records as the local
executor, a killed worker retried without losing or duplicating a record, and clear errors for bad input."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

from mddbench.errors import ConfigError  # noqa: E402
from mddbench.results.store import ResultStore, artifact_path  # noqa: E402
from mddbench.run.job import Job  # noqa: E402
from mddbench.scaleout.ray_cluster import SCRATCH_ENV, RayExecutor  # noqa: E402
from mddbench.scaleout.sweep import run_sweep  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ[SCRATCH_ENV] = str(tmp_path_factory.mktemp("ray-scratch"))  # the workers inherit it
    ray.init(num_cpus=2, num_gpus=0, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.pop(SCRATCH_ENV, None)


def _jobs(out: Path, eval_epochs: int = 5) -> list[Job]:
    kw = dict(budget="smoke", eval_epochs=eval_epochs, out=str(out), progress=False)
    return [Job("random", "demo", 1, **kw), Job("random", "demo", 2, **kw),
            Job("mtt", "demo", 1, hparams=(("iterations", "2"),), **kw)]  # mtt: an expert build as its own task


def test_a_sweep_through_ray_gives_the_records_of_the_local_executor(cluster, tmp_path):
    jobs = [_jobs(tmp_path / d)[1:] for d in ("local", "ray")]
    local = run_sweep(jobs[0], progress=False, threads=1)
    remote = run_sweep(jobs[1], progress=False, executor=RayExecutor(cpus_per_job=1))
    assert all(o.ok for o in local + remote), [o.message for o in local + remote if not o.ok]
    a, b = (ResultStore(tmp_path / d / "results.sqlite").records() for d in ("local", "ray"))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert (x["job_id"], x["metrics"], x["experts"]) == (y["job_id"], y["metrics"], y["experts"])
        assert y["artifact"] == x["artifact"]  # relative to --out
        assert artifact_path(y, tmp_path / "ray").is_file()  # the synthetic set came back to the driver's --out
        assert json.loads((artifact_path(y, tmp_path / "ray").parent / "job.json").read_text())["out"] == str(tmp_path / "ray")
    assert sorted(p.name for p in (tmp_path / "ray" / "experts").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local" / "experts").iterdir())  # so did the experts built remotely
    assert not any(Path(os.environ[SCRATCH_ENV], "jobs").iterdir())  # nothing left behind on the node

    again = run_sweep(jobs[1], progress=False, executor=RayExecutor(cpus_per_job=1))
    assert again == [] and len(ResultStore(tmp_path / "ray" / "results.sqlite")) == 2  # a restart skips them


def _kill_a_running_task(killed: list[int], stop: threading.Event) -> None:
    """Kill -9 the first worker seen running one of our tasks, once it has worked for a moment."""
    while not stop.is_set() and not killed:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(b"ray::run_remote"):
                    time.sleep(1.5)
                    try:
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed.append(int(entry.name))
                    except ProcessLookupError:
                        continue
                    return
        time.sleep(0.1)


@pytest.mark.parametrize("retries", [2, 0])
def test_a_worker_killed_mid_job_is_retried_and_no_record_is_lost_or_duplicated(cluster, tmp_path, retries):
    jobs = _jobs(tmp_path, eval_epochs=40)[:2]
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_running_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        outcomes = run_sweep(jobs, progress=False, executor=RayExecutor(cpus_per_job=1, max_retries=retries))
    finally:
        stop.set()
        killer.join()
    assert killed, "no task was seen running"
    records = ResultStore(tmp_path / "results.sqlite").records()
    if retries:
        assert all(o.ok for o in outcomes)
        assert sorted(r["job_id"] for r in records) == sorted(j.job_id for j in jobs)  # exactly one each
    else:  # a worker that dies for good: its job fails with what to do, the other is recorded
        failed = [o for o in outcomes if not o.ok]
        assert len(failed) == 1 and "Ray worker died 1 times" in failed[0].message
        assert "rerun the same sweep" in failed[0].message
        assert [r["job_id"] for r in records] == [o.job.job_id for o in outcomes if o.ok]


def test_a_killed_driver_restarts_and_skips_finished_cells(cluster, tmp_path):
    address = ray.get_runtime_context().gcs_address  # the cluster, as `ray start --head` would print it
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mddbench", "sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "2",
           "3", "--budget", "smoke", "--eval-epochs", "20", "--executor", "ray", "--ray-address", address,
           "--cpus-per-job", "1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_path, deadline = out / "results.sqlite", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists() and len(ResultStore(store_path)) >= 1:
            break
        time.sleep(0.2)
    proc.kill()  # kill -9 of the driver, mid-sweep
    proc.wait()
    before = len(ResultStore(store_path))
    assert 1 <= before < 3
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    records = ResultStore(store_path).records()
    assert sorted(r["ipc"] for r in records) == [1, 2, 3]  # every cell exactly once
    assert all(artifact_path(r, store_path.parent).is_file() for r in records)


def test_more_gpus_or_cpus_than_the_cluster_has_is_refused_before_any_work(cluster, tmp_path):
    with pytest.raises(ConfigError, match="--gpus-per-job"):
        RayExecutor(gpus_per_job=1)
    with pytest.raises(ConfigError, match="the largest node of the local Ray instance has 0;"):
        RayExecutor(device="cuda")
    with pytest.raises(ConfigError, match="lower --cpus-per-job"):
        RayExecutor(cpus_per_job=3)


def test_an_unreachable_ray_address_fails_fast_and_leaves_the_store_untouched(tmp_path, capsys):
    from mddbench.cli import main

    with socket.socket() as s:  # a port nothing listens at
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(["sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "--budget", "smoke",
                 "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--out", str(out), "--quiet"]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at --ray-address 127.0.0.1:{port}" in err and "ray start --head" in err
    assert not out.exists()
