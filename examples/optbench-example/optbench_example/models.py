"""Two plain ``nn.Module``s: image batch ``(N, C, H, W)`` in, logits out. Nothing optbench-specific."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """Flatten, ``depth`` hidden ReLU layers of ``width`` units, a linear read-out."""

    def __init__(self, in_features: int = 784, width: int = 128, depth: int = 1, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
        layers.append(nn.Linear(width if depth else in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class Block(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity shortcut (He et al. 2016's basic block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.body(x))


class SmallResNet(nn.Module):
    """A stem convolution, ``blocks`` residual blocks per stage, two stages (the second at half the
    resolution, twice the width), global average pooling and a linear read-out."""

    def __init__(self, in_channels: int = 1, width: int = 16, blocks: int = 1, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            *(Block(width) for _ in range(blocks)),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            *(Block(2 * width) for _ in range(blocks)),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x):
        return self.net(x)
