"""Train one configuration and track it: ``optbench-train`` / ``python -m optbench.train``.

Hydra composes the config from ``conf/``; ``-m`` sweeps. Every config mistake is reported in one
paragraph before any MLflow run exists; divergence and interruption end the run as FAILED or
KILLED with its completed epochs kept. ``resume=RUN_ID`` continues such a run from its last
checkpoint. Each job ends with a one-line summary.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import mlflow
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, read_write
from omegaconf.errors import OmegaConfBaseException

from . import runtime
from .data import DataError
from .module import DivergenceError
from .tracking import default_tracking_uri, logged_config

log = logging.getLogger("optbench")
RUN_RECORD = "optbench_run.json"
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass
class RunResult:
    run_id: str | None
    status: str
    metrics: dict[str, float]


class ConfigError(ValueError):
    """A config value that cannot work; raised before any run is created."""


def quiet_libraries() -> None:
    """Drop start-up chatter (device banners, ads, an upstream deprecation) that hides our own output."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    for name in ("mlflow.store.db.utils", "mlflow.system_metrics", "pytorch_lightning.trainer.connectors"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def hydra_context(cfg: DictConfig) -> dict[str, str]:
    """Sweep id and overrides of the Hydra job running now (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    info = {"hydra_overrides": " ".join(hc.overrides.task)}
    if hc.mode == RunMode.MULTIRUN:
        info["sweep_id"] = cfg.get("sweep_id") or Path(hc.sweep.dir).parent.name + "_" + Path(hc.sweep.dir).name
        info["sweep_job"] = str(hc.job.num)
    elif cfg.get("sweep_id"):
        info["sweep_id"] = cfg.sweep_id
    return info


GROUPS = ("data", "model", "optimizer", "trainer", "logger", "experiment")


def check_overrides(overrides: list[str]) -> None:
    """Reject a config group set to something other than a config name (``optimizer=0``, ``optimizer=[0]``).

    Hydra reports most bad overrides cleanly, but these crash deep inside its defaults list.
    """
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and not o.startswith("-")])
    except HydraException:
        return  # Hydra's own parse error message is clear
    for override in parsed:
        if override.key_or_group.lstrip("+~") not in GROUPS:
            continue
        try:
            value = override.value()
            items = list(override.sweep_iterator()) if override.is_sweep_override() else [value]
        except (HydraException, TypeError, ValueError):
            items = [None]
        if override.is_delete() and not value:
            continue
        if not all(isinstance(v, str) for v in items):
            choices = ", ".join(
                sorted(p.stem for p in (Path(CONFIG_DIR) / override.key_or_group.lstrip("+~")).glob("*.yaml"))
            )
            raise ConfigError(
                f"Invalid override {override.input_line!r}: {override.key_or_group} takes a config name ({choices})."
            )


def _build(cfg: DictConfig, group: str, **kwargs):
    try:
        return instantiate(cfg[group], **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"Invalid {group} config: {cause}") from None


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Data module and model from ``cfg``; any bad value raises ``ConfigError`` naming the key, before training."""
    try:
        epochs = cfg.trainer.get("max_epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"Invalid trainer.max_epochs={epochs!r}; it must be an integer >= 1 (e.g. 10).")
        if not isinstance(cfg.get("seed"), int) or isinstance(cfg.seed, bool):
            raise ConfigError(f"Invalid seed={cfg.get('seed')!r}; it must be an integer.")
        datamodule = _build(cfg, "data")
        model = _build(cfg, "model", optimizer=_build(cfg, "optimizer"))
        try:
            model.configure_optimizers()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Invalid optimizer config: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"Invalid config: {str(err).splitlines()[0]}") from None
    return datamodule, model


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ddp_children_read_this_job():
    """Make Lightning's DDP re-launch of ranks > 0 start *this* Hydra job, not the command line again.

    Lightning re-executes ``sys.argv`` for each extra rank. Under ``-m`` that would run the whole
    sweep again in every child, and it points children at ``hydra.run.dir``, which in a multirun is
    not the job's folder. So ranks > 0 get the job's own composed config (``<job>/.hydra``), its folder
    as run dir and no output subdir of their own. The launcher's environment variables are removed
    afterwards: a leftover ``LOCAL_RANK`` would make the next job of a sweep believe it is a child.
    """
    if not HydraConfig.initialized() or "LOCAL_RANK" in os.environ:
        yield
        return
    hc = HydraConfig.get()
    argv, run_dir, env = list(sys.argv), hc.run.dir, {k: os.environ.get(k) for k in DDP_ENV}
    if hc.output_subdir is not None:
        job_dir = hc.runtime.output_dir
        sys.argv = [sys.argv[0], "--config-path", str(Path(job_dir) / hc.output_subdir), "--config-name", "config"]
        with read_write(hc):
            hc.run.dir = job_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hc):
            hc.run.dir = run_dir
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def configure_runtime(cfg: DictConfig) -> dict[str, str]:
    """Threads and allocator from ``cfg``; DDP processes on one CPU node share its cores."""
    devices = cfg.trainer.get("devices")
    per_node = devices if cfg.trainer.get("accelerator") == "cpu" and isinstance(devices, int) else 1
    return runtime.configure(cfg.get("threads"), cfg.get("malloc_tuning", True), per_node)


def train(
    cfg: DictConfig,
    extra_tags: dict[str, str] | None = None,
    run_name: str | None = None,
    resume: str | None = None,
) -> RunResult:
    """Build everything from ``cfg``, fit, and return the final metrics (no Hydra needed)."""
    quiet_libraries()
    settings = configure_runtime(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.get("deterministic")), warn_only=True)
    datamodule, model = build(cfg)
    datamodule.prepare_data()  # missing data fails here, before any run exists
    run_name = run_name or cfg.run_name
    tags = {
        "optimizer": cfg.optimizer.name,
        "preset": cfg.optimizer.get("preset"),
        "label": cfg.label,
        "data": cfg.data.name,
        "seed": cfg.seed,
        **settings,
        **hydra_context(cfg),
        **(extra_tags or {}),
    }
    tracking = None
    if cfg.get("logger"):
        tracking = instantiate(cfg.logger, run_name=run_name, tags=tags, run_config=cfg, _recursive_=False)
    checkpoint = tracking.attach(resume) if (tracking and resume) else None
    trainer: pl.Trainer = _build(cfg, "trainer", callbacks=[tracking] if tracking else [])
    try:
        with ddp_children_read_this_job():
            trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint)
    except DivergenceError as err:  # the callback has marked the run FAILED
        log.error("%s", err)
        return record(RunResult(tracking.run_id if tracking else None, "FAILED", dict(model.epoch_metrics)))
    run_id = tracking.run_id if tracking else None
    metrics = dict(model.epoch_metrics)
    if tracking:
        metrics["total_time_s"] = tracking.total_time_s
        tracking.end("FINISHED")
    if trainer.is_global_zero:
        print(
            f"[optbench] {tracking.run_name if tracking else run_name}: "
            f"val_acc={metrics.get('val_acc', float('nan')):.4f} val_loss={metrics.get('val_loss', float('nan')):.4f} "
            f"time={metrics.get('total_time_s') or 0:.1f}s run_id={run_id or '-'}",
            flush=True,
        )
    return record(RunResult(run_id, "FINISHED", metrics))


def record(result: RunResult) -> RunResult:
    """Leave the run id in the Hydra job's folder, so ``optbench-rerun <folder>`` can compare against it."""
    if HydraConfig.initialized() and result.run_id:
        out = Path(HydraConfig.get().runtime.output_dir) / RUN_RECORD
        out.write_text(json.dumps({"run_id": result.run_id, "status": result.status, "metrics": result.metrics}))
    return result


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_failures: list[str] = []


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM (e.g. a scheduler) ends the run like Ctrl-C: KILLED
    quiet_libraries()
    resume = cfg.get("resume")
    try:
        if resume:
            uri = cfg.logger.tracking_uri if cfg.get("logger") else default_tracking_uri()
            cfg = logged_config(mlflow.MlflowClient(uri), resume)
            log.info("Resuming run %s with its logged config", resume)
        result = train(cfg, resume=resume)
    except (ConfigError, DataError, LookupError) as err:
        log.error("%s", err)
        _failures.append(str(err))
        if HydraConfig.get().mode == RunMode.RUN:
            raise SystemExit(2) from None
        return None
    if result.status != "FINISHED":
        _failures.append(result.status)
    return result.metrics.get("val_acc")


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"optbench-train: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_entry()
    if _failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
