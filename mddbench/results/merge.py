"""``mddbench merge``: the records of other stores or ``records.jsonl`` exports, added to one store.

Records made on other machines (a sweep split by hand, a second cluster) come together here. A
record's identity is ``(job_id, eval_model)`` (its id is derived from it), so merging is
idempotent: a record the store already has is skipped, and one that has the same identity but
other metrics is reported and the store's own is kept. Every record of every source is read and
validated before anything is written: a bad source leaves the store untouched.

Privacy audits come along: a store's ``privacy`` table, or the ``privacy.jsonl`` beside a ``.jsonl``
export (as ``mddbench leaderboard`` writes them), is added to the store's own (by id: idempotent too),
so the merged store can publish both without losing an audit. Failures (:mod:`mddbench.results.failures`: the
seeds whose distillation diverged) come along the same way, a store's ``failures`` table or the
``failures.jsonl`` beside an export, so the merged tables still say which seeds were lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mddbench.errors import ConfigError
from mddbench.results.failures import FailureTable, failures_of
from mddbench.results.kind import read_rows
from mddbench.results.privacy_store import PRIVACY, PrivacyStore
from mddbench.results.store import DEFAULT_FILENAME, RESULTS, no_value_as_null, record_id


def merge_target(into: str | Path) -> Path:
    """The store file ``--into`` names: a ``.sqlite`` file, else ``results.sqlite`` in that folder."""
    path = Path(into)
    return path if path.suffix == ".sqlite" else path / DEFAULT_FILENAME


def read_source(path: Path) -> list[dict[str, Any]]:
    """Every record of a store (file or folder) or a JSONL export, validated; never writes to it."""
    return _nothing_merged(lambda: read_rows(path, RESULTS))


def read_privacy_source(path: Path) -> list[dict[str, Any]]:
    """The privacy results a source holds: its store's ``privacy`` table, or the ``privacy.jsonl`` beside a
    ``.jsonl`` export (none: an empty list), validated; never writes to it."""
    return _nothing_merged(lambda: read_rows(path, PRIVACY, required=False))


def _nothing_merged(read):
    try:
        return read()
    except ConfigError as exc:
        raise ConfigError(f"{exc}; nothing was merged") from exc


def merge_into(into: str | Path, sources: list[Path]) -> list[tuple[str, int, int, int, int, int, int]]:
    """Add every source's new records, privacy results and failures to the store at ``into``; per source:
    (name, records added, already there, differing, privacy results added, privacy results differing from
    the one already there under their id: an audit made again, ``mddbench privacy --again``; the store's
    is kept; failures added)."""
    # all read and valid before any write
    read = [(src, read_source(Path(src)), read_privacy_source(Path(src)), _nothing_merged(lambda: failures_of(src)))
            for src in sources]
    target = merge_target(into)
    target.parent.mkdir(parents=True, exist_ok=True)
    store = PrivacyStore(target)
    failure_table = FailureTable(store)
    have = {r["id"]: r for r in store.records()}
    measured = lambda audit: [no_value_as_null(audit[k]) for k in ("memorisation", "membership")]  # noqa: E731
    have_audits = {a["id"]: measured(a) for a in store.privacy_records()}
    summary = []
    for src, records, audits, failures in read:
        added = same = differing = 0
        for record in records:
            rid = record_id(record["job_id"], record["eval_model"])
            if rid in have:
                known = have[rid]["metrics"] == no_value_as_null(record["metrics"])
                same, differing = same + known, differing + (not known)
                continue
            added += store.add_new(record)
            have[rid] = {**record, "metrics": no_value_as_null(record["metrics"])}
        audited = audits_differing = 0
        for audit in audits:
            if audit["id"] in have_audits:
                audits_differing += have_audits[audit["id"]] != measured(audit)
                continue
            audited += store.add_privacy(audit)[1]
            have_audits[audit["id"]] = measured(audit)
        failed = sum(failure_table.add_new(f) for f in failures)
        summary.append((str(src), added, same, differing, audited, audits_differing, failed))
    return summary


def audits_of_other_files(into: str | Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(privacy result, evaluation record it links to) where the two name different files: the audit was
    of a rerun's set (another machine's, say), while the store kept the first record of that job. Audits
    made before privacy results recorded ``artifact_sha256`` cannot be checked and are not listed."""
    store = PrivacyStore(merge_target(into))
    by_id = {r["id"]: r for r in store.records()}
    pairs = []
    for audit in store.privacy_records():
        record = by_id.get(audit.get("eval_record_id"))
        if record and audit.get("artifact_sha256") and record.get("artifact_sha256") \
                and audit["artifact_sha256"] != record["artifact_sha256"]:
            pairs.append((audit, record))
    return pairs
