"""Dropout whose masks come from one of two named random streams (``model.net.dropout_rng``).

``bernoulli`` is PyTorch's own CPU path (``F.dropout``): one ``bernoulli_`` draw per element, a float
mask divided by the keep probability, the input times that mask. It is what every run before
``dropout_rng`` existed drew, so those runs rerun exactly with it.

``bits`` draws the mask from bulk random bits: 64-bit words from the same generator (``random_`` on
int64: 63 uniform bits, the sign bit 0), read as groups of k bytes (the group holding the sign bit is
left out), an element kept when its k bytes, read as an unsigned integer (for k > 1 with its top bit
flipped, which is as uniform), fall below ``keep · 256ᵏ``.
With the smallest k for which that threshold is a whole number (k = 1 for the seed's rates 0.25 and
0.5: keep when the byte is below 192 resp. 128) every element is kept with exactly the keep
probability, independently, as with ``bernoulli``; only the random numbers behind the masks differ. A
rate with no such k ≤ 4 uses k = 4 and the nearest threshold (keep probability within 2⁻³³). On a CPU
a mask costs about a fifth of ``bernoulli``'s, forward and backward (docs/benchmarks.md).

Both are deterministic for a seed, on one thread or many.
"""

from __future__ import annotations

import functools
import sys
from fractions import Fraction

import torch
from torch import nn

RNGS = ("bits", "bernoulli")
_GROUP = {1: torch.uint8, 2: torch.int16, 4: torch.int32}  # k random bytes as one integer


def check_rng(rng: str) -> None:
    if rng not in RNGS:
        raise ValueError(f"Unknown model.net.dropout_rng={rng!r}; choose one of: {', '.join(RNGS)}.")


@functools.cache  # called twice per step with the same two rates
def byte_threshold(keep: float) -> tuple[int, int]:
    """(bytes per element k, threshold t): an element is kept when its k random bytes, unsigned, are < t."""
    exact = Fraction(keep)
    for k in (1, 2, 4):
        t = exact * 256**k
        if t.denominator == 1:
            return k, int(t)
    return 4, round(exact * 256**4)


def _random_groups(numel: int, k: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """The k-byte groups of fresh random 64-bit words, ``(words, 8/k − 1)``: at least one per element."""
    per_word = 8 // k - 1
    # The full-range overload random_(-2**63, None) would give all 64 bits, but FX cannot print its name
    # (aten.random_.from), and graphs.py records steps with FX.
    words = torch.empty(-(-numel // per_word), dtype=torch.int64, device=device).random_(generator=generator)
    groups = words.view(_GROUP[k]).view(-1, 8 // k)
    return groups[:, :per_word] if sys.byteorder == "little" else groups[:, 1:]


def keep_mask(x: torch.Tensor, p: float, rng: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The scaled mask (0 or 1/(1 − p) per element) that dropout multiplies ``x`` by."""
    keep = 1.0 - p
    if rng == "bernoulli":  # F.dropout's CPU path, call for call
        return torch.empty_like(x).bernoulli_(keep, generator=generator).div_(keep)
    k, threshold = byte_threshold(keep)
    groups = _random_groups(x.numel(), k, x.device, generator)
    # k > 1: compared as a signed integer s, i.e. s + 2^(8k-1), the unsigned value with its top bit flipped
    mask = torch.empty(groups.shape, dtype=x.dtype, device=x.device)
    torch.lt(groups, threshold if k == 1 else threshold - 2 ** (8 * k - 1), out=mask)  # 1.0 kept, 0.0 not: no bool pass
    return mask.view(-1)[: x.numel()].view(x.shape).div_(keep)


def one_byte(p: float, rng: str) -> bool:
    """Whether ``bits`` masks of rate ``p`` take one random byte per element (the seed's rates do)."""
    return rng == "bits" and byte_threshold(1.0 - p)[0] == 1


def keep_bytes(numel: int, p: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int, float]:
    """For a kernel that applies the mask itself (``one_byte`` rates, on the CPU): the random byte of each of
    ``numel`` elements, in order, the threshold an element's byte must be below to be kept, and the keep
    probability — the same draws, and so the same masks, as ``keep_mask`` of a tensor of ``numel`` elements."""
    _, threshold = byte_threshold(1.0 - p)
    return _random_groups(numel, 1, torch.device("cpu"), generator).reshape(-1)[:numel], threshold, 1.0 - p


class Dropout(nn.Module):
    """``nn.Dropout`` with a choice of random stream; ``p`` as in ``nn.Dropout``."""

    def __init__(self, p: float = 0.5, rng: str = "bits"):
        super().__init__()
        check_rng(rng)
        self.p, self.rng = p, rng

    @property
    def active(self) -> bool:
        return self.training and self.p > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return x * keep_mask(x, self.p, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}, rng={self.rng}"
