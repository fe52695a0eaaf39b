"""End to end through the CLI: real MNIST slice, Hydra, Lightning, MLflow."""

from __future__ import annotations

import math

import pytest
import yaml

from optbench import config, pipeline

from .helpers import compose_cfg, quick_args, run_cli, runs_of

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s")


@pytest.mark.slow
def test_single_run_is_tracked(data_root, tracking_uri, tmp_path):
    proc = run_cli(*quick_args(data_root, tracking_uri, tmp_path, "optimizer=adam", "seed=7"))
    client, runs = runs_of(tracking_uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "adam-mnist-seed7"
    assert f"run_id={run.info.run_id}" in proc.stdout and "val_acc=" in proc.stdout
    for name in METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], name
    total = client.get_metric_history(run.info.run_id, "total_time_s")
    epochs = client.get_metric_history(run.info.run_id, "epoch_time_s")
    assert len(total) == 1 and total[0].value >= sum(m.value for m in epochs) * 0.9
    val_acc = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
    assert 0.5 < val_acc[2] <= 1.0, "two epochs on 512 samples learn something"
    tags = run.data.tags
    assert tags["optimizer"] == "adam" and tags["data"] == "mnist" and tags["seed"] == "7"
    assert "git_commit" in tags and "version.torch" in tags
    params = run.data.params
    assert params["optimizer.name"] == "adam" and params["data.batch_size"] == "64" and params["seed"] == "7"
    config = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))))
    assert config["optimizer"]["name"] == "adam" and config["trainer"]["max_epochs"] == 2


@pytest.mark.slow
def test_multirun_shares_sweep_id(data_root, tracking_uri, tmp_path):
    run_cli("-m", *quick_args(data_root, tracking_uri, tmp_path, "optimizer=adam,sgd", "trainer.max_epochs=1"))
    _, runs = runs_of(tracking_uri)
    assert sorted(r.data.tags["optimizer"] for r in runs) == ["adam", "sgd"]
    sweep_ids = {r.data.tags.get("sweep_id") for r in runs}
    assert len(sweep_ids) == 1 and None not in sweep_ids
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_offline_missing_data_fails_cleanly(tmp_path, tracking_uri):
    proc = run_cli(
        f"data.root={tmp_path}/empty",
        "data.download=false",
        f"logger.tracking_uri={tracking_uri}",
        f"hydra.run.dir={tmp_path}/outputs",
        check=False,
    )
    assert proc.returncode != 0
    assert "Dataset not found" in proc.stderr and "OPTBENCH_DATA_ROOT" in proc.stderr
    assert "Traceback" not in proc.stderr
    _, runs = runs_of(tracking_uri)
    assert runs == []


OPTIMIZERS = config.options("optimizer")


@pytest.mark.parametrize("preset", ["keras", "torch"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_through_the_pipeline(optimizer, preset, data_root):
    cfg = compose_cfg(
        f"optimizer={optimizer}",
        f"optimizer.preset={preset}",
        f"data.root={data_root}",
        "data.subset=256",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.enable_progress_bar=false",
        "~logger",
    )
    result = pipeline.run(cfg)
    assert result.status == "FINISHED"
    assert 0.0 <= result.metrics["val_acc"] <= 1.0 and math.isfinite(result.metrics["train_loss"])
