"""Failed distillations: a ``failures`` table in the results store, so a table can say a seed was lost.

A job whose distillation diverges (:class:`~mddbench.errors.DistillationDiverged`) has no evaluation
record; without a trace of it, its cell would silently pool the seeds that survived, and a mean over
the survivors of a method that diverges on some seeds flatters it. Such a job leaves a *failure*
instead: the fields that place it in a table (method, dataset, ipc, the evaluation networks, budget,
protocol, seed, label type, overrides, time budget) and the error. One per job (its id is the job's:
a rerun that fails again replaces it); a failure whose job has an evaluation record since (a rerun
that succeeded) no longer counts (:func:`lost`). ``failures.jsonl`` beside ``records.jsonl`` is the
table's export, from which the leaderboards regenerate.
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError
from .jsonl import export_beside, read_jsonl, require_fields, write_jsonl
from .results import DEFAULT_FILENAME, ResultStore

EXPORT_FILENAME = "failures.jsonl"
REQUIRED = ("id", "job_id", "method", "dataset", "ipc", "eval_models", "protocol", "budget", "seed", "reason")
DIVERGED = "distillation diverged"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    ipc TEXT NOT NULL,
    budget TEXT NOT NULL,
    seed INTEGER NOT NULL,
    created TEXT NOT NULL,
    record TEXT NOT NULL
);
"""

Failure = dict[str, Any]


def validate_failure(failure: Any) -> None:
    require_fields(failure, REQUIRED, "failure")
    if not isinstance(failure["eval_models"], list) or not failure["eval_models"]:
        raise ConfigError("a failure's eval_models must be a non-empty list")


def failure_record(*, job_id: str, method: str, label_type: str, dataset: str, dims: int, ipc: int | None,
                   seed: int, eval_models: Iterable[str], protocol: str, budget: str, budget_version: int,
                   overrides: dict[str, Any], time_budget: float | None, message: str, **context: Any) -> Failure:
    """A failure's fields: those of the records the job would have made that place it in a table."""
    return {"id": job_id, "job_id": job_id, "method": method, "label_type": label_type, "dataset": dataset,
            "dims": dims, "ipc": "full" if ipc is None else ipc, "seed": seed, "eval_models": list(eval_models),
            "protocol": protocol, "budget": budget, "budget_version": budget_version, "overrides": overrides,
            "time_budget": time_budget, "reason": DIVERGED, "message": message,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **context}


class FailureTable:
    """The ``failures`` table of a results store; it is made by the first failure, so reading a store that
    has none (older stores, read-only ones) writes nothing."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def add(self, failure: Failure) -> None:
        """Store ``failure``; one stored for the same job before is replaced (a rerun's newest attempt counts)."""
        self._insert(failure, "OR REPLACE")

    def add_new(self, failure: Failure) -> bool:
        """Store ``failure`` unless one of its id is there (merging keeps the store's, as it does records);
        whether it was new."""
        return self._insert(failure, "OR IGNORE")

    def _insert(self, failure: Failure, conflict: str) -> bool:
        validate_failure(failure)
        text = json.dumps(failure, sort_keys=True, allow_nan=False)
        with self.store._connect() as conn:
            conn.executescript(_SCHEMA)
            cur = conn.execute(f"INSERT {conflict} INTO failures (id, method, dataset, ipc, budget, seed, created, "
                               "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (failure["id"], failure["method"], failure["dataset"], str(failure["ipc"]),
                                failure["budget"], failure["seed"], str(failure.get("created", "")), text))
            return cur.rowcount == 1

    def all(self) -> list[Failure]:
        return read_store_failures(self.store.path)

    def export(self, path: str | os.PathLike[str]) -> int:
        return write_jsonl(path, self.all())


def read_store_failures(path: str | os.PathLike[str]) -> list[Failure]:
    """The failures of a store file, validated; opened read-only, and none where it has no such table."""
    with closing(sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)) as conn:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        texts = conn.execute("SELECT record FROM failures ORDER BY id").fetchall() if "failures" in tables else []
    failures = []
    for i, (text,) in enumerate(texts, 1):
        try:
            failure = json.loads(text)
            validate_failure(failure)
        except (json.JSONDecodeError, ConfigError) as exc:
            raise ConfigError(f"{path}: failure {i} is not a failure ({exc})") from exc
        failures.append(failure)
    return failures


def read_failures_jsonl(path: str | os.PathLike[str]) -> list[Failure]:
    return read_jsonl(path, validate_failure, "failure")


def failures_of(source: str | os.PathLike[str]) -> list[Failure]:
    """The failures that go with a source of records: a store (its file or folder) or a ``.jsonl`` export
    (the ``failures.jsonl`` beside it); none where there are none."""
    path = Path(source)
    if path.is_dir():
        path = path / DEFAULT_FILENAME
    if path.suffix == ".jsonl":
        sibling = export_beside(path, EXPORT_FILENAME)
        return read_failures_jsonl(sibling) if sibling else []
    return read_store_failures(path) if path.is_file() else []


def lost(failures: Iterable[Failure], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failures that still count, one per evaluation network that has no record of the failed job
    (a rerun that succeeded supersedes a failure), shaped as the records a table places (``eval_model``
    instead of ``eval_models``)."""
    done = {(r["job_id"], r["eval_model"]) for r in records}
    return [{**f, "eval_model": model} for f in failures for model in f["eval_models"]
            if (f["job_id"], model) not in done]
