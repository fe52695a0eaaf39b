"""``hydra/sweeper=adaptive`` end to end, on a slice of the real MNIST: a clear difference stops early, two
identical configurations run to max_seeds and stay unresolved, a second run (or one after an interruption,
or with a larger max_seeds) trains only what the store lacks."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest

from optbench.cli import compare
from tests.helpers import compare_json, quick_args, run_cli, runs_of, start_cli

pytestmark = pytest.mark.slow

# The cache reuses runs of a clean checkout only; the suite may run from a tree with edits, so its
# subprocesses see this checkout as a clean tree at a fixed commit.
SITE = """
import optbench.provenance as p
p.git_state = lambda path=None: {"git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": "false"}
"""


# The second job this process trains says so after its second step and waits there for the test's Ctrl-C: the
# interruption lands mid-training however fast a step is (a fixed sleep let a fast machine finish every job).
PAUSE = """
import time
import optbench.module as m
_fits, _start, _step = [], m.ClassifierModule.on_train_start, m.ClassifierModule.training_step
def on_train_start(self):
    _fits.append(1)
    _start(self)
def training_step(self, batch, batch_idx):
    out = _step(self, batch, batch_idx)
    if len(_fits) == 2 and batch_idx == 1:
        print("SECOND JOB MID-TRAINING", flush=True)
        while True:
            time.sleep(0.1)
    return out
m.ClassifierModule.on_train_start, m.ClassifierModule.training_step = on_train_start, training_step
"""


def _site(path: Path, code: str) -> dict:
    path.mkdir()
    (path / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(path)}


@pytest.fixture
def clean_env(tmp_path) -> dict:
    return _site(tmp_path / "site", SITE)


def _args(data_root, tracking_uri, tmp_path, *extra):
    return [
        "-m", *quick_args(data_root, tracking_uri, tmp_path, "data.subset=256", "trainer.max_epochs=1"),
        "hydra/sweeper=adaptive", *extra,
    ]  # fmt: skip


def _finished(tracking_uri) -> collections.Counter:
    _, runs = runs_of(tracking_uri)
    return collections.Counter(
        (r.data.tags["label"], r.data.tags["seed"])
        for r in runs
        if r.info.status == "FINISHED" and "optbench.kind" not in r.data.tags
    )


def test_a_clear_difference_stops_early_and_a_second_run_trains_nothing(data_root, tracking_uri, tmp_path, clean_env):
    args = _args(data_root, tracking_uri, tmp_path, "optimizer=sgd,adam", "sweep_id=clear", "hydra.sweeper.max_seeds=6")
    first = run_cli(*args, env=clean_env)
    assert "every adjacent pair of the ranking resolved" in first.stdout
    assert _finished(tracking_uri) == {(label, str(s)): 1 for label in ("sgd", "adam") for s in (1, 2, 3)}
    payload = compare_json(tracking_uri, "--sweep", "clear", "--epochs", "1")
    assert payload["decision"].startswith("Adaptive sweep clear: stopped after round 1 with 3 seeds per row")
    assert payload["verdict"][0]["tiers"] == [["adam"], ["sgd"]]
    page = tmp_path / "report.html"
    assert compare.main(["--tracking-uri", tracking_uri, "--sweep", "clear", "--epochs", "1", "--html", str(page)]) == 0
    verdict = page.read_text().split("<h2>Verdict</h2>")[1].split("<h2>")[0]
    assert "Adaptive sweep clear: stopped after round 1" in verdict
    # The same command again, with a larger max_seeds and through the packed launcher: nothing trains.
    start = time.time()
    again = run_cli(*args[:-1], "hydra.sweeper.max_seeds=10", "hydra/launcher=packed", env=clean_env)
    assert again.stdout.count("FINISHED (already in the store)") == 6
    assert "0 trained, 6 from the store" in again.stderr
    assert sum(_finished(tracking_uri).values()) == 6
    assert time.time() - start < 120


def test_identical_configurations_run_to_max_seeds_unresolved(data_root, tracking_uri, tmp_path, clean_env):
    args = _args(data_root, tracking_uri, tmp_path, "optimizer=adam", "label=a,b", "sweep_id=same",
                 "hydra.sweeper.max_seeds=4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    proc = run_cli(*args, env=clean_env)
    assert "stopped after round 2 with 4 seeds per row (max_seeds reached" in proc.stdout
    assert "a vs b (identical on every seed; no number of seeds separates them)" in proc.stdout
    assert _finished(tracking_uri) == {(label, str(s)): 1 for label in "ab" for s in (1, 2, 3, 4)}


def test_an_interrupted_adaptive_sweep_continues_with_only_what_is_missing(
    data_root, tracking_uri, tmp_path, clean_env
):
    args = _args(data_root, tracking_uri, tmp_path, "optimizer=adam", "label=a,b", "sweep_id=cut",
                 "hydra.sweeper.max_seeds=3", "trainer.max_epochs=3")  # fmt: skip
    proc = start_cli(*args, env=_site(tmp_path / "pause", SITE + PAUSE))
    for line in proc.stdout:
        if "SECOND JOB MID-TRAINING" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    done = _finished(tracking_uri)
    assert sum(done.values()) == 1
    _, runs = runs_of(tracking_uri)
    assert sorted(r.info.status for r in runs if "optbench.kind" not in r.data.tags) == ["FINISHED", "KILLED"]
    again = run_cli(*args, env=clean_env)
    assert again.stdout.count("FINISHED (already in the store)") == sum(done.values())
    assert _finished(tracking_uri) == {(label, str(s)): 1 for label in "ab" for s in (1, 2, 3)}


def test_the_sweeper_chooses_the_seeds(data_root, tracking_uri, tmp_path):
    proc = run_cli(*_args(data_root, tracking_uri, tmp_path, "optimizer=sgd,adam", "seed=1,2"), check=False)
    assert proc.returncode == 2
    assert "hydra/sweeper=adaptive chooses the seeds itself" in proc.stderr
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists() or not _finished(tracking_uri)


def test_rows_whose_neighbours_are_resolved_get_no_more_seeds(data_root, tracking_uri, tmp_path, clean_env):
    """Adam is far ahead of SGD and Adagrad: once adam > sgd is resolved, only the open pair trains on."""
    args = _args(data_root, tracking_uri, tmp_path, "optimizer=adam,sgd,adagrad", "sweep_id=rows",
                 "hydra.sweeper.max_seeds=6")  # fmt: skip
    proc = run_cli(*args, env=clean_env)
    seeds = collections.Counter(label for label, _ in _finished(tracking_uri))
    assert seeds["adam"] < 6 and seeds["adam"] <= seeds["sgd"] == seeds["adagrad"]
    assert set(_finished(tracking_uri)) == {(r, str(s)) for r in seeds for s in range(1, seeds[r] + 1)}
    assert f"(seed {seeds['adam']}, 3 rows)" in proc.stderr or seeds["adam"] == 3
