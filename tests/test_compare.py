"""The comparison table, derived from a store of real short runs."""

from __future__ import annotations

import csv
import io
import json
import struct

import mlflow
import numpy as np
import pytest

from optbench.cli import compare
from optbench.compare.query import SUMMARY_TAG

from .helpers import compare_json, quick_args, run_cli, runs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(data_root, tmp_path_factory):
    """Two optimizers × two seeds (one multirun sweep) plus a failed and a diverged run."""
    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = run_cli("-m", *quick_args(data_root, uri, tmp, "optimizer=adam,sgd_momentum", "seed=1,2", "sweep_id=s1"))
    assert "[optbench] sweep: 4/4 jobs done" in proc.stderr, "the sweep-level progress line"
    client = mlflow.MlflowClient(uri)
    exp_id = client.get_experiment_by_name("optbench").experiment_id
    for status, reason in (("FAILED", "diverged"), ("KILLED", "interrupted")):
        run = client.create_run(
            exp_id,
            run_name=f"adam-mnist-{status}",
            tags={"label": "adam", "data": "mnist", "sweep_id": "s1", "failure_reason": reason},
        )
        client.log_metric(run.info.run_id, "val_acc", 0.01, step=1)
        client.set_terminated(run.info.run_id, status)
    return uri, tmp


def independent_cells(uri: str) -> dict[tuple[str, str], list[float]]:
    client, runs = runs_of(uri)
    cells: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if run.info.status != "FINISHED" or run.data.tags.get(SUMMARY_TAG):
            continue
        for metric in ("val_acc", "val_loss"):
            for m in client.get_metric_history(run.info.run_id, metric):
                cells.setdefault((run.data.tags["optimizer"], f"{metric}@{m.step}"), []).append(m.value)
    return cells


def test_table_matches_metric_histories(store, capsys):
    uri, _ = store
    payload = compare_json(uri, "--sweep", "s1", "--epochs", "1,2")
    rows = {r["optimizer"]: r for r in payload["rows"]}
    assert set(rows) == {"adam", "sgd_momentum"}
    expected = independent_cells(uri)
    for (optimizer, column), values in expected.items():
        row = rows[optimizer]
        assert row["seeds"] == 2 and row[f"{column}_n"] == 2
        assert row[column] == pytest.approx(np.mean(values), abs=1e-12)
        assert row[f"{column}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert all(r["total_time_s"] > 0 for r in rows.values())
    statuses = sorted(e["status"] for e in payload["excluded"])
    assert statuses == ["DIVERGED", "KILLED"], "unfinished runs are listed apart"
    # The failed runs' val_acc of 0.01 is not averaged in.
    assert rows["adam"]["val_acc@1"] == pytest.approx(np.mean(expected[("adam", "val_acc@1")]))


def test_every_format_parses(store, capsys):
    uri, _ = store
    base = ["--tracking-uri", uri, "--sweep", "s1", "--epochs", "1,2", "--no-log"]
    compare.main([*base, "--format", "csv"])
    recs = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["optimizer"] for r in recs} == {"adam", "sgd_momentum"} and float(recs[0]["val_acc@2"]) > 0
    compare.main([*base, "--format", "markdown"])
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("**Verdict.** On mnist at val_acc at epoch 2: 2 paired seeds per row, too few")
    start = md.index(next(line for line in md if line.startswith("| optimizer | data |")))
    main = md[start : md.index("", start)]
    assert main[0].startswith("| optimizer | data | seeds | acc e1 | loss e1 | acc e2 | loss e2 | time (s) |")
    assert sorted(line.split(" | ")[0] for line in main[2:]) == ["| adam", "| sgd_momentum"], "one line per row"
    assert all(line.count("|") == main[0].count("|") for line in main)
    assert any("DIVERGED" in line for line in md)
    compare.main([*base, "--format", "table"])
    table = capsys.readouterr().out
    assert "sgd_momentum" in table and "±" in table and "DIVERGED — diverged" in table


def test_reference_column_holds_seed_numbers(store, capsys):
    uri, _ = store
    compare.main(["--tracking-uri", uri, "--sweep", "s1", "--format", "json", "--reference", "seed", "--no-log"])
    rows = {r["optimizer"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["adam"]["val_acc@1_seed"] == 0.9772 and rows["adam"]["val_loss@10_seed"] == 0.0297
    assert rows["sgd_momentum"]["val_acc@5_seed"] == 0.9585 and rows["sgd_momentum"]["total_time_s_seed"] == 7 * 60 + 4
    assert rows["adam"]["val_acc@1_seed_diff"] == pytest.approx(rows["adam"]["val_acc@1"] - 0.9772)
    assert rows["adam"]["val_acc@10"] is None, "2-epoch runs have no epoch-10 cell"


def test_plot_is_png_and_summary_run_is_logged(store, capsys):
    uri, tmp = store
    out = tmp / "fig" / "curves.png"
    assert compare.main(["--tracking-uri", uri, "--sweep", "s1", "--plot", str(out)]) == 0
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (1200, 450)
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("optbench")
    summaries = client.search_runs([exp.experiment_id], f"tags.`{SUMMARY_TAG}` = 'summary'")
    assert len(summaries) == 1
    artifacts = {a.path for a in client.list_artifacts(summaries[0].info.run_id)}
    assert {"learning_curves.png", "comparison.csv", "comparison.md"} <= artifacts
    # The summary run is not a row of the next table.
    capsys.readouterr()
    compare.main(["--tracking-uri", uri, "--sweep", "s1", "--format", "json", "--no-log"])
    assert {r["optimizer"] for r in json.loads(capsys.readouterr().out)["rows"]} == {"adam", "sgd_momentum"}


def test_clear_errors(store, capsys):
    uri, _ = store
    assert compare.main(["--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert "No experiment named 'nope'" in capsys.readouterr().err
    assert compare.main(["--tracking-uri", uri, "--sweep", "missing"]) == 2
    assert "No runs in experiment 'optbench' with sweep_id=missing" in capsys.readouterr().err
