"""Intervals and paired tests against hand-computed cases and synthetic data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optbench.compare import stats


def test_t_interval_by_hand():
    # mean 2, sd 1, sem 1/sqrt(3); t(0.975, df=2) = 4.302653
    low, high = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # the t table's value, to 6 decimals
    assert low == pytest.approx(2 - half, abs=1e-6) and high == pytest.approx(2 + half, abs=1e-6)
    assert all(math.isnan(v) for v in stats.t_interval([1.0])), "no interval from one seed"
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_paired_exact_permutation_by_hand():
    base = {s: 0.9 + s / 100 for s in range(1, 7)}
    # differences 1, -1, 2, 3, 1, 2 (mean 4/3): of the 64 sign patterns, 8 have |sum| >= 8 -> p = 0.125
    diffs = {1: 1.0, 2: -1.0, 3: 2.0, 4: 3.0, 5: 1.0, 6: 2.0}
    result = stats.paired(base, {s: base[s] + d for s, d in diffs.items()})
    assert result.p == pytest.approx(0.125) and result.pairs == 6 and result.unpaired == 0
    assert result.diff == pytest.approx(4 / 3)
    sd = np.std(list(diffs.values()), ddof=1)
    half = 2.570582 * sd / math.sqrt(6)  # t(0.975, df=5) from the table
    assert (result.ci_low, result.ci_high) == pytest.approx((4 / 3 - half, 4 / 3 + half), abs=1e-6)
    all_better = stats.paired(base, {s: v + 0.01 for s, v in base.items()})
    assert all_better.p == pytest.approx(2 / 64), "the smallest p six pairs can give"


def test_unpaired_seeds_are_left_out_and_counted():
    result = stats.paired({1: 0.1, 2: 0.2, 3: 0.3}, {2: 0.25, 3: 0.35, 4: 0.9})
    assert result.pairs == 2 and result.unpaired == 2 and result.diff == pytest.approx(0.05)


def test_too_few_pairs_give_no_p_value():
    assert stats.min_p(5) == 0.0625 and stats.min_p(6) == 0.03125
    result = stats.paired({s: 0.0 for s in range(5)}, {s: 1.0 for s in range(5)})
    assert result.p is None and "no test can reach" in result.note and result.diff == 1.0


def test_holm_floor_is_stated_with_the_seeds_it_needs():
    assert stats.pairs_needed(1) == 6 and stats.pairs_needed(5) == 8, "5 * 2/2^7 = 0.078, 5 * 2/2^8 = 0.039"
    assert stats.holm([stats.min_p(6)] * 5) == pytest.approx([0.15625] * 5), "the floor the note names"


def test_the_table_says_when_holm_cannot_reach_alpha():
    from types import SimpleNamespace

    from optbench.compare.cells import Comparison, Row
    from optbench.compare.render import too_few_pairs

    six = stats.paired({s: 0.0 for s in range(6)}, {s: 1.0 for s in range(6)})
    rows = [Row(SimpleNamespace(label=f"o{i}", data="mnist"), paired={"val_acc@1": six}) for i in range(5)]
    note = too_few_pairs(Comparison([1], rows, selection=None, baseline="o"))
    assert "6 paired seeds and 5 rows" in note and "below 0.1562" in note and "at least 8 seeds" in note
    assert too_few_pairs(Comparison([1], rows[:1], selection=None, baseline="o")) is None, "one row: p=0.031 can"


def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([None, 0.02, 0.5]) == [None, pytest.approx(0.04), pytest.approx(0.5)]
    assert stats.holm([0.4, 0.9]) == pytest.approx([0.8, 0.9]), "monotone and capped at 1"


def simulate(shift: float, n_pairs: int = 8, trials: int = 600) -> float:
    """Share of synthetic paired experiments (per-seed noise N(0, 1)) in which the test rejects at 0.05."""
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(trials):
        base = rng.normal(size=n_pairs)
        other = base + rng.normal(size=n_pairs) + shift
        p = stats.paired(dict(enumerate(base)), dict(enumerate(other))).p
        rejected += p is not None and p < stats.ALPHA
    return rejected / trials


def test_false_positive_rate_under_the_null_stays_at_alpha():
    rate = simulate(0.0)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 600), rate  # within Monte-Carlo noise of alpha


def test_power_under_a_clear_shift():
    assert simulate(1.5) > 0.8
