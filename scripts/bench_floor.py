"""The floor of a training step of the seed CNN: its dense layer's three matrix products alone.

h = x·W1 (64×5408 · 5408×256), dW1 = xᵀ·dh, dx = dh·W1ᵀ: about 3 × 89 MFLOP per step, the bulk of the
step's arithmetic. ``scripts/bench_epoch.py`` measures it in the same run as the pipeline and prints
``ratio pipeline/floor``; alone: ``python scripts/bench_floor.py [--steps 300]``.
"""

from __future__ import annotations

import argparse
import time

import torch

WARMUP = 20


def floor_loop(steps: int, device: torch.device, batch: int = 64, features: int = 5408, hidden: int = 256) -> dict:
    """Seconds per step of the three products, into preallocated outputs (no allocation is timed)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, features, generator=g).to(device)
    w = (torch.rand(features, hidden, generator=g) - 0.5).to(device)
    dh = torch.rand(batch, hidden, generator=g).to(device)
    h, dw, dx = torch.empty(batch, hidden, device=device), torch.empty_like(w), torch.empty_like(x)
    for i in range(steps + WARMUP):
        if i == WARMUP:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        torch.mm(x, w, out=h)
        torch.mm(x.t(), dh, out=dw)
        torch.mm(dh, w.t(), out=dx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"step_s": (time.perf_counter() - start) / steps, "checksum": float(h.sum() + dw.sum() + dx.sum())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    result = floor_loop(args.steps, torch.device(args.device))
    print(f"floor: {result['step_s'] * 1e3:.2f} ms/step ({torch.get_num_threads()} threads)")
