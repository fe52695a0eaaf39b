"""Beyond the seed's table: time to target, Fashion-MNIST, tuned mode, optimizer paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
import torch

from optbench import trajectories
from optbench.cli import compare, tune
from optbench.cli import trajectories as trajectories_cli
from optbench.tracking import target_metric_names, time_to_targets

from .helpers import quick_args, run_cli, runs_of

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_time_to_target_on_a_synthetic_sequence():
    val_acc = [0.90, 0.975, 0.972, 0.985, 0.991]
    epoch_time = [10.0, 11.0, 9.0, 10.0, 10.0]
    reached: set[float] = set()
    logged = {}
    elapsed = 0.0
    for epoch, (acc, t) in enumerate(zip(val_acc, epoch_time, strict=True), start=1):
        elapsed += t
        logged.update(time_to_targets(acc, epoch, epoch * 100, elapsed, [0.97, 0.98, 0.99, 0.995], reached))
    assert logged["epoch_to_val_acc_0.97"] == 2 and logged["time_to_val_acc_0.97_s"] == 21.0
    assert logged["step_to_val_acc_0.97"] == 200, "first reached, not re-logged when it dips and recovers"
    assert logged["epoch_to_val_acc_0.98"] == 4 and logged["time_to_val_acc_0.98_s"] == 40.0
    assert logged["epoch_to_val_acc_0.99"] == 5 and logged["time_to_val_acc_0.99_s"] == 50.0
    assert target_metric_names(0.995)[0] not in logged, "absent when never reached"


@pytest.mark.slow
def test_targets_are_logged_by_a_run_and_ranked(data_root, tracking_uri, tmp_path, capsys):
    run_cli(
        *quick_args(
            data_root,
            tracking_uri,
            tmp_path,
            "callbacks.tracking.val_acc_targets=[0.5,0.999]",
            "callbacks.tracking.system_metrics_interval_s=60",  # longer than the run: the tail sample must be kept
            "optimizer=adam,sgd",
            "sweep_id=t",
        ),
        "-m",
    )
    client, runs = runs_of(tracking_uri)
    adam = next(r for r in runs if r.data.tags["optimizer"] == "adam")
    history = {m.step: m.value for m in client.get_metric_history(adam.info.run_id, "val_acc")}
    first = min(e for e, v in history.items() if v >= 0.5)
    assert adam.data.metrics["epoch_to_val_acc_0.5"] == first
    assert adam.data.metrics["time_to_val_acc_0.5_s"] > 0
    assert "epoch_to_val_acc_0.999" not in adam.data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in adam.data.metrics), "system metrics recorded"
    compare.main(
        [
            "--tracking-uri",
            tracking_uri,
            "--sweep",
            "t",
            "--epochs",
            "1,2",
            "--rank-by",
            "epoch_to_val_acc_0.5",
            "--format",
            "json",
            "--no-log",
        ]
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    reached = [r["epoch_to_val_acc_0.5"] for r in rows if r["epoch_to_val_acc_0.5"] is not None]
    assert reached == sorted(reached) and rows[0]["epoch_to_val_acc_0.5"] is not None


@pytest.mark.skipif(
    not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed (make test installs it)"
)
@pytest.mark.slow
def test_fashion_mnist_trains_from_debian_files(tracking_uri, tmp_path):
    root = tmp_path / "fashion"
    run_cli(
        *quick_args(root, tracking_uri, tmp_path, "data=fashion_mnist", "trainer.max_epochs=1", "data.download=false")
    )
    client, runs = runs_of(tracking_uri)
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "fashion_mnist"
    assert run.info.run_name == "adam-fashion_mnist-seed42"
    assert 0.3 < run.data.metrics["val_acc"] < 1.0
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 47_040_016


@pytest.mark.slow
def test_tuned_mode_two_trials(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPTBENCH_DATA_ROOT", str(data_root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'tune.db'}"
    code = tune.main(
        [
            "--optimizers",
            "sgd_momentum",
            "--trials",
            "2",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--subset",
            "512",
            "--tracking-uri",
            uri,
            "--sweep-id",
            "tq",
            "--out",
            str(tmp_path / "sweeps"),
        ]
    )
    assert code == 0
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("optbench")
    summary = client.search_runs([exp.experiment_id], "attributes.run_name = 'tuning-sgd_momentum'")[0]
    assert {"optimizer.lr", "optimizer.momentum"} <= set(summary.data.params)
    assert 0 < summary.data.metrics["best_val_acc"] <= 1
    trials = client.search_runs([exp.experiment_id], "tags.sweep_id = 'tq-search'")
    assert len(trials) == 2 and all(t.data.params["data.val_split"] == "10000" for t in trials), (
        "tuned on held-out train data"
    )
    final = client.search_runs([exp.experiment_id], "tags.sweep_id = 'tq'")
    labels = sorted(r.data.tags["label"] for r in final if "label" in r.data.tags)
    assert labels == ["sgd_momentum", "sgd_momentum-tuned"]
    tuned = next(r for r in final if r.data.tags.get("label") == "sgd_momentum-tuned")
    assert float(tuned.data.params["optimizer.lr"]) == pytest.approx(float(summary.data.params["optimizer.lr"]))
    assert tuned.data.params["data.val_split"] == "None", "the tuned setting is scored on the test set"
    out = capsys.readouterr().out
    assert "sgd_momentum-tuned" in out


def test_trajectory_figures_and_convergence(tmp_path):
    assert trajectories_cli.main(["--out", str(tmp_path), "--no-log"]) == 0
    for name in trajectories.FUNCTIONS:
        png = tmp_path / f"trajectories_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for fn in trajectories.FUNCTIONS.values():
        if not fn.convex and fn.minimum is None:
            continue
        start = fn.f(torch.tensor(fn.start, dtype=torch.float64)).item()
        for name in fn.lr:
            final = fn.f(torch.tensor(trajectories.trajectory(name, fn)[-1])).item()
            assert final < 0.5 * start, f"{name} on {fn.name}: {final} vs start {start}"


def test_trajectories_logged_to_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'p.db'}"
    assert trajectories_cli.main(["--out", str(tmp_path), "--functions", "bowl", "--tracking-uri", uri]) == 0
    client, runs = runs_of(uri)
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["trajectories_bowl.png"]
    assert os.path.exists(tmp_path / "trajectories_bowl.png")


def test_search_spaces_become_optuna_distributions(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from optbench import tune as tuning

    space = tuning.search_space("sgd_momentum")
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 0.2, log=True)
    assert space["optimizer.momentum"] == FloatDistribution(0.5, 0.99)
    parse = OverridesParser.create().parse_overrides
    assert tuning.distribution(parse(["x=choice(1e-3,1e-2)"])[0]) == CategoricalDistribution([1e-3, 1e-2])
    assert tuning.distribution(parse(["x=range(1,5)"])[0]) == IntDistribution(1, 4)
    journal = tuning.storage(f"journal:{tmp_path / 'study.log'}")
    import optuna

    for worker in range(2):  # two workers on one journal file see one study
        study = optuna.create_study(study_name="s", storage=journal, load_if_exists=True, direction="maximize")
        trial = study.ask({"x": FloatDistribution(0, 1)})
        study.tell(trial, float(worker))
    assert len(optuna.load_study(study_name="s", storage=journal).trials) == 2
