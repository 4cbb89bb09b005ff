"""Provenance you can trust (issue 43): nothing forged is ranked, no plugin's bad set is recorded, nothing
half-done. Each test is one class of the reliability probe, fixed at the root."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_DEMO, cli

from mddbench.api.synset import SyntheticSet
from mddbench.atomic import locked
from mddbench.errors import ArtifactError
from mddbench.results.store import ResultStore
from mddbench.run.job import Job
from mddbench.run.record import claimed_job_id, record_problems

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "leaderboards" / "records.jsonl"


def published(n: int | None = None) -> list[dict]:
    lines = PUBLISHED.read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


# ------------------------------------------------------------------------------- 1. merge
def test_every_published_record_recomputes_from_its_own_content():
    records = published()
    assert len(records) > 600
    assert [r["id"] for r in records if record_problems(r)] == []
    assert all(claimed_job_id(r) == r["job_id"] for r in records if r["method"] != "external")


@pytest.mark.parametrize("forge, says", [
    (lambda r: {**r, "metrics": {**r["metrics"], "test_acc": {**r["metrics"]["test_acc"], "mean": 0.999}}},
     "test_acc mean 0.999"),
    (lambda r: {**r, "seed": r["seed"] + 7}, "is not the one its content makes"),
    (lambda r: {**r, "method": "oracle"}, "method 'oracle' is unknown here"),
    (lambda r: {**r, "budget": "marathon"}, "budget 'marathon' is unknown here"),
    (lambda r: {**r, "protocol": "v0"}, "protocol 'v0'"),
    (lambda r: {**r, "id": "0" * 16}, "its id"),
])
def test_merge_refuses_a_record_that_contradicts_itself(tmp_path, capsys, forge, says):
    genuine = published(3)
    source = tmp_path / "forged.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in [genuine[0], forge(genuine[1]), genuine[2]]))
    rc, _, err = cli(capsys, "merge", source, "--into", tmp_path / "store")
    assert rc == 2 and says in err and "record 2" in err and "nothing was merged" in err
    assert not (tmp_path / "store" / "results.sqlite").exists() or len(ResultStore(tmp_path / "store")) == 0


def test_merged_records_say_where_they_came_from_and_differing_ones_are_named(tmp_path, capsys):
    genuine = published(2)
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in genuine))
    assert cli(capsys, "merge", source, "--into", tmp_path / "store")[0] == 0
    stored = ResultStore(tmp_path / "store").records()
    assert {r["origin"]["merged_from"] for r in stored} == {str(source.resolve())}
    # the same record measured differently (another machine) keeps the store's copy, and is named
    other = dict(genuine[0])
    values = [min(1.0, v + 0.01) for v in other["metrics"]["val_acc"]["per_model"]]
    other["metrics"] = {**other["metrics"], "val_acc": {**other["metrics"]["val_acc"], "per_model": values,
                                                        "mean": float(torch.tensor(values, dtype=torch.float64).mean()),
                                                        "std": float(torch.tensor(values, dtype=torch.float64).std(
                                                            unbiased=False))}}
    second = tmp_path / "b.jsonl"
    second.write_text(json.dumps(other) + "\n")
    rc, out, _ = cli(capsys, "merge", second, "--into", tmp_path / "store")
    assert rc == 0 and f"kept the store's: {genuine[0]['id']}" in out


def test_merge_into_a_file_that_is_no_store_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    source = tmp_path / "a.jsonl"
    source.write_text(json.dumps(published(1)[0]) + "\n")
    rc, _, err = cli(capsys, "merge", source, "--into", tmp_path / "notes.txt")
    assert rc == 2 and "is a file but not a .sqlite store" in err


# ------------------------------------------------------------------------- 3. plugins' output
BAD_PLUGINS = '''
import sys
import torch
from mddbench import Method, SyntheticSet, register_method


def first(task, n):
    x, y = task.data.x["train"], task.data.y["train"]
    return torch.cat([torch.nonzero(y == c)[:n, 0] for c in range(task.n_classes)])


@register_method("onlyzeros")
class OnlyZeros(Method):
    def distill(self, task):
        idx = first(task, task.ipc)
        return SyntheticSet(task.data.x["train"][idx], torch.zeros(len(idx), dtype=torch.long))


@register_method("tooshort")
class TooShort(Method):
    def distill(self, task):
        idx = first(task, 1)
        return SyntheticSet(task.data.x["train"][idx], task.data.y["train"][idx])


@register_method("returnsnone")
class ReturnsNone(Method):
    def distill(self, task):
        return None


@register_method("raises")
class Raises(Method):
    def distill(self, task):
        raise ValueError("my plugin broke")


@register_method("exits")
class Exits(Method):
    def distill(self, task):
        sys.exit(0)
'''


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory):
    """One plugin file for the module: a process registers a file's methods once."""
    path = tmp_path_factory.mktemp("plugins") / "bad.py"
    path.write_text(BAD_PLUGINS)
    return path


@pytest.mark.parametrize("method, says", [
    ("onlyzeros", "2 image(s) of each class were asked for, it holds 8 of class 0, 0 of class 1"),
    ("tooshort", "it holds 1 of class 0, 1 of class 1, 1 of class 2, 1 of class 3"),
    ("returnsnone", "distill returned NoneType, not a SyntheticSet"),
    ("raises", "failed in distill: ValueError: my plugin broke (at "),
    ("exits", "called exit(0) inside distill"),
])
def test_a_plugins_bad_set_is_a_failure_naming_the_method_and_no_record(tmp_path, capsys, bad_plugins, method, says):
    plugin = bad_plugins
    rc, _, err = cli(capsys, "run", "--plugin", plugin, "--method", method, "--dataset", "demo", "--ipc", "2",
                     "--budget", "smoke", "--quiet", "--device", "cpu", "--out", tmp_path / "out")
    assert rc == 2 and f"method {method!r}" in err and says in err, err
    store = tmp_path / "out" / "results.sqlite"
    assert not store.exists() or len(ResultStore(store)) == 0


# --------------------------------------------------------------------- 4. one run folder, one run
def test_identical_runs_take_turns_on_their_run_folder(tmp_path, capsys):
    out = tmp_path / "out"
    job = Job(method="random", dataset="demo", ipc=2, seed=0, budget="smoke", out=str(out))
    job.run_dir.mkdir(parents=True)
    result = {}
    with locked(job.run_dir / ".lock"):  # another process holds the folder
        worker = threading.Thread(target=lambda: result.setdefault("rc", cli(capsys, *RANDOM_DEMO, "--out", out)[0]))
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive() and not (out / "results.sqlite").exists() or len(ResultStore(out)) == 0
    worker.join(120)
    assert result["rc"] == 0 and len(ResultStore(out)) == 1


# ---------------------------------------------------------------------------- 5. Ctrl-C, sweeps
@pytest.mark.slow
def test_sigint_to_a_background_sweep_driver_stops_it_with_130_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mddbench", "sweep", "--methods", "dm", "--datasets", "demo", "--ipc", "2",
            "--seeds", "0", "--budget", "smoke", "--hp", "iterations=100000", "--quiet", "--device", "cpu",
            "--out", str(out)]
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (as `cmd &` in a script starts it)
    proc = subprocess.Popen(argv, preexec_fn=ignore, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("runs/*/*.ckpt")) and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None and list(out.glob("runs/*/*.ckpt")), "the sweep never reached its first checkpoint"
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert list(out.glob("runs/*/*.ckpt")), "the checkpoint a rerun resumes from is gone"


# ------------------------------------------------------------------- 6. outputs before the work
def test_outputs_are_checked_before_any_work(tmp_path, capsys, random_run):
    artifact = next((random_run / "runs").iterdir()) / "synset.safetensors"
    (tmp_path / "a_file").write_text("x")
    rc, _, err = cli(capsys, "show", artifact, "-o", tmp_path)
    assert rc == 2 and "is a folder; name a file" in err
    rc, _, err = cli(capsys, "leaderboard", "--results", random_run, "--to", tmp_path / "a_file")
    assert rc == 2 and "is a file; name a folder" in err
    rc, _, err = cli(capsys, "privacy", artifact, "--figure", tmp_path, "--budget", "smoke", "--out", tmp_path / "o")
    assert rc == 2 and "--figure" in err and "is a folder" in err


# ----------------------------------------------------------------------------- 7. numeric limits
def test_numbers_out_of_range_are_refused_with_the_true_reason(capsys, tmp_path):
    common = ("run", "--method", "dc", "--dataset", "demo", "--budget", "smoke", "--quiet", "--out", tmp_path)
    rc, _, err = cli(capsys, *common, "--hp", "iterations=99999999999999999999999")
    assert rc == 2 and "iterations must be in [0, 1,000,000,000]" in err, err
    with pytest.raises(SystemExit) as info:  # an option's type: argparse refuses it
        cli(capsys, *common, "--time-budget", "inf")
    assert info.value.code == 2 and "must be a finite number > 0 (NaN and infinity are never a setting" \
        in capsys.readouterr().err


def test_jobs_must_be_at_least_one(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli(capsys, "sweep", "--methods", "random", "--datasets", "demo", "--jobs", "-1", "--out", tmp_path)
    assert "--jobs: must be in [1, 1,000,000,000], got -1" in capsys.readouterr().err


# ------------------------------------------------------------------------ 8. left from the first probe
def test_int8_labels_are_class_indices():
    s = SyntheticSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1], dtype=torch.int8))
    assert s.labels.dtype == torch.int64


def test_a_haba_set_without_its_tensors_is_refused_by_name():
    s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), renderer="haba", source="x.safetensors")
    with pytest.raises(ArtifactError, match="x.safetensors: its renderer 'haba' cannot be built"):
        s.make_renderer()


@pytest.mark.parametrize("meta, says", [({"dataset": 5}, "not a dataset name"),
                                        ({"dataset": "demo", "seed": 2**70}, "records the seed")])
def test_bad_metadata_is_refused_before_any_work(tmp_path, capsys, meta, says):
    path = SyntheticSet(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), meta=meta).save(tmp_path / "s.safetensors")
    rc, _, err = cli(capsys, "eval", path, "--budget", "smoke", "--out", tmp_path / "o")
    assert rc == 2 and says in err, err


def test_eval_says_when_nothing_new_was_recorded(tmp_path, capsys, random_run):
    artifact = next((random_run / "runs").iterdir()) / "synset.safetensors"
    args = ("eval", artifact, "--eval-n-models", "1", "--eval-epochs", "2", "--quiet", "--out", tmp_path)
    assert "recorded 1 new record(s)" in cli(capsys, *args)[1]
    assert "not recorded:" in cli(capsys, *args)[1]


def test_a_damaged_row_in_the_store_is_named_not_a_traceback(tmp_path, capsys, random_run):
    import shutil
    import sqlite3

    store = tmp_path / "results.sqlite"
    shutil.copy(random_run / "results.sqlite", store)
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE records SET record = '{broken'")
    rc, _, err = cli(capsys, "leaderboard", "--results", tmp_path, "--to", tmp_path / "lb")
    assert rc == 2 and "holds a damaged result record" in err


def test_a_forged_store_file_is_not_believed_by_the_audit(tmp_path):
    """The rule of `eval`: a file no run of this store recorded is `external`, whatever it claims."""
    from mddbench.run.record import provenance

    path = SyntheticSet(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]),
                        meta={"dataset": "demo", "method": "random", "job_id": "x"}).save(tmp_path / "s.safetensors")
    claim = provenance(path, {"method": "ptm", "job_id": "x"}, tmp_path / "results.sqlite")
    assert claim == {"method": "external", "claimed_method": "ptm", "provenance": "unverified file"}
