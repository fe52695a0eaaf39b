"""The seed CNN's first block alone: ``model.net.conv_pool=fused`` (optbench.conv_pool's CPU kernels) against
PyTorch's conv2d + max_pool2d + ReLU + dropout as ``conv_pool=torch`` runs them, forward and backward.

    python scripts/bench_conv_pool.py [--blocks 12] [--steps 30]

Prints the fused block's largest errors against float64 PyTorch (values, weight and bias gradients), and
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


def errors(net: SeedCNN, x: torch.Tensor) -> str:
    """Largest differences of the fused block from PyTorch's layers in float64 (no dropout)."""
    weight, bias = net.conv.weight.detach().requires_grad_(), net.conv.bias.detach().requires_grad_()
    out = conv_pool.conv_relu_pool(x, weight, bias)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    out.backward(grad)
    w64, b64 = weight.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    want = torch.relu(F.max_pool2d(F.conv2d(x.double(), w64, b64), 2))
    want.backward(grad.permute(3, 0, 1, 2).double())
    value = (out.permute(3, 0, 1, 2).double() - want).abs().max() / want.abs().max()
    dw = (weight.grad.double() - w64.grad).abs().max() / w64.grad.abs().max()
    db = (bias.grad.double() - b64.grad).abs().max() / b64.grad.abs().max()
    return f"largest relative error vs float64: values {value:.1e}, weight gradient {dw:.1e}, bias gradient {db:.1e}"


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
