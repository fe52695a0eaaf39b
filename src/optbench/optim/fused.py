"""One pass per tensor for an optimizer's update on the CPU (``fused=True``): our rule, compiled by Numba.

The foreach path runs Adam's rule as six kernels (lerp, mul, addcmul, sqrt, add, addcdiv), each a full
pass over the parameter, its gradient and its state; on the seed CNN's 1.4M weights that is several
milliseconds of a CPU step spent streaming the same memory (docs/benchmarks.md). Here each element is
read once, updated in registers and written once. PyTorch's own fused CPU kernels implement PyTorch's
rules, not ours (Keras's ε̂), so the loop is our own — the same formula as ``_update_single``.

Each operation is one IEEE float operation of the parameter's dtype, with no contraction into FMA, and
the square root is the correctly rounded one; PyTorch's CPU ``sqrt`` (MKL's) differs from it in the
last bit for about a fifth of inputs, and ``lerp`` uses an FMA. So a fused step gives other last bits
than the foreach path: ``fused`` is part of a run's identity (``optimizer.fused``), and runs logged
before it existed read as ``fused=false``. Elements are independent, so the result is the same for any
number of threads.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import torch

DTYPES = (torch.float32, torch.float64)
# Elements from which a tensor's update is split over threads. The update is bound by memory, which one
# core nearly saturates (cold caches, 2 cores: 16.8M elements 8.98 ms on one thread, 8.54 on two), and
# starting Numba's threads costs ~0.1 ms: in the seed CNN's step (1.4M weights) one thread is 0.24-0.48 ms
# faster (docs/benchmarks.md).
PARALLEL_FROM = 1 << 24


def available(params: list[torch.Tensor], capturable: bool = False) -> str | None:
    """Why these tensors cannot take the fused path, or None when they can."""
    if capturable:
        return "capturable steps (CUDA graphs) keep the foreach path"
    if not numba_installed():
        return "Numba is not installed (pip install numba)"
    for p in params:
        if p.device.type != "cpu":
            return f"the fused kernels run on the CPU; a parameter is on {p.device}"
        if p.dtype not in DTYPES or p.dtype != params[0].dtype:
            return f"the fused kernels take float32 or float64 parameters of one dtype; got {p.dtype}"
        if p.is_sparse:
            return "sparse tensors"
    return None


@functools.cache
def numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _kernels():
    """Compiled on first use (about a second; Numba caches the machine code beside this file)."""
    import numba

    # Numba's own thread pool, not a second OpenMP runtime beside PyTorch's: the two runtimes' spinning
    # threads slow each other's kernels (on 2 cores the fused step then saved 0.3 ms instead of 1.8 ms).
    numba.config.THREADING_LAYER = "workqueue"

    def adam(p, g, m, v, vmax, w1, beta2, c2, step, sqrt_div, eps, amsgrad):
        for i in numba.prange(p.shape[0]):
            gi = g[i]
            mi = m[i] + w1 * (gi - m[i])
            vi = v[i] * beta2 + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            if amsgrad:
                vm = vmax[i]
                vi = vi if (vi > vm or vi != vi) else vm  # torch.maximum: NaN wins
                vmax[i] = vi
            p[i] = p[i] + step * (mi / (np.sqrt(vi) / sqrt_div + eps))

    options = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)
    return {
        "adam": (numba.njit(**options)(adam), numba.njit(parallel=True, **options)(adam)),
        "set_threads": numba.set_num_threads,
        "max_threads": numba.config.NUMBA_NUM_THREADS,
    }


def _flat(t: torch.Tensor) -> np.ndarray | None:
    """A 1-D NumPy view of a dense tensor's memory (any layout, channels_last included), or None."""
    t = t.detach()
    if t.is_contiguous():
        return t.numpy().reshape(-1)
    view = t.permute(sorted(range(t.dim()), key=lambda d: t.stride(d), reverse=True))
    return view.numpy().reshape(-1) if view.is_contiguous() else None


def _run(name: str, tensors: list[torch.Tensor | None], scalars: tuple) -> None:
    """Kernel ``name`` over same-shaped tensors (the first is the parameter; None: an unused one), in place."""
    p = tensors[0]
    used = [t for t in tensors if t is not None]
    flats = [_flat(t) for t in used] if all(t.stride() == p.stride() for t in used) else [None]
    work = None
    if any(f is None for f in flats):  # other layouts: the same elementwise loop on contiguous copies
        work = [t.detach().contiguous() for t in used]
        flats = [t.view(-1).numpy() for t in work]
    arrays = iter(flats)
    empty = np.empty(0, dtype=flats[0].dtype)
    kernels = _kernels()
    serial, parallel = kernels[name]
    threads = torch.get_num_threads()
    if threads > 1 and p.numel() >= PARALLEL_FROM:
        kernels["set_threads"](min(threads, kernels["max_threads"]))
        kernel = parallel
    else:
        kernel = serial
    dtype = flats[0].dtype.type
    kernel(
        *(empty if t is None else next(arrays) for t in tensors),
        *(s if isinstance(s, bool) else dtype(s) for s in scalars),
    )
    if work is not None:
        for t, w in zip(used, work, strict=True):
            if t.data_ptr() != w.data_ptr():
                t.copy_(w)


def adam_(
    params: list, grads: list, ms: list, vs: list, vmaxs: list | None,
    beta1: float, beta2: float, step_sizes: list[float], sqrt_divs: list[float], eps: float,
) -> None:  # fmt: skip
    """Adam's update, in place: ``p += step_size · m / (√v / sqrt_div + eps)`` after the moments' update."""
    for i, p in enumerate(params):
        vmax = None if vmaxs is None else vmaxs[i]
        scalars = (1 - beta1, beta2, 1 - beta2, -step_sizes[i], sqrt_divs[i], eps, vmaxs is not None)
        _run("adam", [p, grads[i], ms[i], vs[i], vmax], scalars)
