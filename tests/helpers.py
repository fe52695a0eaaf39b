"""Helpers for tests: compose configs, run the CLI as a user would, read tracked runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytorch_lightning as pl

from optbench.config import compose

REPO = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str):
    return compose(*overrides)


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: int = 600,
    check: bool = True,
    module: str = "optbench",
):
    """Run ``python -m optbench ARGS`` (``optbench-train``) as a user would; return the completed process."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


def start_cli(*args: str, stdout=subprocess.PIPE, env: dict | None = None) -> subprocess.Popen:
    """``python -m optbench ARGS`` started in the background (for signals, concurrency, several nodes)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "optbench", *args],
        cwd=REPO,
        env={**full_env, **(env or {})},
        # Ctrl-C as from a terminal, even when the tests themselves run as a background job (which inherits
        # SIGINT ignored: the child would then never see the signal the test sends).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def tiny_cfg(data_root: Path, tracking_uri: str, *extra: str):
    """The config of a short in-process run on a slice of the real MNIST (``pipeline.run`` it)."""
    return compose(
        f"data.root={data_root}",
        "data.subset=256",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"logger.tracking_uri={tracking_uri}",
        "callbacks.tracking.system_metrics=false",
        *extra,
    )


def compare_json(tracking_uri: str, *args: str) -> dict:
    """``optbench-compare --format json`` of a store, parsed."""
    import contextlib
    import io
    import json

    from optbench.cli import compare

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert compare.main(["--tracking-uri", tracking_uri, "--format", "json", "--no-log", *args]) == 0
    return json.loads(out.getvalue())


def quick_args(data_root: Path, tracking_uri: str, tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a fast, isolated run on a slice of the real MNIST."""
    return [
        f"data.root={data_root}",
        "data.subset=512",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"logger.tracking_uri={tracking_uri}",
        f"hydra.run.dir={tmp_path}/outputs",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *extra,
    ]


def runs_of(tracking_uri: str, experiment: str = "optbench"):
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def histories(client, run_id, metrics=("train_loss", "train_acc", "val_loss", "val_acc")):
    return {
        m: [(x.step, x.value) for x in sorted(client.get_metric_history(run_id, m), key=lambda x: x.step)]
        for m in metrics
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], env: dict, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "tracking_server.sh"), *args],
        cwd=tmp_path,
        env={
            **os.environ,
            "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
            "OPTBENCH_ARTIFACTS": str(tmp_path / "artifacts"),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline().strip()  # the script's last line, once the server answers
    assert line.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:"), (
        proc.stderr.read()[-3000:] if proc.poll() is not None else line
    )
    return proc, line.split("=", 1)[1]


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def wait_for_epoch(uri: str, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> str:
    """The id of the first run of ``uri`` that has logged ``epoch`` (``proc`` must still be running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            client, runs = runs_of(uri)
        except Exception:  # the store may be mid-creation
            runs = []
        for run in runs:
            if any(m.step >= epoch for m in client.get_metric_history(run.info.run_id, "val_acc")):
                return run.info.run_id
        time.sleep(0.5)
    raise AssertionError("no epoch finished in time")


def resume_args(data_root, uri, tmp_path, run_id, *extra):
    """A resume names the run and where things are on this machine, nothing else."""
    return [
        f"data.root={data_root}",
        f"logger.tracking_uri={uri}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}/resumed",
        f"resume={run_id}",
        *extra,
    ]


class InterruptAt(pl.Callback):
    """Ctrl-C as epoch ``epoch`` (0-based) starts: the epochs before it are complete, their checkpoint too."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt("interrupted by the test")
