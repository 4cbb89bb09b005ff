"""Scale-out without Ray: devices per worker, experts as works of their own, the scheduler, workers that
die with their sweep, and `mddbench merge`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from mddbench.cli import main
from mddbench.errors import ConfigError
from mddbench.registry import METHODS
from mddbench.results.merge import merge_into
from mddbench.results.store import ResultStore, record_id
from mddbench.run.job import Job
from mddbench.run.record import claimed_job_id
from mddbench.scaleout.local import LocalExecutor, slot_devices
from mddbench.scaleout.sweep import Plan, plan, schedule
from mddbench.scaleout.work import Result, Work
from mddbench.trajectory.experts import ExpertProvider


# ------------------------------------------------------------------------------ devices per worker
def test_workers_take_the_visible_gpus_round_robin():
    assert slot_devices("auto", 4, n_cuda=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert slot_devices("cuda", 3, n_cuda=4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert slot_devices("auto", 2, n_cuda=0) == ["cpu", "cpu"]
    assert slot_devices("cuda:3", 2, n_cuda=4) == ["cuda:3", "cuda:3"]  # an explicit device is every worker's
    assert slot_devices("cpu", 2, n_cuda=4) == ["cpu", "cpu"]
    assert slot_devices("cuda", 2, n_cuda=0) == ["cuda", "cuda"]  # left to fail with its clear message


def test_local_executor_gives_each_running_work_its_own_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ex = LocalExecutor(4, "auto", threads=1)
    try:
        assert list(ex.free) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
        ex.pool.submit = lambda fn, work, device, threads: _done(Result(work.key, True, message=device))
        works = [Work(f"w{i}") for i in range(3)]
        futures = [ex.submit(w) for w in works]
        assert [f.result().message for f in futures] == ["cuda:0", "cuda:1", "cuda:0"]
        ex.collect(futures[1], works[1])  # cuda:1 is free again and goes to the next work
        assert ex.submit(Work("w3")).result().message == "cuda:1"
    finally:
        ex.close()


def test_worker_threads_follow_omp_num_threads_when_it_is_set(monkeypatch):
    from mddbench.scaleout import local as executors

    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert executors.worker_threads(2) == 4 and executors.worker_threads(16) == 1  # the cores, shared
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert executors.worker_threads(1) == 3 and executors.worker_threads(2) == 3
    ex = LocalExecutor(1, "cpu")
    try:
        assert ex.threads == 3
    finally:
        ex.close()
    assert LocalExecutor(1, "cpu", threads=5).threads == 5  # an explicit count wins
    for unusable in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert executors.worker_threads(2) == 4


def _done(result) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f


# ----------------------------------------------------------------------------------- the plan
def test_plan_builds_each_declared_recipe_once_and_jobs_need_only_their_own(tmp_path):
    kw = dict(budget="smoke", out=str(tmp_path), expert_cache=str(tmp_path / "experts"))
    jobs = [Job("mtt", "demo", 1, **kw), Job("mtt", "demo", 2, **kw), Job("ftd", "demo", 1, **kw),
            Job("random", "demo", 1, **kw)]
    p = plan(jobs)
    builds = [w for w in p.works if w.experts]
    assert [w.job for w in p.works[len(builds):]] == jobs  # expert builds come first
    assert len(builds) == 2 and {b.experts.recipe.optimizer for b in builds} == {"sgd", "gsam"}
    by_job = {w.job.method + str(w.job.ipc): w.needs for w in p.works if w.job}
    for job in jobs:  # what each needs is what its method declares, by the cache folder it reads
        from mddbench.api.budgets import get_budget
        from mddbench.data.dataset import get_spec, load_dataset

        method, spec = METHODS.get(job.method)(), get_spec("demo")
        recipes = method.expert_recipes(method.resolve(spec, job.ipc, get_budget("smoke"), {}))
        provider = ExpertProvider(tmp_path / "experts", load_dataset(spec), get_budget("smoke"), "cpu", False)
        assert [k.rsplit("/", 1)[-1] for k in by_job[job.method + str(job.ipc)]] == [
            provider.folder(r).name for r in recipes]
    assert by_job["random1"] == ()
    assert by_job["mtt1"] == by_job["mtt2"] != by_job["ftd1"]


class ThreadExecutor:
    """Works in threads, each taking the time the test gives it: shows when the scheduler starts what."""

    def __init__(self, seconds: dict[str, float], fail: set[str] = frozenset(), slots: int = 4):
        self.seconds, self.fail, self.slots = seconds, fail, slots
        self.pool = ThreadPoolExecutor(slots)
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def provide(self, key, build):
        self.events.append(("provided", key))

    def submit(self, work):
        def run():
            with self.lock:
                self.events.append(("start", work.key))
            time.sleep(self.seconds.get(work.key, 0))
            with self.lock:
                self.events.append(("end", work.key))
            return Result(work.key, work.key not in self.fail, "boom" if work.key in self.fail else "")
        return self.pool.submit(run)

    def collect(self, future, work):
        return future.result()

    def close(self):
        self.pool.shutdown()


def test_a_job_starts_when_its_own_experts_exist_not_all_of_them(tmp_path):
    slow, fast = Work("experts:slow"), Work("experts:fast")
    job_fast = Work("j-fast", job=Job("mtt", "demo", 1), needs=("experts:fast",))
    job_slow = Work("j-slow", job=Job("mtt", "demo", 2), needs=("experts:slow",))
    free = Work("j-free", job=Job("random", "demo", 1))
    ex = ThreadExecutor({"experts:slow": 1.5, "experts:fast": 0.1})
    outcomes = schedule(Plan([slow, fast, job_fast, job_slow, free]), ex, ResultStore(tmp_path / "r.sqlite"),
                        progress=False)
    ex.close()
    ev = ex.events
    assert ev.index(("start", "experts:slow")) < ev.index(("end", "experts:fast"))  # recipes in parallel
    assert ev.index(("start", "j-free")) < ev.index(("end", "experts:fast"))
    assert ev.index(("end", "experts:fast")) < ev.index(("start", "j-fast")) < ev.index(("end", "experts:slow"))
    assert ev.index(("end", "experts:slow")) < ev.index(("start", "j-slow"))
    assert sorted(o.job.ipc for o in outcomes if o.ok) == [1, 1, 2]


def test_failed_experts_fail_only_their_jobs_and_cached_experts_count_as_done(tmp_path):
    works = [Work("experts:bad"), Work("j1", job=Job("mtt", "demo", 1), needs=("experts:bad",)),
             Work("j2", job=Job("mtt", "demo", 2), needs=("experts:cached",))]
    ex = ThreadExecutor({}, fail={"experts:bad"})
    outcomes = schedule(Plan(works, {"experts:cached": None}), ex, ResultStore(tmp_path / "r.sqlite"),
                        progress=False)
    ex.close()
    assert ("provided", "experts:cached") in ex.events and ("start", "j1") not in ex.events
    by_ipc = {o.job.ipc: o for o in outcomes}
    assert by_ipc[2].ok and not by_ipc[1].ok and "bad: boom" in by_ipc[1].message


def test_slots_bound_how_many_works_run_at_once(tmp_path):
    works = [Work(f"j{i}", job=Job("random", "demo", i + 1)) for i in range(4)]
    ex = ThreadExecutor({f"j{i}": 0.2 for i in range(4)}, slots=2)
    schedule(Plan(works), ex, ResultStore(tmp_path / "r.sqlite"), progress=False)
    ex.close()
    running = peak = 0
    for kind, _ in ex.events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


# ------------------------------------------------------------------- workers die with their sweep
def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def _sweep_with_workers(cmd: list[str], out: Path, running: int):
    """Start the sweep ``cmd`` in a session of its own and yield (process, worker pids) once its 2 workers and
    the resource tracker exist and ``running`` jobs have started; the whole session is killed afterwards."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, workers = time.time() + 240, set()
        while time.time() < deadline and proc.poll() is None:
            workers = _descendants(proc.pid)
            if len(workers) >= 3 and len(list((out / "runs").glob("*/job.json"))) >= running:
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 3, "the sweep never started its workers"
        yield proc, workers
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever this test started, should the assertion fail
        except ProcessLookupError:
            pass


def _still_alive(workers: set[int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    return [p for p in workers if _alive(p)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_pool_workers_die_with_a_killed_sweep(tmp_path):
    cmd = [sys.executable, "-m", "mddbench", "sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "2",
           "3", "4", "--budget", "smoke", "--eval-epochs", "200", "--jobs", "2", "--out", str(tmp_path), "--quiet"]
    with _sweep_with_workers(cmd, tmp_path, running=1) as (proc, workers):
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as a user's kill -9 <pid> does
        proc.wait()
        assert not _still_alive(workers, 20), "worker processes outlived their sweep"


_STOPS = {  # how the sweep is stopped -> (signal, to its process group?, SIGINT as the sweep starts, rc, message)
    # `kill -INT` signals the sweep only, not its process group as Ctrl-C does. A sweep a user starts at a
    # terminal has Python's own interrupt handling; one a non-interactive shell starts in the background
    # (`... &` in a script, nohup) begins with SIGINT ignored, as POSIX asks, and so do its workers.
    "SIGINT to the sweep alone": (signal.SIGINT, False, "signal.default_int_handler", 130,
                                  "run the same command again to resume"),
    # `kill` sends SIGTERM to the sweep alone; `timeout` and a scheduler's preemption to the whole group.
    "SIGTERM to the sweep alone": (signal.SIGTERM, False, "signal.SIG_IGN", 143,
                                   "stopped by SIGTERM; run the same command again to resume"),
    "SIGTERM to the process group": (signal.SIGTERM, True, "signal.SIG_IGN", 143,
                                     "stopped by SIGTERM; run the same command again to resume"),
}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize("how", list(_STOPS))
def test_a_stopped_sweep_stops_its_workers_jobs_and_says_how_to_resume(tmp_path, how):
    """However it is stopped, the sweep must not sit waiting for its workers' long jobs (minutes each here),
    nor die at once leaving the pool broken and its jobs lost (Python's default for SIGTERM): it stops the
    jobs in flight, says how to resume and leaves no worker running."""
    sig, to_group, sigint, rc, message = _STOPS[how]
    args = ["sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "2", "--budget", "smoke",
            "--eval-epochs", "20000", "--jobs", "2", "--out", str(tmp_path), "--quiet"]
    cmd = [sys.executable, "-c", f"import runpy, signal, sys; signal.signal(signal.SIGINT, {sigint}); "
           "sys.argv = ['mddbench', *sys.argv[1:]]; runpy.run_module('mddbench', run_name='__main__')", *args]
    with _sweep_with_workers(cmd, tmp_path, running=2) as (proc, workers):  # both jobs running
        time.sleep(2)  # well inside the jobs' evaluation
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        try:
            _, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep was still waiting for its workers' jobs 45 s after {how}")
        assert proc.returncode == rc and message in err, err
        assert "leaked" not in err, err
        assert not _still_alive(workers, 10), "worker processes outlived the stopped sweep"
        assert ResultStore(tmp_path / "results.sqlite").records() == []  # stopped, not finished


# -------------------------------------------------------------------------------------- merge
def _record(label: str, acc: float = 0.5, model: str = "convnet") -> dict:
    """A record whose ids recompute from its content (``merge`` refuses any other): ``label`` "jN" is seed N."""
    metric = {"per_model": [acc], "mean": acc, "std": 0.0, "n": 1}
    record = {"method": "random", "dataset": "demo", "ipc": 1, "eval_model": model, "protocol": "v1",
              "budget": "smoke", "seed": int(label[1:]),
              "metrics": {k: metric for k in ("test_acc", "val_acc", "auc", "balanced_acc")}}
    return {**record, "job_id": claimed_job_id({**record, "job_id": ""})}


def jid(label: str) -> str:
    return _record(label)["job_id"]


def test_merging_two_stores_twice_adds_nothing_the_second_time(tmp_path, capsys):
    a, b = ResultStore(tmp_path / "a" / "results.sqlite"), ResultStore(tmp_path / "b" / "results.sqlite")
    for r in (_record("j1"), _record("j2")):
        a.add(r)
    for r in (_record("j2"), _record("j3"), _record("j3", model="lenet")):
        b.add(r)
    into = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b" / "results.sqlite"), "--into", str(into)]) == 0
    printed = capsys.readouterr().out
    assert "a: 2 added, 0 already there" in printed and "results.sqlite: 2 added, 1 already there" in printed
    assert "4 record(s) added" in printed
    merged = ResultStore(into / "results.sqlite")
    assert sorted((r["job_id"], r["eval_model"]) for r in merged.records()) == sorted([
        (jid("j1"), "convnet"), (jid("j2"), "convnet"), (jid("j3"), "convnet"), (jid("j3"), "lenet")])
    again = merge_into(into, [tmp_path / "a", tmp_path / "b"])
    assert [(added, same, differing) for _, added, same, differing, *_ in again] == [(0, 2, 0), (0, 3, 0)]
    assert len(merged) == 4


def test_merge_reads_jsonl_reports_conflicts_and_keeps_the_store_untouched_on_bad_input(tmp_path):
    store = ResultStore(tmp_path / "out" / "results.sqlite")
    store.add(_record("j1", 0.5))
    export = tmp_path / "records.jsonl"
    export.write_text(json.dumps(_record("j1", 0.75)) + "\n" + json.dumps(_record("j2")) + "\n")
    assert merge_into(tmp_path / "out", [export]) == [(str(export), 1, 0, 1, 0, 0, 0, [record_id(jid("j1"), "convnet")])]
    assert store.records(job_id=jid("j1"))[0]["metrics"]["test_acc"]["mean"] == 0.5  # the store's own is kept

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record("j9")) + "\n" + json.dumps({**_record("j10"), "ipc": 0}) + "\n")
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for source, words in ((bad, "bad.jsonl:2: not a result record (invalid result record: ipc"), (empty, "is empty"),
                          (tmp_path / "missing.sqlite", "no such file")):
        with pytest.raises(ConfigError) as info:
            merge_into(tmp_path / "out", [export, source])
        assert words in str(info.value) and "nothing was merged" in str(info.value)
    assert sorted(r["job_id"] for r in store.records()) == sorted([jid("j1"), jid("j2")])


def _audit(audit_id: str, label: str) -> dict:
    return {"id": audit_id, "privacy_version": "privacy-v1", "job_id": jid(label), "eval_record_id": None,
            "method": "random", "dataset": "demo", "ipc": 1, "seed": int(label[1:]), "budget": "smoke",
            "memorisation": {}, "membership": {}}


def test_merge_brings_privacy_audits_from_stores_and_from_the_jsonl_beside_an_export(tmp_path, capsys):
    """Both halves of a published folder (records.jsonl and its privacy.jsonl) and a store's privacy
    table arrive in the merged store, once, so it can publish them again without losing an audit."""
    from mddbench.results.privacy_store import PrivacyStore

    a = PrivacyStore(tmp_path / "a" / "results.sqlite")
    a.add(_record("j1"))
    a.add_privacy(_audit("p1", "j1"))
    published = tmp_path / "published"
    published.mkdir()
    (published / "records.jsonl").write_text(json.dumps(_record("j2")) + "\n")
    audits = (_audit("p2", "j2"), _audit("p1", "j1"))
    (published / "privacy.jsonl").write_text("".join(json.dumps(audit) + "\n" for audit in audits))
    into = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "a"), str(published / "records.jsonl"), "--into", str(into)]) == 0
    assert "2 record(s) and 2 privacy result(s) added" in capsys.readouterr().out
    merged = PrivacyStore(into / "results.sqlite", create=False)
    assert [r["id"] for r in merged.privacy_records()] == ["p1", "p2"]
    assert [s[4:6] for s in merge_into(into, [tmp_path / "a", published / "records.jsonl"])] == [(0, 0), (0, 0)]
    again = PrivacyStore(tmp_path / "again" / "results.sqlite")
    again.add_privacy({**_audit("p1", "j1"), "memorisation": {"pixel": {"near_copy_share": 0.5}}})  # audited anew
    assert [s[4:6] for s in merge_into(into, [tmp_path / "again"])] == [(0, 1)]
    assert merged.privacy_records()[0]["memorisation"] == {}  # the store's audit is kept

    (published / "privacy.jsonl").write_text(json.dumps({"id": "p3"}) + "\n")  # not a privacy result
    with pytest.raises(ConfigError, match="missing required field"):
        merge_into(tmp_path / "other", [published / "records.jsonl"])
    assert not (tmp_path / "other" / "results.sqlite").exists()  # nothing was written


def test_merge_names_audits_of_another_file_than_their_kept_record(tmp_path, capsys):
    """Rerunning a published job elsewhere makes another set: the merge keeps the published record, and an
    audit of the rerun's set that links to it is named, so that no one reads it as the published set's."""
    from mddbench.results.merge import audits_of_other_files
    from mddbench.results.privacy_store import PrivacyStore
    published = PrivacyStore(tmp_path / "published" / "results.sqlite")
    published.add({**_record("j1"), "artifact_sha256": "a" * 64})
    published.add({**_record("j2"), "artifact_sha256": "c" * 64})
    rerun = PrivacyStore(tmp_path / "rerun" / "results.sqlite")
    rerun.add({**_record("j1", 0.75), "artifact_sha256": "b" * 64})  # same job, another set and score

    def linked(audit_id: str, job: str, sha: str | None) -> dict:
        return {**_audit(audit_id, job), "eval_record_id": record_id(jid(job), "convnet"), "artifact_sha256": sha}

    rerun.add_privacy(linked("p1", "j1", "b" * 64))  # the rerun's set
    rerun.add_privacy(linked("p2", "j2", "c" * 64))  # the published set itself
    rerun.add_privacy(linked("p3", "j1", None))  # made before audits named their file: cannot be checked
    into = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "published"), str(tmp_path / "rerun"), "--into", str(into)]) == 0
    out = capsys.readouterr().out
    assert [(a["id"], r["job_id"]) for a, r in audits_of_other_files(into)] == [("p1", jid("j1"))]
    assert "privacy result p1 (random, demo, ipc 1, seed 1) audited another file" in out and "p2 (" not in out
    kept = PrivacyStore(into / "results.sqlite", create=False).records(job_id=jid("j1"))[0]
    assert kept["metrics"]["test_acc"]["mean"] == 0.5  # the published record stays


def test_sweep_through_ray_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    out = tmp_path / "out"
    assert main(["sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "--budget", "smoke",
                 "--executor", "ray", "--out", str(out), "--quiet"]) == 2
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (["--executor", "ray", "--shared-experts"], "--shared-experts needs --expert-cache"),
    (["--ray-address", "127.0.0.1:6379"], "options of --executor ray")])
def test_ray_options_without_what_they_need_are_refused_before_any_work(tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    assert main(["sweep", "--methods", "random", "--datasets", "demo", "--ipc", "1", "--budget", "smoke",
                 "--out", str(out), "--quiet", *extra]) == 2
    assert words in capsys.readouterr().err and not out.exists()
