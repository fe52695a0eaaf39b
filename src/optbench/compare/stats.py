"""Confidence intervals and paired tests over seeds (scipy.stats for the maths).

Cells get a **t-interval**: with the 3-10 seeds a comparison usually has, a percentile bootstrap's
interval is too narrow (it cannot reach beyond the observed values), while the t-interval is exact for
normal per-seed errors and honest about small n (wide at n = 2). Differences to a baseline are **paired**
(the same seed gives every optimizer the same initial weights and data order) and tested with an **exact
paired permutation test** (all 2^n sign flips of the per-seed differences): it tests the mean difference
that the table shows, needs no normality, and unlike Wilcoxon's signed-rank test keeps the zero
differences that quantised accuracies often produce. p-values are Holm-corrected across the rows compared
with the baseline. With n pairs the smallest two-sided p is 2/2^n, so below 6 pairs no test can reach 0.05:
then no p is given, only the reason; and Holm across m rows cannot go below m * 2/2^n, which the table says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
EXACT_UP_TO = 16  # pairs; beyond, 100,000 random sign flips (seeded)


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Two-sided t-interval of the mean; NaN bounds below two values."""
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def min_p(n_pairs: int) -> float:
    """The smallest two-sided p an exact paired permutation test can give with ``n_pairs`` pairs."""
    return 2.0 / 2**n_pairs if n_pairs else 1.0


def pairs_needed(family: int) -> int:
    """The fewest pairs with which a Holm-corrected p over ``family`` comparisons can reach ``ALPHA``
    (Holm multiplies the smallest p by the family size)."""
    n = 1
    while family * min_p(n) > ALPHA:
        n += 1
    return n


@dataclass
class Paired:
    diff: float  # mean of (other - baseline) over shared seeds
    ci_low: float
    ci_high: float
    p: float | None  # None when no test could reach ALPHA (see note)
    pairs: int
    unpaired: int  # seeds of either side without a partner, left out
    note: str = ""


def paired(baseline: dict[int, float], other: dict[int, float]) -> Paired:
    """The paired difference ``other - baseline`` over the seeds both have."""
    shared = sorted(baseline.keys() & other.keys())
    unpaired = len(baseline.keys() ^ other.keys())
    diffs = np.array([other[s] - baseline[s] for s in shared], dtype=float)
    n = len(diffs)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, None, 0, unpaired, "no shared seeds")
    low, high = t_interval(list(diffs))
    mean = float(diffs.mean())
    if min_p(n) > ALPHA:
        return Paired(mean, low, high, None, n, unpaired, f"{n} pairs: no test can reach p<{ALPHA:g} (needs 6)")
    if not diffs.any():
        return Paired(mean, low, high, 1.0, n, unpaired)
    result = stats.permutation_test(
        (diffs,),
        np.mean,
        permutation_type="samples",
        n_resamples=np.inf if n <= EXACT_UP_TO else 100_000,
        alternative="two-sided",
        rng=np.random.default_rng(0),
    )
    return Paired(mean, low, high, float(min(1.0, result.pvalue)), n, unpaired)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None); scipy has BH but not Holm."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted
