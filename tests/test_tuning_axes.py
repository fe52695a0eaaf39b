"""The tuning-budget axis and the learning-rate sensitivity curve: each optimizer after 1 setting (its defaults), after b trials (the best of the
study's first b), retrained over seeds, as a table and a figure in the report."""

from __future__ import annotations

import contextlib
import io
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from optbench import tuning_axes
from optbench.cli import tune

from .helpers import runs_of


def study_of(values: list[float | None]) -> optuna.Study:
    """Trials with x = their index and the given values (None: a failed trial)."""
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate(values):
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
        study.add_trial(
            create_trial(
                params={"x": float(i)}, distributions={"x": FloatDistribution(0, 10)}, value=value, state=state
            )
        )
    return study


def test_a_budget_keeps_the_best_of_its_first_trials():
    study = study_of([0.5, 0.9, None, 0.7, 0.95])
    assert tuning_axes.best_within(study, 1) == {}, "budget 1 is the defaults"
    assert [tuning_axes.best_within(study, b)["x"] for b in (2, 3, 4, 5, 50)] == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert tuning_axes.best_within(study_of([None, None]), 2) == {}, "no completed trial: the defaults"
    assert tuning_axes.parse("25,1,10,10", "--budgets", integers=True) == (1, 10, 25)
    assert tuning_axes.parse("1e-2,1e-4", "--lr-grid") == (1e-4, 1e-2)
    for bad in ("0,10", "x", "", "1,nan"):
        with pytest.raises(ValueError, match="--budgets"):
            tuning_axes.parse(bad, "--budgets", integers=bad != "1,nan")


def test_the_budget_axis_end_to_end(data_root, tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_DATA_ROOT", str(data_root))
    argv = ["--optimizers", "adam", "--budgets", "1,3", "--seeds", "2", "--epochs", "1", "--subset", "128"]
    argv += ["--tracking-uri", tracking_uri, "--out", str(tmp_path), "--sweep-id", "bud"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert tune.main(argv) == 0
    client, runs = runs_of(tracking_uri)
    search = [r for r in runs if r.data.tags.get("sweep_id") == "bud-search"]
    best = max(search, key=lambda r: r.data.metrics["val_acc"])  # the best of all 3 trials: budget 3's
    by_label = {}
    for r in runs:
        by_label.setdefault(r.data.tags.get("label") or r.data.params.get("label"), []).append(r)
    assert len(search) == 3 and len(by_label["adam@budget=1"]) == 2 and len(by_label["adam@budget=3"]) == 2
    assert {r.data.params["optimizer.lr"] for r in by_label["adam@budget=1"]} == {"0.001"}, "budget 1: the defaults"
    assert {r.data.params["optimizer.lr"] for r in by_label["adam@budget=3"]} == {best.data.params["optimizer.lr"]}
    text = out.getvalue()
    assert "val_acc@1 by tuning budget" in text
    for budget in (1, 3):
        mean = statistics.fmean(r.data.metrics["val_acc"] for r in by_label[f"adam@budget={budget}"])
        assert f"{mean:.4f} ±" in text.split("by tuning budget")[1]
    (summary,) = [r for r in runs if r.data.tags.get("sweep_id") == "bud" and r.info.run_name.startswith("summary")]
    page = Path(client.download_artifacts(summary.info.run_id, "report.html", str(tmp_path))).read_text()
    assert "Result by tuning budget" in page and "<svg" in page.split("Result by tuning budget")[1]


def test_the_learning_rate_sensitivity_curve(data_root, tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_DATA_ROOT", str(data_root))
    argv = ["--optimizers", "adam", "--lr-grid", "1e-2,1e-3", "--seeds", "2", "--epochs", "1", "--subset", "128"]
    argv += ["--tracking-uri", tracking_uri, "--out", str(tmp_path), "--sweep-id", "lrs"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert tune.main(argv) == 0
    client, runs = runs_of(tracking_uri)
    trained = [r for r in runs if r.data.tags.get("sweep_id") == "lrs" and "optimizer.lr" in r.data.params]
    assert not [r for r in runs if r.data.tags.get("sweep_id") == "lrs-search"], "a grid alone searches nothing"
    assert sorted(r.data.params["optimizer.lr"] for r in trained) == ["0.001", "0.001", "0.01", "0.01"]
    text = out.getvalue().split("by learning rate")[1]
    for lr in ("0.001", "0.01"):
        mean = statistics.fmean(r.data.metrics["val_acc"] for r in trained if r.data.params["optimizer.lr"] == lr)
        assert f"{mean:.4f} ±" in text
    (summary,) = [r for r in runs if r.data.tags.get("sweep_id") == "lrs" and r.info.run_name.startswith("summary")]
    page = Path(client.download_artifacts(summary.info.run_id, "report.html", str(tmp_path))).read_text()
    assert "<svg" in page.split("Result by learning rate")[1]
