"""One table cell: its records pooled into a :class:`Stat` (mean, spread, seeds, what diverged or was
lost), the text a table shows for it, and a :class:`Cell` (the stat with its column's verdict and the records
behind it: what the web page renders)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np

from mddbench.errors import ConfigError
from mddbench.report.significance import t_interval

Record = dict[str, Any]


@dataclass(frozen=True)
class Stat:
    """A pooled cell, in points; ``diverged`` models have no score and are not in ``n``.

    ``seeds``: the mean of each seed's models (the unit the interval and the tests use);
    ``never_updated``: how many of ``records`` say their set never changed (``updates == 0``);
    ``lost``: runs of the cell (a seed, at a time budget) whose distillation diverged, so they have no record
    (:mod:`mddbench.results.failures`), of ``runs`` in all; ``lost_of`` says it, e.g. "1 of 3 seeds".
    """
    mean: float
    std: float
    n: int
    diverged: int = 0
    seeds: tuple[float, ...] = ()
    never_updated: int = 0
    records: int = 0
    lost: int = 0
    lost_of: str = ""

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.seeds)


def points(values: Iterable[Any]) -> np.ndarray:
    x = np.array([v for v in values if v is not None], dtype=float) * 100
    return x[np.isfinite(x)]  # an undefined AUC (one-class split) has no value either


def pool(records: Iterable[Record], metric: str = "test_acc") -> Stat:
    """Pool the per-model values of ``records``: mean, std (ddof=0) and count, in points, and the seed means."""
    records = list(records)
    everything = [v for r in records for v in r["metrics"][metric]["per_model"]]
    if not everything:
        raise ConfigError(f"no {metric} values to pool")
    values = points(everything)
    diverged = sum(r["metrics"][metric].get("diverged", 0) for r in records)
    never = sum(1 for r in records if r.get("updates") == 0)
    if values.size == 0:
        return Stat(math.nan, math.nan, 0, diverged, never_updated=never, records=len(records))
    by_seed: dict[Any, list] = defaultdict(list)
    for r in records:
        by_seed[r.get("seed")] += r["metrics"][metric]["per_model"]
    seeds = tuple(float(x.mean()) for x in (points(v) for _, v in sorted(by_seed.items(), key=lambda kv: str(kv[0])))
                  if x.size)
    return Stat(float(values.mean()), float(values.std()), int(values.size), diverged, seeds, never, len(records))


def format_pm(mean: float, std: float) -> str:
    """``"57.63 ± 1.00"``: both in points, two decimals."""
    return f"{mean:.2f} ± {std:.2f}"


TIE = "≈"


def never_updated_note(stat: Stat) -> str:
    if not stat.never_updated:
        return ""
    if stat.never_updated == stat.records:
        return ", never updated"
    return f", {stat.never_updated} of {stat.records} seeds never updated"


def runs_of(cell: Iterable[Record]) -> set[tuple[Any, Any]]:
    """A cell's runs: its seeds, each at its time budget (a variants cell may hold several)."""
    return {(r.get("seed"), r.get("time_budget")) for r in cell}


def cell_stat(cell: Sequence[Record], metric: str = "test_acc") -> Stat:
    """:func:`pool` over a cell's records, with the runs its failures (entries without metrics:
    :func:`mddbench.results.failures.lost`) took counted in ``lost``."""
    recs = [r for r in cell if "metrics" in r]
    failed = [r for r in cell if "metrics" not in r]
    if not failed:
        return pool(recs, metric)
    runs, lost = runs_of(cell), runs_of(failed)
    unit = "seeds" if len({budget for _, budget in runs}) == 1 else "runs"
    stat = pool(recs, metric) if recs else Stat(math.nan, math.nan, 0)
    return replace(stat, lost=len(lost), lost_of=f"{len(lost)} of {len(runs)} {unit}")


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 seed", "3 seeds"."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def format_cell(stat: Stat | None, bold: bool = False, tie: bool = False, interval: bool = False) -> str:
    """``"57.63 ± 1.00 (n=10)"``; models whose training diverged are counted, never averaged in, and so
    are seeds whose distillation diverged (``"..., 1 of 3 seeds diverged in distillation"``).

    ``interval``: ``"57.63 ± 1.00 [55.1, 60.2] (n=10, 2 seeds)"`` with the 95 % t-interval over seed means;
    ``tie`` prefixes ``≈`` (the column's best is not significantly better than this cell).
    """
    if stat is None:
        return ""
    if stat.records == 0:
        return f"distillation diverged ({stat.lost_of})"
    lost = f", {stat.lost_of} diverged in distillation" if stat.lost else ""
    if stat.n == 0:
        return f"diverged ({stat.diverged}/{stat.diverged}){lost}{never_updated_note(stat)}"
    pm = format_pm(stat.mean, stat.std)
    pm = f"**{pm}**" if bold else f"{TIE} {pm}" if tie else pm
    diverged = f", {stat.diverged} diverged" if stat.diverged else ""
    if not interval:
        return f"{pm} (n={stat.n}{diverged}{lost}{never_updated_note(stat)})"
    ci = stat.interval
    ci = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
    seeds = f", {count(len(stat.seeds), 'seed')}"
    return f"{pm}{ci} (n={stat.n}{seeds}{diverged}{lost}{never_updated_note(stat)})"


@dataclass(frozen=True)
class Cell:
    """A leaderboard cell with everything its renderings need: the pooled ``stat`` (None: an empty cell), the
    column's verdict on it (``best``: significantly best, ``tie``: the best or not significantly below it), the
    ``records`` (and failures) it pools, and ``note``, what they share beyond the row (a time budget)."""
    stat: Stat | None
    best: bool = False
    tie: bool = False
    records: tuple[Record, ...] = ()
    note: str = ""

    def text(self, marked: bool = False) -> str:
        """The CSV's text, or (``marked``) the markdown's: interval, **best** or the tie mark."""
        return format_cell(self.stat, marked and self.best, marked and self.tie, interval=marked) + self.note
