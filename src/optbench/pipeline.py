"""One run from a config: build it, fit it, record it. Every command, benchmark and test calls ``run``.

The life of a run, in order: check the config (a mistake raises ``ConfigError`` before any MLflow
run exists), apply the process settings and the seed, build data and model, create the run through
Lightning's ``MLFlowLogger``, fit, and end the run with the status the tracking callback recorded.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from . import cache, config, ddp, provenance, runtime, store
from .module import DivergenceError
from .tracking import RunTracking

log = logging.getLogger("optbench")


@dataclass
class RunResult:
    run_id: str | None
    status: str  # FINISHED, FAILED, KILLED; INVALID when the config could not run (no run was created)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False  # the store already held this run (a sweep's job that was not trained again)

    def __float__(self) -> float:
        """The objective a Hydra sweeper (Optuna) maximises: the final validation accuracy, NaN without one."""
        return float(self.metrics.get("val_acc", math.nan))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → ``{"optimizer.lr": 0.001, ...}``, the names of MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _callbacks(cfg: DictConfig, checkpoint_dir: str) -> list[pl.Callback]:
    extra = {"checkpoint": {"dirpath": checkpoint_dir}}
    return [instantiate(node, **extra.get(name, {})) for name, node in (cfg.get("callbacks") or {}).items() if node]


def run(
    cfg: DictConfig,
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    resume: str | None = None,
    checkpoint: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
    reuse: bool = False,
) -> RunResult:
    """Train ``cfg`` and track it; ``resume`` (a run id) with its verified ``checkpoint`` continues that run.

    ``callbacks`` are added to the config's (profilers, timers of a benchmark). ``reuse`` (a sweep's job):
    report the store's FINISHED run of this configuration, seed and code instead of training (``cache``).
    """
    runtime.quiet_libraries()
    config.validate(cfg)
    if reuse and (hit := cache.reuse(cfg, provenance.hydra_context(cfg).get("sweep_id"))):
        return RunResult(hit["run_id"], "FINISHED", hit["metrics"], cached=True)
    threads, malloc = runtime.configure(
        cfg.get("threads"), bool(cfg.get("deterministic")), cfg.get("malloc_tuning", True), ddp.processes_per_node(cfg)
    )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, optimizer = config.build(cfg)
    datamodule.prepare_data()  # missing or corrupt data fails here, before any run exists
    datamodule.setup()
    record = config.effective(cfg, optimizer, threads)

    logger = None
    if cfg.get("logger"):
        store.prepare(cfg.logger.tracking_uri, cfg.logger.experiment_name)
        run_tags = {**provenance.run_tags(cfg), "malloc_tuning": str(malloc).lower(), **(tags or {})}
        logger = instantiate(cfg.logger, run_name=run_name or cfg.run_name, tags=run_tags, run_id=resume)
    with tempfile.TemporaryDirectory(prefix="optbench-ckpt-") as checkpoint_dir:
        every = [*_callbacks(cfg, checkpoint_dir), *(callbacks or [])]
        tracking = next((c for c in every if isinstance(c, RunTracking)), None)
        if tracking is not None:
            tracking.describe(record, flatten(record), resuming=resume is not None)
        # Without a ModelCheckpoint of ours, Lightning would add its own, writing into ./checkpoints.
        checkpointing = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in every)
        trainer = config.instantiate_group(
            cfg,
            "trainer",
            logger=logger or False,
            callbacks=every,
            enable_checkpointing=checkpointing,
            default_root_dir=checkpoint_dir,
        )
        status, interrupted = "FINISHED", False
        try:
            with ddp.children_run_this_job():
                trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        except DivergenceError as err:  # the callback recorded it too; the run ends FAILED
            log.error("%s", err)
            status = "FAILED"
        except OSError as err:  # a full disk, an unreachable store: recorded FAILED with the reason
            log.error("%s", os_failure(err))
            status = "FAILED"
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM (Lightning exits 1 after its shutdown)
            interrupted = True
            raise
        finally:
            if tracking is not None:
                tracking.finish()
            if interrupted:
                _say_end(trainer, run_name or cfg.run_name, tracking, module, "KILLED")
    status = tracking.status if tracking is not None else status
    metrics = _say_end(trainer, run_name or cfg.run_name, tracking, module, status)
    return RunResult(tracking.run_id if tracking is not None else None, status, metrics)


def os_failure(err: OSError) -> str:
    """One paragraph for a run that the machine stopped (a full disk, a store that went away)."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    return (
        f"The run failed: {type(err).__name__}: {err.strerror or err}{where}. It ended FAILED with this reason in "
        "the store (where the store could still be written); free the space or fix the path and train it again."
    )


def _say_end(trainer, name: str, tracking: RunTracking | None, module, status: str) -> dict[str, float]:
    """The run's last line (rank 0), also when it was interrupted; returns its final metrics."""
    metrics = dict(module.epoch_metrics)
    if tracking is not None and tracking.total_time_s is not None:
        metrics["total_time_s"] = tracking.total_time_s
    if trainer.is_global_zero:
        shown = {k: metrics.get(k, math.nan) for k in ("val_acc", "val_loss")}
        run_id = tracking.run_id if tracking is not None else None
        print(
            f"[optbench] {name}: {status} val_acc={shown['val_acc']:.4f} val_loss={shown['val_loss']:.4f} "
            f"time={metrics.get('total_time_s') or 0:.1f}s run_id={run_id or '-'}",
            flush=True,
        )
    return metrics
