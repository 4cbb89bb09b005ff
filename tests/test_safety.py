"""Nothing lost, nothing forged (issue 12): published records, name spellings, eval provenance, lost work."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import RANDOM_DEMO, cli

from mddbench.api.synset import SyntheticSet
from mddbench.errors import ConfigError
from mddbench.results.store import ResultStore
from mddbench.run.job import Job

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "leaderboards" / "records.jsonl"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ the published records
def test_leaderboard_refuses_to_drop_published_records(random_run, tmp_path, capsys):
    """The README's demo run, then `mddbench leaderboard` into a folder holding the published records."""
    to = tmp_path / "leaderboards"
    to.mkdir()
    shutil.copy(PUBLISHED, to / "records.jsonl")
    (to / "main_quick.md").write_text("published table\n")
    before = _tree(to)
    rc, _, err = cli(capsys, "leaderboard", "--results", random_run, "--to", to)
    assert rc == 2 and "would drop them" in err and "mddbench merge" in err
    assert _tree(to) == before  # nothing written, nothing emptied


def test_leaderboard_adds_to_a_folder_when_no_record_is_dropped(random_run, tmp_path, capsys):
    to = tmp_path / "lb"
    assert cli(capsys, "leaderboard", "--results", random_run, "--to", to)[0] == 0
    both = tmp_path / "both.jsonl"
    both.write_text((to / "records.jsonl").read_text() + PUBLISHED.read_text())
    rc, out, _ = cli(capsys, "leaderboard", "--records", both, "--to", to)
    n = len(PUBLISHED.read_text().splitlines()) + 1
    assert rc == 0 and f"{n} records" in out
    assert len((to / "records.jsonl").read_text().splitlines()) == n  # the folder's tables and records agree


def test_leaderboard_rerenders_the_published_folder_byte_identically(tmp_path, capsys):
    to = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards", to)
    before = _tree(to)
    rc, _, _ = cli(capsys, "leaderboard", "--records", to / "records.jsonl", "--to", to)
    assert rc == 0 and _tree(to) == before


@pytest.mark.parametrize("how", ["empty", "folder", "garbage", "missing"])
def test_a_store_that_is_not_one_is_an_error_not_an_empty_store(tmp_path, capsys, how):
    to = tmp_path / "lb"
    to.mkdir()
    (to / "records.jsonl").write_text(PUBLISHED.read_text().splitlines()[0] + "\n")
    before = _tree(to)
    store = tmp_path / "out" / "results.sqlite"
    store.parent.mkdir()
    if how == "empty":
        store.write_bytes(b"")
    elif how == "folder":
        store.mkdir()
    elif how == "garbage":
        store.write_bytes(b"not a database at all" * 100)
    rc, _, err = cli(capsys, "leaderboard", "--results", store.parent, "--to", to)
    expected = {"empty": "empty (0 bytes)", "folder": "is a folder", "garbage": "not an SQLite results store",
                "missing": "no results store"}[how]
    assert rc == 2 and expected in err and "Traceback" not in err
    assert _tree(to) == before


@pytest.mark.parametrize("content", ["{not json\n", '{"job_id": "x"}\n', "[1, 2]\n"])
def test_a_garbage_records_file_names_its_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(PUBLISHED.read_text().splitlines()[0] + "\n" + content)
    rc, _, err = cli(capsys, "leaderboard", "--records", bad, "--to", tmp_path / "lb")
    assert rc == 2 and f"{bad}:2" in err and not (tmp_path / "lb").exists()


def test_to_pointing_at_a_file(random_run, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    rc, _, err = cli(capsys, "leaderboard", "--results", random_run, "--to", target)
    assert rc == 2 and "is a file" in err and target.read_text() == "mine"


# ------------------------------------------------------------------ one spelling, one cell
def test_name_spellings_are_one_job():
    plain = Job(method="random", dataset="breastmnist", ipc=2, budget="smoke")
    shouted = Job(method="RANDOM", dataset="BreastMNIST", ipc=2, budget="SMOKE", eval_models=("ConvNet",))
    assert shouted.job_id == plain.job_id
    assert (shouted.method, shouted.dataset, shouted.budget, shouted.eval_models) == \
        ("random", "breastmnist", "smoke", ("convnet",))


def test_a_shouted_run_lands_in_the_same_cell(random_run, capsys):
    before = ResultStore(random_run / "results.sqlite").records()
    rc, _, _ = cli(capsys, "run", "--method", "Random", "--dataset", "DEMO", "--ipc", "2", "--budget", "Smoke",
                   "--quiet", "--out", random_run)
    assert rc == 0 and ResultStore(random_run / "results.sqlite").records() == before


@pytest.mark.parametrize("seed", [2**63, -1])
def test_a_seed_the_store_cannot_hold_fails_before_any_work(tmp_path, capsys, seed):
    rc, _, err = cli(capsys, *RANDOM_DEMO, "--seed", seed, "--out", tmp_path)
    assert rc == 2 and "--seed must be" in err and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ eval believes nothing
def _artifact(run_out: Path) -> Path:
    return next((run_out / "runs").glob("*/synset.safetensors"))


def test_eval_of_a_forged_set_is_external(random_run, tmp_path, capsys):
    synset = SyntheticSet.load(_artifact(random_run))
    synset.meta["method"] = "ptm"  # a random set that says it is PTM's
    forged = synset.save(tmp_path / "forged.safetensors")
    rc, _, _ = cli(capsys, "eval", forged, "--out", random_run, "--quiet", "--eval-n-models", "1",
                   "--eval-epochs", "2")
    assert rc == 0
    [record] = [r for r in ResultStore(random_run / "results.sqlite").records() if r.get("claimed_method")]
    assert record["method"] == "external" and record["claimed_method"] == "ptm"
    assert record["job_id"].startswith("external-") and record["provenance"] == "unverified file"


def test_eval_of_a_recorded_set_keeps_its_method(random_run, capsys):
    rc, _, _ = cli(capsys, "eval", _artifact(random_run), "--out", random_run, "--quiet", "--eval-n-models", "1",
                   "--eval-epochs", "2", "--no-record")
    assert rc == 0
    # recompute what eval decided, without a second store write
    from mddbench.run.record import provenance

    meta = SyntheticSet.load(_artifact(random_run)).meta
    assert provenance(_artifact(random_run), meta, random_run / "results.sqlite")["method"] == "random"


def test_eval_against_other_data_is_refused(random_run, tmp_path, capsys):
    synset = SyntheticSet.load(_artifact(random_run))
    synset.meta["data_checksum"] = "0" * 32
    other = synset.save(tmp_path / "other.safetensors")
    before = len(ResultStore(random_run / "results.sqlite"))
    rc, _, err = cli(capsys, "eval", other, "--out", random_run, "--quiet")
    assert rc == 2 and "0" * 32 in err and "--data-root" in err
    assert len(ResultStore(random_run / "results.sqlite")) == before


# ------------------------------------------------------------------ work done is never lost
def test_a_store_that_cannot_take_records_fails_before_distilling(tmp_path, capsys, monkeypatch):
    """Another process holds the store's write lock past the busy timeout (root ignores file modes, so a
    read-only file cannot stand in for it here)."""
    import mddbench.results.store as results

    ResultStore(tmp_path / "results.sqlite")
    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(tmp_path / "results.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        rc, _, err = cli(capsys, *RANDOM_DEMO, "--out", tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rc == 2 and "cannot add records" in err and not list((tmp_path / "runs").glob("*/synset.safetensors"))


def test_a_record_the_store_refused_is_stored_by_the_rerun(tmp_path, capsys, monkeypatch):
    """The store fails after the evaluation: the record waits in the run folder; the rerun stores it
    without evaluating again."""
    import mddbench.run.pipeline as runner

    def broken(self, record):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResultStore, "add", broken)
    rc, _, err = cli(capsys, *RANDOM_DEMO, "--out", tmp_path)
    assert rc == 2 and "it is kept in" in err
    [saved] = (tmp_path / "runs").glob("*/result_convnet.json")
    monkeypatch.undo()

    def no_evaluation(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(runner, "evaluate", no_evaluation)
    assert cli(capsys, *RANDOM_DEMO, "--out", tmp_path)[0] == 0
    [record] = ResultStore(tmp_path / "results.sqlite").records()
    assert record["metrics"] == json.loads(saved.read_text())["metrics"]


def test_reading_a_missing_store_never_creates_one(tmp_path):
    with pytest.raises(ConfigError, match="no results store"):
        ResultStore(tmp_path / "results.sqlite", create=False)
    assert not (tmp_path / "results.sqlite").exists()
