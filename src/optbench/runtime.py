"""Process settings that change speed, never results: CPU threads and the C allocator.

glibc serves large blocks with ``mmap`` and hands freed heap back to the OS, so on CPU the
tensors of every step (the max-pool backward's 5.5 MB buffer, activations, Adam's temporaries)
are page-faulted in afresh each time: about a third of the seed CNN's step on 2 cores. Raising
glibc's mmap and trim thresholds keeps that memory in the process and reuses it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

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


def configure(threads: int | None = None, malloc_tuning: bool = True, processes_per_node: int = 1) -> dict[str, str]:
    """Apply the settings; return what was set that the run's tags would not show otherwise."""
    threads = threads or max(1, usable_cores() // max(1, processes_per_node))
    torch.set_num_threads(threads)
    tuned = keep_freed_memory() if malloc_tuning else False
    return {"malloc_tuning": str(tuned).lower()}
