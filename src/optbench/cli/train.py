"""``optbench-train`` (also ``python -m optbench``): compose a config with Hydra and run it; ``-m`` sweeps.

Exit status: 0 when every run finished, 1 when a run failed (diverged) or was killed, 2 when a config
could not run (the one-paragraph message names the key; no MLflow run was created).
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .. import config, jobs, pipeline, stored
from ..data import DataError
from ..resume import resume
from ..store import StoreError

log = logging.getLogger("optbench")
_started = {"jobs": 0}


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path=config.CONFIG_PATH, config_name="config")
def _job(cfg: DictConfig) -> pipeline.RunResult:
    _started["jobs"] += 1
    signal.signal(signal.SIGTERM, _terminate)  # again in a launcher's worker process
    try:
        if cfg.get("resume"):
            return resume(cfg, list(HydraConfig.get().overrides.task))
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        return pipeline.run(cfg, reuse=sweeping and bool(cfg.get("skip_finished", True)))
    except (config.ConfigError, DataError, StoreError, stored.RestoreError) as err:
        log.error("%s", err)
        return pipeline.RunResult(None, "INVALID", error=str(err))
    except OSError as err:  # outside the fit too (creating the run or its checkpoint folder on a full disk)
        log.error("%s", pipeline.os_failure(err))
        return pipeline.RunResult(None, "FAILED", error=str(err))


def main() -> None:
    try:
        config.check_overrides(sys.argv[1:])
    except config.ConfigError as err:
        print(f"optbench-train: {err}", file=sys.stderr)
        sys.exit(2)
    # SIGTERM (e.g. a scheduler) ends runs like Ctrl-C: KILLED. Set here too, not only per job, because the
    # packed launcher trains in this process without calling the job function.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        _job()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a run's own handling (a packed sweep, a launcher)
        print(
            "optbench-train: interrupted: unfinished runs ended KILLED (optbench-train resume=RUN_ID continues one)",
            file=sys.stderr,
        )
        sys.exit(1)
    except SystemExit as exit_:
        # Hydra reports a config it cannot compose (unknown key, bad value syntax) and exits 1 before any job
        # ran: that is a config error like ours, so it exits 2 too.
        if exit_.code == 1 and _started["jobs"] == 0:
            sys.exit(2)
        raise
    sys.exit(jobs.exit_code())


if __name__ == "__main__":
    main()
