"""The comparison with confidence: intervals, paired tests, aggregates, ranks, profiles, and the HTML
report on a small real sweep (2 optimizers x 3 seeds on MNIST and Fashion-MNIST), rendered by Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from scipy import stats as sps

from optbench.cli import compare
from optbench.compare import stats
from optbench.compare.query import SUMMARY_TAG

from .helpers import compare_json, quick_args, run_cli, runs_of

pytestmark = pytest.mark.slow
FASHION = Path("/usr/share/datasets/fashion-mnist")
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def sweep(data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    datasets = "mnist,fashion_mnist" if FASHION.exists() else "mnist"
    args = quick_args(
        data_root, uri, tmp, "optimizer=adam,sgd_momentum", "seed=1,2,3", f"data={datasets}", "sweep_id=rep"
    )
    run_cli("-m", *args, "data.subset=256", "callbacks.tracking.system_metrics=false")
    return uri, tmp


def table(uri: str, *extra: str) -> dict:
    return compare_json(uri, "--sweep", "rep", "--epochs", "1,2", *extra)


def per_seed(uri: str, optimizer: str, metric: str, epoch: int, best: bool = False) -> dict[int, float]:
    client, runs = runs_of(uri)
    out = {}
    for run in runs:
        tags = run.data.tags
        if tags.get("optimizer") == optimizer and tags.get("data") == "mnist" and SUMMARY_TAG not in tags:
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
            out[int(tags["seed"])] = max(v for e, v in history.items() if e <= epoch) if best else history[epoch]
    return out


def test_cells_have_t_intervals(sweep):
    uri, _ = sweep
    rows = {(r["optimizer"], r["data"]): r for r in table(uri)["rows"]}
    row = rows[("adam", "mnist")]
    values = list(per_seed(uri, "adam", "val_acc", 2).values())
    assert row["seeds"] == 3 and row["val_acc@2"] == pytest.approx(np.mean(values))
    low, high = stats.t_interval(values)
    assert (row["val_acc@2_ci_low"], row["val_acc@2_ci_high"]) == pytest.approx((low, high))
    assert row["val_acc@2_ci_low"] <= row["val_acc@2"] <= row["val_acc@2_ci_high"]


def test_baseline_columns_are_paired_differences(sweep):
    uri, _ = sweep
    payload = table(uri, "--baseline", "adam")
    rows = {(r["optimizer"], r["data"]): r for r in payload["rows"]}
    other = rows[("sgd_momentum", "mnist")]
    assert payload["primary"] == "val_acc@2", "the last tabulated epoch"
    for column, metric in (("val_loss@2", "val_loss"), ("val_acc@2", "val_acc")):
        base, them = per_seed(uri, "adam", metric, 2), per_seed(uri, "sgd_momentum", metric, 2)
        diffs = [them[s] - base[s] for s in sorted(base)]
        assert other[f"{column}_diff"] == pytest.approx(np.mean(diffs)) and other[f"{column}_pairs"] == 3
        assert (other[f"{column}_diff_ci_low"], other[f"{column}_diff_ci_high"]) == pytest.approx(
            stats.t_interval(diffs)
        )
        expected = sps.ttest_rel([them[s] for s in sorted(base)], [base[s] for s in sorted(base)]).pvalue
        assert other[f"{column}_p"] == pytest.approx(expected), "the paired t-test, computed by scipy another way"
    assert "val_loss@2_p_holm" not in other, "only the primary endpoint is corrected; the rest is descriptive"
    assert other["val_acc@2_p_holm"] == pytest.approx(min(1.0, other["val_acc@2_p"])), "one other row per dataset"
    assert "val_loss@2_diff" not in rows[("adam", "mnist")], "the baseline is not compared with itself"
    (verdict,) = [v for v in payload["verdict"] if v["data"] == "mnist"]
    assert verdict["reference"] == "adam" and verdict["against"] == "baseline"
    assert sorted(label for tier in verdict["tiers"] for label in tier) == ["adam", "sgd_momentum"]


def test_aggregate_best_is_refused_on_test_set_validation(sweep, capsys):
    uri, _ = sweep
    code = compare.main(["--tracking-uri", uri, "--sweep", "rep", "--no-log", "--aggregate", "best"])
    err = capsys.readouterr().err
    assert code == 2 and "validated on the test set" in err and "data.val_split=10000" in err
    assert len(err.strip().splitlines()) == 1, "one paragraph"


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_terminal_table_at_every_width(sweep, capsys, monkeypatch, width):
    uri, _ = sweep
    monkeypatch.setenv("COLUMNS", str(width))  # stdout is a pipe here: the width a user's COLUMNS gives
    args = ["--tracking-uri", uri, "--sweep", "rep", "--no-log", "--reference", "seed", "--baseline", "adam"]
    assert compare.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert lines[0].startswith("Verdict — On ") and "\x1b" not in out, "verdict first; no colour codes in a pipe"
    assert_tables_whole(out, labels={"adam", "sgd_momentum"}, published={"adam", "sgd_momentum"})


def assert_tables_whole(out: str, labels: set[str], published: set[str]) -> None:
    """Every table's body: one line per row, each starting with a whole label, and the expected rows."""
    lines = out.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("optimizer ")]
    assert heads, out
    for i in heads:
        body = []
        for line in lines[i + 2 :]:  # after the header and its rule
            if not line.strip() or line.startswith("  (continued)"):
                break
            body.append(line)
        starts = [
            next((x for x in sorted(labels, key=len, reverse=True) if line.startswith(x + " ")), None) for line in body
        ]
        assert None not in starts, body
        assert len(starts) == len(set(starts)), "one line per row"
        assert set(starts) in (labels, published, labels - {"adam"}), starts


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (make test installs it)"
)
def test_html_report_renders_in_chromium(sweep, tmp_path, capsys):
    uri, _ = sweep
    page = tmp_path / "report.html"
    args = ["--tracking-uri", uri, "--sweep", "rep", "--epochs", "1,2", "--baseline", "adam", "--html", str(page)]
    assert compare.main(args) == 0
    text = page.read_text()
    for section in ("Verdict", "Differences on the primary endpoint", "val_acc@2 against adam", "<details>",
                    "Learning curves", "error rate", "Time to target", "Kaplan–Meier", "Performance profiles", "<svg"):  # fmt: skip
        assert section in text, section
    assert text.index("Verdict") < text.index("<h2>Comparison</h2>"), "the verdict comes first"
    if FASHION.exists():
        assert "Ranks across datasets" in text and "fashion_mnist" in text
    fetches = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", text)
    assert fetches == [], "the page fetches nothing (XML namespace names are not fetched)"
    assert CHROMIUM is not None, "CI must test the report in a real browser"
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
             "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip
    result = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1300,2400", page.as_uri()],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<table") >= 3 and "<svg" in dom
    client = mlflow.MlflowClient(uri)
    summary = client.search_runs(
        [client.get_experiment_by_name("optbench").experiment_id], f"tags.`{SUMMARY_TAG}` = 'summary'"
    )
    assert "report.html" in {a.path for a in client.list_artifacts(summary[0].info.run_id)}, (
        "the report opens in the MLflow UI"
    )
