"""Privacy results: a ``privacy`` table in the same SQLite file as the evaluation records.

A privacy result links to the evaluation record whose networks it attacked by ``eval_record_id``
(that record's own id; null for a set with no stored evaluation of its run) and is identified by
its own ``id`` (the run, the audit's seed and its whole configuration, version included): storing
it again is a no-op, and only :meth:`PrivacyStore.replace_privacy` (``mddbench privacy --again``)
overwrites it, with a fresh audit of the same set, e.g. one that holds a measurement added since. The
evaluation ``records`` table is untouched, so its readers and validators never see these rows;
``leaderboards/privacy.jsonl`` (beside ``records.jsonl``) is the table's export, from which the privacy
leaderboard regenerates.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .jsonl import export_beside, read_jsonl, require_fields, write_jsonl
from .results import ResultStore, _no_value_as_null

EXPORT_FILENAME = "privacy.jsonl"
REQUIRED = ("id", "privacy_version", "job_id", "eval_record_id", "method", "dataset", "ipc", "seed", "budget",
            "memorisation", "membership")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy (
    id TEXT PRIMARY KEY,
    eval_record_id TEXT,
    job_id TEXT NOT NULL,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    ipc TEXT NOT NULL,
    seed INTEGER NOT NULL,
    budget TEXT NOT NULL,
    privacy_version TEXT NOT NULL,
    created TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS privacy_eval_record ON privacy (eval_record_id);
"""


def validate_privacy(record: Any) -> None:
    require_fields(record, REQUIRED, "privacy result")


class PrivacyStore(ResultStore):
    """The results store, with its ``privacy`` table."""

    def _init_schema(self) -> None:
        super()._init_schema()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def add_privacy(self, record: dict[str, Any]) -> tuple[str, bool]:
        """Store ``record``; (its id, whether it was new). A result already stored under its id is kept."""
        return record["id"], self._insert(record, replace=False)[1]

    def replace_privacy(self, record: dict[str, Any]) -> bool:
        """Store ``record``, overwriting the result stored under its id; whether one was there."""
        return self._insert(record, replace=True)[0]

    def _insert(self, record: dict[str, Any], replace: bool) -> tuple[bool, bool]:
        """(whether a result had ``record``'s id before, whether ``record`` is now the one stored)."""
        validate_privacy(record)
        text = json.dumps(_no_value_as_null(record), sort_keys=True, allow_nan=False)
        columns = ("id", "eval_record_id", "job_id", "method", "dataset", "ipc", "seed", "budget", "privacy_version",
                   "created", "record")
        values = (record["id"], record["eval_record_id"], record["job_id"], record["method"], record["dataset"],
                  str(record["ipc"]), record["seed"], record["budget"], record["privacy_version"],
                  str(record.get("created", "")), text)
        conflict = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns[1:])) if replace \
            else "DO NOTHING"
        with self._connect() as conn:
            existed = conn.execute("SELECT 1 FROM privacy WHERE id = ?", (record["id"],)).fetchone() is not None
            conn.execute(f"INSERT INTO privacy ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                         f"ON CONFLICT (id) {conflict}", values)
        return existed, replace or not existed

    def has_privacy(self, privacy_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM privacy WHERE id = ?", (privacy_id,)).fetchone() is not None

    def privacy_records(self, eval_record_id: str | None = None) -> list[dict[str, Any]]:
        """Every privacy result (or those of one evaluation record), by id."""
        where, values = ("WHERE eval_record_id = ?", [eval_record_id]) if eval_record_id else ("", [])
        with self._connect() as conn:
            rows = conn.execute(f"SELECT record FROM privacy {where} ORDER BY id", values).fetchall()
        return [json.loads(text) for (text,) in rows]

    def export_privacy(self, path: str | os.PathLike[str]) -> int:
        """Write every privacy result, one JSON object per line, sorted by id; return how many."""
        return write_jsonl(path, self.privacy_records())

    def import_privacy(self, path: str | os.PathLike[str]) -> int:
        return sum(self.add_privacy(r)[1] for r in read_privacy_jsonl(path))


def read_privacy_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return read_jsonl(path, validate_privacy, "privacy result")


def privacy_for_leaderboard(store_path: Path, records_file: str | None) -> list[dict[str, Any]]:
    """The privacy results a leaderboard renders: beside a ``--records`` file (its sibling
    ``privacy.jsonl``), or from the store (``mddbench.publish`` exports them beside ``records.jsonl``)."""
    if records_file:
        sibling = export_beside(records_file, EXPORT_FILENAME)
        return read_privacy_jsonl(sibling) if sibling else []
    if not store_path.is_file():
        return []
    return PrivacyStore(store_path, create=False).privacy_records()
