"""Hydra callbacks around ``optbench-train``'s jobs: the store before a sweep, a record after each job.

``JobRecords`` writes each job's outcome (run id, status, final metrics) into the job's output folder as
``optbench_run.json`` (so ``optbench-rerun <folder>`` knows which run the folder made) and, once all jobs
are done, turns the outcomes into the command's exit status. Jobs may run in other processes (joblib,
submitit), which is why the outcomes travel through those files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
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
            if result.cached:
                record["cached"] = True
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


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs the basic sweeper makes of this multirun (the product of its sweep overrides)."""
    sweeper = config.hydra.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    given = list(config.hydra.overrides.task)
    keys = {o.partition("=")[0] for o in given}
    listed = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items() if k not in keys]
    try:
        parsed = OverridesParser.create().parse_overrides([*listed, *given])
    except Exception:  # Hydra reports a bad override itself
        return None
    return math.prod(len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override())


def clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{sec:02d}s"


class SweepProgress(Callback):
    """A sweep-level progress line on stderr (jobs done/total, elapsed, estimate) while jobs run in other
    processes (joblib) with their progress bars off: the parent hears nothing from them, so a thread
    counts the job records they leave in the sweep folder."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:  # launchers (joblib) pickle the callbacks for their workers
        return {"every_s": self.every_s, "_stop": None, "_thread": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep = (Path(config.hydra.sweep.dir), sweep_size(config), time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _done(self) -> int:
        folder, _, start = self._sweep
        return sum(1 for p in folder.glob(f"*/{RECORD}") if p.stat().st_mtime >= start - 1)

    def _say(self, done: int) -> None:
        _, total, start = self._sweep
        print(progress_line(done, total, time.time() - start), file=sys.stderr, flush=True)

    def _watch(self) -> None:
        shown, last = 0, time.time()
        while not self._stop.wait(2.0):
            done = self._done()
            if done != shown or time.time() - last >= self.every_s:
                shown, last = done, time.time()
                self._say(done)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._say(self._done())


def progress_line(done: int, total: int | None, elapsed: float) -> str:
    of = f"/{total}" if total else ""
    left = f", about {clock(elapsed / done * (total - done))} left" if total and 0 < done < total else ""
    return f"[optbench] sweep: {done}{of} jobs done, {clock(elapsed)} elapsed{left}"
