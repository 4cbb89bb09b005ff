"""`mddbench verify`, the unverified mark and `mddbench publish` (issues 43 item 1 and 46 item 4): a merged record
is trusted only once its own set reproduces it; every table marks the cells that rest on one that is not;
`leaderboard` writes the user's folder, and only `publish` changes a published one, never silently."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import cli

from mddbench.report.publish import PUBLISHED_DIR
from mddbench.results.store import ResultStore, record_id
from mddbench.results.verification import MARK
from mddbench.run.record import claimed_job_id


def _only(folder) -> dict:
    (record,) = ResultStore(folder).records()
    return record


def _shifted(record: dict, by: float) -> dict:
    """The record with every per-model test accuracy moved by ``by`` and its summary recomputed (self-consistent)."""
    stat = record["metrics"]["test_acc"]
    values = [v + by for v in stat["per_model"]]
    return {**record, "metrics": {**record["metrics"], "test_acc": {**stat, "per_model": values,
                                                                    "mean": float(np.mean(values)),
                                                                    "std": float(np.std(values))}}}


def _reseeded(record: dict, seed: int) -> dict:
    """The same record as another seed's run would name it (ids recomputed from its content)."""
    out = {**record, "seed": seed}
    out["job_id"] = claimed_job_id(out)
    out["id"] = record_id(out["job_id"], out["eval_model"])
    return out


def test_a_merged_record_is_verified_only_by_its_own_set(random_run, tmp_path, capsys):
    store = tmp_path / "store"
    rc, out, _ = cli(capsys, "verify", "--results", random_run, "--quiet")
    assert rc == 0 and "1 local" in out  # made in that store: trusted by construction, nothing re-evaluated
    assert cli(capsys, "merge", random_run, "--into", store)[0] == 0
    rc, out, _ = cli(capsys, "verify", "--results", store, "--quiet")
    assert rc == 0 and "missing set" in out and _only(store)["verified"]["state"] == "missing set"
    assert cli(capsys, "leaderboard", "--results", store)[0] == 0
    table = (store / "leaderboards" / "main_smoke.md").read_text()
    assert f"{MARK} |" in table and f"{MARK}: the cell rests on 1 record(s)" in table and _only(store)["id"] in table
    assert "missing set" in (store / "leaderboards" / "records.csv").read_text()  # the CSV's verification column
    shutil.copytree(random_run / "runs", store / "runs")
    rc, out, _ = cli(capsys, "verify", "--results", store, "--quiet")
    found = _only(store)["verified"]
    assert rc == 0 and "1 verified" in out and found["state"] == "verified" and found["commit"] and found["checked"]
    assert cli(capsys, "leaderboard", "--results", store)[0] == 0
    assert MARK not in (store / "leaderboards" / "main_smoke.md").read_text()
    assert cli(capsys, "verify", "--results", store, "--quiet")[1].startswith("0 record(s)")  # done once


def test_a_set_that_does_not_reproduce_its_record_fails_verify(random_run, tmp_path, capsys):
    own = _only(random_run)
    source = tmp_path / "edited.jsonl"  # self-consistent (merge takes it), but not what its set gives
    source.write_text(json.dumps(_shifted(own, -0.05)) + "\n")
    store = tmp_path / "store"
    assert cli(capsys, "merge", source, "--into", store)[0] == 0
    shutil.copytree(random_run / "runs", store / "runs")
    rc, out, err = cli(capsys, "verify", "--results", store, "--quiet", "--id", own["id"][:8])
    assert rc == 1 and "mismatch" in out and "test_acc of model 0" in out and "not reproduced" in err
    assert _only(store)["verified"]["state"] == "mismatch"
    assert _only(store)["metrics"]["test_acc"]["mean"] == pytest.approx(own["metrics"]["test_acc"]["mean"] - 0.05)
    # another file at the record's path: its sha256 is not the record's
    store2 = tmp_path / "store2"
    assert cli(capsys, "merge", random_run, "--into", store2)[0] == 0
    shutil.copytree(random_run / "runs", store2 / "runs")
    artifact = store2 / own["artifact"]
    artifact.write_bytes(artifact.read_bytes() + b" ")
    rc, out, _ = cli(capsys, "verify", "--results", store2, "--quiet")
    assert rc == 1 and "set differs" in out


def test_a_verification_claimed_by_a_source_is_not_believed(random_run, tmp_path, capsys):
    source = tmp_path / "claims.jsonl"
    source.write_text(json.dumps({**_only(random_run), "verified": {"state": "verified"}}) + "\n")
    assert cli(capsys, "merge", source, "--into", tmp_path / "s")[0] == 0
    assert "verified" not in _only(tmp_path / "s")


@pytest.mark.parametrize("argv, says", [
    (["--id", "ffffffffffff"], "no record"), (["--sample", "0"], "--sample"), (["--tolerance", "nan"], "--tolerance"),
])
def test_verify_refuses_bad_options(random_run, capsys, argv, says):
    try:
        rc, _, err = cli(capsys, "verify", "--results", random_run, *argv)
    except SystemExit as exc:  # refused by the option parser
        rc, err = exc.code, capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err


def test_leaderboard_writes_the_users_folder_never_the_published_one(random_run, capsys):
    rc, out, _ = cli(capsys, "leaderboard", "--results", random_run)
    assert rc == 0 and str(random_run / "leaderboards" / "main_smoke.md") in out
    before = {p.name: p.stat().st_mtime_ns for p in PUBLISHED_DIR.iterdir()}
    rc, _, err = cli(capsys, "leaderboard", "--results", random_run, "--to", PUBLISHED_DIR)
    assert rc == 2 and "mddbench publish" in err
    assert {p.name: p.stat().st_mtime_ns for p in PUBLISHED_DIR.iterdir()} == before


def test_publish_names_the_cell_it_would_change_and_never_drops_a_record(random_run, tmp_path, capsys):
    pub, store = tmp_path / "pub", tmp_path / "store"
    shutil.copytree(random_run, store, ignore=shutil.ignore_patterns("runs", "experts", "leaderboards"))
    rc, out, _ = cli(capsys, "publish", "--results", store, "--to", pub)
    assert rc == 0 and "1 new record(s) published" in out
    first = (pub / "records.jsonl").read_text()
    own = _only(store)
    ResultStore(store).add(_reseeded(own, 5))  # a second seed of the same cell, made in this store
    cell = "smoke/v1/demo/ipc2/convnet/random"
    rc, _, err = cli(capsys, "publish", "--results", store, "--to", pub)
    assert rc == 2 and f"cell {cell}" in err and "published: 32.50" in err and "would be:" in err and "seed 5" in err
    assert f"--replace '{cell}'" in err and (pub / "records.jsonl").read_text() == first
    rc, _, err = cli(capsys, "publish", "--results", store, "--to", pub, "--replace", "nonsense")
    assert rc == 2 and "names no published cell" in err
    rc, out, _ = cli(capsys, "publish", "--results", store, "--to", pub, "--replace", cell)
    assert rc == 0 and len((pub / "records.jsonl").read_text().splitlines()) == 2
    # a store that lacks the published records, or measured one differently, drops nothing
    other = tmp_path / "other"
    ResultStore(other / "results.sqlite").add(_shifted(own, 0.01))
    rc, out, err = cli(capsys, "publish", "--results", other, "--to", pub)
    assert rc == 0 and "kept the published copy of 1 record" in out, err
    published = (pub / "records.jsonl").read_text()
    assert len(published.splitlines()) == 2 and first.strip() in published


def test_publish_refuses_unverified_records_unless_told_and_then_marks_them(random_run, tmp_path, capsys):
    store, pub = tmp_path / "store", tmp_path / "pub"
    assert cli(capsys, "merge", random_run, "--into", store)[0] == 0
    rc, _, err = cli(capsys, "publish", "--results", store, "--to", pub)
    rid = _only(store)["id"]
    assert rc == 2 and "not verified here" in err and rid in err and "--allow-unverified" in err
    assert not pub.exists()
    rc, _, _ = cli(capsys, "publish", "--results", store, "--to", pub, "--allow-unverified")
    assert rc == 0 and f"{MARK} |" in (pub / "main_smoke.md").read_text()


def test_publish_re_renders_a_published_folder_from_its_own_records(tmp_path, capsys):
    to = tmp_path / "leaderboards"
    shutil.copytree(PUBLISHED_DIR, to)
    before = {p.name: p.read_bytes() for p in to.iterdir() if p.is_file()}
    rc, out, _ = cli(capsys, "publish", "--records", to / "records.jsonl", "--to", to)
    assert rc == 0 and "0 new record(s)" in out
    assert {p.name: p.read_bytes() for p in to.iterdir() if p.is_file()} == before


def test_publish_counts_a_files_new_records_as_unverified(random_run, tmp_path, capsys):
    export = tmp_path / "mine.jsonl"
    ResultStore(random_run).export_jsonl(export)
    rc, _, err = cli(capsys, "publish", "--records", export, "--to", tmp_path / "pub")
    assert rc == 2 and "not verified here" in err and str(export.resolve()) in err
