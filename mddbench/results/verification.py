"""Whether a record can be trusted here: made in this store, or merged and verified (issue 43, item 1).

A record made by a run of this store (no ``origin``, or one that names no source file) is trusted by
construction: this store's own code distilled and evaluated it. A record ``mddbench merge`` added names the
file it came from (``origin.merged_from``) and is trusted only once ``mddbench verify``
(:mod:`mddbench.run.verify`) found its set present, with the sha256 the record names, and its numbers
reproduced by evaluating that set again with the record's own protocol and evaluation config. What
``verify`` found is the record's ``verified`` field: ``{"state", "checked", "commit", "version", "detail"}``.

The states (:data:`STATES`): ``verified`` (reproduced), ``mismatch`` (re-evaluated, other numbers),
``set differs`` (the file's sha256 is not the record's), ``missing set`` (no file at the record's
``artifact``), ``unverified`` (not checked yet, or nothing to check: a record without a saved set or
without its sha256). Tables mark every cell that rests on a record that is not trusted
(:data:`MARK`, :func:`legend`).
"""
from __future__ import annotations

from typing import Any, Iterable

VERIFIED, MISMATCH, SET_DIFFERS, MISSING_SET, UNVERIFIED, LOCAL = (
    "verified", "mismatch", "set differs", "missing set", "unverified", "local")
STATES = (VERIFIED, MISMATCH, SET_DIFFERS, MISSING_SET, UNVERIFIED)
FAILED = (MISMATCH, SET_DIFFERS)  # states in which the record's own set contradicts it
MARK = "†"  # a table cell that rests on a record that is not trusted here
Record = dict[str, Any]


def merged_from(record: Record) -> str | None:
    """The file a merged record came from; None for a record made in its store."""
    origin = record.get("origin")
    return origin.get("merged_from") if isinstance(origin, dict) else None


def state(record: Record) -> str:
    """``local`` for a record made in its store, else its verification state (``unverified`` when none)."""
    if merged_from(record) is None:
        return LOCAL
    found = record.get("verified")
    return found.get("state", UNVERIFIED) if isinstance(found, dict) and found.get("state") in STATES else UNVERIFIED


def trusted(record: Record) -> bool:
    return state(record) in (LOCAL, VERIFIED)


def untrusted(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if not trusted(r)]


def legend(records: Iterable[Record]) -> list[str]:
    """The note a table carries when some of its cells are marked (none when every record is trusted)."""
    bad = untrusted(records)
    if not bad:
        return []
    ids = sorted({str(r.get("id") or "?") for r in bad})
    shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
    return [f"{MARK}: the cell rests on {len(ids)} record(s) merged from another store and not verified here "
            f"(`mddbench verify` re-evaluates their sets): {shown}."]
