"""The JSONL exports (``records.jsonl``, ``privacy.jsonl``, ``failures.jsonl``): one JSON object per line,
keys sorted; read back line by line, each object validated, a bad line named by its file and number."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mddbench.atomic import write_text
from mddbench.errors import ConfigError


def require_fields(obj: Any, required: Sequence[str], what: str) -> None:
    """Raise ConfigError unless ``obj`` is a dict holding every field of ``required``; ``what`` names it
    ("result record", "failure")."""
    if not isinstance(obj, dict):
        raise ConfigError(f"a {what} must be a dict, got {type(obj).__name__}")
    missing = [f for f in required if f not in obj]
    if missing:
        raise ConfigError(f"{what} is missing required field(s): {', '.join(missing)}")


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    """The export format: one JSON object per line, keys sorted (rows in the order given)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def write_jsonl(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> int:
    """Write ``rows`` as an export at ``path`` (atomically: a kill leaves the old file or the new one); how many."""
    write_text(Path(path), jsonl_text(rows))
    return len(rows)


def read_jsonl(path: str | os.PathLike[str], validate: Callable[[Any], None], what: str) -> list[dict[str, Any]]:
    """Every object of the export ``path``, each passed through ``validate``; blank lines are skipped. A line
    that is not JSON, or not a valid ``what``, raises ConfigError naming ``path:line`` and how to repair it."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                validate(row)
            except (ValueError, ConfigError) as exc:  # ValueError: not JSON
                raise ConfigError(f"{path}:{lineno}: not a {what} ({exc}); restore the file "
                                  f"(e.g. `git checkout {path}`) or remove that line") from exc
            rows.append(row)
    return rows


def export_beside(path: str | os.PathLike[str], filename: str) -> Path | None:
    """The export named ``filename`` in the folder of the export ``path`` (``privacy.jsonl`` or
    ``failures.jsonl`` beside a ``records.jsonl``, as ``mddbench leaderboard`` writes them), if there is one."""
    sibling = Path(path).with_name(filename)
    return sibling if sibling.is_file() and sibling.resolve() != Path(path).resolve() else None
