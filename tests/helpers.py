"""Helpers for tests: compose configs, run the CLI as a user would, read tracked runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
from hydra import compose, initialize_config_dir

from optbench.train import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600, check: bool = True):
    """Run ``python -m optbench.train ARGS`` as a user would; return the completed process."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "optbench.train", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


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
