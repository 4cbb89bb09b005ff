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

import os
from datetime import datetime, timezone
from typing import Any, Iterable

from mddbench.errors import ConfigError
from mddbench.results.jsonl import require_fields
from mddbench.results.kind import RecordKind, read_rows
from mddbench.results.store import ResultStore

EXPORT_FILENAME = "failures.jsonl"
REQUIRED = ("id", "job_id", "method", "dataset", "ipc", "eval_models", "protocol", "budget", "seed", "reason")
DIVERGED = "distillation diverged"


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


FAILURES = RecordKind("failure", "failures", ("method", "dataset", "ipc", "budget", "seed"), validate_failure,
                      lambda f: f["id"], EXPORT_FILENAME)


class FailureTable:
    """The failures of a results store (rows of :data:`FAILURES`); its table is made by the first failure, so
    reading a store that has none (older stores, read-only ones) writes nothing."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def add(self, failure: Failure) -> None:
        """Store ``failure``; one stored for the same job before is replaced (a rerun's newest attempt counts)."""
        self.store.insert(FAILURES, failure, replace=True)

    def add_new(self, failure: Failure) -> bool:
        """Store ``failure`` unless one of its id is there (merging keeps the store's, as it does records);
        whether it was new."""
        return self.store.insert(FAILURES, failure)[1]

    def all(self) -> list[Failure]:
        return read_rows(self.store.path, FAILURES)

    def export(self, path: str | os.PathLike[str]) -> int:
        return self.store.export(FAILURES, path)


def failures_of(source: str | os.PathLike[str]) -> list[Failure]:
    """The failures that go with a source of records: a store (its file or folder) or a ``.jsonl`` export
    (the ``failures.jsonl`` beside it); none where there are none."""
    return read_rows(source, FAILURES, required=False)


def lost(failures: Iterable[Failure], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failures that still count, one per evaluation network that has no record of the failed job
    (a rerun that succeeded supersedes a failure), shaped as the records a table places (``eval_model``
    instead of ``eval_models``)."""
    done = {(r["job_id"], r["eval_model"]) for r in records}
    return [{**f, "eval_model": model} for f in failures for model in f["eval_models"]
            if (f["job_id"], model) not in done]
