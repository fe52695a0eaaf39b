"""Intervals, paired tests, effect sizes and seed counts over seeds (scipy and statsmodels do the maths).

Cells get a **t-interval** of the mean. Differences to a reference row are **paired** (the same seed gives
every optimizer the same initial weights and data order). The default test is the **paired t-test**, the
exact dual of the t-interval of the difference printed beside it: p < alpha exactly when that interval
excludes 0. ``permutation`` (exact sign flips) and ``wilcoxon`` (signed ranks) are robustness checks; both
run on integer counts where the metric is a count (correct predictions, not float accuracies), so equal
sums tie exactly, and both say how many pairs were non-zero. Holm's correction runs over a
declared family, the rows of one dataset on the primary endpoint; every row of the family counts in it,
also one that could not be tested (as p = 1).

Small n, honestly: one seed gives a value (no interval, std n/a); two give the difference only; from three
on, the difference, its interval and p, with a warning below six that normality cannot be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
TESTS = ("t", "permutation", "wilcoxon")
TEST_NAMES = {
    "t": "paired t-test (the dual of the interval shown)",
    "permutation": "exact paired sign-flip test on counts",
    "wilcoxon": "Wilcoxon signed-rank test on counts",
}
MIN_TESTED = 3  # pairs: below, the difference only
NORMALITY_CHECKABLE = 6  # pairs: below, a warning that the t-test's normality cannot be checked
EXACT_UP_TO = 16  # non-zero pairs: the sign-flip test enumerates all 2^k patterns; beyond, 100,000 random ones
SEEDS_CAP = 10_000


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Two-sided t-interval of the mean; NaN bounds below two values."""
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


@dataclass
class Paired:
    diff: float  # mean of (other - reference) over shared seeds
    ci_low: float
    ci_high: float
    p: float | None  # None below MIN_TESTED pairs
    pairs: int
    unpaired: int  # seeds of either side without a partner, left out
    wins: int = 0  # pairs in which the other row is better
    nonzero: int = 0  # pairs whose difference is not zero
    effect: float = math.nan  # standardised paired difference d_z = mean / sd of the differences
    note: str = ""
    diffs: tuple[float, ...] = ()

    @property
    def sd(self) -> float:
        return float(np.std(self.diffs, ddof=1)) if len(self.diffs) > 1 else math.nan


def as_counts(values: np.ndarray, scale: int | None) -> np.ndarray:
    """Values that are fractions k/scale (accuracies) as the integers k; others unchanged."""
    if not scale:
        return values
    counts = np.rint(values * scale)
    if np.all(np.abs(values * scale - counts) < 1e-3):
        return counts.astype(np.int64)
    return values


def paired(
    reference: dict[int, float],
    other: dict[int, float],
    *,
    test: str = "t",
    scale: int | None = None,
    higher_is_better: bool = True,
) -> Paired:
    """The paired difference ``other - reference`` over the seeds both have, tested with ``test``.

    ``scale``: the metric is a fraction of this many items (accuracy of n_val images), so the rank tests
    compare exact integer counts.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; one of {', '.join(TESTS)}")
    shared = sorted(reference.keys() & other.keys())
    unpaired = len(reference.keys() ^ other.keys())
    diffs = np.array([other[s] - reference[s] for s in shared], dtype=float)
    n = len(diffs)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, None, 0, unpaired, note="no shared seeds")
    counts = as_counts(np.array([other[s] for s in shared]), scale) - as_counts(
        np.array([reference[s] for s in shared]), scale
    )
    sign = 1 if higher_is_better else -1
    out = Paired(float(diffs.mean()), math.nan, math.nan, None, n, unpaired, diffs=tuple(diffs))
    out.wins, out.nonzero = int(np.sum(sign * counts > 0)), int(np.count_nonzero(counts))
    if n < MIN_TESTED:
        out.note = f"{n} pair{'s' if n > 1 else ''}: the difference only (an interval and a test need 3)"
        return out
    sd = float(np.std(diffs, ddof=1))
    out.effect = out.diff / sd if sd > 0 else math.nan
    if sd == 0:  # every seed moved by the same amount: the interval is that point
        out.ci_low = out.ci_high = out.diff
        tested = 1.0 if not out.nonzero else 0.0
    else:
        result = stats.ttest_1samp(diffs, 0.0)
        out.ci_low, out.ci_high = map(float, result.confidence_interval(LEVEL))
        tested = float(result.pvalue)
    if test != "t":
        tested = rank_test(counts, test)
    out.p = tested
    if n < NORMALITY_CHECKABLE and test == "t":
        out.note = f"{n} pairs: normality of the differences cannot be checked"
    return out


def rank_test(counts: np.ndarray, test: str) -> float:
    """Exact sign flips of the summed differences, or Wilcoxon's signed ranks, on (integer) differences."""
    nonzero = counts[counts != 0]
    if len(nonzero) == 0:
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(nonzero, zero_method="wilcox").pvalue)
    result = stats.permutation_test(
        (nonzero,),
        np.sum,
        permutation_type="samples",
        n_resamples=np.inf if len(nonzero) <= EXACT_UP_TO else 100_000,
        alternative="two-sided",
        rng=np.random.default_rng(0),
    )
    return float(min(1.0, result.pvalue))


def sign_flip_floor(nonzero: int) -> float:
    """The smallest two-sided p exact sign flips can give with ``nonzero`` non-zero differences."""
    return 2.0 / 2**nonzero if nonzero else 1.0


def holm(pvalues: list[float | None]) -> list[float]:
    """Holm-adjusted p-values of one family; an untested member (None) counts in it as p = 1.

    Own code for a gap: statsmodels' ``multipletests`` (the reference in the tests) runs ``gc.collect()``
    on every call, ~0.1 s in a process holding torch, which simulations and per-cell tables cannot afford."""
    filled = [1.0 if p is None else float(p) for p in pvalues]
    adjusted, running = [1.0] * len(filled), 0.0
    for rank, i in enumerate(sorted(range(len(filled)), key=filled.__getitem__)):
        running = max(running, min(1.0, (len(filled) - rank) * filled[i]))
        adjusted[i] = running
    return adjusted


def probability_of_improvement(
    reference: list[float], other: list[float], higher_is_better: bool = True, resamples: int = 2000
) -> tuple[float, float, float]:
    """P(a run of ``other`` beats a run of ``reference``), ties counting half, with a 95% bootstrap
    interval over seeds (pairs resampled together), as rliable reports it."""
    ref, oth = np.asarray(reference, float), np.asarray(other, float)
    sign = 1.0 if higher_is_better else -1.0

    def poi(r, o, axis=-1):
        gap = sign * (o[..., :, None] - r[..., None, :])
        return ((gap > 0) + 0.5 * (gap == 0)).mean(axis=(-1, -2))

    point = float(poi(ref, oth))
    if len(ref) < MIN_TESTED:
        return point, math.nan, math.nan
    boot = stats.bootstrap(
        (ref, oth), poi, paired=True, vectorized=True, n_resamples=resamples, method="percentile",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return point, float(boot.confidence_interval.low), float(boot.confidence_interval.high)


def seeds_needed(diffs: tuple[float, ...], alpha: float, power: float = POWER) -> tuple[int, int] | None:
    """Seeds for which a paired t-test at ``alpha`` would detect the observed mean difference with
    ``power``: from the observed spread, and from its one-sided 90% upper confidence bound (chi-square).
    None when the differences are all zero (identical results: no number of seeds separates them)."""
    d = np.asarray(diffs, float)
    if len(d) < 2 or not np.any(d):
        return None
    mean, sd = abs(float(d.mean())), float(np.std(d, ddof=1))
    if sd == 0:
        return (MIN_TESTED, MIN_TESTED)
    sd_high = sd * math.sqrt((len(d) - 1) / stats.chi2.ppf(0.10, len(d) - 1))
    return tuple(_solve(mean / s, alpha, power) for s in (sd, sd_high))  # type: ignore[return-value]


def _solve(effect: float, alpha: float, power: float) -> int:
    if effect <= 0:
        return SEEDS_CAP
    z = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / effect
    if z * z > SEEDS_CAP:  # beyond the cap the normal approximation is exact enough to say so
        return SEEDS_CAP
    n = TTestPower().solve_power(effect_size=effect, alpha=alpha, power=power, alternative="two-sided")
    return max(MIN_TESTED, min(SEEDS_CAP, math.ceil(float(np.atleast_1d(n)[0]))))


@dataclass
class Ratio:
    """Wall times as a ratio other / reference: Welch's t-test on log times (seeds do not pair times)."""

    ratio: float
    low: float
    high: float
    p: float | None
    n_ref: int
    n_other: int


def time_ratio(reference: list[float], other: list[float]) -> Ratio:
    ref, oth = np.log(np.asarray(reference, float)), np.log(np.asarray(other, float))
    ratio = float(np.exp(oth.mean() - ref.mean())) if len(ref) and len(oth) else math.nan
    if len(ref) < 2 or len(oth) < 2 or (np.std(ref) == 0 and np.std(oth) == 0):
        return Ratio(ratio, math.nan, math.nan, None, len(ref), len(oth))
    result = stats.ttest_ind(oth, ref, equal_var=False)
    low, high = result.confidence_interval(LEVEL)
    return Ratio(ratio, float(np.exp(low)), float(np.exp(high)), float(result.pvalue), len(ref), len(oth))


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """Wilson's 95% interval of a proportion (statsmodels)."""
    from statsmodels.stats.proportion import proportion_confint

    if trials == 0:
        return math.nan, math.nan
    low, high = proportion_confint(successes, trials, alpha=1 - LEVEL, method="wilson")
    return float(low), float(high)


def km_median(times: list[float], reached: list[bool]) -> float:
    """Kaplan-Meier median time to an event, seeds that never reached it censored at their last time:
    the first time at which the estimated share not yet there is <= 1/2 (inf if it never is).
    statsmodels estimates the curve; its own quantile gives NaN where the curve sits exactly at 1/2."""
    from statsmodels.duration.survfunc import SurvfuncRight

    if not any(reached):
        return math.inf
    curve = SurvfuncRight(np.asarray(times, float), np.asarray(reached, int))
    below = np.nonzero(curve.surv_prob <= 0.5 + 1e-12)[0]
    return float(curve.surv_times[below[0]]) if len(below) else math.inf
