"""A packed replica's MLflow run and checkpoint: what ``RunTracking`` and ``ModelCheckpoint`` do for an
unpacked run, for one replica of a pack (the same params, tags, metrics, artifacts and statuses)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking.context.registry import resolve_tags
from omegaconf import DictConfig

from .. import heartbeat, provenance, store, stored, tracking
from ..module import DivergenceError
from ..pipeline import flatten

FORMAT = "optbench-packed-replica"


@dataclass
class PackedRun:
    client: mlflow.MlflowClient
    run_id: str
    targets: list[float]
    reached: set[float] = field(default_factory=set)
    train_time: float = 0.0
    time_before: float = 0.0
    checkpoint: Path | None = None
    total_time_s: float | None = None
    monitor: Any = None
    beats: Any = None
    _tmp: Any = None

    @classmethod
    def open(
        cls, cfg: DictConfig, record: dict, tags: dict, datamodule, device: torch.device, resume: str | None, hydra=None
    ):
        """Create the replica's run as an unpacked run would be created, or reopen ``resume`` from its checkpoint."""
        uri = cfg.logger.tracking_uri
        experiment_id = store.prepare(uri, cfg.logger.experiment_name)
        client = mlflow.MlflowClient(uri)
        tracking_cfg = (cfg.get("callbacks") or {}).get("tracking") or {}
        targets = sorted(float(t) for t in (tracking_cfg.get("val_acc_targets") or ()))
        tmp = tempfile.TemporaryDirectory(prefix="optbench-pack-")
        if resume:
            run = cls(client, resume, targets, _tmp=tmp)
            run.checkpoint = stored.checkpoint(client, resume, Path(tmp.name))
            run.time_before = run.train_time = tracking.reopen(client, resume)
            run.reached = {
                t for t in targets if tracking.target_metric_names(t)[0] in client.get_run(resume).data.metrics
            }
        else:
            all_tags = resolve_tags({**provenance.run_tags(cfg, hydra), **tags, "mlflow.runName": cfg.run_name})
            created = client.create_run(experiment_id, run_name=cfg.run_name, tags=all_tags)
            run = cls(client, created.info.run_id, targets, _tmp=tmp)
            device_tags = provenance.device(device, 1)
            tracking.describe_run(client, run.run_id, flatten(record), record, device_tags, datamodule)
        run.beats = heartbeat.Heartbeat(client, [run.run_id]).start()
        if tracking_cfg.get("system_metrics"):
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            run.monitor = SystemMetricsMonitor(
                run.run_id,
                sampling_interval=tracking_cfg.get("system_metrics_interval_s", 10),
                resume_logging=bool(resume),
                tracking_uri=uri,
            )
            run.monitor.start()
        return run

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float], seconds: float) -> None:
        self.train_time += seconds
        metrics = {**metrics, "epoch_time_s": seconds}
        metrics.update(
            tracking.time_to_targets(metrics["val_acc"], epoch, step, self.train_time, self.targets, self.reached)
        )
        self.log(metrics, epoch)
        self.beats.beat()

    def save(self, payload: dict) -> None:
        path = Path(self._tmp.name) / "last.ckpt"
        torch.save(payload, path)
        self.client.log_artifact(self.run_id, str(path), "last")

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            tracking.stop_monitor(self.monitor)
            self.monitor = None

    def end(self, status: str, **tags: Any) -> None:
        self._stop_monitor()
        if self.beats is not None:
            self.beats.stop()
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.set_terminated(self.run_id, status)

    def fail_diverged(self, epoch: int, step: int, value: float, what: str) -> None:
        message = str(DivergenceError(epoch, step, value, what))  # the failure_detail an unpacked run logs
        print(f"[optbench] run {self.run_id}: {message}", flush=True)
        self.log({"diverged_epoch": epoch, "diverged_step": step}, epoch)
        self.end("FAILED", failure_reason="diverged", diverged_epoch=epoch, diverged_step=step, failure_detail=message)

    def finish(self, seconds: float, epochs: int) -> None:
        self.total_time_s = self.time_before + seconds
        self.log({"total_time_s": self.total_time_s}, epochs)
        self.end("FINISHED")


def checkpoint_payload(model, k: int, replica, epoch: int, step: int) -> dict:
    """Replica k's state after an epoch: weights as a ``SeedCNN`` state dict, optimizer, dropout stream."""
    return {
        "format": FORMAT,
        "epoch": epoch,
        "global_step": step,
        "net": model.state_of(k),
        "optimizer": replica.optimizer.state_dict(),
        "generator": replica.generator.get_state(),
    }


def load_checkpoint(path: Path, model, k: int, replica) -> tuple[int, int]:
    """Put a replica checkpoint (already verified to be plain data) into slot k; return (epoch, step)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise stored.RestoreError(f"{path.name} is not a packed replica's checkpoint (format {state.get('format')!r}).")
    with torch.no_grad():
        for view, value in zip(model.replica(k), state["net"].values(), strict=True):
            view.copy_(value)
    replica.optimizer.load_state_dict(state["optimizer"])
    replica.generator.set_state(state["generator"])
    return state["epoch"], state["global_step"]
