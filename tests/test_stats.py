"""Intervals, paired tests, effect sizes and seed counts: against hand-computed cases, another way of
computing the same number, and simulations whose answer is known (level under the null, power)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from optbench.compare import stats


def test_t_interval_by_hand():
    # mean 2, sd 1, sem 1/sqrt(3); t(0.975, df=2) = 4.302653
    low, high = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # the t table's value, to 6 decimals
    assert low == pytest.approx(2 - half, abs=1e-6) and high == pytest.approx(2 + half, abs=1e-6)
    assert all(math.isnan(v) for v in stats.t_interval([1.0])), "no interval from one seed"
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_paired_t_by_hand():
    base = {s: 0.9 + s / 100 for s in range(1, 7)}
    diffs = {1: 1.0, 2: -1.0, 3: 2.0, 4: 3.0, 5: 1.0, 6: 2.0}  # mean 4/3, sd 1.3663
    result = stats.paired(base, {s: base[s] + d for s, d in diffs.items()})
    sd = np.std(list(diffs.values()), ddof=1)
    t = (4 / 3) / (sd / math.sqrt(6))
    assert result.p == pytest.approx(2 * sps.t.sf(t, df=5)) and result.pairs == 6 and result.unpaired == 0
    half = 2.570582 * sd / math.sqrt(6)  # t(0.975, df=5) from the table
    assert (result.ci_low, result.ci_high) == pytest.approx((4 / 3 - half, 4 / 3 + half), abs=1e-6)
    assert result.wins == 5 and result.effect == pytest.approx((4 / 3) / sd)
    assert result.note == "", "6 pairs: no small-n warning"


def test_default_p_is_the_dual_of_the_interval():
    rng = np.random.default_rng(7)
    disagreements = 0
    for _ in range(2000):
        n = int(rng.integers(3, 12))
        base = rng.normal(size=n)
        other = base + rng.normal(loc=rng.choice([0.0, 0.5, 1.0]), size=n)
        p = stats.paired(dict(enumerate(base)), dict(enumerate(other)))
        disagreements += (p.p < stats.ALPHA) != (p.ci_low > 0 or p.ci_high < 0)
    assert disagreements == 0


def test_unpaired_seeds_are_left_out_and_counted():
    result = stats.paired({1: 0.1, 2: 0.2, 3: 0.3}, {2: 0.25, 3: 0.35, 4: 0.9})
    assert result.pairs == 2 and result.unpaired == 2 and result.diff == pytest.approx(0.05)


def test_small_n_is_said_honestly():
    two = stats.paired({1: 0.0, 2: 1.0}, {1: 1.0, 2: 2.0})
    assert two.p is None and math.isnan(two.ci_low) and two.diff == 1.0 and "difference only" in two.note
    three = stats.paired({1: 0.0, 2: 1.0, 3: 0.5}, {1: 1.0, 2: 2.2, 3: 1.4})
    assert three.p is not None and three.p < 0.05 and not math.isnan(three.ci_low), "a t-test can reach 0.05 at n=3"
    assert three.wins == 3 and "normality" in three.note
    same = stats.paired({s: 0.5 for s in range(4)}, {s: 0.6 for s in range(4)})
    assert same.p == 0.0 and same.ci_low == same.ci_high == pytest.approx(0.1), (
        "a constant shift: the interval is a point"
    )
    equal = stats.paired({s: 0.5 for s in range(4)}, {s: 0.5 for s in range(4)})
    assert equal.p == 1.0 and equal.diff == 0.0


def accuracies(counts: list[int], n_val: int = 10_000) -> dict[int, float]:
    """Accuracies as the store holds them: float32 fractions of n_val images."""
    return {s: float(np.float32(k / n_val)) for s, k in enumerate(counts)}


def test_sign_flips_on_counts_tie_exactly():
    base = [9885, 9863, 9851, 9826, 9830, 9804, 9807, 9801]
    diffs = [1, 2, 0, -1, 2, 1, 3, 1]  # images
    other = [b + d for b, d in zip(base, diffs, strict=True)]
    result = stats.paired(accuracies(base), accuracies(other), test="permutation", scale=10_000)
    # By hand: 7 non-zero differences summing to 9; of the 2^7 sign patterns, 10 reach |sum| >= 9.
    assert result.p == pytest.approx(10 / 128) and result.nonzero == 7
    floats = sps.permutation_test(
        (np.array(list(accuracies(other).values())) - np.array(list(accuracies(base).values())),),
        np.mean, permutation_type="samples", n_resamples=np.inf, rng=0,
    ).pvalue  # fmt: skip
    assert floats < 0.05, "the float32 differences break ties: what the counts fix"


def test_zero_differences_set_the_floor():
    base = {s: 0.9 for s in range(6)}
    other = {s: 0.9 + (0.001 if s else 0.0) for s in range(6)}
    result = stats.paired(base, other, test="permutation", scale=1000)
    assert result.nonzero == 5 and result.p == pytest.approx(stats.sign_flip_floor(5)) == pytest.approx(0.0625)
    assert stats.paired(base, other, test="wilcoxon", scale=1000).p == pytest.approx(0.0625)


def test_holm_counts_every_member_of_the_family():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(2)
    for _ in range(8):  # statsmodels collects garbage on every call: slow
        ps = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 8))))
        assert stats.holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1])), "statsmodels agrees"
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.01, None, None]) == pytest.approx([0.03, 1.0, 1.0]), "untested rows still count"
    assert stats.holm([0.4, 0.9]) == pytest.approx([0.8, 0.9]), "monotone and capped at 1"


def rejections(shift: float, n: int, rows: int = 5, trials: int = 1000, test: str = "t") -> float:
    """Share of synthetic experiments (per-seed noise N(0, 1), ``rows`` rows against one reference) in
    which any Holm-adjusted p falls below alpha; ``shift`` is every row's true effect (d)."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(trials):
        base = rng.normal(size=n)
        others = [base + rng.normal(size=n) + shift for _ in range(rows)]
        ps = [stats.paired(dict(enumerate(base)), dict(enumerate(o)), test=test).p for o in others]
        hits += min(stats.holm(ps)) < stats.ALPHA
    return hits / trials


@pytest.mark.parametrize("n", [3, 5, 8])
def test_family_wise_error_under_the_null_stays_at_alpha(n):
    rate = rejections(0.0, n)
    assert rate <= stats.ALPHA + 2 * math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / 1000), rate


def test_power_at_small_n():
    """Per-row power, Holm over 5 rows, differences N(2, 1) (d = 2): the default t-test resolves such a
    gap from 5 seeds; exact sign flips cannot at all (5 x 2/2^5 > 0.05), the trap the old default fell in."""

    def power(n, test="t"):
        rng = np.random.default_rng(3)
        hits = 0
        for _ in range(400):
            ps = [
                stats.paired(dict(enumerate(np.zeros(n))), dict(enumerate(rng.normal(2, 1, size=n))), test=test).p
                for _ in range(5)
            ]
            hits += sum(p < stats.ALPHA for p in stats.holm(ps))
        return hits / 2000

    assert power(3) < 0.3 < 0.65 < power(5) < power(6), (power(3), power(5), power(6))
    assert power(5, "permutation") == 0.0


def test_probability_of_improvement_by_hand():
    point, low, high = stats.probability_of_improvement([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert point == pytest.approx(7 / 9), "7 of 9 cross pairs better, ties count half"
    assert low <= point <= high
    loss, *_ = stats.probability_of_improvement([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], higher_is_better=False)
    assert loss == pytest.approx(2 / 9)


def test_seeds_needed_matches_a_simulation():
    sigma, delta = 1.0, 0.8
    diffs = np.random.default_rng(0).normal(size=40)
    diffs = (diffs - diffs.mean()) / diffs.std(ddof=1) * sigma + delta  # observed mean delta, sd sigma
    low, high = stats.seeds_needed(tuple(diffs), alpha=0.05)
    assert high > low
    rng = np.random.default_rng(5)
    hits = sum(sps.ttest_1samp(rng.normal(delta, sigma, size=low), 0).pvalue < 0.05 for _ in range(3000))
    assert hits / 3000 == pytest.approx(stats.POWER, abs=0.04), "80% power at the seeds it names"
    assert stats.seeds_needed((0.0, 0.0, 0.0), 0.05) is None, "identical results: no seed count separates them"


def test_time_ratio_is_welch_on_log_times():
    ref, other = [100.0, 110.0, 105.0, 98.0], [80.0, 85.0, 90.0]
    r = stats.time_ratio(ref, other)
    a, b = np.log(other), np.log(ref)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    gap = a.mean() - b.mean()
    assert r.ratio == pytest.approx(math.exp(gap))
    assert (r.low, r.high) == pytest.approx((math.exp(gap - half), math.exp(gap + half)))
    assert r.p == pytest.approx(2 * sps.t.sf(abs(gap) / math.sqrt(va + vb), df))


def test_wilson_and_kaplan_meier_by_hand():
    low, high = stats.wilson(3, 6)
    z = sps.norm.ppf(0.975)
    centre, half = (0.5 + z * z / 12) / (1 + z * z / 6), z / (1 + z * z / 6) * math.sqrt(0.25 / 6 + z * z / 144)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert stats.km_median([10, 20, 30, 99, 99, 99], [True] * 3 + [False] * 3) == 30, "half reached: the third time"
    assert stats.km_median([10, 20, 99, 99, 99, 99], [True] * 2 + [False] * 4) == math.inf
    assert stats.km_median([5, 10, 20], [True, True, True]) == 10
