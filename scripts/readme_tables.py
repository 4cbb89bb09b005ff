"""Copy the published leaderboards' tables into the blocks of the pages that name them.

    python scripts/readme_tables.py            # rewrite the blocks from leaderboards/
    python scripts/readme_tables.py --check    # exit 1 (and name the blocks) where a copy is stale

The pages are ``leaderboards/README.md`` (the results and their story), every ``docs/*.md`` and the
README; a page without blocks is left alone (``--page FILE``, repeatable, names others).

A block is ``<!-- NAME: copied from leaderboards/FILE ... -->`` ... ``<!-- end of NAME -->``. Its table
(the run of lines starting with ``|``) is replaced by FILE's table lines; the prose around it in the block
is the page's own and stays. A block whose comment says ``columns=NAME[,NAME...]`` copies the first
column and the columns whose header's first word is one of the names (``columns=breastmnist``: that
dataset's cells of a table that holds several), leaving out rows with nothing in them; verdict marks are
per column, so a column reads the same alone. ``rows=NAME[,NAME...]`` keeps the rows whose first cell's
first word is one of the names (the privacy tables, whose first column is the dataset). Run it after
``mddbench leaderboard``, so no page carries a table typed by hand (tests/test_published.py checks the
copies).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold blocks: the leaderboards' README, the docs and the README."""
    return [root / "leaderboards" / "README.md", *sorted((root / "docs").glob("*.md")), root / "README.md"]

BLOCK = re.compile(r"(<!-- (?P<name>[^:>]+): copied from leaderboards/(?P<source>\S+?)\s.*?-->\n)(?P<body>.*?)"
                   r"(<!-- end of (?P=name) -->)", re.S)


SELECTION = re.compile(r"\b(columns|rows)=([\w.,-]+)")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # a pipe, not an escaped one inside a cell


def _names(value: str, what: str) -> set[str]:
    names = {name for name in value.split(",") if name}
    if not names:
        raise SystemExit(f"{what}={value!r} names nothing")
    return names


def _first_word(cell: str) -> str:
    words = cell.split()
    return words[0] if words else ""


def table_lines(text: str, columns: str | None = None, rows: str | None = None) -> list[str]:
    """The table of ``text``. ``columns`` (comma-separated names, e.g. datasets): only the first column and
    those whose header's first word is one of them, without rows whose kept cells are all empty. ``rows``:
    only the rows whose first cell's first word is one of them (a table with a dataset column)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if (columns is None and rows is None) or not lines:
        return lines
    cells = [CELL_SEPARATOR.split(line.strip())[1:-1] for line in lines]
    if any(len(row) != len(cells[0]) for row in cells):
        raise SystemExit(f"a table row has another number of cells than its header:\n{lines[0]}")
    keep = list(range(len(cells[0])))
    if columns is not None:
        names = _names(columns, "columns")
        keep = [0] + [i for i, head in enumerate(cells[0]) if i and _first_word(head) in names]
        if len(keep) == 1:
            raise SystemExit(f"no column's header starts with {', '.join(sorted(names))}: its columns are "
                             + ", ".join(h.strip() for h in cells[0][1:]))
        cells = cells[:2] + [row for row in cells[2:] if any(row[i].strip() for i in keep[1:])]
    if rows is not None:
        names = _names(rows, "rows")
        cells = cells[:2] + [row for row in cells[2:] if _first_word(row[0]) in names]
    return ["|" + "|".join(row[i] for i in keep) + "|" for row in cells]


def block_selection(comment: str) -> dict[str, str]:
    """The ``columns=`` and ``rows=`` of a block's opening comment (keyword arguments of table_lines)."""
    return {key: value for key, value in SELECTION.findall(comment)}


def refresh(readme: str, boards: Path) -> tuple[str, list[str]]:
    """The page with every block's table copied from ``boards``, and the names of the blocks that changed."""
    changed: list[str] = []

    def copy(m: re.Match) -> str:
        source = boards / m["source"]
        if not source.is_file():
            raise SystemExit(f"block {m['name']!r} copies {source}, which does not exist: "
                             f"run `mddbench leaderboard` first, or fix the block's name")
        lines = m["body"].split("\n")
        rows = [i for i, line in enumerate(lines) if line.startswith("|")]
        new = table_lines(source.read_text(), **block_selection(m.group(1)))
        if rows:
            if any(not lines[i].startswith("|") for i in range(rows[0], rows[-1] + 1)):
                raise SystemExit(f"block {m['name']!r} holds prose between table lines; "
                                 f"keep one table per block")
            body = lines[:rows[0]] + new + lines[rows[-1] + 1:]
        else:
            body = lines[:-1] + new + [""] + lines[-1:]
        text = "\n".join(body)
        if text != m["body"]:
            changed.append(m["name"])
        return m.group(1) + text + m.group(5)

    return BLOCK.sub(copy, readme), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", type=Path, action="append",
                    help="a markdown page holding blocks (repeatable; default: leaderboards/README.md, docs/*.md, "
                         "README.md)")
    ap.add_argument("--boards", type=Path, default=ROOT / "leaderboards")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 where a copy is stale")
    args = ap.parse_args(argv)
    stale = 0
    for page in args.page or default_pages():
        if not page.is_file():
            continue
        text = page.read_text()
        new, changed = refresh(text, args.boards)
        stale += len(changed)
        if args.check:
            for name in changed:
                print(f"stale: {page.name}: {name}", file=sys.stderr)
        elif changed:
            page.write_text(new)
            print(f"{page}: {len(changed)} block(s) updated: {', '.join(changed)}")
    if args.check:
        return 1 if stale else 0
    print(f"{stale} block(s) updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
