"""K seed CNNs as one batched model: a grouped convolution, one max-pool, batched dense layers.

Replica k sees its own batch and draws its own dropout masks from its own generator, with the calls a
single run makes (``dropout.keep_mask`` of its own slice, conv dropout before dense dropout), so a
replica seeded like a single run draws the same masks. Its parameters are slices of the packed ones;
``replica(k)`` returns them as leaf views in ``SeedCNN.parameters()`` order, for replica k's own optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import conv_pool as fused_block
from ..dropout import keep_bytes, keep_mask, one_byte
from ..model import SeedCNN, pooled_contiguous

CONV_OUT = 32


class PackedSeedCNN(nn.Module):
    def __init__(self, nets: list[SeedCNN], generators: list[torch.Generator]):
        super().__init__()
        first = nets[0]
        for net in nets:
            if (net.dropout1.p, net.dropout2.p, net.dropout1.rng, net.channels_last, net.conv_pool) != (
                first.dropout1.p,
                first.dropout2.p,
                first.dropout1.rng,
                first.channels_last,
                first.conv_pool,
            ):
                raise ValueError(
                    "Replicas of one pack need the same model config (dropout rates and rng, layout, conv_pool)."
                )
        self.k, self.channels_last, self.conv_pool = len(nets), first.channels_last, first.conv_pool
        self.p_conv, self.p_dense, self.dropout_rng = first.dropout1.p, first.dropout2.p, first.dropout1.rng
        self.generators = generators
        self.conv_weight = nn.Parameter(torch.cat([n.conv.weight.detach() for n in nets]).contiguous())
        self.conv_bias = nn.Parameter(torch.cat([n.conv.bias.detach() for n in nets]))
        self.dense_weight = nn.Parameter(torch.stack([n.dense.weight.detach() for n in nets]))
        self.dense_bias = nn.Parameter(torch.stack([n.dense.bias.detach() for n in nets]))
        self.out_weight = nn.Parameter(torch.stack([n.out.weight.detach() for n in nets]))
        self.out_bias = nn.Parameter(torch.stack([n.out.bias.detach() for n in nets]))

    def _slices(self, k: int, grads: bool = False) -> list[torch.Tensor]:
        conv = slice(k * CONV_OUT, (k + 1) * CONV_OUT)
        tensors = [p.grad if grads else p.detach() for p in self.parameters()]
        conv_w, conv_b, dense_w, dense_b, out_w, out_b = tensors
        return [conv_w[conv], conv_b[conv], dense_w[k], dense_b[k], out_w[k], out_b[k]]

    def replica(self, k: int) -> list[torch.Tensor]:
        """Replica k's parameters: views into the packed ones (an optimizer stepping them steps the pack)."""
        return self._slices(k)

    def replica_grads(self, k: int) -> list[torch.Tensor]:
        return self._slices(k, grads=True)

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Replica k as a ``SeedCNN`` state dict (what a single run's checkpoint holds under ``net.``)."""
        names = ("conv.weight", "conv.bias", "dense.weight", "dense.bias", "out.weight", "out.bias")
        return {name: t.clone() for name, t in zip(names, self.replica(k), strict=True)}

    def _dropout(self, x: torch.Tensor, p: float, dim: int) -> torch.Tensor:
        """Each replica's mask from its own generator, exactly as its single run draws it."""
        parts = x.chunk(self.k, dim=dim)
        masks = [keep_mask(part, p, self.dropout_rng, g) for part, g in zip(parts, self.generators, strict=True)]
        return x * torch.cat(masks, dim=dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(K, B, 28, 28)`` (replica k's batch at k) → logits ``(K, B, 10)``."""
        k, b = images.shape[:2]
        x = images.transpose(0, 1).float().div_(255.0)  # (B, K, 28, 28): replica k is input channel k
        if fused_block.takes(self.conv_pool, x):  # replica k: group k, the sums and masks of its single run
            drop = self.training and self.p_conv > 0
            inside = drop and one_byte(self.p_conv, self.dropout_rng)
            keep = None
            if inside:  # replica k's bytes from its own generator, for its own block of channels
                per = fused_block.pooled_numel(x, self.conv_weight) // k
                parts = [keep_bytes(per, self.p_conv, g) for g in self.generators]
                keep = (torch.cat([part[0] for part in parts]), *parts[0][1:])
            x = fused_block.conv_relu_pool(x, self.conv_weight, self.conv_bias, groups=k, keep=keep)  # (32K, 13, 13, B)
            if drop and not inside:
                x = self._dropout(x, self.p_conv, dim=0)
            x = x.view(k, -1, b).transpose(1, 2)  # (K, B, 5408): replica k's columns, as its dense layer reads them
        else:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = F.conv2d(x, self.conv_weight, self.conv_bias, groups=k)
            x = torch.relu_(pooled_contiguous(F.max_pool2d(x, 2), self.channels_last))  # (B, 32K, 13, 13)
            if self.training and self.p_conv > 0:
                x = self._dropout(x, self.p_conv, dim=1)
            x = x.reshape(b, k, -1).transpose(0, 1)  # (K, B, 5408), each replica's channels flattened as one net's
        x = torch.relu_(torch.baddbmm(self.dense_bias.unsqueeze(1), x, self.dense_weight.transpose(1, 2)))
        if self.training and self.p_dense > 0:
            x = self._dropout(x, self.p_dense, dim=0)
        return torch.baddbmm(self.out_bias.unsqueeze(1), x, self.out_weight.transpose(1, 2))
