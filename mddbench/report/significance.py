"""Which cell of a leaderboard column is really best: statistics over seeds.

The unit of replication is the seed (one distilled set, evaluated on several models): a cell's seed
means are the means of each seed's per-model values. A cell's 95 % confidence interval is the
t-interval over its seed means; the best cell of a column (highest pooled mean) is bold only when it
beats every other contender under Welch's two-sided t-test over seed means at ``ALPHA``; otherwise
it and every contender not significantly below it are tied. One seed gives no interval and no test:
such a cell can only tie.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
LEVEL = 0.95


def t_interval(seed_means: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` t-interval of the mean over ``seed_means`` (None for fewer than two seeds)."""
    x = np.asarray(seed_means, dtype=float)
    if x.size < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test between two sets of seed means; nan when either has one seed.

    Two samples without spread are significantly different exactly when their means differ.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    se2 = a.var(ddof=1) / a.size + b.var(ddof=1) / b.size
    if se2 == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


@dataclass(frozen=True)
class Verdict:
    best: Hashable | None  # the contender with the highest mean (None: no contenders)
    significant: bool  # best beats every other contender at ALPHA
    tied: frozenset  # best and the contenders not significantly below it (empty when significant)


def verdict(means: Mapping[Hashable, float], seed_means: Mapping[Hashable, Sequence[float]],
            alpha: float = ALPHA) -> Verdict:
    """The verdict of one column over its contenders (``means``: the displayed means that rank them)."""
    if not means:
        return Verdict(None, False, frozenset())
    best = max(means, key=lambda k: means[k])
    if len(means) == 1:  # nothing to beat: untested, so it ties (no mark would read "significantly below")
        return Verdict(best, False, frozenset({best}))
    below = {k: welch_p(seed_means[best], seed_means[k]) for k in means if k != best}
    not_beaten = {k for k, p in below.items() if not p < alpha}  # nan (one seed) is never significant
    if not not_beaten:
        return Verdict(best, True, frozenset())
    return Verdict(best, False, frozenset(not_beaten | {best}))
