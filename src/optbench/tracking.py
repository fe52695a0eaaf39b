"""MLflow tracking as a Lightning callback: one run per job, metrics per epoch with ``step = epoch``.

Lightning's own ``MLFlowLogger`` logs against the global step and leaves run status to the
trainer; the comparison needs epoch-indexed histories (1-based, as the seed's table) and an
honest end state (FINISHED, FAILED on divergence, KILLED on interruption), so we drive
``MlflowClient`` directly. Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
from mlflow.entities import Metric, Param, RunStatus, RunTag
from omegaconf import DictConfig, OmegaConf

from . import provenance

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
MAX_PARAMS_PER_BATCH = 100


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``mlruns/``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def prepare_store(uri: str) -> str:
    """Create the folder of a local SQLite store so the first run needs no set-up."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return uri


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"optimizer.lr": "0.001", ...}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


class MLflowTracking(pl.Callback):
    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "optbench",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_config: DictConfig | Mapping | None = None,
    ):
        self.tracking_uri = prepare_store(tracking_uri or default_tracking_uri())
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        self.config = run_config
        self.client: mlflow.MlflowClient | None = None
        self.run_id: str | None = None
        self._epoch_start = self._fit_start = 0.0
        self.total_time_s: float | None = None

    # -- run lifecycle -----------------------------------------------------------------------
    def start(self) -> str:
        self.client = mlflow.MlflowClient(self.tracking_uri)
        experiment_id = get_or_create_experiment(self.client, self.experiment_name)
        tags = {**self.tags, **provenance.git_state(), **provenance.versions(), **provenance.environment()}
        if "git_commit" in tags:
            tags["mlflow.source.git.commit"] = tags["git_commit"]
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        if self.config is not None:
            resolved = self.config
            if isinstance(resolved, DictConfig):
                resolved = OmegaConf.to_container(resolved, resolve=True)
            params = [Param(k, v[:6000]) for k, v in flatten(resolved).items()]
            for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])
            self.client.log_text(self.run_id, OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
        return self.run_id

    def end(self, status: str = "FINISHED", **tags: Any) -> None:
        if self.client is None or self.run_id is None:
            return
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.set_terminated(self.run_id, status=status)
        self.client = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.client is None:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    # -- Lightning hooks ---------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.run_id is None:
            self.start()
        trainer.strategy.barrier()
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = pl_module.epoch_summary()
        trainer.strategy.barrier()  # the slowest rank's time counts
        metrics["epoch_time_s"] = time.perf_counter() - self._epoch_start
        if trainer.is_global_zero:
            self.log_metrics(metrics, step=trainer.current_epoch + 1)

    def on_fit_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        self.total_time_s = time.perf_counter() - self._fit_start
        if trainer.is_global_zero:
            self.log_metrics({"total_time_s": self.total_time_s}, step=trainer.current_epoch)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        if isinstance(exception, KeyboardInterrupt):
            self.end(RunStatus.to_string(RunStatus.KILLED), failure_reason="interrupted")
        else:
            self.end(
                RunStatus.to_string(RunStatus.FAILED),
                failure_reason=f"{type(exception).__name__}: {exception}",
            )
