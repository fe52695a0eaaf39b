"""``optbench-train resume=RUN_ID``: continue a killed run, in the same MLflow run, from its last checkpoint.

The run's config is rebuilt from this checkout's config groups and its logged values (``restore``), so a
resume takes no other overrides than where things are on this machine: changing values is a new run
(``optbench-rerun RUN_ID key=value``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import heartbeat, pipeline, restore, store, stored
from .config import ConfigError


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def resume(cfg: DictConfig, overrides: list[str]) -> pipeline.RunResult:
    run_id = str(cfg.resume)
    extra = [o for o in overrides if _key(o) not in ("resume", *restore.MACHINE_LOCAL)]
    if extra:
        raise ConfigError(
            f"resume={run_id} continues that run with its logged config, so it takes no other overrides "
            f"(got: {' '.join(extra)}); only where things are may be given ({', '.join(restore.MACHINE_LOCAL)}). "
            f"To train with changed values, rerun it: optbench-rerun {run_id} {' '.join(extra)}"
        )
    client = store.open_existing(cfg.logger.tracking_uri if cfg.get("logger") else store.default_tracking_uri())
    run = store.get_run(client, run_id)
    if run.info.status == "FINISHED":
        raise ConfigError(
            f"Run {run_id} has FINISHED: there is nothing to resume (optbench-rerun {run_id} trains it again)."
        )
    beat = heartbeat.of(run)
    if run.info.status == "RUNNING" and beat is not None and beat.alive:
        raise ConfigError(
            f"Run {run_id} is still being trained by {beat.describe()}: resuming it would make two writers of "
            "one run. Stop that process (Ctrl-C or SIGTERM ends the run KILLED, ready to resume), or leave it; a "
            f"run whose trainer died can be resumed once its heartbeat is {heartbeat.STALE_S / 60:.0f} minutes old, "
            "or at once on the host that trained it."
        )
    if run.data.tags.get("failure_reason") == "diverged":
        raise ConfigError(
            f"Run {run_id} diverged; resuming it would diverge again. Rerun it with a smaller optimizer.lr."
        )
    with tempfile.TemporaryDirectory(prefix="optbench-resume-") as tmp:
        logged = stored.logged_config(client, run_id, Path(tmp))
        rebuilt = restore.rebuild(logged, local=cfg, what=f"run {run_id}'s logged config")
        for override in overrides:  # where things are, when given on this command line
            if _key(override) in restore.MACHINE_LOCAL:
                OmegaConf.update(rebuilt, _key(override), OmegaConf.select(cfg, _key(override)), merge=False)
        if run.data.tags.get("checkpoint_format") == "packed":  # trained in a pack: continues as a pack of one
            from .packed import run_pack

            print(
                f"[optbench] run {run_id} was trained in pack {run.data.tags.get('pack')}; resuming it alone",
                flush=True,
            )
            (result,) = run_pack([rebuilt], resume={0: run_id})
        else:
            checkpoint = stored.checkpoint(client, run_id, Path(tmp))
            result = pipeline.run(rebuilt, run_name=run.info.run_name, resume=run_id, checkpoint=checkpoint)
    if result.run_id and "val_acc" not in result.metrics:  # killed after its last epoch: nothing was left to train
        result.metrics = {**client.get_run(run_id).data.metrics, **result.metrics}
    return result
