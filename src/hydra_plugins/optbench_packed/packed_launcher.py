"""``hydra/launcher=packed``: a multirun's jobs that can share a process train as one batched model.

Jobs whose configs differ only in the optimizer, its hyperparameters, the seed and labels (same model, data,
batch size, epochs, device) form a pack of at most ``max_pack``; each pack is one ``optbench.packed``
training. Every job still gets its own output folder (``.hydra/`` files, ``optbench_run.json``), its own
MLflow run and Hydra's job callbacks.
"""

# No `from __future__ import annotations` here: Hydra executes plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, _save_config, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.optbench_packed.packed_launcher.PackedLauncher"
    max_pack: int = 32  # replicas per process at most


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="optbench")


def group_jobs(keys: list[str], max_pack: int) -> list[list[int]]:
    """Indices of jobs with equal keys, in order of first appearance, in packs of at most ``max_pack``."""
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    return [members[i : i + max_pack] for members in by_key.values() for i in range(0, len(members), max_pack)]


class PackedLauncher(Launcher):
    def __init__(self, max_pack: int = 32) -> None:
        if max_pack < 1:
            raise ValueError(f"hydra.launcher.max_pack={max_pack}; it must be >= 1")
        self.max_pack = max_pack
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job(self, overrides: Sequence[str], idx: int) -> tuple[DictConfig, DictConfig]:
        """(the job's config with its ``hydra`` node, the task config), its folder made and recorded."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
            output = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            config.hydra.runtime.output_dir = str(output.resolve())
        HydraConfig.instance().set_config(config)
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        output.mkdir(parents=True, exist_ok=True)
        if config.hydra.output_subdir is not None:
            hydra_output = output / str(config.hydra.output_subdir)
            _save_config(task, "config.yaml", hydra_output)
            _save_config(config.hydra, "hydra.yaml", hydra_output)
            _save_config(OmegaConf.create(list(overrides)), "overrides.yaml", hydra_output)
        return config, task

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from optbench import cache
        from optbench.config import ConfigError
        from optbench.packed.train import pack_key, run_pack
        from optbench.pipeline import RunResult
        from optbench.provenance import hydra_context

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._job(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        returns: list[JobReturn | None] = [None] * len(jobs)
        to_train = []
        for i, (config, task) in enumerate(jobs):
            HydraConfig.instance().set_config(config)
            try:
                hit = (
                    cache.reuse(task, hydra_context(task).get("sweep_id")) if task.get("skip_finished", True) else None
                )
            except ConfigError:
                hit = None  # the pack reports the config's error
            if hit is None:
                to_train.append(i)
                continue
            self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
            result = RunResult(hit["run_id"], "FINISHED", hit["metrics"], cached=True)
            returns[i] = self._end(job_overrides[i], config, task, result)
        packs = group_jobs([pack_key(jobs[i][1]) for i in to_train], self.max_pack)
        packs = [[to_train[k] for k in members] for members in packs]
        log.info(f"Launching {len(to_train)} jobs as {len(packs)} pack(s) of up to {self.max_pack}")
        for members in packs:
            for i in members:
                log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(job_overrides[i]))}")
                HydraConfig.instance().set_config(jobs[i][0])
                self.hydra_context.callbacks.on_job_start(config=jobs[i][0], task_function=self.task_function)
            try:
                results: list[Any] = run_pack(
                    [jobs[i][1] for i in members], hydra_configs=[jobs[i][0] for i in members]
                )
            except ConfigError as err:
                log.error("%s", err)
                results = [RunResult(None, "INVALID", error=str(err)) for _ in members]
            for i, result in zip(members, results, strict=True):
                returns[i] = self._end(job_overrides[i], *jobs[i], result)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _end(self, overrides: Sequence[str], config: DictConfig, task: DictConfig, result: Any) -> JobReturn:
        """The job's return, through Hydra's job-end callbacks (the job record, progress)."""
        ret = JobReturn(overrides=list(overrides), cfg=task, hydra_cfg=config, working_dir=str(Path.cwd()))
        ret.task_name = config.hydra.job.name
        ret.status, ret.return_value = JobStatus.COMPLETED, result
        HydraConfig.instance().set_config(config)
        self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        return ret
