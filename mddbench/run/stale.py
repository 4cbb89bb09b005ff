"""Stale records: a stored result that ran under other values than its job resolves to now."""
from __future__ import annotations

import json
from typing import Any

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec
from mddbench.registry import METHODS
from mddbench.run.job import Job


def resolved_hparams(job: Job) -> dict[str, Any]:
    """The hyperparameters the job would run with now, as a record stores them (JSON values)."""
    method = METHODS.get(job.method)()
    return as_json(method.resolve(get_spec(job.dataset), job.ipc or 0, get_budget(job.budget), dict(job.hparams)))


def as_json(hp: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(hp, default=str))


def changed_values(now: dict[str, Any], then: dict[str, Any]) -> str:
    """``key old -> new`` for every value that differs ('' when none does)."""
    keys = sorted(k for k in set(now) | set(then) if now.get(k, "unset") != then.get(k, "unset"))
    text = ", ".join(f"{k} {then.get(k, 'unset')} -> {now.get(k, 'unset')}" for k in keys[:5])
    return text + (", ..." if len(keys) > 5 else "")


def stale_message(what: str, budget: str, diff: str | None) -> str:
    return (f"{what} ran with other values than the job resolves now{f' ({diff})' if diff else ''}: a default "
            f"changed without a new version of the {budget} budget. Bump `version` of {budget!r} in "
            f"mddbench/api/budgets.py (every job at that budget then gets a new id and runs afresh; old records keep "
            f"their own tables), or use another --out.")


def stale_record(job: Job, records: list[dict[str, Any]], now: dict[str, Any] | None = None
                 ) -> tuple[str, str] | None:
    """(which record, what changed) for the first stored record of this job id that is not this job's result,
    else None: the job id names only the overrides, so a default changed without its budget's version
    cannot be told apart by id. ``now``: the job's resolved values (as JSON), when the caller has them."""
    for r in records:
        if isinstance(r.get("hparams"), dict):  # a record that does not say what it ran: nothing to compare
            now = resolved_hparams(job) if now is None else now
            diff = changed_values(now, r["hparams"])
            if diff:
                return f"{job.run_name}'s stored record {r['id']}", diff
    return None
