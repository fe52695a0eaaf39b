"""What a run records beyond Lightning's ``MLFlowLogger`` (which creates the run, logs params, metrics
and the ``ModelCheckpoint`` files, and resumes into a run by id).

Each gap this callback fills, in one line:
- metrics once per epoch with ``step = epoch`` (1-based, as the seed's table), and each epoch's wall time;
- the epoch, step and training time at which ``val_acc`` first reaches each target;
- provenance tags (code, packages, device) and the dataset actually read, as an MLflow dataset input;
- the resolved config as ``config.yaml``; MLflow system metrics, including the last partial interval;
- an honest end state: FINISHED, FAILED with ``failure_reason`` (diverged, or the error), or KILLED on
  Ctrl-C/SIGTERM (Lightning's logger only knows "failed"), set after Lightning has finalised the run;
- an epoch's metrics and its checkpoint upload are kept together: signals wait until both are written;
- a heartbeat (``heartbeat``) that tells a live run from a dead one.
Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from . import data_identity, heartbeat, provenance
from .module import DivergenceError

FAILURE_TAGS = ("failure_reason", "failure_detail", "diverged_epoch", "diverged_step")


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


class SignalHold:
    """Hold Ctrl-C and SIGTERM from ``hold()`` to ``release()``, which then raises KeyboardInterrupt."""

    def __init__(self):
        self._previous: dict | None = None
        self._received: list[int] = []

    def hold(self) -> None:
        if self._previous is not None or threading.current_thread() is not threading.main_thread():
            return
        self._received = []
        self._previous = {
            s: signal.signal(s, lambda n, f: self._received.append(n)) for s in (signal.SIGINT, signal.SIGTERM)
        }

    def release(self, raise_pending: bool = True) -> None:
        if self._previous is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = None
        if self._received and raise_pending:
            raise KeyboardInterrupt(f"signal {self._received[0]}")


class RunTracking(pl.Callback):
    def __init__(
        self,
        val_acc_targets: list[float] | None = (0.97, 0.98, 0.99),
        system_metrics: bool = False,
        system_metrics_interval_s: float = 10.0,
    ):
        self.targets = sorted(float(t) for t in (val_acc_targets or ()))
        self.system_metrics, self.system_metrics_interval_s = system_metrics, system_metrics_interval_s
        self.config: Mapping[str, Any] | None = None
        self.params: Mapping[str, Any] = {}
        self.resuming = False
        self.client = self.run_id = self._monitor = self._beats = None
        self._reached: set[float] = set()
        self._train_time = 0.0  # cumulative epoch time: the clock of time-to-target
        self._time_before = 0.0  # training time of a resumed run's earlier sessions
        self._epoch_start = self._fit_start = 0.0
        self._hold = SignalHold()
        self.status = "FINISHED"
        self.total_time_s: float | None = None

    def describe(self, config: Mapping[str, Any], params: Mapping[str, Any], resuming: bool) -> None:
        """What the run is: its effective config (logged as config.yaml) and params; or a resumed run."""
        self.config, self.params, self.resuming = config, params, resuming

    # -- the run ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and trainer.logger is not None:
            self.client, self.run_id = trainer.logger.experiment, trainer.logger.run_id
            if self.resuming:
                self._reopen()
            else:
                self._log_description(trainer)
            self._beats = heartbeat.Heartbeat(self.client, [self.run_id]).start()
            if self.system_metrics:
                self._start_monitor(trainer.logger._tracking_uri)
        trainer.strategy.barrier()
        self._fit_start = time.perf_counter()

    def _log_description(self, trainer: pl.Trainer) -> None:
        describe_run(
            self.client,
            self.run_id,
            self.params,
            self.config,
            provenance.device(trainer.strategy.root_device, trainer.world_size),
            trainer.datamodule,
            log_params=trainer.logger.log_hyperparams,
        )

    def _reopen(self) -> None:
        self._time_before = self._train_time = reopen(self.client, self.run_id)
        metrics = self.client.get_run(self.run_id).data.metrics
        self._reached = {t for t in self.targets if target_metric_names(t)[0] in metrics}

    def _start_monitor(self, uri: str) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(
            self.run_id,
            sampling_interval=self.system_metrics_interval_s,
            resume_logging=self.resuming,
            tracking_uri=uri,
        )
        self._monitor.start()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.client is not None:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def finish(self) -> None:
        """End the run with the recorded status (called after Lightning's logger has finalised it)."""
        self._hold.release(raise_pending=False)
        if self._monitor is not None:
            stop_monitor(self._monitor)
            self._monitor = None
        if self._beats is not None:
            self._beats.stop()
            self._beats = None
        if self.client is not None:
            self.client.set_terminated(self.run_id, status=self.status)
            self.client = None

    # -- epochs ----------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._hold.release()  # the previous epoch's metrics and checkpoint are written
        trainer.strategy.barrier()
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = pl_module.epoch_summary()
        if trainer.lr_scheduler_configs:  # a schedule's learning rate, as the next epoch starts it
            metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        trainer.strategy.barrier()  # the slowest rank's time counts
        metrics["epoch_time_s"] = time.perf_counter() - self._epoch_start
        self._train_time += metrics["epoch_time_s"]
        epoch = trainer.current_epoch + 1
        if "val_acc" in metrics:
            targets = time_to_targets(
                metrics["val_acc"], epoch, trainer.global_step, self._train_time, self.targets, self._reached
            )
            metrics.update(targets)
        # Held until the next epoch starts: ModelCheckpoint saves (and the logger uploads) after this hook.
        self._hold.hold()
        if trainer.is_global_zero:
            self.log_metrics(metrics, step=epoch)
            if self._beats is not None:
                self._beats.beat()

    def on_train_end(self, trainer, pl_module) -> None:
        self._hold.release()

    def on_fit_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        self.total_time_s = self._time_before + time.perf_counter() - self._fit_start
        in_sync = ranks_in_sync(trainer, pl_module) if trainer.world_size > 1 else None
        if trainer.is_global_zero:
            self.log_metrics({"total_time_s": self.total_time_s}, step=trainer.current_epoch)
            if in_sync is not None:
                self.client.set_tag(self.run_id, "ddp_ranks_in_sync", str(in_sync).lower())

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._hold.release(raise_pending=False)
        if isinstance(exception, KeyboardInterrupt):
            self.status, tags = "KILLED", {"failure_reason": "interrupted"}
        elif isinstance(exception, DivergenceError):
            self.status = "FAILED"
            tags = {
                "failure_reason": "diverged",
                "diverged_epoch": exception.epoch,
                "diverged_step": exception.step,
                "failure_detail": str(exception),
            }
            self.log_metrics({"diverged_epoch": exception.epoch, "diverged_step": exception.step}, exception.epoch)
        else:
            self.status, tags = "FAILED", {"failure_reason": f"{type(exception).__name__}: {exception}"[:5000]}
        if self.client is not None:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def ranks_in_sync(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether every DDP rank ends with bit-identical parameters (collective: all ranks call it)."""
    flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
    gathered = trainer.strategy.all_gather(flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def describe_run(
    client, run_id: str, params: Mapping[str, Any], config, tags: dict, datamodule, log_params=None
) -> None:
    """Params, config.yaml, provenance tags and the dataset input of a new run (packed replicas too)."""
    if log_params is not None:
        log_params(dict(params))
    else:
        for i in range(0, len(params), 100):
            items = list(params.items())[i : i + 100]
            client.log_batch(run_id, params=[Param(k, str(v)[:250]) for k, v in items])
    if config is not None:
        client.log_text(run_id, yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")
    tags = dict(tags)
    identity = data_identity.of(datamodule, ((config or {}).get("data") or {}).get("name"))
    if identity is not None and identity.digest:
        tags["dataset_digest"] = identity.digest
        log_dataset(client, run_id, identity)
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def reopen(client, run_id: str) -> float:
    """Continue a killed run: RUNNING again, its failure tags gone; return its training time so far."""
    run = client.get_run(run_id)
    client.update_run(run_id, status="RUNNING")
    for tag in FAILURE_TAGS:
        if tag in run.data.tags:
            client.delete_tag(run_id, tag)
    client.set_tag(run_id, "resumed", "true")
    return sum(m.value for m in client.get_metric_history(run_id, "epoch_time_s"))


def log_dataset(client, run_id: str, identity: data_identity.DataIdentity) -> None:
    """The data actually read, as an MLflow dataset input whose digest changes with any byte of it."""
    profile = {"files": identity.parts, "num_train": identity.num_train, "subset": identity.subset}
    dataset = Dataset(
        name=identity.name,
        digest=identity.digest,
        source_type="local",
        source=json.dumps({"uri": identity.source}),
        profile=json.dumps(profile),
    )
    context = InputTag("mlflow.data.context", "training")
    for attempt in range(3):  # parallel jobs may register the same dataset at the same moment
        try:
            client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])
            return
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def stop_monitor(monitor) -> None:
    """Stop MLflow's system-metrics monitor, keeping the samples of its last, unfinished interval (MLflow
    drops them; a run shorter than one interval would otherwise have no system metrics at all)."""
    monitor.finish()
    if tail := monitor.aggregate_metrics():
        monitor.publish_metrics(tail)
        monitor.mlflow_logger.flush()
