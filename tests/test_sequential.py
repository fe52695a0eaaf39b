"""The adaptive sweep's decision procedure on synthetic per-seed values (no training): the e-process against
the Bayes factor computed another way, its level under optional stopping, power and seeds used, ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as st

from optbench.adaptive import Plan
from optbench.compare import sequential as sq


@pytest.mark.parametrize(("t", "n"), [(2.0, 3), (5.0, 6), (-1.3, 10), (0.0, 4), (9.0, 20)])
def test_e_value_is_the_bayes_factor_of_the_t_statistic(t, n):
    """The closed form equals ∫ nct(t; n-1, δ√n) N(δ; 0, g) dδ / t(t; n-1), averaged over the prior scales."""
    nu = n - 1
    reference = np.mean(
        [
            integrate.quad(
                lambda d, g=g: st.nct.pdf(t, nu, d * math.sqrt(n)) * st.norm.pdf(d, 0, math.sqrt(g)), -np.inf, np.inf
            )[0]  # fmt: skip
            / st.t.pdf(t, nu)
            for g in sq.PRIOR_SCALES
        ]
    )
    assert math.exp(sq.log_e(np.array(t), np.array(n))) == pytest.approx(reference, rel=1e-6)


def test_e_process_of_a_sequence_uses_its_t_statistics():
    x = [0.3, -0.1, 0.5, 0.2, 0.4]
    e = sq.e_process(x)
    assert e[0] == 1.0
    for n in range(2, len(x) + 1):
        t = st.ttest_1samp(x[:n], 0).statistic
        assert e[n - 1] == pytest.approx(math.exp(sq.log_e(np.array(t), np.array(n))), rel=1e-9)


def test_level_under_optional_stopping_and_what_naive_peeking_costs():
    """Null differences, a look after every seed from 3 to 30: the e-process ever reaching 1/alpha is at
    most alpha (Ville), while a t-test at each look rejects far more often (so this check can fail)."""
    rng = np.random.default_rng(1)
    trials = 3000
    x = rng.normal(size=(trials, 30))
    ever = np.mean([sq.anytime_p(row) < 0.05 for row in x])
    n = np.arange(1, 31)
    mean = np.cumsum(x, axis=1) / n
    sd = np.sqrt((np.cumsum(x**2, axis=1) - n * mean**2)[:, 2:] / (n[2:] - 1))
    p_naive = 2 * st.t.sf(np.abs(mean[:, 2:] / (sd / np.sqrt(n[2:]))), n[2:] - 1)  # t-test at 3..30 seeds
    naive = np.mean((p_naive < 0.05).any(axis=1))
    assert ever <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert naive > 0.15


def _adaptive(rng, effects, plan: Plan, estimate=False):
    """One simulated adaptive sweep: rows with normal noise and these means; returns (decision, seeds)."""
    x = rng.normal(size=(len(effects), plan.max_seeds)) + np.asarray(effects, float)[:, None]
    seeds = 0
    for seeds_round in plan.rounds():
        seeds = seeds_round[-1]
        values = {f"r{i}": {s: x[i, s - 1] for s in range(1, seeds + 1)} for i in range(len(effects))}
        decision = sq.decide("sim", values, True, estimate=estimate)
        if decision.resolved:
            break
    return decision, seeds


def test_family_wise_error_of_the_ranking_under_the_null_with_optional_stopping():
    """Three equal rows, a look after every seed up to 12: a resolved adjacent pair is an error."""
    rng, plan, trials = np.random.default_rng(2), Plan(3, 1, 12), 400
    errors = sum(any(p.resolved for p in _adaptive(rng, [0, 0, 0], plan)[0].adjacent) for _ in range(trials))
    assert errors / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


@pytest.mark.parametrize(("effect", "power", "mean_seeds"), [(2.0, 0.9, 12), (5.0, 0.99, 6)])
def test_power_and_seeds_used_under_an_effect(effect, power, mean_seeds):
    """Two rows whose seeds differ by ``effect`` standard deviations (d of the paired difference √2·effect)."""
    rng, plan, trials = np.random.default_rng(3), Plan(3, 1, 20), 200
    runs = [_adaptive(rng, [0, effect], plan) for _ in range(trials)]
    assert sum(d.resolved for d, _ in runs) / trials >= power
    assert np.mean([s for _, s in runs]) <= mean_seeds
    assert all(d.ranking[0] == "r1" for d, _ in runs if d.resolved)  # the better row ranks first


def test_identical_rows_stay_unresolved_at_any_number_of_seeds():
    values = {"a": dict.fromkeys(range(1, 41), 0.9812), "b": dict.fromkeys(range(1, 41), 0.9812)}
    values["a"].update({s: 0.97 + s / 1e4 for s in range(1, 41)})
    values["b"] = dict(values["a"])
    decision = sq.decide("mnist", values, True)
    (pair,) = decision.adjacent
    assert not decision.resolved and pair.p == 1.0 and pair.seeds is None


def test_a_single_row_has_nothing_to_resolve_and_ranks_follow_the_metric_direction():
    assert sq.decide("m", {"a": {1: 0.1, 2: 0.2}}, True).resolved
    values = {"low": {s: 0.1 + 0.001 * s for s in range(1, 9)}, "high": {s: 0.5 + 0.002 * s for s in range(1, 9)}}
    assert sq.decide("m", values, True).ranking == ["high", "low"]
    assert sq.decide("m", values, False).ranking == ["low", "high"]  # a loss: lower is better


def test_seeds_estimate_is_where_the_e_process_would_cross_at_the_observed_effect():
    diffs = [0.5, 1.5, 0.2, 1.1, 0.7]  # d ≈ 1.36
    n = sq.seeds_to_resolve(diffs, 0.05)
    d = np.mean(diffs) / np.std(diffs, ddof=1)
    assert sq.log_e(d * math.sqrt(n), n) >= math.log(20) > sq.log_e(d * math.sqrt(n - 1), n - 1)
    # ... and a simulation at that effect resolves about half the time by then (a median, not a promise)
    rng = np.random.default_rng(4)
    crossed = np.mean([sq.anytime_p(rng.normal(d, 1, size=n)) < 0.05 for _ in range(400)])
    assert 0.3 <= crossed <= 0.95


def test_plan_rounds_and_its_checks():
    assert Plan(3, 2, 8).rounds() == [[1, 2, 3], [4, 5], [6, 7], [8]]
    assert Plan(3, 1, 3, first_seed=10).rounds() == [[10, 11, 12]]
    for bad in ({"initial_seeds": 1}, {"seeds_per_round": 0}, {"initial_seeds": 5, "max_seeds": 4}):
        with pytest.raises(ValueError):
            Plan(**bad)


def test_the_round_table_fits_the_terminal_with_every_pair_whole():
    from optbench.adaptive import Decision, Round

    pairs = ["rmsprop > sgd_momentum", "sgd > adagrad", "adagrad > adadelta"]
    decision = Decision("s", "val_acc@10", 0.05, Plan(3, 1, 8), [Round(1, [1, 2, 3], 18, 0, 0, 396.0, pairs, 6)])
    for width in (90, 100, 200):  # the columns before the pairs take 64
        table = decision.lines(width)[:-1]
        assert all(len(line) <= width for line in table), width
        assert all(sum(p in line for line in table) == 1 for p in pairs), width
    assert len(decision.lines(200)) == 3 and len(decision.lines(90)) > 3  # one line per round when it fits
    decision.stopped = "max_seeds"
    assert len(decision.lines(90)[-1]) > 90  # the sentence stays one line for a log ...
    assert all(len(line) <= 90 for line in decision.lines(90, wrap_sentence=True))  # ... and fits a terminal
