"""The seed CNN, layer for layer as the Keras original, with Keras's or PyTorch's weight init."""

from __future__ import annotations

import torch
from torch import nn

INITS = ("keras", "torch")


class SeedCNN(nn.Module):
    """Conv2D 32@3x3 relu → MaxPool 2 → Dropout .25 → Flatten → Dense 256 relu → Dropout .5 → Dense 10.

    Outputs logits: softmax + categorical cross-entropy in Keras is ``F.cross_entropy`` here.
    ``init="keras"`` uses Glorot-uniform weights and zero biases (Keras's Conv2D/Dense defaults);
    ``init="torch"`` keeps PyTorch's kaiming-uniform(a=√5) weights and uniform biases.

    Two rewrites keep every number of the seed's order of operations: ReLU runs *after* the
    max-pool (max commutes with a monotone function, so values and gradients are identical, on a
    4× smaller tensor), and with ``channels_last`` only the conv and pool run in that layout — the
    tensor is made contiguous again before dropout, so the same seed draws the same masks.
    """

    def __init__(
        self,
        init: str = "keras",
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels_last: bool = False,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"Unknown model.net.init={init!r}; choose one of: {', '.join(INITS)}.")
        self.init, self.channels_last = init, channels_last
        self.conv = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.dense = nn.Linear(32 * ((image_size - 2) // 2) ** 2, 256)
        self.dropout2 = nn.Dropout(0.5)
        self.out = nn.Linear(256, num_classes)
        if init == "keras":
            for layer in (self.conv, self.dense, self.out):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        if channels_last:
            self.conv.to(memory_format=torch.channels_last)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 28, 28)`` pixels → float ``(N, 1, 28, 28)`` in [0, 1], as the seed scales them."""
        return images.unsqueeze(1).float().div_(255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = torch.relu_(self.pool(self.conv(x))).contiguous()
        x = self.dropout1(x).flatten(1)
        x = self.dropout2(torch.relu_(self.dense(x)))
        return self.out(x)
