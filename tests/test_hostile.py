"""A store written by someone else: forged runs (made with the MLflow client, as any user of a shared
server can) must not redraw a terminal, inject table rows or formulas, crash a comparison or leave a
summary run RUNNING. Each case fails on the code before this change (ESC bytes reached stdout, NaN means
crashed ``--format json``, "3.5" and "abc" both became seed -1, a quote in a sweep id broke the filter)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import mlflow
import pytest

from optbench import store
from optbench.cli import compare
from optbench.compare.query import SUMMARY_TAG

pytestmark = pytest.mark.slow  # a comparison (with a report) per case: about 1.5 min in all
ESC = "\x1b]0;owned\x07\x1b[2J"
LABELS = {
    "escape": f"adam{ESC}",
    "markdown": "sgd | 0.9999 | 1 |\n| injected | row",
    "html": "<img src=x onerror=alert(1)>",
    "formula": '=HYPERLINK("http://x","y")',
}


def forge(client, exp_id, label, seed, accs, sweep="hostile", status="FINISHED", tags=None, total=10.0):
    run = client.create_run(exp_id, run_name=f"{label}-seed{seed}", tags={"label": label, "data": "mnist",
                            "sweep_id": sweep, "seed": str(seed), **(tags or {})})  # fmt: skip
    rid = run.info.run_id
    client.log_param(rid, "seed", str(seed))
    client.log_param(rid, "optimizer.name", label[:200])
    for epoch, acc in enumerate(accs, start=1):
        client.log_metric(rid, "val_acc", acc, step=epoch)
        client.log_metric(rid, "val_loss", 1 - acc if math.isfinite(acc) else acc, step=epoch)
        client.log_metric(rid, "epoch_time_s", 1.0, step=epoch)
    client.log_metric(rid, "total_time_s", total)
    client.set_terminated(rid, status)
    return rid


@pytest.fixture
def hostile(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = store.prepare(uri, "optbench")
    client = mlflow.MlflowClient(uri)
    for i, label in enumerate(LABELS.values()):
        for seed in (1, 2, 3):
            forge(client, exp_id, label, seed, [0.9 + 0.01 * i, 0.95 + 0.01 * i - 0.001 * seed])
    return uri, client, exp_id


def run_compare(uri, *args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compare.main(["--tracking-uri", uri, "--epochs", "1,2", *args])
    return code, out.getvalue(), err.getvalue()


def strict_json(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_control_characters_never_reach_the_output(hostile, fmt, tmp_path):
    uri, *_ = hostile
    page = tmp_path / "r.html"
    code, out, err = run_compare(uri, "--sweep", "hostile", "--format", fmt, "--html", str(page), "--no-log")
    assert code == 0, err
    for text in (out, err, page.read_text()):
        assert "\x1b" not in text and "\x07" not in text
    if fmt == "table":
        assert "adam\\x1b]0;owned\\x07\\x1b[2J" in out, "shown, made visible"
    if fmt == "json":
        labels = {r["optimizer"] for r in strict_json(out)["rows"]}
        assert set(LABELS.values()) == labels, "JSON keeps the data as it is (escaped by the JSON encoder)"


def test_markdown_cells_cannot_add_rows(hostile):
    uri, *_ = hostile
    code, out, _ = run_compare(uri, "--sweep", "hostile", "--format", "markdown", "--no-log")
    assert code == 0
    lines = out.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("| optimizer | data |")))
    table = lines[start : lines.index("", start)]
    assert len(table) == 2 + len(LABELS), "one line per row, no injected row"
    pipes = table[0].count("|")
    assert all(x.replace("\\|", "").count("|") == pipes for x in table), "no cell adds a column"
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out


def test_csv_cells_cannot_be_formulas(hostile):
    uri, *_ = hostile
    code, out, _ = run_compare(uri, "--sweep", "hostile", "--format", "csv", "--no-log")
    labels = {r["optimizer"] for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and "'" + LABELS["formula"] in labels
    assert not any(label.startswith(("=", "+", "@")) for label in labels)


def test_the_html_report_escapes_labels(hostile, tmp_path):
    uri, *_ = hostile
    page = tmp_path / "r.html"
    assert run_compare(uri, "--sweep", "hostile", "--html", str(page), "--no-log")[0] == 0
    text = page.read_text()
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_non_finite_metrics_and_odd_seeds_are_listed_not_averaged(tmp_path, fmt):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = store.prepare(uri, "optbench")
    client = mlflow.MlflowClient(uri)
    for seed in (1, 2, 3):
        forge(client, exp_id, "adam", seed, [0.97, 0.98 + seed / 1000])
    bad = {
        forge(client, exp_id, "adam", 4, [0.97, math.nan]): "val_acc at epoch 2 is nan",
        forge(client, exp_id, "adam", 5, [0.97, math.inf]): "val_acc at epoch 2 is 1.797",  # MLflow stores inf so
        forge(client, exp_id, "adam", 6, [0.97, 0.98], total=1e308): "total_time_s is 1e+308",
        forge(client, exp_id, "adam", "3.5", [0.97, 0.98]): "unreadable seed '3.5'",
        forge(client, exp_id, "adam", "abc", [0.97, 0.98]): "unreadable seed 'abc'",
    }
    code, out, err = run_compare(uri, "--sweep", "hostile", "--format", fmt, "--no-log")
    assert code == 0 and "Traceback" not in err, err
    if fmt == "json":
        payload = strict_json(out)
        (row,) = payload["rows"]
        assert row["seeds"] == 3 and row["val_acc@2"] == pytest.approx(0.98 + 0.002)
        reasons = {e["run_id"]: e["reason"] for e in payload["excluded"]}
        for run_id, why in bad.items():
            assert why in reasons[run_id]
    elif fmt == "csv":
        (row,) = csv.DictReader(io.StringIO(out))
        assert row["seeds"] == "3" and float(row["val_acc@2"]) == pytest.approx(0.982)
    else:
        assert "0.9820" in out and out.count("not averaged in") == len(bad)


def test_the_summary_run_ends_finished_or_failed_never_running(hostile, monkeypatch):
    uri, client, exp_id = hostile
    assert run_compare(uri, "--sweep", "hostile")[0] == 0
    (summary,) = client.search_runs([exp_id], f"tags.`{SUMMARY_TAG}` = 'summary'")
    assert summary.info.status == "FINISHED" and "verdict.mnist" in summary.data.tags

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(mlflow.MlflowClient, "log_table", broken)
    with pytest.raises(OSError):
        run_compare(uri, "--sweep", "hostile")
    statuses = {r.info.status for r in client.search_runs([exp_id], f"tags.`{SUMMARY_TAG}` = 'summary'")}
    assert statuses == {"FINISHED", "FAILED"}, "the broken summary ended FAILED, not RUNNING"


def test_a_sweep_id_with_a_quote_is_selected(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = store.prepare(uri, "optbench")
    client = mlflow.MlflowClient(uri)
    for seed in (1, 2):
        forge(client, exp_id, "adam", seed, [0.97], sweep="bob's sweep")
    forge(client, exp_id, "adam", 3, [0.5], sweep="other")
    code, out, err = run_compare(uri, "--sweep", "bob's sweep", "--format", "json", "--epochs", "1")
    assert code == 0, err
    assert [r["seeds"] for r in strict_json(out)["rows"]] == [2]


def test_the_same_configuration_and_seed_from_two_users_is_a_conflict(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = store.prepare(uri, "optbench")
    client = mlflow.MlflowClient(uri)
    for seed in (1, 2, 3):
        forge(client, exp_id, "adam", seed, [0.98], tags={"mlflow.user": "alice"})
    forge(client, exp_id, "adam", 2, [0.10], tags={"mlflow.user": "bob"})  # later: "latest wins" would take it
    forge(client, exp_id, "adam", 3, [0.981], tags={"mlflow.user": "alice"})  # alice's own rerun: a duplicate
    code, out, _ = run_compare(uri, "--sweep", "hostile", "--format", "json", "--epochs", "1")
    (row,) = strict_json(out)["rows"]
    assert code == 0 and row["seeds"] == 2 and row["val_acc@1"] == pytest.approx((0.98 + 0.981) / 2)
    notes = strict_json(out)["notes"]
    assert any(n.startswith("CONFLICT adam seed 2:") and "by bob" in n and "by alice" in n for n in notes)
    assert any("same configuration and seed as a later run" in n for n in notes), "one user's duplicate: latest"
