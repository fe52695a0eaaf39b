"""Process settings of a run: CPU threads, deterministic kernels and the C allocator.

The thread count can change the last bits of a result (a matrix product split over more threads
sums in another order), so it is part of the run's record and a rerun restores it; the allocator
setting changes speed only.

glibc serves large blocks with ``mmap`` and hands freed heap back to the OS, so on CPU the
tensors of every step (the max-pool backward's 5.5 MB buffer, activations, Adam's temporaries)
are page-faulted in afresh each time: about a third of the seed CNN's step on 2 cores. Raising
glibc's mmap and trim thresholds keeps that memory in the process and reuses it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import warnings

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1024 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory instead of returning it to the OS; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def configure(
    threads: int | None = None, deterministic: bool = True, malloc_tuning: bool = True, processes_per_node: int = 1
) -> tuple[int, bool]:
    """Apply the settings; return the thread count used and whether the allocator setting took effect."""
    threads = threads or max(1, usable_cores() // max(1, processes_per_node))
    torch.set_num_threads(threads)
    # Lightning's DDP set-up sets its own count (cores / processes on this node) unless OMP_NUM_THREADS is set;
    # a run with one process per node would then use other threads than the ones it logs.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return threads, keep_freed_memory() if malloc_tuning else False


def quiet_libraries() -> None:
    """Drop start-up chatter (device banners, ads, an upstream deprecation) that hides our own output."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    for name in ("mlflow.store.db.utils", "mlflow.system_metrics", "pytorch_lightning.trainer.connectors"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("pytorch_lightning.loggers.mlflow").setLevel(logging.ERROR)  # "Creating experiment"
    for message in (
        r".*isinstance\(treespec, LeafSpec\)",
        r"The number of training batches .* is smaller than the logging interval",
        r"It is recommended to use `self.log\(.*sync_dist=True\)`",  # our epoch metrics are reduced already
        r"torch.distributed.nn.functional.all_gather is deprecated",
    ):
        warnings.filterwarnings("ignore", message=message)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
