"""Beyond one process, on real engines, on loopback: PostgreSQL tracking, submitit sweeps, shared Optuna
studies, and multi-node DDP simulated with two node processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import mlflow
import optuna
import pytest

from optbench.cli import compare, rerun, tune

from .helpers import free_port, histories, quick_args, run_cli, runs_of, start_cli, start_server, stop_server

pytestmark = pytest.mark.slow
HAVE_POSTGRES = (
    bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))) if Path("/usr/lib/postgresql").exists() else False
)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(
    (not HAVE_POSTGRES or os.geteuid() != 0) and not os.environ.get("CI"), reason="needs Debian's postgresql and root"
)
def test_postgres_backed_server_keeps_every_run(data_root, tmp_path, capsys):
    port, pg_port = free_port(), free_port()
    pg_data = Path(tempfile.mkdtemp(prefix="optbench-pg-test-", dir="/tmp"))
    env = {"OPTBENCH_PG_DATA": str(pg_data), "OPTBENCH_PG_PORT": str(pg_port)}
    server, uri = start_server(["--port", str(port), "--backend", "postgres"], env, tmp_path)
    try:
        assert port_open(pg_port)
        cmdlines = [
            Path(f"/proc/{p}/cmdline").read_bytes()
            for p in os.listdir("/proc")
            if p.isdigit() and Path(f"/proc/{p}/cmdline").exists()
        ]
        secret = (pg_data / "password").read_text().encode()
        assert not [c for c in cmdlines if secret in c], "the database password is visible in ps"
        # Concurrent writers: a parallel sweep and two more processes, all at once.
        extra = [
            start_cli(
                *quick_args(data_root, uri, tmp_path / f"p{i}", f"seed={10 + i}", "sweep_id=pg"),
                stdout=subprocess.DEVNULL,
            )
            for i in range(2)
        ]
        run_cli(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *quick_args(data_root, uri, tmp_path, "seed=1,2", "sweep_id=pg"),
        )
        assert all(p.wait(timeout=600) == 0 for p in extra), [p.stderr.read()[-2000:] for p in extra]
        client, runs = runs_of(uri)
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
        assert all([s for s, _ in histories(client, r.info.run_id)["val_acc"]] == [1, 2] for r in runs), (
            "no metric lost"
        )
        assert compare.main(["--tracking-uri", uri, "--sweep", "pg", "--format", "json", "--no-log"]) == 0
        assert json.loads(capsys.readouterr().out)["rows"][0]["seeds"] == 4
        assert rerun.main([runs[0].info.run_id, "--tracking-uri", uri]) == 0
        assert "optbench-rerun: identical" in capsys.readouterr().out
    finally:
        stop_server(server)
    assert not port_open(port) and not port_open(pg_port), "SIGTERM stops MLflow and PostgreSQL"
    subprocess.run(["rm", "-rf", str(pg_data)], check=False)


def test_submitit_local_launcher_runs_each_job_as_a_run(data_root, tracking_uri, tmp_path):
    run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        *quick_args(data_root, tracking_uri, tmp_path, "optimizer=adam,sgd", "trainer.max_epochs=1"),
    )
    client, runs = runs_of(tracking_uri)
    assert sorted(r.data.tags["optimizer"] for r in runs) == ["adam", "sgd"]
    assert all(r.info.status == "FINISHED" and histories(client, r.info.run_id)["val_acc"] for r in runs)
    for job in ("0", "1"):
        folder = tmp_path / "multirun" / job
        assert json.loads((folder / "optbench_run.json").read_text())["status"] == "FINISHED"
    logs = list((tmp_path / "multirun").rglob("*_log.out")) + list((tmp_path / "multirun").rglob("*.log"))
    assert logs, "job logs are kept with the sweep"


def test_two_workers_share_one_study_with_an_exact_budget(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPTBENCH_DATA_ROOT", str(data_root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'tune.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["--optimizers", "sgd", "--trials", "5", "--seeds", "1", "--epochs", "1", "--subset", "256", "--tracking-uri", uri,
            "--sweep-id", "tw", "--storage", storage, "--workers", "2"]  # fmt: skip
    assert tune.main(args) == 0
    study = optuna.load_study(study_name="tw-sgd", storage=storage)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials), "exactly the budget"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("optbench").experiment_id
    trials = client.search_runs([exp], "tags.sweep_id = 'tw-search'")
    assert sorted(t.data.tags["optuna_worker"] for t in trials) == ["0", "0", "0", "1", "1"], "3 + 2 trials"
    summary = client.search_runs([exp], "attributes.run_name = 'tuning-sgd'")[0]
    assert summary.data.metrics["best_val_acc"] == pytest.approx(study.best_value)
    assert summary.data.tags["tuning_trials"] == "5" and summary.data.tags["optuna_workers"] == "2"
    labels = sorted(
        r.data.tags["label"] for r in client.search_runs([exp], "tags.sweep_id = 'tw'") if "label" in r.data.tags
    )
    assert labels == ["sgd", "sgd-tuned"], "the same results as a one-worker tuning"
    assert "sgd-tuned" in capsys.readouterr().out


def test_two_node_processes_train_one_run_like_one_node_with_two_devices(data_root, tmp_path):
    common = [f"data.root={data_root}", "data.subset=512", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
              "trainer=ddp_cpu", "threads=1", "callbacks.tracking.system_metrics=false"]  # fmt: skip
    one_uri = f"sqlite:///{tmp_path / 'one.db'}"
    run_cli(*common, "trainer.devices=2", f"logger.tracking_uri={one_uri}", f"hydra.run.dir={tmp_path}/one")
    two_uri = f"sqlite:///{tmp_path / 'two.db'}"
    port = free_port()
    nodes = [
        start_cli(
            *common,
            "trainer.num_nodes=2",
            "trainer.devices=1",
            f"logger.tracking_uri={two_uri}",
            f"hydra.run.dir={tmp_path}/node{rank}",
            env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank)},
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outcomes = [node.communicate(timeout=600) for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [err[-2000:] for _, err in outcomes]
    client_one, (single,) = runs_of(one_uri)
    client_two, runs = runs_of(two_uri)
    assert len(runs) == 1, "one MLflow run, written by global rank 0"
    run = runs[0]
    assert run.data.tags["world_size"] == "2" and run.data.tags["ddp_ranks_in_sync"] == "true"
    assert histories(client_two, run.info.run_id) == histories(client_one, single.info.run_id), "the same metrics"
    shutil.rmtree(tmp_path / "node1", ignore_errors=True)
