"""The results store: validation, idempotence, JSONL round trip, concurrent and crashing writers."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import time

import pytest

from mddbench.errors import ConfigError
from mddbench.results.store import DEFAULT_FILENAME, ResultStore, record_id


def make_record(job_id: str, eval_model: str = "convnet", **over) -> dict:
    stat = {"per_model": [0.5, 0.7], "mean": 0.6, "std": 0.1, "n": 2}
    record = {"job_id": job_id, "method": "dm", "dataset": "breastmnist", "ipc": 1, "eval_model": eval_model,
              "protocol": "v1", "budget": "smoke", "seed": 0, "label_type": "hard", "resolution": 28,
              "metrics": {m: dict(stat) for m in ("test_acc", "val_acc", "auc", "balanced_acc")},
              "hparams": {"lr": 1.0}}
    record.update(over)
    return record


def _writer(path: str, worker: int, count: int) -> None:
    store = ResultStore(path)
    for i in range(count):
        store.add(make_record(f"w{worker}-{i}", seed=i))


def _crashing_writer(path: str, count: int) -> None:
    store = ResultStore(path)
    for i in range(count):
        store.add(make_record(f"crash-{i}"))
    os._exit(1)


def _endless_writer(path: str) -> None:
    store = ResultStore(path)
    i = 0
    while True:
        store.add(make_record(f"endless-{i}"))
        i += 1


def _integrity(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_add_returns_id_and_round_trips_the_whole_record(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    rec = make_record("job-a", ipc="full", method="real", peak_memory_mb=12.5)
    rid = store.add(rec)
    assert rid == record_id("job-a", "convnet")
    [back] = store.records()
    assert back["id"] == rid and back["created"]
    assert {k: back[k] for k in rec} == rec
    assert len(store) == 1


def test_directory_path_uses_default_file_and_wal(tmp_path):
    store = ResultStore(tmp_path)
    assert store.path == tmp_path / DEFAULT_FILENAME
    store.add(make_record("x"))
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_is_idempotent_on_job_and_eval_model(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    first = store.add(make_record("job-a"))
    again = store.add(make_record("job-a", seed=99))  # a re-run must not replace or duplicate
    other = store.add(make_record("job-a", eval_model="lenet"))
    assert again == first and other != first
    assert len(store) == 2
    assert store.records(job_id="job-a", eval_model="convnet")[0]["seed"] == 0
    assert store.has("job-a", "convnet") and store.has("job-a", "lenet") and not store.has("job-b", "convnet")


def test_missing_fields_are_listed(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    rec = make_record("job-a")
    del rec["method"], rec["seed"]
    with pytest.raises(ConfigError, match="method, seed"):
        store.add(rec)
    assert len(store) == 0


@pytest.mark.parametrize("change, message", [
    ({"ipc": "2"}, "ipc"),
    ({"ipc": True}, "ipc"),
    ({"seed": "0"}, "seed"),
    ({"metrics": {"test_acc": {"per_model": [0.5], "mean": 0.5, "std": 0.0, "n": 1}}}, "metrics.val_acc"),
    ({"metrics": {m: {"per_model": [50.0], "mean": 50.0, "std": 0.0, "n": 1}
                  for m in ("test_acc", "val_acc", "auc", "balanced_acc")}}, r"\[0, 1\]"),
    ({"metrics": {m: {"per_model": [0.5, None], "mean": 0.5, "std": 0.0, "n": 2}  # the gap not counted
                  for m in ("test_acc", "val_acc", "auc", "balanced_acc")}}, "1 diverged"),
])
def test_malformed_records_are_rejected(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        ResultStore(tmp_path / "r.sqlite").add(make_record("job-a", **change))


def test_a_diverged_model_is_a_gap_in_a_valid_record(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    stat = {"per_model": [0.5, None], "mean": 0.5, "std": 0.0, "n": 1, "diverged": 1}
    store.add(make_record("job-a", metrics={m: dict(stat) for m in ("test_acc", "val_acc", "auc", "balanced_acc")}))
    assert [r["metrics"]["test_acc"]["per_model"] for r in store.records()] == [[0.5, None]]


def test_a_record_whose_models_all_diverged_is_stored_as_strict_json(tmp_path):
    """Its means are NaN in memory; the store writes null (json.dumps(allow_nan=False) used to refuse it)."""
    from mddbench.evaluation.metrics import summarize
    store = ResultStore(tmp_path / "r.sqlite")
    metrics = {m: summarize([None, None]) for m in ("test_acc", "val_acc", "balanced_acc")}
    metrics["auc"] = summarize([float("nan"), None])  # undefined AUC beside a diverged model
    store.add(make_record("job-nan", metrics=metrics))
    [stored] = store.records()
    assert stored["metrics"]["test_acc"] == {"per_model": [None, None], "mean": None, "std": None, "n": 0,
                                             "diverged": 2}
    assert stored["metrics"]["auc"]["per_model"] == [None, None]
    store.export_jsonl(tmp_path / "r.jsonl")
    assert "NaN" not in (tmp_path / "r.jsonl").read_text()
    again = ResultStore(tmp_path / "again.sqlite")  # the exported record imports again as it is
    assert again.import_jsonl(tmp_path / "r.jsonl") == 1 and again.records()[0]["metrics"] == stored["metrics"]


def test_filters(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(make_record("a", method="dm", ipc=1))
    store.add(make_record("b", method="dc", ipc=10, budget="quick"))
    store.add(make_record("c", method="real", ipc="full"))
    assert [r["job_id"] for r in store.records(method="dc")] == ["b"]
    assert [r["job_id"] for r in store.records(ipc=10)] == ["b"]
    assert [r["job_id"] for r in store.records(ipc="full")] == ["c"]
    assert {r["job_id"] for r in store.records(budget="smoke", seed=0)} == {"a", "c"}
    with pytest.raises(ConfigError, match="hparams"):
        store.records(hparams="x")


def test_jsonl_round_trip_sorted_and_deduplicated(tmp_path):
    store = ResultStore(tmp_path / "a.sqlite")
    for job in ("z", "m", "a"):
        store.add(make_record(job))
    out = tmp_path / "records.jsonl"
    assert store.export_jsonl(out) == 3
    lines = out.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(ids)

    copy = ResultStore(tmp_path / "b.sqlite")
    assert copy.import_jsonl(out) == 3
    assert copy.import_jsonl(out) == 0
    assert copy.records() == store.records()
    copy.export_jsonl(tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = ResultStore(path)
    assert len(store) == 100
    assert {r["job_id"] for r in store.records()} == {f"w{w}-{i}" for w in range(4) for i in range(25)}
    assert _integrity(path) == "ok"


def test_writer_that_dies_keeps_committed_records(tmp_path):
    path = str(tmp_path / "r.sqlite")
    p = mp.get_context("spawn").Process(target=_crashing_writer, args=(path, 7))
    p.start()
    p.join(60)
    assert p.exitcode == 1
    store = ResultStore(path)
    assert sorted(r["job_id"] for r in store.records()) == sorted(f"crash-{i}" for i in range(7))
    store.add(make_record("after-crash"))
    assert len(store) == 8 and _integrity(path) == "ok"


def test_writer_killed_mid_write_leaves_a_readable_store(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ResultStore(path)
    p = mp.get_context("spawn").Process(target=_endless_writer, args=(path,))
    p.start()
    deadline = time.monotonic() + 60
    while len(ResultStore(path)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.kill()
    p.join(10)
    store = ResultStore(path)
    records = store.records()
    assert len(records) == len(store) >= 5
    # commits are in order, so exactly a prefix of the endless sequence is stored
    assert {r["job_id"] for r in records} == {f"endless-{i}" for i in range(len(records))}
    assert _integrity(path) == "ok"
