"""A seed whose distillation diverges is not silently dropped: the store keeps a failure, the tables
name the lost seed, and the exports and merges carry it."""
from __future__ import annotations

import copy
import json

import pytest

from mddbench.cli import main
from mddbench.registry import METHODS
from mddbench.results.failures import FailureTable
from mddbench.results.store import ResultStore

PLUGIN = '''
import torch
from mddbench.errors import DistillationDiverged
from mddbench.api.method import Method
from mddbench.registry import register_method


@register_method("unsteady")
class Unsteady(Method):
    summary = "test plugin: class means, except that seed 1 diverges"
    defaults = {"iterations": 1, "lr_img": 0.0}

    def distill(self, task):
        if task.seed == 1:
            raise DistillationDiverged("unsteady diverged at iteration 3: synthetic set not finite")
        means = [task.data.x["train"][i].mean(0) for i in task.data.class_indices()]
        return task.synset(torch.stack(means).repeat_interleave(task.ipc, 0), task.hard_labels())
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    METHODS.load()
    for attr in ("_items", "_aliases", "failures", "_files", "_loaded"):  # forget the plugin afterwards
        monkeypatch.setattr(METHODS, attr, copy.copy(getattr(METHODS, attr)))
    path = tmp_path / "unsteady.py"
    path.write_text(PLUGIN)
    return path


def _cell(table: str) -> str:
    [line] = [row for row in table.splitlines() if row.startswith("| unsteady")]
    return line.split("|")[2].strip()


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.slow)], ids=["in process", "worker processes"])
def test_a_diverged_seed_is_stored_named_in_its_cell_exported_and_merged(plugin, tmp_path, jobs, capsys):
    out = tmp_path / "out"
    rc = main(["sweep", "--plugin", str(plugin), "--methods", "unsteady", "--datasets", "demo", "--ipc", "2",
               "--seeds", "0", "1", "2", "--budget", "smoke", "--eval-n-models", "1", "--jobs", jobs,
               "--out", str(out), "--quiet"])
    assert rc != 0 and "1 job(s) failed" in capsys.readouterr().err
    store = ResultStore(out / "results.sqlite")
    assert sorted(r["seed"] for r in store.records()) == [0, 2]
    [failure] = FailureTable(store).all()
    assert (failure["method"], failure["dataset"], failure["ipc"], failure["seed"]) == ("unsteady", "demo", 2, 1)
    assert failure["eval_models"] == ["convnet"] and "iteration 3" in failure["message"]
    assert failure["budget"] == "smoke-custom"  # as its records would say: the evaluation size was overridden

    published = tmp_path / "published"
    assert main(["leaderboard", "--results", str(out), "--to", str(published)]) == 0
    [line] = (published / "failures.jsonl").read_text().splitlines()
    assert json.loads(line)["seed"] == 1
    cell = _cell((published / "main_smoke-custom.md").read_text())
    assert cell.endswith("(n=2, 2 seeds, 1 of 3 seeds diverged in distillation)") and "**" not in cell

    again = tmp_path / "again"  # the tables regenerate from the exports alone
    assert main(["leaderboard", "--records", str(published / "records.jsonl"), "--to", str(again)]) == 0
    assert _cell((again / "main_smoke-custom.md").read_text()) == cell

    merged = tmp_path / "merged"
    # `unsteady` is a plugin's method: merge must know it (this process loaded it for the sweep already)
    assert main(["merge", str(published / "records.jsonl"), "--into", str(merged), "--plugin", str(plugin)]) == 0
    printed = capsys.readouterr().out
    assert "2 added, 0 already there, 1 failure(s) added" in printed and "2 record(s) and 1 failure(s) added" in printed
    assert [f["seed"] for f in FailureTable(ResultStore(merged / "results.sqlite")).all()] == [1]


def test_the_sweep_stores_a_failure_that_comes_back_from_another_machine(tmp_path):
    """A remote executor's run_job wrote the failure to that machine's store; the sweep keeps what came back."""
    from concurrent.futures import Future

    from mddbench.run.job import Job
    from mddbench.scaleout.sweep import Plan, schedule
    from mddbench.scaleout.work import Result, Work

    job = Job(method="dm", dataset="demo", ipc=1, seed=2, budget="smoke", out=str(tmp_path))
    failure = {"id": job.job_id, "job_id": job.job_id, "method": "dm", "dataset": "demo", "ipc": 1, "seed": 2,
               "eval_models": ["convnet"], "protocol": "v1", "budget": "smoke", "reason": "distillation diverged"}

    class Elsewhere:
        slots = 1

        def provide(self, key, build):
            pass

        def submit(self, work):
            future = Future()
            future.set_result(Result(work.key, False, "dm diverged at iteration 3", failure=failure))
            return future

        def collect(self, future, work):
            return future.result()

        def close(self):
            pass

    store = ResultStore(tmp_path / "results.sqlite")
    [outcome] = schedule(Plan([Work(job.job_id, job=job)]), Elsewhere(), store, progress=False)
    assert not outcome.ok and FailureTable(store).all() == [failure]


def test_reading_a_store_made_before_failures_writes_nothing_to_it(tmp_path):
    import sqlite3

    from mddbench.results.failures import failures_of

    store = ResultStore(tmp_path / "results.sqlite")
    before = (tmp_path / "results.sqlite").read_bytes()
    assert failures_of(tmp_path) == [] and FailureTable(store).all() == []
    tables = {t for (t,) in sqlite3.connect(store.path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "failures" not in tables and (tmp_path / "results.sqlite").read_bytes() == before
