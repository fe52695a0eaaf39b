"""The seed CNN's first block alone: ``model.net.conv_pool=fused`` (optbench.conv_pool's CPU kernels) against
PyTorch's conv2d + max_pool2d + ReLU + dropout as ``conv_pool=torch`` runs them, forward and backward.

    python scripts/bench_conv_pool.py [--blocks 12] [--steps 30]

Prints the fused block's largest errors against float64 PyTorch (values, weight and bias gradients) beside
PyTorch's own float32 errors, and
the ms per batch of 64 of each path, in alternating blocks of ``--steps`` batches (median over blocks, and
in how many blocks the fused one was faster). Inside a training step the fused block saves more than it
does here, where PyTorch's 26×26 tensors stay in the caches between calls (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from optbench import conv_pool, runtime
from optbench.dropout import keep_bytes
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN, pooled_contiguous


def block(path: str, net: SeedCNN, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """Values (samples first), weight and bias gradients of the first block (no dropout), in float64."""
    weight = net.conv.weight.detach().to(dtype).contiguous().requires_grad_()
    bias = net.conv.bias.detach().to(dtype).requires_grad_()
    if path == "fused":
        out = conv_pool.conv_relu_pool(x.to(dtype), weight, bias)
        out.backward(grad.to(dtype))
        out = out.permute(3, 0, 1, 2)
    else:
        out = torch.relu(F.max_pool2d(F.conv2d(x.to(dtype), weight, bias), 2))
        out.backward(grad.permute(3, 0, 1, 2).to(dtype))
    return [out.detach().double(), weight.grad.double(), bias.grad.double()]


def errors(net: SeedCNN, x: torch.Tensor) -> str:
    """Largest differences from PyTorch's layers in float64, of the fused block and of PyTorch's own in float32:
    on real images the weight gradients of both differ by ~1e-2 where near-ties of a window round to
    another winner in float32; in float64 the two paths agree to ~1e-14."""
    grad = torch.randn(32, 13, 13, 64, generator=torch.Generator().manual_seed(0))
    want = block("torch", net, x, grad, torch.float64)

    def rel(got: list[torch.Tensor]) -> str:
        parts = [(g - w).abs().max() / w.abs().max() for g, w in zip(got, want, strict=True)]
        return "values {:.1e}, weight gradient {:.1e}, bias gradient {:.1e}".format(*parts)

    return (
        f"largest relative error vs PyTorch in float64: fused float32 {rel(block('fused', net, x, grad, torch.float32))}; "
        f"PyTorch float32 {rel(block('torch', net, x, grad, torch.float32))}; "
        f"fused float64 {rel(block('fused', net, x, grad, torch.float64))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--steps", type=int, default=30, help="batches per block")
    args = parser.parse_args()
    threads, _ = runtime.configure()
    torch.manual_seed(0)
    net = SeedCNN(channels_last=True, conv_pool="torch").train()
    x = as_float_images((torch.rand(64, 28, 28) * 255).to(torch.uint8))
    print(errors(net, x))
    grad = torch.randn(32, 13, 13, 64)

    def pytorch() -> None:  # SeedCNN.forward's first layers, conv_pool=torch, and their backward
        y = torch.relu_(pooled_contiguous(net.pool(net.conv(x.contiguous(memory_format=torch.channels_last))), True))
        net.dropout1(y).backward(grad.permute(3, 0, 1, 2))

    def fused() -> None:  # the same with conv_pool=fused (its output has the samples last)
        keep = keep_bytes(conv_pool.pooled_numel(x, net.conv.weight), net.dropout1.p)
        conv_pool.conv_relu_pool(x, net.conv.weight, net.conv.bias, keep=keep).backward(grad)

    fused()  # compile (or load Numba's cache)
    times: dict[str, list[float]] = {"pytorch": [], "fused": []}
    for _ in range(args.blocks):
        for name, step in (("pytorch", pytorch), ("fused", fused)):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    faster = sum(f < p for p, f in zip(times["pytorch"], times["fused"], strict=True))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{threads} threads, forward + backward per batch of 64 (median of {args.blocks} blocks): PyTorch "
          f"{med['pytorch']:.3f} ms, fused {med['fused']:.3f} ms; fused faster in {faster}/{args.blocks}")  # fmt: skip


if __name__ == "__main__":
    main()
