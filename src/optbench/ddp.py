"""DDP under Hydra: make Lightning's re-launched ranks run *this* job, not the command line again.

Lightning's ``ddp`` strategy starts ranks > 0 by re-executing ``sys.argv``. Under ``optbench-train -m``
that is the whole sweep, so every child would run every job (Lightning #11300, #15689; Hydra #2070),
and children are pointed at ``hydra.run.dir``, which in a multirun is not the job's folder (Lightning
#16694). So the children get the job's own composed config (``<job>/.hydra``), its folder as run dir
and no output folder of their own. Afterwards the launcher's environment variables are removed: a
leftover ``LOCAL_RANK`` would make the next job of a sweep believe it is a child
(lightning-hydra-template #194, #226). Under SLURM, srun starts one task per rank and no re-launch happens.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, read_write

DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def processes_per_node(cfg: DictConfig) -> int:
    """How many processes of this run share the node's CPU cores (DDP ranks on the CPU)."""
    devices = cfg.trainer.get("devices")
    return devices if cfg.trainer.get("accelerator") == "cpu" and isinstance(devices, int) else 1


def _end_process_group() -> None:
    """Destroy the process group: a rank that exits with gloo's threads alive aborts ("terminate called ...")
    and Lightning's child observer then kills the whole sweep."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def children_run_this_job():
    if not HydraConfig.initialized() or "LOCAL_RANK" in os.environ:
        try:
            yield
        finally:
            _end_process_group()
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
        _end_process_group()
