"""Publishing a leaderboard folder: its ``records.jsonl`` and the tables rendered from exactly those records.

A folder's tables always agree with the ``records.jsonl`` beside them, and publishing never drops a
record the folder already holds: writing the tables of a store that lacks some of them (the
README's demo run, then ``mddbench leaderboard`` from the repository root) is refused with the way
forward, before anything is written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from mddbench.atomic import write_text
from mddbench.errors import ConfigError
from mddbench.results.jsonl import jsonl_text
from mddbench.results.kind import read_export
from mddbench.results.store import RESULTS, record_id

RECORDS_FILE = "records.jsonl"
Record = dict[str, Any]


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """The records of a JSONL export, each validated; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; --records takes a records.jsonl export")
    return read_export(path, RESULTS)


def identity(record: Record) -> str:
    return record.get("id") or record_id(record["job_id"], record["eval_model"])


def jsonl(records: Iterable[Record]) -> str:
    """The export format: one record per line, keys sorted, records by id (as ``ResultStore.export_jsonl``)."""
    return jsonl_text(sorted(records, key=identity))


def check_no_loss(records: list[Record], held: Path, reader, source: str) -> None:
    """Refuse to publish a view of the records that lacks some that ``held`` (a folder's export) has."""
    if not held.exists():
        return
    try:
        existing = {identity(r) for r in reader(held)}
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n(the leaderboard folder {held.parent} holds a damaged {held.name}; nothing "
                          f"was written)") from exc
    missing = existing - {identity(r) for r in records}
    into = Path(source).parent if source.endswith(".sqlite") else "YOUR_OUT"
    if missing:
        raise ConfigError(
            f"{held} holds {len(missing)} of its {len(existing)} results that {source} does not have; "
            f"writing {held.parent}/ from it would drop them, so nothing was written. Either render into "
            f"another folder (--to DIR), or add the published results to your store first "
            f"(`mddbench merge {held.parent / RECORDS_FILE} --into {into}`) and run `mddbench leaderboard` again.")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(path, text, newline="\n")


def publish(records: list[Record], to: str | os.PathLike[str], source: str,
            privacy: list[Record] = (), failures: list[Record] = ()) -> list[Path]:
    """Write ``to/records.jsonl`` (and ``privacy.jsonl``, ``failures.jsonl``) and every table; refuses,
    writing nothing, when a result the folder holds would be dropped."""
    from mddbench.report.leaderboard import write_leaderboards
    from mddbench.results.failures import FAILURES
    from mddbench.results.privacy_store import PRIVACY

    to, privacy, failures = Path(to), list(privacy), list(failures)
    if not records:
        raise ConfigError(f"{source} holds no records; nothing to tabulate (run `mddbench run ...` first)")
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to {to} is a file; name a folder for the leaderboards")
    exports = [(to / RECORDS_FILE, records, RESULTS), (to / PRIVACY.export, privacy, PRIVACY),
               (to / FAILURES.export, failures, FAILURES)]
    for held, results, kind in exports:
        check_no_loss(results, held, lambda path, kind=kind: read_export(path, kind), source)
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for held, results, _ in exports:
        if results or held.exists():
            _write_if_changed(held, jsonl(results))
            written.append(held)
    return [*written, *write_leaderboards(records, to, privacy=privacy, failures=failures)]
