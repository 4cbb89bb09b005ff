"""One leaderboard table, ready to render: its file stem, title, notes, the records and failures behind it, and its
frame in each rendering (``csv``: the cells' plain text, ``md``: with intervals and significance marks, ``cells``:
:class:`~mddbench.report.cells.Cell` objects, which the web page renders). The files (``leaderboard.py``) and the
web page (``web.py``) render the same tables from one list."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import pandas as pd

from mddbench.report.cells import Record

Rendering = Literal["csv", "md", "cells"]


@dataclass(frozen=True)
class Table:
    stem: str  # the files' name: <stem>.csv, <stem>.md
    title: str
    notes: tuple[str, ...]
    records: tuple[Record, ...]
    failures: tuple[Record, ...]
    frame: Callable[[Rendering], pd.DataFrame]  # a table without Cell objects gives its text for "cells"
    scope: str = ""  # the budget (and protocol, privacy version) its stem names: "quick_v4"; "" for one over all
