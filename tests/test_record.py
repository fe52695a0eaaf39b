"""The record tells the truth: what ran is what is logged, compared and rerun (real stores, no mocks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import yaml

from optbench import config, pipeline, store
from optbench.cli import compare, rerun

from .helpers import REPO, compare_json, compose_cfg, histories, quick_args, run_cli, runs_of, start_cli, tiny_cfg

pytestmark = pytest.mark.slow


def tiny(data_root, uri, *extra):
    return tiny_cfg(data_root, uri, "sweep_id=rec", *extra)


@pytest.fixture(scope="module")
def record_store(data_root, tmp_path_factory):
    """Two seeds of one config, the same config and seed again, another subset, and a rerun."""
    tmp = tmp_path_factory.mktemp("record")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runs = {
        "first": pipeline.run(tiny(data_root, uri, "seed=1")).run_id,
        "seed2": pipeline.run(tiny(data_root, uri, "seed=2")).run_id,
        "again": pipeline.run(tiny(data_root, uri, "seed=1")).run_id,
        "other": pipeline.run(tiny(data_root, uri, "seed=1", "data.subset=128")).run_id,
    }
    assert rerun.main([runs["first"], "--tracking-uri", uri]) == 0
    return uri, runs


def test_effective_hyperparameters_are_logged(record_store, tmp_path):
    uri, runs = record_store
    first = runs["first"]
    client = mlflow.MlflowClient(uri)
    params = client.get_run(first).data.params
    assert params["optimizer.lr"] == "0.001" and params["optimizer.eps"] == "1e-07"
    assert params["optimizer.betas"] == "[0.9, 0.999]" and params["optimizer.epsilon_hat"] == "True"
    assert params["optimizer.weight_decay"] == "0.0" and params["optimizer.foreach"] == "False"
    assert params["optimizer.fused"] == "True", "the path taken (it changes last bits) is logged"
    assert int(params["threads"]) >= 1 and params["trainer.max_epochs"] == "2"
    assert not [k for k, v in params.items() if k.startswith("optimizer.") and v == "None"], "no value left as None"
    exp = client.get_experiment_by_name("optbench").experiment_id
    found = client.search_runs([exp], "params.`optimizer.lr` = '0.001'")
    assert first in {r.info.run_id for r in found}, "the MLflow UI filter on the learning rate works"
    logged = yaml.safe_load(open(client.download_artifacts(first, "config.yaml", str(tmp_path))))
    assert logged["optimizer"]["lr"] == 0.001 and logged["threads"] == int(params["threads"])


def test_rows_are_configurations_not_labels(record_store, capsys):
    uri, runs = record_store
    payload = compare_json(uri, "--sweep", "rec", "--epochs", "1,2")
    rows = {r["optimizer"]: r for r in payload["rows"]}
    assert set(rows) == {"adam [data.subset=128]", "adam [data.subset=256]"}, "another subset is another row"
    assert rows["adam [data.subset=256]"]["seeds"] == 2, "seed 1 twice counts once; the rerun is not a seed"
    assert rows["adam [data.subset=128]"]["seeds"] == 1
    notes = "\n".join(payload["notes"])
    assert "same configuration and seed" in notes and runs["first"][:8] in notes, "the earlier duplicate is named"
    assert "1 rerun(s) not counted as seeds" in notes
    client = mlflow.MlflowClient(uri)
    final = {k: client.get_metric_history(runs[k], "val_acc")[-1].value for k in ("again", "seed2")}
    row = rows["adam [data.subset=256]"]
    assert row["val_acc@2_n"] == 2 and row["val_acc@2"] == pytest.approx(
        (final["again"] + final["seed2"]) / 2, abs=1e-15
    )

    compare.main(["--tracking-uri", uri, "--sweep", "rec", "--format", "json", "--no-log", "--include-reruns"])
    labels = {r["optimizer"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert "adam (reruns)" in labels

    baseline = "adam [data.subset=256]"
    assert compare.main(["--tracking-uri", uri, "--sweep", "rec", "--no-log", "--baseline", baseline]) == 0
    terminal = " ".join(capsys.readouterr().out.split())
    assert "adam [data.subset=128]" in terminal and f"against {baseline} (baseline)" in terminal, (
        "the terminal table shows what splits the rows (not eaten as rich markup)"
    )


def test_compare_never_creates_a_store(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert compare.main(["--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "No tracking store at" in capsys.readouterr().err
    assert not missing.exists() and not missing.parent.exists()


def test_rerun_on_one_core_is_identical(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    original = pipeline.run(tiny(data_root, uri, "seed=3"))
    logged_threads = mlflow.MlflowClient(uri).get_run(original.run_id).data.params["threads"]
    proc = subprocess.run(
        [sys.executable, "-m", "optbench.cli.rerun", original.run_id, "--tracking-uri", uri],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),  # what `taskset -c 0` does
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "optbench-rerun: identical: 8 per-epoch values compared" in proc.stdout
    _, runs = runs_of(uri)
    new = next(r for r in runs if r.data.tags.get("rerun_of") == original.run_id)
    assert new.data.params["threads"] == logged_threads, "the thread count was restored"
    assert new.data.tags["rerun_verdict"] == "identical"


def test_rerun_of_a_diverged_run_compares_where_it_diverged(data_root, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    original = pipeline.run(tiny(data_root, uri, "optimizer=sgd", "optimizer.lr=1e12"))
    assert original.status == "FAILED"
    code = rerun.main([original.run_id, "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert "diverged_step" in out and "optbench-rerun: identical: 2 per-epoch values compared" in out
    assert code == 0


def test_nothing_compared_is_never_a_match(data_root, tmp_path, capsys):
    """An original with no completed epoch (a config and nothing else) cannot be matched."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = pipeline.run(tiny(data_root, uri, "seed=4", "trainer.max_epochs=1"))
    client = mlflow.MlflowClient(uri)
    empty = client.create_run(client.get_run(done.run_id).info.experiment_id, run_name="empty")
    client.log_artifact(empty.info.run_id, client.download_artifacts(done.run_id, "config.yaml", str(tmp_path)))
    client.set_terminated(empty.info.run_id, "KILLED")
    assert rerun.main([empty.info.run_id, "--tracking-uri", uri]) == 3
    assert "optbench-rerun: nothing to compare" in capsys.readouterr().out
    new = next(r for r in runs_of(uri)[1] if r.data.tags.get("rerun_of") == empty.info.run_id)
    assert new.data.tags["rerun_match"] == "false"


def test_rerun_writes_to_the_store_it_was_given(data_root, tmp_path, monkeypatch, capsys):
    """The logged config names the original store; MLFLOW_TRACKING_URI (here a moved copy) wins."""
    moved = tmp_path / "moved"
    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    original = pipeline.run(tiny(data_root, uri, "seed=5", "trainer.max_epochs=1"))
    moved.mkdir()
    shutil.copy(tmp_path / "a" / "mlflow.db", moved / "mlflow.db")
    moved_uri = f"sqlite:///{moved / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", moved_uri)
    assert rerun.main([original.run_id]) == 0
    assert "identical" in capsys.readouterr().out
    assert len(runs_of(moved_uri)[1]) == 2 and len(runs_of(uri)[1]) == 1, "the rerun went to the given store only"


def test_resume_takes_no_other_overrides(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = pipeline.run(tiny(data_root, uri, "trainer.max_epochs=1")).run_id
    client = mlflow.MlflowClient(uri)
    client.set_terminated(run_id, "KILLED")  # as if interrupted, so that it could be resumed
    proc = run_cli(
        f"logger.tracking_uri={uri}",
        f"resume={run_id}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path}/r",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"optbench-rerun {run_id} trainer.max_epochs=2" in proc.stderr
    assert client.get_run(run_id).info.status == "KILLED", "nothing was resumed"
    client.set_terminated(run_id, "FINISHED")
    proc = run_cli(f"logger.tracking_uri={uri}", f"resume={run_id}", f"hydra.run.dir={tmp_path}/r", check=False)
    assert proc.returncode == 2 and "has FINISHED: there is nothing to resume" in proc.stderr


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "abc"])
def test_impossible_seed_is_a_clean_error(data_root, tmp_path, seed):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = run_cli(*quick_args(data_root, uri, tmp_path, f"seed={seed}"), check=False)
    assert proc.returncode == 2 and "Invalid seed=" in proc.stderr and "Traceback" not in proc.stderr
    assert runs_of(uri)[1] == []


def test_a_finite_training_loss_does_not_hide_divergence(data_root, tmp_path):
    """The only step's loss is finite but its update is not: the weights are finite but huge (lr 1e38),
    validation sees NaN. The run must not finish, and is never averaged in."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = tiny(
        data_root, uri, "optimizer=sgd", "optimizer.lr=1e38", "trainer.limit_train_batches=1", "trainer.max_epochs=1"
    )
    result = pipeline.run(cfg)
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert result.status == "FAILED" and run.info.status == "FAILED"
    assert (
        run.data.tags["failure_reason"] == "diverged"
        and "diverged: the validation loss became nan" in run.data.tags["failure_detail"]
    )
    compared = compare_json(uri)
    assert compared["rows"] == [] and compared["excluded"][0]["status"] == "DIVERGED", "never averaged in"


def test_processes_started_together_on_a_new_store_all_finish(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    procs = [
        start_cli(*quick_args(data_root, uri, tmp_path / str(i), f"seed={i}", "trainer.max_epochs=1")) for i in range(4)
    ]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in outcomes), [err[-1500:] for code, err in outcomes if code]
    client, runs = runs_of(uri)
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" and len(histories(client, r.info.run_id)["val_acc"]) == 1 for r in runs)


def test_store_open_for_readers_refuses_a_missing_sqlite_file(tmp_path):
    with pytest.raises(store.StoreError, match="No tracking store at"):
        store.open_existing(f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()


def test_missing_mnist_fails_under_ci(tmp_path):
    """With CI set, the data_root fixture fails instead of skipping; without it, it skips."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_needs_data(data_root):\n    assert data_root\n")
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    base = {**os.environ, "OPTBENCH_DATA_ROOT": str(tmp_path / "no-mnist-here")}
    ci = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env={**base, "CI": "1"},
        capture_output=True,
        text=True,
    )
    assert ci.returncode == 1 and "real MNIST not found" in ci.stdout and "1 error" in ci.stdout
    local = {k: v for k, v in base.items() if k != "CI"}
    dev = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=local,
        capture_output=True,
        text=True,
    )
    assert dev.returncode == 0 and "1 skipped" in dev.stdout


def test_config_validation_names_the_seed_range():
    with pytest.raises(config.ConfigError, match="from 0 to 4294967295"):
        config.validate(compose_cfg("seed=-1"))
