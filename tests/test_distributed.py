"""DDP on CPU (gloo, 2 processes) from the Hydra app, single run and multirun; launcher configs."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from optbench.config import compose
from optbench.stored import CHECKPOINT

from .helpers import compose_cfg, quick_args, run_cli, runs_of

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s")


def assert_complete(client, run, epochs=2):
    assert run.info.status == "FINISHED"
    for name in METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, name)) == list(range(1, epochs + 1))
    assert run.data.tags["world_size"] == "2" and run.data.tags["ddp_ranks_in_sync"] == "true"


def one_process_eval(client, run, data_root, tmp_path):
    """Evaluate the run's final weights on the validation split in this single process."""
    ckpt = torch.load(client.download_artifacts(run.info.run_id, CHECKPOINT, str(tmp_path)), weights_only=True)
    cfg = compose_cfg(f"data.root={data_root}", "data.subset=512")
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    dm = instantiate(cfg.data)
    dm.setup()
    x, y = dm.splits["val"]
    with torch.inference_mode():
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).double().mean().item(), loss


@pytest.mark.slow
def test_ddp_cpu_single_run(data_root, tracking_uri, tmp_path):
    run_cli(*quick_args(data_root, tracking_uri, tmp_path, "trainer=ddp_cpu", "trainer.enable_progress_bar=false"))
    client, runs = runs_of(tracking_uri)
    assert len(runs) == 1, "exactly one MLflow run per job, written by rank 0"
    run = runs[0]
    assert_complete(client, run)
    val_acc, val_loss = one_process_eval(client, run, data_root, tmp_path)
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
    assert logged[2] == val_acc, "exact over the whole validation set, no padded duplicates"
    logged_loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    assert logged_loss[2] == pytest.approx(val_loss, rel=1e-5)
    outputs = tmp_path / "outputs"
    assert (outputs / ".hydra" / "config.yaml").exists()
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_ddp_cpu_multirun(data_root, tracking_uri, tmp_path):
    run_cli(
        "-m",
        *quick_args(data_root, tracking_uri, tmp_path, "trainer=ddp_cpu", "optimizer=adam,sgd", "trainer.max_epochs=1"),
    )
    client, runs = runs_of(tracking_uri)
    assert sorted(r.data.tags["optimizer"] for r in runs) == ["adam", "sgd"], "children did not rerun the sweep"
    for run in runs:
        assert_complete(client, run, epochs=1)
    job_dirs = sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir())
    assert job_dirs == ["0", "1"], "one Hydra output folder per job, none per rank"
    assert not (tmp_path / "outputs").exists()


def compose_with_hydra(*overrides):
    return compose(*overrides, hydra=True)


def test_launcher_configs_compose():
    slurm = compose_with_hydra("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4")
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.gpus_per_node == 4 and slurm.hydra.launcher.tasks_per_node == 4, "srun starts the ranks"
    local = compose_with_hydra("hydra/launcher=submitit_local")
    assert local.hydra.launcher._target_.endswith("LocalLauncher")
    joblib = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher") and joblib.hydra.launcher.n_jobs == 2


def test_ddp_gpu_configs_compose():
    cfg = compose_cfg("trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2")
    assert cfg.trainer.strategy.process_group_backend == "nccl" and cfg.trainer.num_nodes == 2
    assert compose_cfg("trainer=gpu").trainer.accelerator == "gpu"


@pytest.mark.slow
def test_ddp_ranks_train_with_the_threads_the_run_logs(data_root, tracking_uri, tmp_path):
    """Lightning's DDP set-up would reset torch's thread count to cores / processes on the node."""
    run_cli(
        *quick_args(
            data_root,
            tracking_uri,
            tmp_path,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            "threads=2",
            "trainer.max_epochs=1",
        )
    )
    _, (run,) = runs_of(tracking_uri)
    assert run.data.params["threads"] == "2" and run.data.tags["torch_threads"] == "2"
