"""The floor of a training step of the seed CNN: its dense layer's three matrix products alone.

h = x·W1 (64×5408 · 5408×256), dW1 = xᵀ·dh, dx = dh·W1ᵀ: about 3 × 89 MFLOP per step, the bulk of the
step's arithmetic. ``scripts/bench_epoch.py`` runs it in blocks between the pipeline's own blocks of steps,
in the pipeline's process, and prints ``ratio pipeline/floor``; alone: ``python scripts/bench_floor.py
[--steps 300]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

WARMUP = 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Floor:
    """The three products into preallocated outputs (no allocation is timed)."""

    def __init__(self, device: torch.device, batch: int = 64, features: int = 5408, hidden: int = 256):
        g = torch.Generator(device="cpu").manual_seed(0)
        self.device = device
        self.x = torch.rand(batch, features, generator=g).to(device)
        self.w = (torch.rand(features, hidden, generator=g) - 0.5).to(device)
        self.dh = torch.rand(batch, hidden, generator=g).to(device)
        self.h, self.dw, self.dx = (torch.empty(batch, hidden, device=device), torch.empty_like(self.w),
                                    torch.empty_like(self.x))  # fmt: skip

    def step(self) -> None:
        torch.mm(self.x, self.w, out=self.h)
        torch.mm(self.x.t(), self.dh, out=self.dw)
        torch.mm(self.dh, self.w.t(), out=self.dx)

    def block(self, steps: int, warmup: int = 3) -> float:
        """Seconds per step over ``steps`` steps, after ``warmup`` untimed ones."""
        for _ in range(warmup):
            self.step()
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (time.perf_counter() - start) / steps

    def checksum(self) -> float:
        return float(self.h.sum() + self.dw.sum() + self.dx.sum())


class Paired:
    """A loop's steps timed in blocks of ``size``, each just after a block of the floor in the same process
    (not counted in the loop's time): ``tick(i)`` at the start of the loop's i-th timed step."""

    def __init__(self, floor: Floor | None, size: int, device: torch.device):
        self.floor, self.size, self.device = floor, size, device
        self.blocks, self.floors, self.start = [], [], None

    def tick(self, i: int) -> None:
        if i % self.size:
            return
        sync(self.device)
        if self.start is not None:
            self.blocks.append((time.perf_counter() - self.start) / self.size)
        if self.floor is not None:
            self.floors.append(self.floor.block(self.size))
        self.start = time.perf_counter()

    def ratio(self) -> float:
        """The median over the pairs of a loop block and the floor block before it."""
        pairs = [b / f for b, f in zip(self.blocks, self.floors, strict=False)]
        return statistics.median(pairs) if pairs else math.nan


def floor_loop(steps: int, device: torch.device) -> dict:
    """Seconds per step of the three products, alone in this process."""
    floor = Floor(device)
    return {"step_s": floor.block(steps, warmup=WARMUP), "checksum": floor.checksum()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    result = floor_loop(args.steps, torch.device(args.device))
    print(f"floor: {result['step_s'] * 1e3:.2f} ms/step ({torch.get_num_threads()} threads)")
