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
    base, them = per_seed(uri, "adam", "val_loss", 2), per_seed(uri, "sgd_momentum", "val_loss", 2)
    diffs = [them[s] - base[s] for s in sorted(base)]
    assert other["val_loss@2_diff"] == pytest.approx(np.mean(diffs)) and other["val_loss@2_pairs"] == 3
    assert (other["val_loss@2_diff_ci_low"], other["val_loss@2_diff_ci_high"]) == pytest.approx(stats.t_interval(diffs))
    assert other["val_loss@2_p"] is None and other["val_loss@2_p_holm"] is None, "3 pairs cannot reach p < 0.05"
    assert "val_loss@2_diff" not in rows[("adam", "mnist")], "the baseline is not compared with itself"


def test_aggregate_best_takes_the_best_epoch_so_far(sweep):
    uri, _ = sweep
    rows = {(r["optimizer"], r["data"]): r for r in table(uri, "--aggregate", "best")["rows"]}
    best_loss = per_seed(uri, "adam", "val_loss", 2, best=False)
    best_loss = {s: min(v, per_seed(uri, "adam", "val_loss", 1)[s]) for s, v in best_loss.items()}
    assert rows[("adam", "mnist")]["val_loss@2"] == pytest.approx(np.mean(list(best_loss.values())))
    best_acc = per_seed(uri, "adam", "val_acc", 2, best=True)
    assert rows[("adam", "mnist")]["val_acc@2"] == pytest.approx(np.mean(list(best_acc.values())))


def test_terminal_table_fits_120_columns(sweep, capsys):
    uri, _ = sweep
    assert (
        compare.main(["--tracking-uri", uri, "--sweep", "rep", "--no-log", "--reference", "seed", "--baseline", "adam"])
        == 0
    )
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120
    words = " ".join(out.split())
    assert "seed (gap)" in words and "Paired difference to adam" in words and "run at least 6 seeds" in words
    main_tables = out.split("Paired difference to adam")[0]
    body = [line.strip() for line in main_tables.splitlines() if line.strip().startswith(("adam ", "sgd_momentum "))]
    assert len(body) >= 2 and all("±" in line for line in body), "one line per row, with its interval"
    assert "no test can reach p < 0.05" in words


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (make test installs it)"
)
def test_html_report_renders_in_chromium(sweep, tmp_path, capsys):
    uri, _ = sweep
    page = tmp_path / "report.html"
    assert compare.main(["--tracking-uri", uri, "--sweep", "rep", "--baseline", "adam", "--html", str(page)]) == 0
    text = page.read_text()
    for section in ("Paired difference to adam", "Learning curves", "Time to target", "Performance profiles", "<svg"):
        assert section in text
    assert "no test can reach p &lt; 0.05" in text, "3 seeds: the page says why no p is given"
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
