"""The seed CNN's first block — 3×3 convolution, 2×2 max-pool, ReLU, the dropout after them — as one pair
of CPU kernels (``model.net.conv_pool=fused``).

PyTorch runs the block as a convolution that writes its full 26×26 output, a pool that reads it back and
keeps 8-byte argmax indices, and, backward, a 26×26 gradient zero-filled and scattered before oneDNN sums
the weight gradient over it: on the seed CNN that is 5.5 MB written and read several times per step, the
largest share of a CPU step above its dense layer (docs/benchmarks.md). Here the forward pass computes the
four convolution values of each pooling window and writes only the pooled, rectified, dropped-out value and
a 1-byte window position; the backward pass sums the weight gradient over the positions that won, reading
the pooled gradient and the input, never a 26×26 tensor. Both run over the batch as the innermost,
vectorised axis: the input is laid out as four phase planes (even/odd rows × even/odd columns, samples
last), so every tap of every window position is a contiguous run of memory. The output keeps the samples
last, ``(C, Hp, Wp, N)``, and goes into the dense layer as columns (``ColumnsLinear``), so no transposing
copy is made either way; dropout's mask is drawn in that order (``dropout.keep_bytes``).

The same sums in another order than oneDNN's, and other masks for a seed: the path is a named setting of
its own (``model.net.conv_pool``, part of a run's identity; runs logged before it read as ``torch``). Each
value is the same sequence of IEEE float operations (no FMA) whatever the number of threads: the kernels
run on one (Numba's thread pool costs ~0.1 ms to start; a second Python thread, competing with PyTorch's
spinning OpenMP worker, made the step 0.3 ms slower, docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .optim.fused import numba_installed

PATHS = ("fused", "torch")
DTYPES = (torch.float32, torch.float64)


def check_path(path: str | None) -> None:
    if path is not None and path not in PATHS:
        raise ValueError(
            f"Unknown model.net.conv_pool={path!r}; choose one of: {', '.join(PATHS)}, or null (fused on the CPU)."
        )


def auto_path(device: torch.device | str, precision: str | int | None = "32-true") -> str:
    """What ``conv_pool=null`` runs for a trainer's device and precision: the kernels on the CPU at full float
    precision, PyTorch's layers elsewhere (as ``takes`` decides per batch)."""
    full = str(precision) in ("32-true", "32", "64-true", "64")
    return "fused" if torch.device(device).type == "cpu" and full and numba_installed() else "torch"


def takes(path: str | None, x: torch.Tensor) -> bool:
    """Whether the block runs fused for this batch: always for ``fused``, for ``null`` where the kernels can."""
    if path is not None:
        return path == "fused"
    autocast = torch.is_autocast_enabled(x.device.type)
    return x.device.type == "cpu" and x.dtype in DTYPES and not autocast and numba_installed()


@functools.cache
def _kernels():
    """Compiled on first use (a few seconds; Numba caches the machine code beside this file)."""
    import numba

    # Indices are loop variables or slices only: a computed index makes Numba check it for negative
    # wrap-around, and that check alone stops LLVM from vectorising a loop.

    def forward(xp, w, b, groups, out, idx, drop, threshold, scale):
        # xp (Cin, 2, 2, Hp + 1, (Wp + 1)·N): the phases; w (C, Cin/groups · 9); out, idx (C, Hp, Wp·N).
        # drop (C, Hp, Wp·N) uint8 or empty: dropout's random byte per element, kept (times scale) below threshold
        channels, taps = w.shape
        cin = taps // 9
        _, rows, size = out.shape
        n = xp.shape[4] - size
        per_group = channels // groups
        y = np.empty((4, size), dtype=out.dtype)  # the window's four convolution values, position d = 2·dy + dx
        for c in range(channels):
            first = (c // per_group) * cin
            bias = b[c]
            for i in range(rows):
                for d in range(4):
                    dy, dx = d // 2, d % 2
                    yd = y[d]
                    for ci in range(cin):
                        k = ci * 9
                        w0, w1, w2, w3, w4 = w[c, k], w[c, k + 1], w[c, k + 2], w[c, k + 3], w[c, k + 4]
                        w5, w6, w7, w8 = w[c, k + 5], w[c, k + 6], w[c, k + 7], w[c, k + 8]
                        # input row 2i + dy + kh lies in phase row (dy + kh) % 2 at i + (dy + kh) // 2; column
                        # 2j + dx + kw in phase column (dx + kw) % 2, shifted by (dx + kw) // 2 samples blocks
                        plane = xp[first + ci]
                        r0e, r0o = plane[dy, dx, i], plane[dy, 1 - dx, i]
                        r1e, r1o = plane[1 - dy, dx, i + dy], plane[1 - dy, 1 - dx, i + dy]
                        r2e, r2o = plane[dy, dx, i + 1], plane[dy, 1 - dx, i + 1]
                        s1 = dx * n  # kw = 1 crosses into the next block only from an odd column
                        x0, x1, x2 = r0e[:size], r0o[s1 : s1 + size], r0e[n : n + size]
                        x3, x4, x5 = r1e[:size], r1o[s1 : s1 + size], r1e[n : n + size]
                        x6, x7, x8 = r2e[:size], r2o[s1 : s1 + size], r2e[n : n + size]
                        if ci == 0:
                            for q in range(size):
                                yd[q] = (bias + w0 * x0[q] + w1 * x1[q] + w2 * x2[q] + w3 * x3[q] + w4 * x4[q]
                                         + w5 * x5[q] + w6 * x6[q] + w7 * x7[q] + w8 * x8[q])  # fmt: skip
                        else:
                            for q in range(size):
                                yd[q] = (yd[q] + w0 * x0[q] + w1 * x1[q] + w2 * x2[q] + w3 * x3[q] + w4 * x4[q]
                                         + w5 * x5[q] + w6 * x6[q] + w7 * x7[q] + w8 * x8[q])  # fmt: skip
                # max_pool2d's rule: the first maximum in window order wins, NaN over everything; then ReLU,
                # whose gradient passes where its output is > 0 (position -1: no gradient)
                y0, y1, y2, y3 = y[0], y[1], y[2], y[3]
                o, at = out[c, i], idx[c, i]
                for q in range(size):
                    v0, v1, v2, v3 = y0[q], y1[q], y2[q], y3[q]
                    up = v1 > v0 or v1 != v1
                    best, pos = v1 if up else v0, np.int8(1) if up else np.int8(0)
                    up = v2 > best or v2 != v2
                    best, pos = v2 if up else best, np.int8(2) if up else pos
                    up = v3 > best or v3 != v3
                    best, pos = v3 if up else best, np.int8(3) if up else pos
                    keep = best > 0 or best != best
                    o[q] = best if keep else 0
                    at[q] = pos if keep else np.int8(-1)
                if drop.size:  # dropout's x · mask, the mask (0 or 1/keep) as keep_mask makes it
                    r, zero = drop[c, i], scale - scale
                    for q in range(size):
                        o[q] = o[q] * (scale if r[q] < threshold else zero)

    def backward(xp, g, idx, groups, dw, db, drop, threshold, scale):
        # g, idx (C, Hp, Wp·N); dw (C, Cin/groups · 9), db (C,). Per (tap, column, sample) lane the products
        # are summed over the pooled rows; the lanes are then summed over columns and last over samples.
        # The gradient through dropout's mask first, then ReLU's and the pool's gates, as autograd chains them.
        channels, taps = dw.shape
        cin = taps // 9
        _, rows, size = g.shape
        n = xp.shape[4] - size
        per_group = channels // groups
        acc = np.empty((taps + 1, size), dtype=g.dtype)  # the last row: the bias
        gm = np.empty(size, dtype=g.dtype)
        lane = np.empty(n, dtype=g.dtype)
        for c in range(channels):
            first = (c // per_group) * cin
            acc[:] = 0
            ab = acc[taps]
            for i in range(rows):
                gi, at = g[c, i], idx[c, i]
                if drop.size:
                    r, zero = drop[c, i], scale - scale
                    for q in range(size):
                        gq = gi[q] * (scale if r[q] < threshold else zero)
                        gm[q] = gq if at[q] >= 0 else 0
                else:
                    for q in range(size):
                        gm[q] = gi[q] if at[q] >= 0 else 0
                for q in range(size):
                    ab[q] = ab[q] + gm[q]
                for ci in range(cin):
                    plane = xp[first + ci]
                    for kh in range(3):
                        # window row dy = 0 reads input row 2i + kh, dy = 1 row 2i + kh + 1
                        top, bot = (kh % 2, i + kh // 2), ((kh + 1) % 2, i + (kh + 1) // 2)
                        for kw in range(3):
                            a = acc[ci * 9 + kh * 3 + kw]
                            # window column dx = 0 reads phase column kw % 2, dx = 1 the other one, a block on
                            s0, s1 = (kw // 2) * n, ((kw + 1) // 2) * n
                            c0, c1 = kw % 2, 1 - kw % 2
                            x0, x1 = (
                                plane[top[0], c0, top[1]][s0 : s0 + size],
                                plane[top[0], c1, top[1]][s1 : s1 + size],
                            )
                            x2, x3 = (
                                plane[bot[0], c0, bot[1]][s0 : s0 + size],
                                plane[bot[0], c1, bot[1]][s1 : s1 + size],
                            )
                            for q in range(size):
                                d = at[q]  # -1 (all bits set) picks x3, times a zero gradient
                                v0, v1, v2, v3 = x0[q], x1[q], x2[q], x3[q]
                                low = v1 if d & 1 else v0  # selects on bits: the form LLVM vectorises
                                high = v3 if d & 1 else v2
                                a[q] = a[q] + gm[q] * (high if d & 2 else low)
            for k in range(taps + 1):
                lane[:] = 0
                for j in range(size // n):
                    col = acc[k, j * n : (j + 1) * n]
                    for s in range(n):
                        lane[s] = lane[s] + col[s]
                total = lane[0]
                for s in range(1, n):
                    total += lane[s]
                if k < taps:
                    dw[c, k] = total
                else:
                    db[c] = total

    options = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)
    return numba.njit(**options)(forward), numba.njit(**options)(backward)


def phases(x: torch.Tensor) -> torch.Tensor:
    """``(N, Cin, H, W)`` → ``(Cin, 2, 2, Hp + 1, (Wp + 1)·N)``: ``[ci, ry, rx, a, b·N + s] = x[s, ci, 2a + ry,
    2b + rx]``, the rows and columns a 2×2 pool of a 3×3 convolution reads (a last odd row or column it
    never reads is dropped)."""
    n, cin, h, w = x.shape
    hh, wh = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    x = x[:, :, : 2 * hh, : 2 * wh].reshape(n, cin, hh, 2, wh, 2)
    return x.permute(1, 3, 5, 2, 4, 0).reshape(cin, 2, 2, hh, wh * n)


class ConvReluPool(torch.autograd.Function):
    """``dropout(relu(max_pool2d(conv2d(x, weight, bias, groups=groups), 2)))`` on the CPU, returned with the
    samples last, ``(C, Hp, Wp, N)``; no gradient for ``x`` (the first layer's input never needs one).
    ``keep``: the dropout mask's ``(bytes, threshold, keep probability)`` (``dropout.keep_bytes``), or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, keep):
        channels, rows, _, _ = shape = pooled_shape(x, weight)
        xp = phases(x.detach())
        out = x.new_empty(shape)
        idx = torch.empty(out.shape, dtype=torch.int8)
        drop, threshold, scale = _dropout_args(keep, out)
        forward, _ = _kernels()
        forward(xp.numpy(), _numpy(weight.reshape(channels, -1)), _numpy(bias), groups,
                out.view(channels, rows, -1).numpy(), idx.view(channels, rows, -1).numpy(), drop, threshold, scale)  # fmt: skip
        ctx.save_for_backward(xp, idx, *([] if keep is None else [keep[0]]))
        ctx.groups, ctx.weight_shape, ctx.keep = groups, weight.shape, None if keep is None else keep[1:]
        return out

    @staticmethod
    def backward(ctx, grad):
        if ctx.needs_input_grad[0]:
            raise RuntimeError("model.net.conv_pool=fused computes no gradient for its input; use conv_pool=torch.")
        xp, idx, *kept = ctx.saved_tensors
        channels, rows = idx.shape[:2]
        g = grad.contiguous()
        dw = grad.new_empty(ctx.weight_shape)
        db = grad.new_empty(channels)
        drop, threshold, scale = _dropout_args(None if ctx.keep is None else (kept[0], *ctx.keep), g)
        _, backward = _kernels()
        backward(xp.numpy(), g.view(channels, rows, -1).numpy(), idx.view(channels, rows, -1).numpy(), ctx.groups,
                 dw.view(channels, -1).numpy(), db.numpy(), drop, threshold, scale)  # fmt: skip
        return None, dw, db, None, None


def _dropout_args(keep: tuple | None, like: torch.Tensor) -> tuple[np.ndarray, int, np.generic]:
    """The kernels' dropout arguments: the bytes shaped as the pooled rows (empty: no dropout), the threshold
    and the kept elements' scale, 1/keep in the tensor's dtype as ``keep_mask`` divides it."""
    dtype = np.dtype(str(like.dtype).removeprefix("torch."))
    if keep is None:
        return np.empty((0, 0, 0), dtype=np.uint8), 256, dtype.type(1)
    drop, threshold, keep_prob = keep
    channels, rows = like.shape[:2]
    return drop.view(channels, rows, -1).numpy(), threshold, dtype.type(1) / dtype.type(keep_prob)


class ColumnsLinear(torch.autograd.Function):
    """``F.linear`` of a batch held as columns, ``(features, N)``: the fused block's layout goes into the dense
    layer and its gradient comes back in it, with no transposing copy either way (BLAS reads the transposes)."""

    @staticmethod
    def forward(ctx, columns, weight, bias):
        ctx.save_for_backward(columns, weight)
        return torch.addmm(bias, columns.t(), weight.t())

    @staticmethod
    def backward(ctx, grad):
        columns, weight = ctx.saved_tensors
        return weight.t().mm(grad.t()), grad.t().mm(columns.t()), grad.sum(0)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def conv_relu_pool(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1, keep: tuple | None = None
) -> torch.Tensor:
    """The fused block, samples last ``(C, Hp, Wp, N)``; float32 or float64 on the CPU, a 3×3 kernel, stride 1.
    ``keep``: the dropout that follows the block, applied in it (``dropout.keep_bytes``, one byte per element
    of the output, in this layout's order)."""
    if x.device.type != "cpu" or x.dtype not in DTYPES or not x.dtype == weight.dtype == bias.dtype:
        raise ValueError(
            f"model.net.conv_pool=fused runs on the CPU in float32 or float64; got {x.dtype} on {x.device}. "
            "Use conv_pool=torch (or null, which picks it there)."
        )
    return ConvReluPool.apply(x, weight, bias, groups, keep)


def pooled_shape(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, int, int]:
    """The block's output shape for input ``x``, samples last ``(C, Hp, Wp, N)``."""
    n, _, h, w = x.shape
    return weight.shape[0], (h - 2) // 2, (w - 2) // 2, n


def pooled_numel(x: torch.Tensor, weight: torch.Tensor) -> int:
    """Elements of the block's output for input ``x``: what its dropout draws a byte for."""
    return math.prod(pooled_shape(x, weight))


def linear_of_columns(columns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(features, N)`` columns through a dense layer → ``(N, out_features)``."""
    return ColumnsLinear.apply(columns, weight, bias)
