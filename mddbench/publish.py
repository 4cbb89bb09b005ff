"""Publishing a leaderboard folder: its ``records.jsonl`` and the tables rendered from exactly those records.

A folder's tables always agree with the ``records.jsonl`` beside them, and publishing never drops a
record the folder already holds: writing the tables of a store that lacks some of them (the
README's demo run, then ``mddbench leaderboard`` from the repository root) is refused with the way
forward, before anything is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError
from .results import record_id, validate

RECORDS_FILE = "records.jsonl"
Record = dict[str, Any]


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """The records of a JSONL export, each validated; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; --records takes a records.jsonl export")
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                validate(record)
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"{path}:{lineno}: not a result record ({exc}); restore the file "
                                  f"(e.g. `git checkout {path}`) or remove that line") from exc
            records.append(record)
    return records


def identity(record: Record) -> str:
    return record.get("id") or record_id(record["job_id"], record["eval_model"])


def jsonl(records: Iterable[Record]) -> str:
    """The export format: one record per line, keys sorted, records by id (as ``ResultStore.export_jsonl``)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(records, key=identity))


def check_no_loss(records: list[Record], to: Path, source: str) -> None:
    """Refuse to publish into ``to`` a view of the records that lacks some the folder already holds."""
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to {to} is a file; name a folder for the leaderboards")
    held = to / RECORDS_FILE
    if not held.exists():
        return
    try:
        existing = {identity(r) for r in read_records(held)}
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n(the leaderboard folder {to} holds a damaged {RECORDS_FILE}; nothing was "
                          f"written)") from exc
    missing = existing - {identity(r) for r in records}
    if missing:
        raise ConfigError(
            f"{held} holds {len(missing)} of its {len(existing)} records that {source} does not have; "
            f"writing {to}/ from it would drop them, so nothing was written. Either render into another "
            f"folder (--to DIR), or add the published records to your store first "
            f"(`mddbench merge {held}`) and run `mddbench leaderboard` again.")


def publish(records: list[Record], to: str | os.PathLike[str], source: str) -> list[Path]:
    """Write ``to/records.jsonl`` and every table from ``records``; refuses (writing nothing) on record loss."""
    from .leaderboard import write_leaderboards

    to = Path(to)
    if not records:
        raise ConfigError(f"{source} holds no records; nothing to tabulate (run `mddbench run ...` first)")
    check_no_loss(records, to, source)
    to.mkdir(parents=True, exist_ok=True)
    held = to / RECORDS_FILE
    text = jsonl(records)
    if not held.exists() or held.read_text(encoding="utf-8") != text:
        tmp = held.with_name(held.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="\n")
        os.replace(tmp, held)
    return [held, *write_leaderboards(records, to)]
