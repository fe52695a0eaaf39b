"""Image classification splits held in memory as uint8 tensors and served as whole batches.

The seed scales pixels to [0, 1]; we keep the raw bytes (4× less memory and transfer than
float32) and convert per batch on the device (``as_float_images``). No DataLoader workers, no
per-sample PIL work. ``data`` (MNIST's IDX files) and ``torchvision_data`` (any torchvision image
dataset) fill these splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch


class InMemoryBatches:
    """Iterates over ``(uint8 images, int64 labels)`` batches of tensors held in memory.

    The shuffle order is a function of ``(seed, epoch)`` alone, so a resumed or rerun job sees
    the same batches. ``batch_size`` is global: under DDP rank ``r`` of ``w`` takes the ``r``-th
    of ``w`` near-equal slices of every global batch, so the global order is the same for any ``w``.
    Evaluation (``shuffle=False``) gives each rank one contiguous shard, with no padding.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if world_size > 1 and shuffle and batch_size < world_size:
            raise ValueError(f"data.batch_size={batch_size} is the global batch; it must be >= {world_size} devices.")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size

        n = len(labels)
        # Evaluation shard of this rank: contiguous, sizes differ by at most one, no padding.
        self.lo, self.hi = (rank * n) // world_size, ((rank + 1) * n) // world_size

    def __len__(self) -> int:
        n = len(self.labels) if self.shuffle else self.hi - self.lo
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.shuffle:  # in order: cheap views, no gather
            for start in range(self.lo, self.hi, self.batch_size):
                end = min(start + self.batch_size, self.hi)
                yield self.images[start:end], self.labels[start:end]
            return
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
        order = torch.randperm(len(self.labels), generator=gen).to(self.images.device)
        for batch in order.split(self.batch_size):
            if self.world_size > 1:
                batch = batch.tensor_split(self.world_size)[self.rank]
            yield (
                self.images.index_select(0, batch),
                self.labels.index_select(0, batch),
            )  # a plain gather, ~4x faster than [batch]


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """A batch as a net's input: uint8 pixels scaled to [0, 1] (as the seed scales them), a channel axis
    added to ``(N, H, W)``; a float batch (a user's datamodule) passes unchanged."""
    if images.dtype != torch.uint8:
        return images
    return (images.unsqueeze(1) if images.ndim == 3 else images).float().div_(255.0)


def _positive_int(key: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Invalid data.{key}={value!r}; it must be a positive integer.")


class InMemoryDataModule(pl.LightningDataModule):
    """Image classification splits held in memory as uint8 tensors, served as whole batches.

    Subclasses read the files (``_read``: train and test ``(images, labels)``) and say what they read
    (``file_md5``, ``raw``). ``val_split=None`` validates on the test set after every epoch, as the seed
    did; a count (or a fraction) holds out that many of the *last* training samples instead, as AlgoPerf
    does, leaving the test set for a final ``trainer.test``. ``subset=N`` keeps the first N samples of
    every split (for tests and quick looks).
    """

    def __init__(
        self,
        name: str,
        batch_size: int = 64,
        eval_batch_size: int = 2000,
        val_split: int | float | None = None,
        subset: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        _positive_int("batch_size", batch_size)
        _positive_int("eval_batch_size", eval_batch_size)
        _positive_int("subset", subset, optional=True)
        number = isinstance(val_split, int | float) and not isinstance(val_split, bool)
        if val_split is not None and (not number or val_split <= 0):
            raise ValueError(
                f"Invalid data.val_split={val_split!r}; give a count or fraction of the training set, or null."
            )
        self.name, self.batch_size, self.eval_batch_size = name, batch_size, eval_batch_size
        self.val_split, self.subset, self.seed = val_split, subset, seed
        self.file_md5: dict[str, str] = {}
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _read(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The train and test ``(uint8 images, int64 labels)``, ``file_md5`` filled in: each subclass's own."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read its files")

    @property
    def digest(self) -> str:
        """One MD5 over the MD5s of the files actually read: changes when any of them changes."""
        joined = "".join(f"{name}:{md5};" for name, md5 in sorted(self.file_md5.items()))
        return hashlib.md5(joined.encode()).hexdigest()

    # -- splits ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        (train_x, train_y), test = self._read()
        if self.val_split is None:
            train, val = (train_x, train_y), test
        else:
            n_val = int(self.val_split * len(train_y)) if self.val_split < 1 else int(self.val_split)
            if not 0 < n_val < len(train_y):
                raise ValueError(
                    f"Invalid data.val_split={self.val_split}: it holds out {n_val} of {len(train_y)} training samples."
                )
            train, val = (train_x[:-n_val], train_y[:-n_val]), (train_x[-n_val:], train_y[-n_val:])
        self.splits = {"train": train, "val": val, "test": test}
        if self.subset is not None:
            self.splits = {k: (x[: self.subset], y[: self.subset]) for k, (x, y) in self.splits.items()}

    @property
    def num_train(self) -> int:
        return len(self.splits["train"][1])

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> InMemoryBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        images, labels = self.splits[split]
        if images.device != device:  # keep the whole split resident where the model is
            images, labels = images.to(device), labels.to(device)
            self.splits[split] = (images, labels)
        return InMemoryBatches(
            images,
            labels,
            batch_size,
            shuffle,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)
