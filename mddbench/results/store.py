"""The results store: one SQLite file of evaluated-run records, safe for concurrent writers.

Each record is a plain JSON-able dict, stored whole as JSON beside a few indexed columns. A record
is identified by ``(job_id, eval_model)``: adding it again is a no-op that returns the existing id,
so a sweep restarted after a crash never duplicates rows. Every write is one transaction on a
connection opened for that operation (never shared across processes); WAL journaling with
``synchronous=FULL`` keeps committed records through a writer's crash.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import mddbench.results.kind as kinds
from mddbench.errors import ConfigError
from mddbench.ids import identity_digest
from mddbench.results.jsonl import require_fields, write_jsonl
from mddbench.results.kind import STORE_FILENAME, RecordKind

DEFAULT_FILENAME = STORE_FILENAME
REQUIRED_FIELDS = ("job_id", "method", "dataset", "ipc", "eval_model", "protocol", "budget", "seed", "metrics")
METRIC_NAMES = ("test_acc", "val_acc", "auc", "balanced_acc")
STAT_FIELDS = ("per_model", "mean", "std", "n")
BUSY_TIMEOUT_S = 60.0
# the record format: 2 adds ``record_schema``, ``environment`` and an ``artifact`` relative to the store's
# folder (the run's --out); records without the field are schema 1 (absolute artifact paths, torch only)
RECORD_SCHEMA = 2



def artifact_path(record: dict[str, Any], out: str | Path) -> Path | None:
    """The synthetic set a record names, on this machine: relative paths (schema 2) are taken from ``out``,
    the folder of the store that holds the record; schema 1's absolute paths are returned as they are."""
    if not record.get("artifact"):
        return None
    path = Path(record["artifact"])
    return path if path.is_absolute() else Path(out) / path


def stored_artifact(path: str | Path, out: str | Path) -> str:
    """How a record names a set: relative to ``out`` when the set lies inside it (the record and its
    run folder move together), else the absolute path."""
    path, out = Path(path).resolve(), Path(out).resolve()
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def record_id(job_id: str, eval_model: str) -> str:
    """The id of a record: derived from its identity, so every store (and re-run) agrees on it."""
    return identity_digest([job_id, eval_model])


def validate(record: dict[str, Any]) -> None:
    """Raise ConfigError naming every missing or malformed field of a result record."""
    require_fields(record, REQUIRED_FIELDS, "result record")
    problems: list[str] = []
    ipc = record["ipc"]
    if not (ipc == "full" or (isinstance(ipc, int) and not isinstance(ipc, bool) and ipc > 0)):
        problems.append(f"ipc must be a positive int or 'full', got {ipc!r}")
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool):
        problems.append(f"seed must be an int, got {record['seed']!r}")
    for field in ("job_id", "method", "dataset", "eval_model", "protocol", "budget"):
        if not isinstance(record[field], str) or not record[field]:
            problems.append(f"{field} must be a non-empty string, got {record[field]!r}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict):
        problems.append("metrics must be a dict")
    else:
        problems += [f"metrics.{m}: {p}" for m in METRIC_NAMES
                     for p in _stat_problems(metrics.get(m), allow_nan=m == "auc")]
    if problems:
        raise ConfigError("invalid result record: " + "; ".join(problems))


def _stat_problems(stat: Any, allow_nan: bool = False) -> list[str]:
    """AUC may be NaN: it is undefined when the test split holds a single class."""
    if not isinstance(stat, dict):
        return ["missing (expected {per_model, mean, std, n})"]
    missing = [k for k in STAT_FIELDS if k not in stat]
    if missing:
        return [f"missing {', '.join(missing)}"]
    values = stat["per_model"]
    ok = lambda v: _is_fraction(v) or (allow_nan and isinstance(v, float) and math.isnan(v))  # noqa: E731
    if not isinstance(values, list) or not values or not all(v is None or ok(v) for v in values):
        return [f"per_model must be a non-empty list of floats in [0, 1] (null: a diverged model), got {values!r}"]
    # nulls are the diverged models; an AUC may have more (undefined AUCs are stored as null too)
    gaps, diverged = sum(v is None for v in values), stat.get("diverged", 0)
    if stat["n"] + diverged != len(values) or gaps < diverged or (gaps > diverged and not allow_nan):
        return [f"n={stat['n']!r} and diverged={diverged!r} but per_model has "
                f"{len(values) - gaps} scores and {gaps} diverged models"]
    return []


def no_value_as_null(obj: Any) -> Any:
    """NaN -> None, so records stay strict JSON: a metric with no value (the mean of a cell whose models
    all diverged, an AUC undefined on a one-class split) is stored as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: no_value_as_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [no_value_as_null(v) for v in obj]
    return obj


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


RESULTS = RecordKind(
    "result record", "records", ("job_id", "method", "dataset", "ipc", "eval_model", "budget", "protocol", "seed"),
    validate, lambda r: record_id(r["job_id"], r["eval_model"]), "records.jsonl", beside=False,
    extra_sql="CREATE INDEX IF NOT EXISTS records_cell ON records (method, dataset, ipc, eval_model);\n"
              "CREATE INDEX IF NOT EXISTS records_budget ON records (budget, protocol);\n")
INDEXED = ("id", *RESULTS.columns, "created")


class ResultStore:
    """Records in an SQLite file; ``path`` is the file, or a directory that holds ``results.sqlite``."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_FILENAME, create: bool = True) -> None:
        """``create=False`` (readers): a missing or empty file is an error, never an empty store."""
        path = Path(path)
        if path.is_dir() and path.suffix != ".sqlite":
            path = path / DEFAULT_FILENAME
        self.path = path
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a results store; move it away or choose another --out")
        if not create and not path.is_file():
            raise ConfigError(f"no results store at {path}; run `mddbench run ...` first, point --results at the "
                              f"folder that holds results.sqlite, or pass --records FILE")
        if not create and path.stat().st_size == 0:
            raise ConfigError(f"{path} is empty (0 bytes), not a results store: it was truncated or created by "
                              f"hand. Move it away; records exported earlier come back with `mddbench merge FILE`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:  # a garbage file, or one this user may not write
            what = "cannot be opened" if isinstance(exc, sqlite3.OperationalError) else "is not an SQLite results store"
            raise ConfigError(f"{path} {what} ({exc}); move it away or choose another --out") from exc

    def check_writable(self) -> None:
        """Fail now, not after hours of distillation, when records could not be added."""
        try:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"cannot add records to {self.path} ({exc}); make it writable or choose "
                              f"another --out") from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn

    def _init_schema(self) -> None:
        # Switching to WAL takes an exclusive lock and may fail at once (no busy wait) while
        # another process is creating the same store; retry within the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                with self._connect() as conn:
                    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                        raise ConfigError(f"{self.path}: SQLite refused WAL journaling (network filesystem?)")
                    conn.executescript(RESULTS.schema)
                return
            except sqlite3.OperationalError as exc:
                transient = "locked" in str(exc) or "busy" in str(exc)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # ------------------------------------------------------------- any kind of row (results/kind.py)
    def insert(self, kind: RecordKind, row: dict[str, Any], replace: bool = False) -> tuple[bool, bool]:
        """Store a validated row of ``kind``; (whether one had its id before, whether ``row`` is stored now)."""
        kind.validate(row)
        try:
            text = json.dumps(no_value_as_null(row), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind.what} {kind.identity(row)!r} is not JSON-serialisable: {exc}") from exc
        with self._connect() as conn:
            return kinds.insert(conn, kind, row, text, replace)

    def rows(self, kind: RecordKind, **filters: Any) -> list[dict[str, Any]]:
        """The rows of ``kind`` whose indexed columns equal ``filters``, by id."""
        with self._connect() as conn:
            return kinds.rows(conn, kind, **filters)

    def has_row(self, kind: RecordKind, row_id: str) -> bool:
        return bool(self.rows(kind, id=row_id))

    def export(self, kind: RecordKind, path: str | os.PathLike[str]) -> int:
        """Write every row of ``kind``, one JSON object per line, sorted by id; return how many."""
        return write_jsonl(path, self.rows(kind))

    # ------------------------------------------------------------------------- evaluation records
    def add(self, record: dict[str, Any]) -> str:
        """Store ``record`` and return its id; an existing (job_id, eval_model) is kept as it is."""
        return self._add(record)[0]

    def add_new(self, record: dict[str, Any]) -> bool:
        """Like :meth:`add`; True when the record was new to this store."""
        return self._add(record)[1]

    def _add(self, record: dict[str, Any]) -> tuple[str, bool]:
        validate(record)
        rid = record_id(record["job_id"], record["eval_model"])
        return rid, self.insert(RESULTS, {**record, "id": rid, "created": record.get("created") or _now()})[1]

    def set_verified(self, rid: str, verified: dict[str, Any]) -> dict[str, Any]:
        """Store what ``mddbench verify`` found (:mod:`mddbench.results.verification`) in record ``rid``, in one
        transaction that rewrites only its ``verified`` field; the record itself is never dropped or changed."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("SELECT record FROM records WHERE id = ?", (rid,)).fetchone()
                if found is None:
                    raise ConfigError(f"{self.path} holds no record {rid!r}")
                record = {**kinds.parsed(RESULTS, rid, found[0]), "verified": dict(verified)}
                conn.execute("UPDATE records SET record = ? WHERE id = ?",
                             (json.dumps(no_value_as_null(record), sort_keys=True, allow_nan=False), rid))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return record

    def has(self, job_id: str, eval_model: str) -> bool:
        return self.has_row(RESULTS, record_id(job_id, eval_model))

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Records whose indexed columns equal the given values (e.g. ``method="dm", ipc=10``), by id."""
        return self.rows(RESULTS, **filters)

    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write every record, one JSON object per line, sorted by id; return how many."""
        return self.export(RESULTS, path)

    def import_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Add every record of a JSONL file (duplicates are skipped); return how many were new."""
        return sum(self._add(record)[1] for record in kinds.read_rows(path, RESULTS))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
