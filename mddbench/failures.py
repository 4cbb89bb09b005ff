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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .atomic import write_text
from .errors import ConfigError
from .results import ResultStore, jsonl_text

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
    if not isinstance(failure, dict):
        raise ConfigError(f"a failure must be a dict, got {type(failure).__name__}")
    missing = [f for f in REQUIRED if f not in failure]
    if missing:
        raise ConfigError(f"failure is missing required field(s): {', '.join(missing)}")
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
    """The ``failures`` table of a results store."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        with store._connect() as conn:
            conn.executescript(_SCHEMA)

    def add(self, failure: Failure) -> None:
        """Store ``failure``; one stored for the same job before is replaced (the newest attempt counts)."""
        validate_failure(failure)
        text = json.dumps(failure, sort_keys=True, allow_nan=False)
        with self.store._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO failures (id, method, dataset, ipc, budget, seed, created, record)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (failure["id"], failure["method"], failure["dataset"], str(failure["ipc"]),
                          failure["budget"], failure["seed"], str(failure.get("created", "")), text))

    def add_new(self, failure: Failure) -> bool:
        """Store ``failure`` unless one of its id is there (merging); whether it was new."""
        validate_failure(failure)
        with self.store._connect() as conn:
            if conn.execute("SELECT 1 FROM failures WHERE id = ?", (failure["id"],)).fetchone():
                return False
        self.add(failure)
        return True

    def all(self) -> list[Failure]:
        with self.store._connect() as conn:
            rows = conn.execute("SELECT record FROM failures ORDER BY id").fetchall()
        return [json.loads(text) for (text,) in rows]

    def export(self, path: str | os.PathLike[str]) -> int:
        failures = self.all()
        write_text(Path(path), jsonl_text(failures))
        return len(failures)


def read_failures_jsonl(path: str | os.PathLike[str]) -> list[Failure]:
    failures = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            failure = json.loads(line)
            validate_failure(failure)
        except (json.JSONDecodeError, ConfigError) as exc:
            raise ConfigError(f"{path}:{lineno}: not a failure ({exc}); restore the file "
                              f"(e.g. `git checkout {path}`) or remove that line") from exc
        failures.append(failure)
    return failures


def failures_of(store_path: Path, records_file: str | os.PathLike[str] | None = None) -> list[Failure]:
    """The failures a leaderboard reads: beside a ``--records`` file (its sibling ``failures.jsonl``), or
    from the store; none where there is neither."""
    if records_file:
        sibling = Path(records_file).with_name(EXPORT_FILENAME)
        return read_failures_jsonl(sibling) if sibling.is_file() and sibling.resolve() != Path(records_file).resolve() \
            else []
    if not Path(store_path).is_file():
        return []
    return FailureTable(ResultStore(store_path, create=False)).all()


def lost(failures: Iterable[Failure], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failures that still count (no evaluation record of their job exists), one per evaluation
    network, shaped as the records a table places (``eval_model`` instead of ``eval_models``)."""
    done = {r["job_id"] for r in records}
    return [{**f, "eval_model": model} for f in failures if f["job_id"] not in done for model in f["eval_models"]]
