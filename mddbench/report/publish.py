"""Writing a leaderboard folder (its ``records.jsonl`` and the tables rendered from exactly those records), and
publishing into the project's ``leaderboards/``, an explicit step of its own (issue 46, item 4).

A folder's tables always agree with the ``records.jsonl`` beside them, and writing never drops a record
the folder already holds (:func:`publish`, what ``mddbench leaderboard`` writes into the user's own
folder, by default ``OUT/leaderboards``; it never writes into the published folder, :data:`PUBLISHED_DIR`).

``mddbench publish`` (:func:`publish_step`) adds a store's records to a published folder. It keeps every
record the folder holds (a record of the same id measured differently keeps the published copy), and
refuses, before anything is written and saying why:

- to change a published cell (new records pooled into a cell that has published ones), naming the cell,
  its published numbers and records and what they would become, unless that cell is named with
  ``--replace CELL``;
- to publish records that are not trusted (:mod:`mddbench.results.verification`: merged from another
  store and not verified here), listing the cells and the records they rest on, unless
  ``--allow-unverified`` (the tables then mark those cells);
- records whose own content contradicts itself (``problems``, the CLI passes
  :func:`mddbench.run.record.record_problems`).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mddbench.api.budgets import budget_label
from mddbench.atomic import ensure_writable, write_text
from mddbench.errors import ConfigError
from mddbench.report.cells import cell_stat, format_cell
from mddbench.report.keys import ipc_label, row_key, row_label
from mddbench.results import verification
from mddbench.results.jsonl import jsonl_text
from mddbench.results.kind import read_export
from mddbench.results.store import RESULTS, no_value_as_null, record_id

RECORDS_FILE = "records.jsonl"
PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "leaderboards"  # the project's published folder
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


# ------------------------------------------------------------------------ `mddbench publish`
def is_published_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the project's published folder (only ``mddbench publish`` writes there)."""
    path = Path(path)
    return PUBLISHED_DIR.is_dir() and path.exists() and path.resolve() == PUBLISHED_DIR.resolve()


def cell_name(record: Record) -> str:
    """The published cell a record falls into, as ``--replace`` names it: budget/protocol/dataset/ipc/network/row."""
    return "/".join([budget_label(record), record["protocol"], record["dataset"], ipc_label(record["ipc"]),
                     record["eval_model"], row_label(row_key(record))])


def _numbers(records: list[Record]) -> str:
    return format_cell(cell_stat(records, "test_acc")) + " test acc., records " + \
        ", ".join(f"{identity(r)} (seed {r['seed']}{', ' + _origin(r) if _origin(r) else ''})" for r in records)


def _origin(record: Record) -> str:
    source = verification.merged_from(record)
    return "" if source is None else f"merged from {source}, {verification.state(record)}"


@dataclass
class PublishPlan:
    """What publishing a store's records into a folder would do (:func:`plan_publish`)."""
    published: list[Record]
    new: list[Record]
    kept: list[str] = field(default_factory=list)  # ids held by both with other numbers: the published copy stays
    changed: dict[str, tuple[list[Record], list[Record]]] = field(default_factory=dict)  # cell: (published, new)
    untrusted: dict[str, list[Record]] = field(default_factory=dict)  # cell: its new records not trusted here

    def change_lines(self, cells: Iterable[str]) -> list[str]:
        lines = []
        for cell in cells:
            old, new = self.changed[cell]
            lines.append(f"  cell {cell}:\n    published: {_numbers(old)}\n    would be:  {_numbers(old + new)}\n"
                         f"    why: {len(new)} new record(s) of this cell ({_seeds(new)}) "
                         f"pool with the published ones")
        return lines


def plan_publish(records: list[Record], to: Path) -> PublishPlan:
    """Which of ``records`` are new to the folder ``to``, which published cells they change, which are not trusted."""
    held = to / RECORDS_FILE
    published = read_export(held, RESULTS) if held.is_file() else []
    by_id = {identity(r): r for r in published}
    plan = PublishPlan(published, [])
    for r in records:
        rid = identity(r)
        if rid in by_id:
            if no_value_as_null(by_id[rid]["metrics"]) != no_value_as_null(r["metrics"]):
                plan.kept.append(rid)
            continue
        if rid not in {identity(n) for n in plan.new}:
            plan.new.append(r)
    cells: dict[str, list[Record]] = defaultdict(list)
    for r in published:
        cells[cell_name(r)].append(r)
    for r in plan.new:
        cell = cell_name(r)
        if cell in cells:
            plan.changed.setdefault(cell, (cells[cell], []))[1].append(r)
        if not verification.trusted(r):
            plan.untrusted.setdefault(cell, []).append(r)
    return plan


def publish_step(records: list[Record], to: str | os.PathLike[str], source: str, privacy: list[Record] = (),
                 failures: list[Record] = (), replace: Iterable[str] = (), allow_unverified: bool = False,
                 problems: Callable[[Record], list[str]] | None = None, dry_run: bool = False
                 ) -> tuple[list[Path], PublishPlan]:
    """Add ``records`` (and privacy results, failures) to the published folder ``to`` (module docstring);
    refuses, writing nothing, what the module docstring lists. Returns the paths written and the plan."""
    from mddbench.results.failures import FAILURES
    from mddbench.results.privacy_store import PRIVACY

    to = Path(to)
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to {to} is a file; name the published leaderboard folder")
    if not records:
        raise ConfigError(f"{source} holds no records; nothing to publish")
    try:
        plan = plan_publish(records, to)
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n(the published folder {to} holds a damaged {RECORDS_FILE}; nothing was written)"
                          ) from exc
    if problems is not None:
        for r in plan.new:
            found = problems(r)
            if found:
                raise ConfigError(f"record {identity(r)} ({cell_name(r)}) of {source} contradicts itself: "
                                  f"{'; '.join(found)}; nothing was published")
    replace = list(replace)
    unknown = [c for c in replace if c not in plan.changed]
    if unknown:
        raise ConfigError(f"--replace {unknown[0]!r} names no published cell this publish would change; "
                          + (f"it changes: {', '.join(sorted(plan.changed))}" if plan.changed else
                             "it changes none"))
    refused = sorted(c for c in plan.changed if c not in replace)
    if refused:
        raise ConfigError(f"publishing {source} into {to} would change {len(refused)} published cell(s); nothing "
                          f"was published:\n" + "\n".join(plan.change_lines(refused)) +
                          "\nIf that is meant (more seeds, a corrected run), name each cell: "
                          + " ".join(f"--replace '{c}'" for c in refused[:3]) + (" ..." if len(refused) > 3 else ""))
    if plan.untrusted and not allow_unverified:
        lines = [f"  cell {cell}: " + ", ".join(f"{identity(r)} ({_origin(r)})" for r in recs)
                 for cell, recs in sorted(plan.untrusted.items())]
        raise ConfigError(f"{sum(map(len, plan.untrusted.values()))} record(s) to publish were merged from another "
                          f"store and are not verified here; nothing was published. The cells and the records they "
                          f"rest on:\n" + "\n".join(lines) + "\nVerify them (`mddbench verify`), or publish them "
                          "marked unverified with --allow-unverified")
    if dry_run:
        return [], plan
    ensure_writable(to, "--to")  # every check passed: now the folder must take the files
    merged_privacy = _union(read_export(to / PRIVACY.export, PRIVACY) if (to / PRIVACY.export).is_file() else [],
                            privacy, PRIVACY.identity)
    merged_failures = _union(read_export(to / FAILURES.export, FAILURES) if (to / FAILURES.export).is_file()
                             else [], failures, FAILURES.identity)
    return publish([*plan.published, *plan.new], to, source, merged_privacy, merged_failures), plan


def _union(held: list[Record], more: Iterable[Record], ident) -> list[Record]:
    """``held`` with the rows of ``more`` whose id it lacks (a published row is never replaced)."""
    ids = {ident(r) for r in held}
    return [*held, *(r for r in more if ident(r) not in ids and not ids.add(ident(r)))]


def _seeds(records: list[Record]) -> str:
    return ", ".join(f"seed {r['seed']}" for r in records)
