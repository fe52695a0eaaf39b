"""The seed CNN, layer for layer as the Keras original, with Keras's or PyTorch's weight init."""

from __future__ import annotations

import torch
from torch import nn

from . import conv_pool as fused_block
from .dropout import Dropout, keep_bytes, one_byte

INITS = ("keras", "torch")


def _in_layout_of(param: torch.Tensor):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad if grad.stride() == param.stride() else torch.empty_like(param).copy_(grad)

    return hook


def _grad_channels_last(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous(memory_format=torch.channels_last)


def pooled_contiguous(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The pooled tensor in the default layout, where dropout draws its masks. From channels_last, its
    gradient is copied back to that layout for the pool's backward, whose CPU kernel takes a slow path
    with mixed layouts (docs/benchmarks.md: ~2.5 ms of a step). Copies change no value."""
    if channels_last and x.requires_grad:
        x.register_hook(_grad_channels_last)
    return x.contiguous()


class SeedCNN(nn.Module):
    """Conv2D 32@3x3 relu → MaxPool 2 → Dropout .25 → Flatten → Dense 256 relu → Dropout .5 → Dense 10.

    The two dropout rates are parameters so that equivalence tests (against Keras, packed training)
    can switch the random masks off; the defaults are the seed's. ``dropout_rng`` names the random
    stream behind the masks (``optbench.dropout``): ``bits`` (default) or ``bernoulli`` (runs logged
    before the setting existed). ``conv_pool`` names the code behind the first block (conv, pool, ReLU and
    the first dropout): ``fused`` (``optbench.conv_pool``'s CPU kernels), ``torch`` (PyTorch's layers, as
    runs logged before the setting existed) or ``None``: fused wherever it can run (a float32/float64 batch
    on the CPU, outside autocast).
    Outputs logits: softmax + categorical cross-entropy in Keras is ``F.cross_entropy`` here.
    ``init="keras"`` uses Glorot-uniform weights and zero biases (Keras's Conv2D/Dense defaults);
    ``init="torch"`` keeps PyTorch's kaiming-uniform(a=√5) weights and uniform biases.

    Two rewrites keep every number of the seed's order of operations: ReLU runs *after* the
    max-pool (max commutes with a monotone function, so values and gradients are identical, on a
    4× smaller tensor), and with ``channels_last`` only the conv and pool run in that layout — the
    pooled tensor is made contiguous before the ReLU and dropout (``pooled_contiguous``), so the same
    seed draws the same masks. The fused block has a layout of its own: the samples last from the pool
    to the dense layer, the first dropout's masks drawn in that order (other masks for a seed).
    """

    def __init__(
        self,
        init: str = "keras",
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels_last: bool = False,
        dropout_conv: float = 0.25,
        dropout_dense: float = 0.5,
        dropout_rng: str = "bits",
        conv_pool: str | None = None,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"Unknown model.net.init={init!r}; choose one of: {', '.join(INITS)}.")
        for key, rate in (("dropout_conv", dropout_conv), ("dropout_dense", dropout_dense)):
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < 1:
                raise ValueError(f"Invalid model.net.{key}={rate!r}; a dropout rate must be in [0, 1).")
        fused_block.check_path(conv_pool)
        self.init, self.channels_last, self.conv_pool = init, channels_last, conv_pool
        self.conv = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = Dropout(dropout_conv, dropout_rng)
        self.dense = nn.Linear(32 * ((image_size - 2) // 2) ** 2, 256)
        self.dropout2 = Dropout(dropout_dense, dropout_rng)
        self.out = nn.Linear(256, num_classes)
        if init == "keras":
            for layer in (self.conv, self.dense, self.out):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        if channels_last:
            self.conv.to(memory_format=torch.channels_last)
            # DDP builds its gradient buckets with the weight's (channels_last) strides; a GPU's conv backward
            # returns the gradient with contiguous ones, and DDP then copies it every step ("Grad strides do
            # not match bucket view strides"). Handing autograd the gradient in the weight's own strides keeps
            # them equal; the values, and so every number, are the same.
            self.conv.weight.register_hook(_in_layout_of(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_block.takes(self.conv_pool, x):  # samples last from the pool to the dense layer
            drop = self.dropout1
            inside = drop.active and one_byte(drop.p, drop.rng)  # the kernels apply the mask themselves
            keep = keep_bytes(fused_block.pooled_numel(x, self.conv.weight), drop.p) if inside else None
            x = fused_block.conv_relu_pool(x, self.conv.weight, self.conv.bias, keep=keep)
            if not inside:
                x = drop(x)
            x = fused_block.linear_of_columns(x.view(-1, x.shape[-1]), self.dense.weight, self.dense.bias)
        else:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = torch.relu_(pooled_contiguous(self.pool(self.conv(x)), self.channels_last))
            x = self.dense(self.dropout1(x).flatten(1))
        x = self.dropout2(torch.relu_(x))
        return self.out(x)
