"""The seed CNN, layer for layer as the Keras original, with Keras's or PyTorch's weight init."""

from __future__ import annotations

import torch
from torch import nn

INITS = ("keras", "torch")


class SeedCNN(nn.Sequential):
    """Conv2D 32@3x3 relu → MaxPool 2 → Dropout .25 → Flatten → Dense 256 relu → Dropout .5 → Dense 10.

    Outputs logits: softmax + categorical cross-entropy in Keras is ``F.cross_entropy`` here.
    ``init="keras"`` uses Glorot-uniform weights and zero biases (Keras's Conv2D/Dense defaults);
    ``init="torch"`` keeps PyTorch's kaiming-uniform(a=√5) weights and uniform biases.
    """

    def __init__(self, init: str = "keras", in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        if init not in INITS:
            raise ValueError(f"Unknown model.net.init={init!r}; choose one of: {', '.join(INITS)}.")
        flat = 32 * ((image_size - 2) // 2) ** 2
        super().__init__(
            nn.Conv2d(in_channels, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(flat, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )
        self.init = init
        if init == "keras":
            for layer in self:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 28, 28)`` pixels → float ``(N, 1, 28, 28)`` in [0, 1], as the seed scales them."""
        return images.unsqueeze(1).float().div_(255.0)
