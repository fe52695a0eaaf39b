"""Train one configuration and track it: ``optbench-train`` / ``python -m optbench.train``.

Hydra composes the config from ``conf/``; ``-m`` sweeps. Each job ends with a one-line summary.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from .data import DataError
from .module import DivergenceError

log = logging.getLogger("optbench")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass
class RunResult:
    run_id: str | None
    status: str
    metrics: dict[str, float]


class ConfigError(ValueError):
    """A config value that cannot work; raised before any run is created."""


def check_config(cfg: DictConfig) -> None:
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(
            f"Invalid trainer.max_epochs={epochs}; it must be an integer >= 1 (e.g. trainer.max_epochs=10)."
        )


def hydra_context(cfg: DictConfig) -> dict[str, str]:
    """Sweep id and overrides of the Hydra job running now (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    info = {"hydra_overrides": " ".join(hc.overrides.task)}
    if hc.mode == RunMode.MULTIRUN:
        info["sweep_id"] = cfg.get("sweep_id") or Path(hc.sweep.dir).name + "_" + Path(hc.sweep.dir).parent.name
        info["sweep_job"] = str(hc.job.num)
    elif cfg.get("sweep_id"):
        info["sweep_id"] = cfg.sweep_id
    return info


def quiet_libraries() -> None:
    """Drop start-up chatter (device banners, ads, an upstream deprecation) that hides our own output."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def train(cfg: DictConfig) -> RunResult:
    """Build everything from ``cfg``, fit, and return the final metrics (no Hydra needed)."""
    quiet_libraries()
    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    model.configure_optimizers()  # invalid hyperparameters fail here, before any run exists
    context = hydra_context(cfg)
    tags = {
        "optimizer": cfg.optimizer.name,
        "preset": cfg.optimizer.get("preset"),
        "label": cfg.label,
        "data": cfg.data.name,
        "seed": cfg.seed,
        **context,
    }
    tracking = (
        instantiate(cfg.logger, run_name=cfg.run_name, tags=tags, run_config=cfg, _recursive_=False)
        if cfg.get("logger")
        else None
    )
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[tracking] if tracking else [])
    datamodule.prepare_data()  # data errors surface before the run is created
    try:
        trainer.fit(model, datamodule=datamodule)
    except DivergenceError as err:
        if tracking:
            tracking.end("FAILED", failure_reason="diverged", diverged_epoch=err.epoch, diverged_step=err.step)
        log.error("%s", err)
        return RunResult(tracking.run_id if tracking else None, "FAILED", dict(model.epoch_metrics))
    metrics = dict(model.epoch_metrics)
    if tracking:
        metrics["total_time_s"] = tracking.total_time_s
        tracking.end("FINISHED")
    if trainer.is_global_zero:
        print(
            f"[optbench] {cfg.run_name}: val_acc={metrics.get('val_acc', float('nan')):.4f} "
            f"val_loss={metrics.get('val_loss', float('nan')):.4f} "
            f"time={metrics.get('total_time_s') or 0:.1f}s run_id={tracking.run_id if tracking else '-'}",
            flush=True,
        )
    return RunResult(tracking.run_id if tracking else None, "FINISHED", metrics)


_failures: list[str] = []


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    try:
        result = train(cfg)
    except (ConfigError, DataError, ValueError) as err:
        log.error("%s", err)
        _failures.append(str(err))
        if HydraConfig.get().mode == RunMode.RUN:
            raise SystemExit(2) from None
        return None
    if result.status != "FINISHED":
        _failures.append(result.status)
    return result.metrics.get("val_acc")


def main() -> None:
    _hydra_entry()
    if _failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
