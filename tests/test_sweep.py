"""Sweeps: grid expansion, skipping finished cells, and a kill -9 in the middle losing and duplicating nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mddbench.results.store import ResultStore
from mddbench.run.job import Job
from mddbench.scaleout.sweep import expand, pending


def test_expand_gives_real_one_job_per_dataset_and_seed():
    jobs = expand(["random", "real"], ["demo", "breastmnist"], [1, 2, 10], [0, 1], budget="smoke")
    assert len(jobs) == 2 * 2 * 3 + 2 * 2
    assert {j.ipc for j in jobs if j.method == "real"} == {None}
    assert len({j.job_id for j in jobs}) == len(jobs)


def test_pending_skips_jobs_whose_records_exist(tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    done, todo = Job("random", "demo", 1, budget="smoke"), Job("random", "demo", 2, budget="smoke")
    metric = {"per_model": [0.5], "mean": 0.5, "std": 0.0, "n": 1}
    store.add({"job_id": done.job_id, "method": "random", "dataset": "demo", "ipc": 1, "eval_model": "convnet",
               "protocol": "v1", "budget": "smoke", "seed": 0,
               "metrics": {k: metric for k in ("test_acc", "val_acc", "auc", "balanced_acc")}})
    assert pending([done, todo], store) == [todo]


@pytest.mark.slow
def test_killed_sweep_restarts_without_losing_or_duplicating(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mddbench", "sweep", "--methods", "random", "--datasets", "demo",
           "--ipc", "1", "2", "3", "4", "--budget", "smoke", "--eval-epochs", "5", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store_path = out / "results.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists() and len(ResultStore(store_path)) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep dies at once, mid-grid
    proc.wait()
    before = len(ResultStore(store_path))
    assert 1 <= before < 4
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = ResultStore(store_path).records()
    assert sorted(r["ipc"] for r in records) == [1, 2, 3, 4]  # every cell exactly once
    assert len({r["job_id"] for r in records}) == 4


@pytest.mark.slow
def test_output_folders_share_one_expert_cache(tmp_path, monkeypatch):
    """Experts built twice are not bit-identical, so runs meant to be compared share one cache."""
    from mddbench.cli import main
    from mddbench.trajectory import experts as experts_mod

    cache = tmp_path / "experts"
    args = ["sweep", "--methods", "mtt", "--datasets", "demo", "--ipc", "1", "--budget", "smoke", "--eval-epochs", "1",
            "--hp", "iterations=2", "--expert-cache", str(cache), "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    built = sorted(p.name for p in cache.iterdir())
    assert built and not (tmp_path / "a" / "experts").exists()

    calls = []
    monkeypatch.setattr(experts_mod, "train_expert", lambda *a, **k: calls.append(1))
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert calls == [] and sorted(p.name for p in cache.iterdir()) == built
    (a,), (b,) = (ResultStore(tmp_path / d / "results.sqlite").records() for d in "ab")
    assert a["experts"] == b["experts"] and a["metrics"] == b["metrics"]
    assert a["updates"] == a["iterations"] == 2  # MTT applies every update it computes


def test_expert_cache_comes_from_the_flag_then_the_environment_then_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MDDBENCH_EXPERTS", raising=False)
    assert Job("random", "demo", out=str(tmp_path)).experts_dir == tmp_path / "experts"
    monkeypatch.setenv("MDDBENCH_EXPERTS", str(tmp_path / "env"))
    assert Job("random", "demo", out=str(tmp_path)).experts_dir == tmp_path / "env"
    flag = Job("random", "demo", out=str(tmp_path), expert_cache=str(tmp_path / "flag"))
    assert flag.experts_dir == tmp_path / "flag"


def test_a_work_run_in_this_process_leaves_its_thread_count_as_it_found_it():
    """A one-slot sweep runs its works in the caller's process: its threads must not outlive the work (a
    later test ran with two threads, and SeqMatch's stage-2 loss stopped falling on an AVX512 EPYC)."""
    import torch

    from mddbench.scaleout.work import Work, execute

    before = torch.get_num_threads()
    result = execute(Work("no job"), "cpu", before + 1)  # no job: it fails, and the failure is a Result
    assert not result.ok and torch.get_num_threads() == before
