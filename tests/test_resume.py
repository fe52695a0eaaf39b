"""Interrupted runs end KILLED with their epochs kept, and resume to the numbers of an uninterrupted run."""

from __future__ import annotations

import signal
import time

import mlflow
import pytest

from optbench import store

from .helpers import compare_json, quick_args, resume_args, run_cli, runs_of, start_cli, wait_for_epoch

pytestmark = pytest.mark.slow


def val_history(uri, run_id):
    client = mlflow.MlflowClient(uri)
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]


INTERRUPTED = ["data.subset=3072", "trainer.max_epochs=8", "seed=5", "optimizer=adam"]  # long enough to interrupt


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> list:
    """val_loss per epoch of the run the interrupted ones must equal, trained once for both signals."""
    tmp = tmp_path_factory.mktemp("straight")
    uri = f"sqlite:///{tmp / 'b.db'}"
    run_cli(*quick_args(data_root, uri, tmp, *INTERRUPTED))
    _, straight = runs_of(uri)
    return val_history(uri, straight[0].info.run_id)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_interrupt_then_resume_equals_uninterrupted(data_root, tmp_path, sig, uninterrupted):
    args = INTERRUPTED
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    proc = start_cli(*quick_args(data_root, uri, tmp_path, *args))
    run_id = wait_for_epoch(uri, 1, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, f"README: 1 when a run was killed\n{out[-1500:]}"
    assert ": KILLED val_acc=" in out and f"run_id={run_id}" in out, "the run's last line, also when interrupted"
    client = mlflow.MlflowClient(uri)
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["failure_reason"] == "interrupted"
    kept = val_history(uri, run_id)
    assert kept and kept[0][0] == 1 and len(kept) < 8, "completed epochs are kept"
    assert "last.ckpt" in {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "last")}

    proc = run_cli(*resume_args(data_root, uri, tmp_path, run_id))
    assert "val_acc=nan" not in proc.stdout
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags.get("resumed") == "true"
    assert "failure_reason" not in resumed.data.tags, "no stale failure reason on a finished run"
    assert len(client.get_metric_history(run_id, "total_time_s")) == 1
    history = val_history(uri, run_id)
    assert [step for step, _ in history] == list(range(1, 9)), "no duplicated or missing epoch"

    assert history == uninterrupted, "resumed run equals an uninterrupted one"


def test_resume_of_unknown_run_is_clear(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store.prepare(uri, "optbench")  # the store exists, the run does not
    proc = run_cli(f"logger.tracking_uri={uri}", "resume=deadbeef", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "No run with id 'deadbeef'" in proc.stderr


def test_a_live_run_is_not_resumed_and_a_killed_one_is(data_root, tmp_path):
    """Two writers on one run once logged total_time_s twice; a SIGKILLed run stayed RUNNING, listed like a
    live one. Now the heartbeat tells them apart."""
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    proc = start_cli(*quick_args(data_root, uri, tmp_path, "data.subset=3072", "trainer.max_epochs=20", "seed=5"))
    run_id = wait_for_epoch(uri, 1, proc)
    client = mlflow.MlflowClient(uri)
    while "last.ckpt" not in {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "last")}:
        time.sleep(0.5)
    second = run_cli(*resume_args(data_root, uri, tmp_path, run_id), check=False)
    assert second.returncode == 2 and f"still being trained by process {proc.pid} on host" in second.stderr
    assert "Traceback" not in second.stderr
    proc.kill()
    proc.wait(timeout=60)
    assert client.get_run(run_id).info.status == "RUNNING", "SIGKILL leaves it RUNNING"
    (stale,) = compare_json(uri, "--epochs", "1")["excluded"]
    assert stale["status"] == "STALE (killed?)" and f"resume={run_id}" in stale["reason"]
    run_cli(*resume_args(data_root, uri, tmp_path, run_id))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "total_time_s")) == 1, "one writer"
