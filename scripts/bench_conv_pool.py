"""A candidate lever of issue 23, measured alone: the seed CNN's 3×3 convolution and 2×2 max-pool as one
CPU kernel (Numba), against PyTorch's ``conv2d`` + ``max_pool2d`` as the pipeline runs them.

    python scripts/bench_conv_pool.py [--blocks 12] [--steps 30]

Not used by optbench: it sums in another order than oneDNN (other last bits, so it would need a setting of
its own and a 5-seed comparison), and in the pipeline it saved only 0.3–0.5 ms/step (docs/benchmarks.md).
Kept so that the next attempt starts from a measured baseline. Per output channel the four convolution
values of each pooling window go to a small buffer and only their maximum and its position are kept; the
backward pass reads the pooled gradient and the input, never the 26×26 gradient PyTorch fills and scatters.
Prints the candidate's errors against a float64 reference, whether one and two threads give the same
bits, the kernels' times alone, and forward + backward per batch of 64, alternating blocks, side by side.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F


@functools.cache
def _kernels():
    """Compiled on first use (about 10 s; Numba caches the machine code beside this file)."""
    import numba
    import numpy as np

    numba.config.THREADING_LAYER = "workqueue"  # as optim/fused.py: not a second OpenMP runtime

    # Layouts (flat arrays): the input as phases, xs[ci, u, v, a, b, n] = x[n, ci, 2a + u, 2b + v]; a phase
    # plane has `plane` elements, rows of `wh · n`. Outputs and gradients are (C, Ho, Wh, N): a pooled row
    # has Wh ≥ Wo columns, those past Wo unused, so that one pooled position q = (i·Wh + j)·N + n maps to
    # input position q + shift in every phase plane and each inner loop runs over all q of a channel
    # (long and contiguous: it vectorizes). Window position d = 2·dh + dw, kernel tap (kh, kw): input
    # row 2i + dh + kh, column 2j + dw + kw, i.e. phase (r % 2, s % 2), shift (r // 2)·wh·n + (s // 2)·n.

    def forward(xs, plane, wh, n, w, b, groups, out, idx):
        channels, cin_g = w.shape[0], w.shape[1]
        per_group = channels // groups
        size = out.shape[1]
        for c in numba.prange(channels):
            y = np.empty((4, size), dtype=out.dtype)
            first_in = (c // per_group) * cin_g
            for d in range(4):
                yd = y[d]
                for ci in range(cin_g):
                    base = (first_in + ci) * 4 * plane
                    o = np.empty(9, dtype=np.int64)
                    for k in range(9):
                        r, s = d // 2 + k // 3, d % 2 + k % 3
                        o[k] = base + ((r % 2) * 2 + s % 2) * plane + (r // 2) * wh * n + (s // 2) * n
                    x0, x1, x2 = xs[o[0] : o[0] + size], xs[o[1] : o[1] + size], xs[o[2] : o[2] + size]
                    x3, x4, x5 = xs[o[3] : o[3] + size], xs[o[4] : o[4] + size], xs[o[5] : o[5] + size]
                    x6, x7, x8 = xs[o[6] : o[6] + size], xs[o[7] : o[7] + size], xs[o[8] : o[8] + size]
                    wc = w[c, ci]
                    w0, w1, w2, w3, w4, w5, w6, w7, w8 = wc.ravel()
                    first, bc = ci == 0, b[c]
                    for q in range(size):
                        v = bc if first else yd[q]
                        v = v + w0 * x0[q]
                        v = v + w1 * x1[q]
                        v = v + w2 * x2[q]
                        v = v + w3 * x3[q]
                        v = v + w4 * x4[q]
                        v = v + w5 * x5[q]
                        v = v + w6 * x6[q]
                        v = v + w7 * x7[q]
                        v = v + w8 * x8[q]
                        yd[q] = v
            oc, ic, y0, y1, y2, y3 = out[c], idx[c], y[0], y[1], y[2], y[3]
            for q in range(size):
                best, at = y0[q], 0
                if y1[q] > best or y1[q] != y1[q]:
                    best, at = y1[q], 1
                if y2[q] > best or y2[q] != y2[q]:
                    best, at = y2[q], 2
                if y3[q] > best or y3[q] != y3[q]:
                    best, at = y3[q], 3
                oc[q], ic[q] = best, at

    def backward(xs, plane, wh, n, g, idx, groups, wo, dw, db):
        # g (C, Ho·Wh·N), zero in the unused columns; dw (C, Cin / groups, 3, 3) and db (C,) in float64.
        # Each product (the pooled gradient times the input under the window position that won) is added,
        # in float64, to the partial sum of its (column, sample) lane, row by row; the lanes are then summed
        # in order, the unused columns left out.
        channels, size = g.shape
        cin_g = dw.shape[1]
        per_group = channels // groups
        lane = wh * n
        rows = size // lane
        for c in numba.prange(channels):
            first_in = (c // per_group) * cin_g
            gc, ic = g[c], idx[c]
            acc = np.zeros(lane, dtype=gc.dtype)
            for i in range(rows):
                for p in range(lane):
                    acc[p] = acc[p] + gc[i * lane + p]
            db[c] = _total(acc, wo * n)
            for ci in range(cin_g):
                base = (first_in + ci) * 4 * plane
                for k in range(9):
                    kh, kw = k // 3, k % 3
                    o = np.empty(4, dtype=np.uint64)  # unsigned: no negative-index check in the loop
                    for d in range(4):
                        r, s = d // 2 + kh, d % 2 + kw
                        o[d] = base + ((r % 2) * 2 + s % 2) * plane + (r // 2) * lane + (s // 2) * n
                    acc[:] = 0
                    for i in range(rows):
                        row = np.uint64(i * lane)
                        o0, o1, o2, o3 = o[0] + row, o[1] + row, o[2] + row, o[3] + row
                        for p_ in range(lane):
                            p = np.uint64(p_)
                            at, v0, v1, v2, v3 = ic[row + p], xs[o0 + p], xs[o1 + p], xs[o2 + p], xs[o3 + p]
                            lo = v0 if at == 0 else v1  # all four loaded: selects, no branches
                            hi = v2 if at == 2 else v3
                            acc[p] = acc[p] + gc[row + p] * (lo if at < 2 else hi)
                    dw[c, ci, kh, kw] = _total(acc, wo * n)

    def _total(acc, used):
        total = 0.0  # float64, in lane order
        for p in range(used):
            total += np.float64(acc[p])
        return total

    options = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)
    _total = numba.njit(**options)(_total)
    parallel = dict(parallel=True, **options)
    return numba.njit(**parallel)(forward), numba.njit(**parallel)(backward), numba.set_num_threads


def _phases(x: torch.Tensor) -> torch.Tensor:
    """``(N, Cin, H, W)`` as ``(Cin, 2, 2, ⌈H/2⌉ + 1, ⌈W/2⌉, N)``: rows and columns split by parity,
    samples last, and one zero row more (a pooled row's unused columns read one row past the last)."""
    n, cin, h, w = x.shape
    hh, wh = (h + 1) // 2, (w + 1) // 2
    padded = F.pad(x, (0, 2 * wh - w, 0, 2 * hh + 2 - h))
    return padded.reshape(n, cin, hh + 1, 2, wh, 2).permute(1, 3, 5, 2, 4, 0).contiguous()


def _threads() -> None:
    import numba

    _kernels()[2](min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


class ConvPool(torch.autograd.Function):
    """``max_pool2d(conv2d(x, weight, bias, groups=groups), 2)`` with the kernels above (no input gradient)."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups):
        n, c = x.shape[0], weight.shape[0]
        rows, cols = (x.shape[2] - 2) // 2, (x.shape[3] - 2) // 2
        xs = _phases(x.detach())
        plane, wh = xs[0, 0, 0].numel(), xs.shape[4]
        out = x.new_empty((c, rows, wh, n))
        idx = torch.empty(out.shape, dtype=torch.int8)
        _threads()
        _kernels()[0](xs.view(-1).numpy(), plane, wh, n, weight.detach().contiguous().numpy(), bias.detach().numpy(),
                      groups, out.view(c, -1).numpy(), idx.view(c, -1).numpy())  # fmt: skip
        ctx.save_for_backward(xs, idx)
        ctx.groups, ctx.weight_shape, ctx.cols = groups, weight.shape, cols
        return out[:, :, :cols].permute(3, 0, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        xs, idx = ctx.saved_tensors
        c, rows, wh, n = idx.shape
        g = grad.new_zeros((c, rows, wh, n))
        g[:, :, : ctx.cols].copy_(grad.permute(1, 2, 3, 0))
        dw = torch.empty(ctx.weight_shape, dtype=torch.float64)
        db = torch.empty(c, dtype=torch.float64)
        _threads()
        _kernels()[1](xs.view(-1).numpy(), xs[0, 0, 0].numel(), wh, n, g.view(c, -1).numpy(), idx.view(c, -1).numpy(),
                      ctx.groups, ctx.cols, dw.numpy(), db.numpy())  # fmt: skip
        return None, dw.to(grad.dtype), db.to(grad.dtype), None


def check_values() -> None:
    """Errors against float64 PyTorch, odd sizes and groups included; same bits on one thread and two."""
    torch.manual_seed(0)
    for n, cin, size, c, groups in ((64, 1, 28, 32, 1), (5, 1, 29, 32, 1), (7, 3, 28, 63, 3)):
        x = torch.rand(n, cin, size, size)
        w = (torch.randn(c, cin // groups, 3, 3) * 0.3).requires_grad_()
        b = (torch.randn(c) * 0.1).requires_grad_()
        grad = torch.randn(n, c, (size - 2) // 2, (size - 2) // 2)
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            w.grad = b.grad = None
            out = ConvPool.apply(x, w, b, groups)
            out.backward(grad)
            results.append((out.detach().clone(), w.grad.clone(), b.grad.clone()))
        same = all(torch.equal(a, z) for a, z in zip(*results, strict=True))
        wd, bd = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
        ref = F.max_pool2d(F.conv2d(x.double(), wd, bd, groups=groups), 2)
        ref.backward(grad.double())
        out, dw, db = results[-1]
        print(f"N={n} Cin={cin} {size}x{size} C={c} groups={groups}: forward max |err| "
              f"{(out.double() - ref).abs().max():.1e}, weight grad max rel err "
              f"{((dw.double() - wd.grad).abs().max() / wd.grad.abs().max()):.1e}, bias "
              f"{((db.double() - bd.grad).abs().max() / bd.grad.abs().max()):.1e}; 1 and 2 threads equal: {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--steps", type=int, default=30, help="batches per block")
    args = parser.parse_args()
    from optbench import runtime
    from optbench.in_memory import as_float_images
    from optbench.model import SeedCNN, pooled_contiguous

    check_values()
    threads, _ = runtime.configure()
    torch.manual_seed(0)
    net = SeedCNN(channels_last=True)
    x = as_float_images((torch.rand(64, 28, 28) * 255).to(torch.uint8))
    grad = torch.randn(64, 32, 13, 13)

    def pytorch() -> None:  # SeedCNN.forward's first layers and their backward
        torch.relu_(
            pooled_contiguous(net.pool(net.conv(x.contiguous(memory_format=torch.channels_last))), True)
        ).backward(grad)

    def candidate() -> None:
        torch.relu_(ConvPool.apply(x, net.conv.weight, net.conv.bias, 1).contiguous()).backward(grad)

    candidate()  # compile (or load Numba's cache)
    times: dict[str, list[float]] = {"pytorch": [], "candidate": []}
    for _ in range(args.blocks):
        for name, step in (("pytorch", pytorch), ("candidate", candidate)):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    faster = sum(c < p for p, c in zip(times["pytorch"], times["candidate"], strict=True))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{threads} threads, forward + backward per batch of 64 (median of {args.blocks} blocks): PyTorch "
          f"{med['pytorch']:.3f} ms, candidate {med['candidate']:.3f} ms; candidate faster in {faster}/{args.blocks}")  # fmt: skip


if __name__ == "__main__":
    main()
