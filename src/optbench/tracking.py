"""MLflow tracking as a Lightning callback: one run per job, metrics per epoch with ``step = epoch``.

Lightning's own ``MLFlowLogger`` logs against the global step and leaves run status to the
trainer; the comparison needs epoch-indexed histories (1-based, as the seed's table), an honest
end state (FINISHED, FAILED on divergence, KILLED on interruption) and resumable runs, so we
drive ``MlflowClient`` directly. Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback as HydraCallback
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf, read_write

from . import provenance
from .module import DivergenceError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
MAX_PARAMS_PER_BATCH = 100
CHECKPOINT = "checkpoints/last.ckpt"
DEFERRED = (signal.SIGINT, signal.SIGTERM)


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


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (MLflow's default is ./mlruns of the cwd)."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent / "artifacts" / experiment)
    return None


def target_metric_names(target: float) -> tuple[str, str, str]:
    """Metric names for one accuracy target, e.g. ``epoch_to_val_acc_0.98``."""
    t = f"{target:g}"
    return f"epoch_to_val_acc_{t}", f"step_to_val_acc_{t}", f"time_to_val_acc_{t}_s"


def time_to_targets(
    val_acc: float, epoch: int, step: int, elapsed_s: float, targets: list[float], reached: set[float]
) -> dict[str, float]:
    """Metrics for the targets first reached at this epoch (and marks them in ``reached``)."""
    out: dict[str, float] = {}
    for target in targets:
        if target not in reached and val_acc >= target:
            reached.add(target)
            epoch_name, step_name, time_name = target_metric_names(target)
            out.update({epoch_name: epoch, step_name: step, time_name: elapsed_s})
    return out


def get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=artifact_location(client.tracking_uri, name),
            tags={"mlflow.experimentKind": "custom_model_development"},  # the UI opens on the runs table
        )
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def get_run(client: mlflow.MlflowClient, run_id: str) -> mlflow.entities.Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise LookupError(
            f"No run with id {run_id!r} in the tracking store {client.tracking_uri} "
            "(check the id in the MLflow UI, or set the tracking URI / MLFLOW_TRACKING_URI)."
        ) from err


def logged_config(client: mlflow.MlflowClient, run_id: str) -> DictConfig:
    """The resolved config a run logged as its ``config.yaml`` artifact."""
    get_run(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
        except (MlflowException, OSError) as err:
            raise LookupError(f"Run {run_id} has no config.yaml artifact to rebuild its config from.") from err


@contextmanager
def signals_deferred():
    """Hold Ctrl-C and SIGTERM until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


class PrepareStoreCallback(HydraCallback):
    """Create the tracking store and experiment once, before a sweep's jobs start.

    Parallel jobs (joblib, SLURM) would otherwise race to create SQLite's tables and the experiment.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("logger"):
            with read_write(config):
                uri = prepare_store(config.logger.get("tracking_uri") or default_tracking_uri())
                get_or_create_experiment(mlflow.MlflowClient(uri), config.logger.experiment_name)


def ranks_in_sync(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether every DDP rank ends with bit-identical parameters (collective: all ranks call it)."""
    flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
    gathered = trainer.strategy.all_gather(flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


class MLflowTracking(pl.Callback):
    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "optbench",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_config: DictConfig | Mapping | None = None,
        checkpoint_every_epoch: bool = True,
        val_acc_targets: list[float] | None = (0.97, 0.98, 0.99),
        system_metrics: bool = False,
        system_metrics_interval_s: float = 10.0,
    ):
        self.tracking_uri = prepare_store(tracking_uri or default_tracking_uri())
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        self.config = run_config
        self.checkpoint_every_epoch = checkpoint_every_epoch
        self.targets = sorted(float(t) for t in (val_acc_targets or ()))
        self._reached: set[float] = set()
        self._train_time = 0.0  # cumulative epoch time: the clock of time-to-target
        self.system_metrics = system_metrics
        self.system_metrics_interval_s = system_metrics_interval_s
        self._monitor = None
        self.client: mlflow.MlflowClient | None = None
        self.run_id: str | None = None
        self._epoch_start = self._fit_start = 0.0
        self._time_before = 0.0  # training time of a resumed run's earlier sessions
        self._tmp = tempfile.TemporaryDirectory(prefix="optbench-ckpt-")
        self.total_time_s: float | None = None

    # -- run lifecycle -----------------------------------------------------------------------
    def start(self, trainer: pl.Trainer | None = None) -> str:
        self.client = mlflow.MlflowClient(self.tracking_uri)
        experiment_id = get_or_create_experiment(self.client, self.experiment_name)
        tags = {**self.tags, **provenance.git_state(), **provenance.versions(), **provenance.environment()}
        if trainer is not None:
            tags.update(provenance.device(trainer.strategy.root_device, trainer.world_size))
        datamodule = getattr(trainer, "datamodule", None)
        if getattr(datamodule, "file_md5", None):
            tags["dataset_digest"] = datamodule.digest
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
        if "dataset_digest" in tags:
            self.log_dataset(datamodule)
        return self.run_id

    def attach(self, run_id: str) -> str:
        """Continue an existing run (resume): mark it RUNNING again; return its last checkpoint's path."""
        self.client = mlflow.MlflowClient(self.tracking_uri)
        run = get_run(self.client, run_id)
        try:
            path = self.client.download_artifacts(run_id, CHECKPOINT, self._tmp.name)
        except (MlflowException, OSError) as err:
            raise LookupError(f"Run {run_id} has no {CHECKPOINT} artifact: it cannot be resumed.") from err
        self.run_id = run_id
        self.run_name = run.info.run_name
        self._time_before = sum(m.value for m in self.client.get_metric_history(run_id, "epoch_time_s"))
        self._train_time = self._time_before
        self._reached = {t for t in self.targets if target_metric_names(t)[0] in run.data.metrics}
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, "resumed", "true")
        return path

    def log_dataset(self, datamodule) -> None:
        """The files actually read, as an MLflow dataset input whose digest changes with any byte of them."""
        profile = {"files": datamodule.file_md5, "num_train": datamodule.num_train, "subset": datamodule.subset}
        dataset = Dataset(
            name=datamodule.name,
            digest=datamodule.digest,
            source_type="local",
            source=json.dumps({"uri": str(datamodule.raw.resolve())}),
            profile=json.dumps(profile),
        )
        context = InputTag("mlflow.data.context", "training")
        for attempt in range(3):  # parallel jobs may register the same dataset at the same moment
            try:
                self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[context])])
                return
            except MlflowException:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def end(self, status: str = "FINISHED", **tags: Any) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            # MLflow drops the samples of the last, unfinished interval; a run shorter than one
            # interval would otherwise have no system metrics at all.
            if tail := self._monitor.aggregate_metrics():
                self._monitor.publish_metrics(tail)
                self._monitor.mlflow_logger.flush()
            self._monitor = None
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
            self.start(trainer)
        if trainer.is_global_zero and self.system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=self.system_metrics_interval_s,
                resume_logging=self._time_before > 0,
                tracking_uri=self.tracking_uri,
            )
            self._monitor.start()
        trainer.strategy.barrier()
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = pl_module.epoch_summary()
        trainer.strategy.barrier()  # the slowest rank's time counts
        metrics["epoch_time_s"] = time.perf_counter() - self._epoch_start
        self._train_time += metrics["epoch_time_s"]
        epoch = trainer.current_epoch + 1
        if "val_acc" in metrics:
            metrics.update(
                time_to_targets(
                    metrics["val_acc"], epoch, trainer.global_step, self._train_time, self.targets, self._reached
                )
            )
        with signals_deferred():  # an epoch's metrics and its checkpoint are kept together or not at all
            if trainer.is_global_zero:
                self.log_metrics(metrics, step=epoch)
            if self.checkpoint_every_epoch:
                path = Path(self._tmp.name) / Path(CHECKPOINT).name
                trainer.save_checkpoint(path)  # collective: every rank calls it, rank 0 writes
                if trainer.is_global_zero and self.client is not None:
                    self.client.log_artifact(self.run_id, str(path), str(Path(CHECKPOINT).parent))

    def on_fit_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        self.total_time_s = self._time_before + time.perf_counter() - self._fit_start
        in_sync = ranks_in_sync(trainer, pl_module) if trainer.world_size > 1 else None
        if trainer.is_global_zero:
            self.log_metrics({"total_time_s": self.total_time_s}, step=trainer.current_epoch)
            if in_sync is not None:
                self.client.set_tag(self.run_id, "ddp_ranks_in_sync", str(in_sync).lower())

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        if isinstance(exception, KeyboardInterrupt):
            self.end(RunStatus.to_string(RunStatus.KILLED), failure_reason="interrupted")
        elif isinstance(exception, DivergenceError):
            self.log_metrics({"diverged_epoch": exception.epoch, "diverged_step": exception.step}, step=exception.epoch)
            self.end(
                "FAILED",
                failure_reason="diverged",
                diverged_epoch=exception.epoch,
                diverged_step=exception.step,
                failure_detail=str(exception),
            )
        else:
            self.end("FAILED", failure_reason=f"{type(exception).__name__}: {exception}"[:5000])
