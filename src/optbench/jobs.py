"""Hydra callbacks around ``optbench-train``'s jobs: the store before a sweep, a record after each job.

``JobRecords`` writes each job's outcome (run id, status, final metrics) into the job's output folder as
``optbench_run.json`` (so ``optbench-rerun <folder>`` knows which run the folder made) and, once all jobs
are done, turns the outcomes into the command's exit status. Jobs may run in other processes (joblib,
submitit), which is why the outcomes travel through those files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from . import store

RECORD = "optbench_run.json"
EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 1, "ERROR": 1, "INVALID": 2}
_outcome = {"code": 0}


def exit_code() -> int:
    """0 when every job's run finished, 1 when one failed or was killed, 2 when a config could not run."""
    return _outcome["code"]


class PrepareStore(Callback):
    """Create the tracking store and experiment once, before a sweep's jobs race to do it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("logger"):
            with read_write(config):
                store.prepare(config.logger.tracking_uri, config.logger.experiment_name)


class JobRecords(Callback):
    def __init__(self):
        self._start = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if int(os.environ.get("SLURM_PROCID", "0")) != 0:  # srun's other ranks of the same job
            return
        if job_return.status == JobStatus.COMPLETED:
            result = job_return.return_value
            record = {"run_id": result.run_id, "status": result.status, "metrics": result.metrics}
            if result.error:
                record["error"] = result.error
        else:
            record = {"run_id": None, "status": "ERROR", "error": repr(job_return._return_value)}
        Path(config.hydra.runtime.output_dir, RECORD).write_text(json.dumps(record))
        _outcome["code"] = max(_outcome["code"], EXIT_CODES.get(record["status"], 1))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Jobs of other processes (joblib, submitit) left their outcome in their folders."""
        for path in Path(config.hydra.sweep.dir).glob(f"*/{RECORD}"):
            if path.stat().st_mtime >= self._start - 1:
                status = json.loads(path.read_text())["status"]
                _outcome["code"] = max(_outcome["code"], EXIT_CODES.get(status, 1))
