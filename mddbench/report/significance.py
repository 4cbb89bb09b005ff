"""Which cell of a leaderboard column is really best: statistics over seeds.

The unit of replication is the seed (one distilled set, evaluated on several models): a cell's seed
means are the means of each seed's per-model values. A cell's 95 % confidence interval is the
t-interval over its seed means. Only cells with at least ``MIN_SEEDS`` seeds contend for a column's
verdict: one seed gives no interval and no test, so such a cell is shown apart (unranked), never best
and never tied. The best contender (highest pooled mean) is bold only when it beats every other
contender under Welch's two-sided t-test over seed means, the p-values Holm-corrected over those
comparisons at ``ALPHA``; otherwise it and every contender not significantly below it are tied.
Pairwise p-values that prose cites (:func:`holm`) are Holm-corrected within their column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
LEVEL = 0.95
MIN_SEEDS = 2  # a cell with fewer seeds cannot be tested: it never wins or ties a column


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


def holm(p_values: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Holm's step-down adjusted p-values of a family of tests (nan stays nan and is not counted)."""
    tested = sorted(((p, k) for k, p in p_values.items() if not math.isnan(p)), key=lambda pk: pk[0])
    m, running, out = len(tested), 0.0, {k: math.nan for k in p_values}
    for i, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def verdict(means: Mapping[Hashable, float], seed_means: Mapping[Hashable, Sequence[float]],
            alpha: float = ALPHA) -> Verdict:
    """The verdict of one column (``means``: the displayed means that rank the cells). Cells with fewer than
    ``MIN_SEEDS`` seeds do not contend; the best contender's comparisons are Holm-corrected."""
    means = {k: v for k, v in means.items() if len(seed_means[k]) >= MIN_SEEDS}
    if not means:
        return Verdict(None, False, frozenset())
    best = max(means, key=lambda k: means[k])
    if len(means) == 1:  # nothing to beat: untested, so it ties (no mark would read "significantly below")
        return Verdict(best, False, frozenset({best}))
    below = holm({k: welch_p(seed_means[best], seed_means[k]) for k in means if k != best})
    not_beaten = {k for k, p in below.items() if not p < alpha}
    if not not_beaten:
        return Verdict(best, True, frozenset())
    return Verdict(best, False, frozenset(not_beaten | {best}))
