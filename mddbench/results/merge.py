"""``mddbench merge``: the records of other stores or ``records.jsonl`` exports, added to one store.

Records made on other machines (a sweep split by hand, a second cluster) come together here. A
record's identity is ``(job_id, eval_model)`` (its id is derived from it), so merging is
idempotent: a record the store already has is skipped, and one that has the same identity but
other metrics is reported by id and the store's own is kept. A record whose own content contradicts
itself (a summary that does not recompute from its per-model values, ids that do not recompute from
its content, a method, dataset, protocol or budget unknown here) refuses the merge: a made-up line of
JSON is never ranked. Every merged record says which file it came from (``origin``) and is unverified here
until ``mddbench verify`` reproduces it (:mod:`mddbench.results.verification`). Every record of every source is
read and validated before anything is written: a bad source leaves the store untouched.

Privacy audits come along: a store's ``privacy`` table, or the ``privacy.jsonl`` beside a ``.jsonl``
export (as ``mddbench leaderboard`` writes them), is added to the store's own (by id: idempotent too),
so the merged store can publish both without losing an audit. Failures (:mod:`mddbench.results.failures`: the
seeds whose distillation diverged) come along the same way, a store's ``failures`` table or the
``failures.jsonl`` beside an export, so the merged tables still say which seeds were lost.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable

from mddbench.atomic import ensure_writable
from mddbench.errors import ConfigError
from mddbench.results.failures import FailureTable, failures_of
from mddbench.results.kind import read_rows
from mddbench.results.privacy_store import PRIVACY, PrivacyStore
from mddbench.results.store import DEFAULT_FILENAME, RESULTS, no_value_as_null, record_id


def merge_target(into: str | Path) -> Path:
    """The store file ``--into`` names: a ``.sqlite`` file, else ``results.sqlite`` in that folder."""
    path = Path(into)
    if path.suffix != ".sqlite" and path.exists() and not path.is_dir():
        raise ConfigError(f"--into {path} is a file but not a .sqlite store; name a folder or a results.sqlite")
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


def refuse_contradictions(records: Iterable[dict], source: object, check: Callable[[dict], list[str]],
                          outcome: str) -> None:
    """Raise ConfigError naming the first record of ``source`` that ``check`` finds self-contradicting (a forged
    or hand-edited record is never merged or ranked); ``outcome`` says what was not done."""
    for i, record in enumerate(records, 1):
        problems = check(record)
        if problems:
            raise ConfigError(f"{source}: record {i} ({record['method']}, {record['dataset']}, ipc {record['ipc']}, "
                              f"seed {record['seed']}, {record['eval_model']}) contradicts itself: "
                              f"{'; '.join(problems)}; {outcome}")


def merge_into(into: str | Path, sources: list[Path], check: Callable[[dict[str, Any]], list[str]] | None = None
               ) -> list[tuple[str, int, int, int, int, int, int, list[str]]]:
    """Add every source's new records, privacy results and failures to the store at ``into``; per source:
    (name, records added, already there, differing, privacy results added, privacy results differing from
    the one already there under their id: an audit made again, ``mddbench privacy --again``; the store's
    is kept; failures added, the ids of the records that differ from the store's copy).

    ``check(record)`` lists what a record's own content contradicts (the CLI passes
    :func:`mddbench.run.record.record_problems`): one such record refuses the whole merge, before any write.
    Every record added says where it came from (``origin``: the source file), unless it already did."""
    # all read and valid before any write
    read = [(src, read_source(Path(src)), read_privacy_source(Path(src)), _nothing_merged(lambda: failures_of(src)))
            for src in sources]
    if check is not None:
        for src, records, _, _ in read:
            refuse_contradictions(records, src, check, "nothing was merged")
    target = merge_target(into)
    ensure_writable(target.parent, "--into")
    existed = target.exists()
    try:
        store = PrivacyStore(target)
    except (OSError, sqlite3.Error, ConfigError) as exc:  # a full disk: no empty store left behind
        if not existed and target.exists() and target.stat().st_size == 0:
            target.unlink()
        raise ConfigError(f"cannot create or open the store {target} ({exc}); free some space or choose another "
                          "--into (nothing was merged)") from exc
    failure_table = FailureTable(store)
    have = {r["id"]: r for r in store.records()}
    measured = lambda audit: [no_value_as_null(audit[k]) for k in ("memorisation", "membership")]  # noqa: E731
    have_audits = {a["id"]: measured(a) for a in store.privacy_records()}
    summary = []
    for src, records, audits, failures in read:
        added = same = 0
        differing: list[str] = []
        for record in records:
            rid = record_id(record["job_id"], record["eval_model"])
            if rid in have:
                if have[rid]["metrics"] == no_value_as_null(record["metrics"]):
                    same += 1
                else:
                    differing.append(rid)
                continue
            # where it came from, always this source (an earlier origin kept beside it); a verification made
            # elsewhere is not believed here: ``mddbench verify`` earns it again in this store
            origin = {"merged_from": str(Path(src).resolve()),
                      **({"earlier": record["origin"]} if record.get("origin") else {})}
            record = {k: v for k, v in record.items() if k != "verified"}
            added += store.add_new({**record, "origin": origin})
            have[rid] = {**record, "metrics": no_value_as_null(record["metrics"])}
        audited = audits_differing = 0
        for audit in audits:
            if audit["id"] in have_audits:
                audits_differing += have_audits[audit["id"]] != measured(audit)
                continue
            audited += store.add_privacy(audit)[1]
            have_audits[audit["id"]] = measured(audit)
        failed = sum(failure_table.add_new(f) for f in failures)
        summary.append((str(src), added, same, len(differing), audited, audits_differing, failed, differing))
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
