"""The verdict on constructed per-seed values whose answer is known: tiers, the sentence, what is
unresolved and the seeds it would take."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optbench.compare import render

from .synthetic import comparison

A = np.array([0.990, 0.991, 0.989, 0.992, 0.990, 0.991])
ROWS = {
    "a": A,
    "b": A + [-0.001, 0.0005, -0.0003, 0.0002, -0.0006, 0.0001],  # within noise of a
    "c": A + [-0.010, -0.011, -0.009, -0.010, -0.012, -0.010],
    "d": A + [-0.0096, -0.0113, -0.0089, -0.0105, -0.0118, -0.0100],  # within noise of c
    "e": A + [-0.050, -0.052, -0.049, -0.051, -0.050, -0.048],
}


def values(rows=ROWS) -> dict[str, dict[int, float]]:
    return {label: {s + 1: float(v) for s, v in enumerate(vals)} for label, vals in rows.items()}


def test_tiers_of_a_constructed_case():
    (verdict,) = comparison(values()).verdicts
    assert verdict.reference == "a" and verdict.against == "best"
    assert verdict.tiers == [["a", "b"], ["c", "d"], ["e"]]
    assert verdict.sentence.startswith("On mnist at val_acc at epoch 10: a (best) ≈ b (-0.0002 [")
    assert (
        "; then c (-0.0103 [" in verdict.sentence and " ≈ d (" in verdict.sentence and "; then e (" in verdict.sentence
    )
    pairs = {(u.a, u.b): u for u in verdict.unresolved}
    assert set(pairs) == {("a", "b"), ("c", "d")}, "only the pairs inside a tier are open"
    low, high = pairs[("a", "b")].seeds
    assert 6 < low <= high, "more seeds than it has"
    assert "about" in pairs[("a", "b")].text and "seeds to resolve it" in pairs[("a", "b")].text


def test_a_baseline_puts_better_rows_above_it():
    (verdict,) = comparison(values(), baseline="c").verdicts
    assert verdict.against == "baseline" and verdict.tiers == [["a", "b"], ["c", "d"], ["e"]]
    assert "against the baseline c" in verdict.sentence and "c (baseline)" in verdict.sentence


def test_identical_configurations_stay_unresolved():
    same = {"adam": A, "adam_again": A.copy(), "sgd": A - 0.02}
    (verdict,) = comparison(values(same)).verdicts
    assert verdict.tiers[0] == ["adam", "adam_again"]
    (open_pair,) = verdict.unresolved
    assert open_pair.seeds is None and "no number of seeds separates them" in open_pair.text


def test_too_few_seeds_give_no_tiers():
    (verdict,) = comparison(values({k: v[:2] for k, v in ROWS.items()})).verdicts
    assert verdict.tiers == [] and "too few" in verdict.sentence and "at least 3" in verdict.sentence


def test_holm_runs_over_every_row_of_the_dataset():
    # b has only 2 seeds: untested, but it still counts in a's family (m = 4, not 3).
    rows = values()
    rows["b"] = {1: rows["b"][1], 2: rows["b"][2]}
    result = comparison(rows)
    by = {r.label: r for r in result.rows}
    raw = sorted((by[x].paired["val_acc@10"].p, x) for x in "cde")
    assert by["b"].p_holm["val_acc@10"] == 1.0
    assert by[raw[0][1]].p_holm["val_acc@10"] == pytest.approx(min(1.0, 4 * raw[0][0]))


def test_verdict_in_every_format():
    result = comparison(values())
    payload = json.loads(render.render(result, "json"))
    assert payload["verdict"][0]["tiers"] == [["a", "b"], ["c", "d"], ["e"]]
    assert payload["primary"] == "val_acc@10" and payload["references"] == {"mnist": "a"}
    md = render.render(result, "markdown")
    assert md.startswith("**Verdict.** On mnist at val_acc at epoch 10: a (best) ≈ b (")
    table = render.render(result, "table", width=100)
    assert table.splitlines()[0].startswith("Verdict — On mnist at val_acc at epoch 10: a (best)")


def test_adjacent_pairs_under_the_permutation_test_compare_counts_of_images():
    """c and d differ by [1, 2, 0, -1, 2, 1, 3, 1] images of 10,000 (float32 accuracies, as logged): the exact
    sign-flip p over the 7 non-zero pairs is 10/128 = 0.078, so they share a tier; on the floats, sums that
    are equal in images count as unequal and p comes out 0.031, splitting them."""
    c = np.array([8992, 3079, 6625, 7764, 8755, 6197, 4999, 4478])  # float32 rounding differs across these
    d = c - np.array([1, 2, 0, -1, 2, 1, 3, 1])
    as_logged = {
        label: {s + 1: float(np.float32(v / 10_000)) for s, v in enumerate(counts)}
        for label, counts in {"a": c + 900, "c": c, "d": d}.items()
    }
    (verdict,) = comparison(as_logged, test="permutation", val_count=10_000).verdicts
    assert verdict.tiers == [["a"], ["c", "d"]]
    (open_pair,) = verdict.unresolved
    assert (open_pair.a, open_pair.b) == ("c", "d")
