"""A plain ``LightningDataModule``: MNIST standardised with its mean and std, served by DataLoaders.

It shows what optbench asks of your datamodule: loaders of ``(images, labels)`` batches, nothing more.
Its train order is a function of ``(seed, epoch)`` (a sampler Lightning tells the epoch), so a run
resumed from a checkpoint sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torchvision.datasets import MNIST


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)`` alone."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class NormalizedMNIST(LightningDataModule):
    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        seed: int = 0,
        subset: int | None = None,
        val_split: int | None = None,
        mean: float = 0.1307,
        std: float = 0.3081,
        download: bool = False,
    ):
        super().__init__()
        self.root, self.download = root, download
        self.batch_size, self.eval_batch_size, self.seed, self.subset = batch_size, eval_batch_size, seed, subset
        self.mean, self.std, self.val_split = mean, std, val_split
        self.sets: dict[str, TensorDataset] = {}

    def prepare_data(self) -> None:
        for train in (True, False):
            MNIST(self.root, train=train, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        train, test = (MNIST(self.root, train=t, download=False) for t in (True, False))
        splits = {"train": (train.data, train.targets), "val": (test.data, test.targets)}
        if self.val_split:  # hold out the last N training samples (what optbench-tune asks for), not the test set
            n = self.val_split
            splits = {"train": (train.data[:-n], train.targets[:-n]), "val": (train.data[-n:], train.targets[-n:])}
        for split, (images, labels) in splits.items():
            x = (images[: self.subset].unsqueeze(1).float() / 255.0 - self.mean) / self.std
            self.sets[split] = TensorDataset(x, labels[: self.subset])

    def train_dataloader(self) -> DataLoader:
        train = self.sets["train"]
        return DataLoader(train, batch_size=self.batch_size, sampler=EpochShuffle(len(train), self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.eval_batch_size)
