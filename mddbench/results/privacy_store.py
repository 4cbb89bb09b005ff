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

import os
from pathlib import Path
from typing import Any

from mddbench.results.jsonl import require_fields
from mddbench.results.kind import RecordKind, read_export, read_rows
from mddbench.results.store import ResultStore

EXPORT_FILENAME = "privacy.jsonl"
REQUIRED = ("id", "privacy_version", "job_id", "eval_record_id", "method", "dataset", "ipc", "seed", "budget",
            "memorisation", "membership")



def validate_privacy(record: Any) -> None:
    require_fields(record, REQUIRED, "privacy result")


PRIVACY = RecordKind(
    "privacy result", "privacy", ("eval_record_id", "job_id", "method", "dataset", "ipc", "seed", "budget",
                                  "privacy_version"),
    validate_privacy, lambda r: r["id"], EXPORT_FILENAME, nullable=("eval_record_id",),
    extra_sql="CREATE INDEX IF NOT EXISTS privacy_eval_record ON privacy (eval_record_id);\n")


class PrivacyStore(ResultStore):
    """The results store, seen with its privacy results (rows of :data:`PRIVACY`)."""

    def add_privacy(self, record: dict[str, Any]) -> tuple[str, bool]:
        """Store ``record``; (its id, whether it was new). A result already stored under its id is kept."""
        return record["id"], self.insert(PRIVACY, record)[1]

    def replace_privacy(self, record: dict[str, Any]) -> bool:
        """Store ``record``, overwriting the result stored under its id; whether one was there."""
        return self.insert(PRIVACY, record, replace=True)[0]

    def has_privacy(self, privacy_id: str) -> bool:
        return self.has_row(PRIVACY, privacy_id)

    def privacy_records(self, eval_record_id: str | None = None) -> list[dict[str, Any]]:
        """Every privacy result (or those of one evaluation record), by id."""
        return self.rows(PRIVACY, **({"eval_record_id": eval_record_id} if eval_record_id else {}))

    def export_privacy(self, path: str | os.PathLike[str]) -> int:
        """Write every privacy result, one JSON object per line, sorted by id; return how many."""
        return self.export(PRIVACY, path)

    def import_privacy(self, path: str | os.PathLike[str]) -> int:
        return sum(self.add_privacy(r)[1] for r in read_privacy_jsonl(path))


def read_privacy_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return read_export(path, PRIVACY)


def privacy_for_leaderboard(store_path: Path, records_file: str | None) -> list[dict[str, Any]]:
    """The privacy results a leaderboard renders: beside a ``--records`` file (its sibling
    ``privacy.jsonl``), or from the store (``mddbench.report.publish`` exports them beside ``records.jsonl``)."""
    return read_rows(records_file or store_path, PRIVACY, required=False)
