"""Record kinds: what a results store keeps, described once, and the one reader of a store or an export.

A store file holds three kinds of rows, each a :class:`RecordKind`: evaluation records
(:data:`mddbench.results.store.RESULTS`), privacy results (:data:`mddbench.results.privacy_store.PRIVACY`)
and failures (:data:`mddbench.results.failures.FAILURES`). A kind names its SQLite table, the columns
indexed beside the row's JSON, how a row is validated and identified, and its JSONL export. Every row is
written by :func:`insert` and read by :func:`rows` or :func:`read_rows`, whatever its kind:

- ``read_rows(source, kind)`` reads a store (its file, or the folder holding ``results.sqlite``) read-only,
  or a JSONL export: the named file itself for evaluation records, the kind's own export beside it
  (``privacy.jsonl``, ``failures.jsonl``) for the others. Every row is validated; a bad one names its place.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mddbench.errors import ConfigError
from mddbench.results.jsonl import export_beside, read_jsonl

STORE_FILENAME = "results.sqlite"
Row = dict[str, Any]


@dataclass(frozen=True)
class RecordKind:
    what: str  # how messages name one row: "result record", "privacy result", "failure"
    table: str  # its SQLite table
    columns: tuple[str, ...]  # indexed beside the JSON, after ``id`` (``ipc`` and text columns stored as text)
    validate: Callable[[Any], None]  # raises ConfigError naming what is wrong
    identity: Callable[[Row], str]  # the row's id
    export: str  # its JSONL export's file name
    beside: bool = True  # read from its export beside a records file (False: the records file itself)
    integer: tuple[str, ...] = ("seed",)
    nullable: tuple[str, ...] = ()
    extra_sql: str = ""  # further constraints and indexes

    @property
    def schema(self) -> str:
        cols = ",\n".join(f"    {c} {'INTEGER' if c in self.integer else 'TEXT'}{'' if c in self.nullable else ' NOT NULL'}"
                          for c in self.columns)
        return (f"CREATE TABLE IF NOT EXISTS {self.table} (\n    id TEXT PRIMARY KEY,\n{cols},\n"
                f"    created TEXT NOT NULL,\n    record TEXT NOT NULL\n);\n{self.extra_sql}")

    def values(self, row: Row, text: str) -> tuple:
        def column(c: str) -> Any:
            v = row.get(c)
            return v if c in self.integer or (v is None and c in self.nullable) else str(v)
        return (self.identity(row), *(column(c) for c in self.columns), str(row.get("created") or ""), text)


def insert(conn: sqlite3.Connection, kind: RecordKind, row: Row, text: str, replace: bool = False
           ) -> tuple[bool, bool]:
    """Add ``row`` (serialised as ``text``) to its table in one statement; (whether a row had its id before,
    whether ``row`` is the one stored now). Without ``replace`` the stored row is kept."""
    conn.executescript(kind.schema)
    names = ("id", *kind.columns, "created", "record")
    existed = conn.execute(f"SELECT 1 FROM {kind.table} WHERE id = ?", (kind.identity(row),)).fetchone() is not None
    conflict = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in names[1:])) if replace else "DO NOTHING"
    conn.execute(f"INSERT INTO {kind.table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                 f"ON CONFLICT (id) {conflict}", kind.values(row, text))
    return existed, replace or not existed


def rows(conn: sqlite3.Connection, kind: RecordKind, **filters: Any) -> list[Row]:
    """The rows of ``kind`` whose indexed columns equal ``filters``, by id (none where its table is missing)."""
    unknown = sorted(set(filters) - {"id", *kind.columns, "created"})
    if unknown:
        raise ConfigError(f"cannot filter {kind.what}s on {', '.join(unknown)}; indexed fields: "
                          f"{', '.join(('id', *kind.columns, 'created'))}")
    if not has_table(conn, kind):
        return []
    where = " AND ".join(f"{k} = ?" for k in filters) or "1"
    values = [v if k in kind.integer else str(v) for k, v in filters.items()]
    found = conn.execute(f"SELECT id, record FROM {kind.table} WHERE {where} ORDER BY id", values).fetchall()
    return [parsed(kind, row_id, text) for row_id, text in found]


def parsed(kind: RecordKind, row_id: str, text: str) -> Row:
    """A stored row, validated: a damaged one (edited by hand, a partial write) is named, never a traceback."""
    try:
        row = json.loads(text)
        kind.validate(row)
    except (ValueError, ConfigError) as exc:  # ValueError: not JSON
        raise ConfigError(f"the {kind.table} table holds a damaged {kind.what} (id {row_id!r}: {exc}); delete that "
                          f"row, or restore the store from its export (`mddbench merge {kind.export}`)") from exc
    return row


def has_table(conn: sqlite3.Connection, kind: RecordKind) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (kind.table,)).fetchone() \
        is not None


def store_file(source: str | Path) -> Path:
    """The store file a source names: the file, or ``results.sqlite`` in the folder."""
    path = Path(source)
    return path / STORE_FILENAME if path.is_dir() else path


def read_export(path: str | Path, kind: RecordKind) -> list[Row]:
    """The rows of one JSONL export file of ``kind``, each validated (a bad line names its file and number)."""
    return read_jsonl(path, kind.validate, kind.what)


def read_rows(source: str | Path, kind: RecordKind, required: bool = True) -> list[Row]:
    """Every row of ``kind`` in a store or an export, validated; never writes (module docstring).

    ``required``: a source that does not exist is an error (a kind read beside records may be absent:
    no such rows)."""
    path = store_file(source)
    if path.suffix == ".jsonl":
        if kind.beside:
            sibling = export_beside(path, kind.export)
            return read_jsonl(sibling, kind.validate, kind.what) if sibling else []
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; name a records .jsonl export, a results.sqlite or its folder")
        return read_jsonl(path, kind.validate, kind.what)
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: no such file; name a results.sqlite, a folder holding one, or a .jsonl export")
        return []
    if path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty (0 bytes), not an mddbench results store")
    try:
        with closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as conn:
            if not kind.beside and not has_table(conn, kind):
                raise ConfigError(f"{path} holds no {kind.table} table: not an mddbench results store")
            texts = conn.execute(f"SELECT record FROM {kind.table} ORDER BY id").fetchall() \
                if has_table(conn, kind) else []
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a readable SQLite results store ({exc})") from exc
    found = []
    for i, (text,) in enumerate(texts, 1):
        try:
            row = json.loads(text)
            kind.validate(row)
        except (json.JSONDecodeError, ConfigError) as exc:
            raise ConfigError(f"{path}: {kind.what} {i} in its {kind.table} table is not a valid {kind.what} "
                              f"({exc})") from exc
        found.append(row)
    return found
