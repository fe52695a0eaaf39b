"""MNIST-family data held in memory as uint8 tensors and served as whole batches.

The seed scales pixels to [0, 1]; we keep the raw bytes (4× less memory and transfer than
float32) and convert per batch on the device. No DataLoader workers, no per-sample PIL work.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import pytorch_lightning as pl
import torch
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

DATA_ROOT_ENV = "OPTBENCH_DATA_ROOT"


class DataError(RuntimeError):
    """Missing, unreadable or corrupt data files; the message says which file and how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    folder: type  # the torchvision class; its name is the folder under the data root
    md5: dict[str, str]  # of the uncompressed IDX files
    system_dirs: tuple[str, ...] = ()  # where OS packages put the gzipped files (read offline)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        datasets.MNIST,
        {
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion_mnist": DatasetSpec(
        datasets.FashionMNIST,
        {
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
    ),
}

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
SPLIT_SIZES = {"train": 60_000, "t10k": 10_000}


def split_files(raw: Path, split: str) -> tuple[Path, Path]:
    return raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"


def check_idx(path: Path, magic: int, count: int, item_bytes: int, expected_md5: str | None) -> str:
    """Check an IDX file's header and length (and checksum if given); return its MD5."""
    fix = f"Delete it and run again with data.download=true, or copy a good file there (env {DATA_ROOT_ENV})."
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read data file {path}: {err.strerror}. {fix}") from err
    header = 16 if magic == IMAGE_MAGIC else 8
    expected_len = header + count * item_bytes
    if len(blob) != expected_len:
        raise DataError(
            f"Data file {path} is truncated or corrupt: {len(blob)} bytes, expected {expected_len} "
            f"(IDX magic {magic}, {count} items). {fix}"
        )
    if (found := int.from_bytes(blob[:4], "big")) != magic:
        raise DataError(
            f"Data file {path} has a corrupt header: its IDX magic number is {found}, expected {magic} "
            f"(the size, {len(blob)} bytes, is right). {fix}"
        )
    digest = hashlib.md5(blob).hexdigest()
    if expected_md5 is not None and digest != expected_md5:
        raise DataError(
            f"Data file {path} has MD5 {digest}, expected {expected_md5}: it is corrupt or modified. {fix} "
            "To train on modified files on purpose, set data.verify=false."
        )
    return digest


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
            yield self.images[batch], self.labels[batch]


class MNISTDataModule(pl.LightningDataModule):
    """MNIST or Fashion-MNIST from torchvision's files, held in memory.

    ``val_split=None`` validates on the 10k test set after every epoch, as the seed did.
    An integer (or a fraction) holds out that many of the *last* training samples instead,
    as AlgoPerf does, leaving the test set for a final ``trainer.test``.
    ``subset=N`` keeps the first N samples of every split (for tests and quick looks).
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str | os.PathLike = "data",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 2000,
        val_split: int | float | None = None,
        subset: int | None = None,
        seed: int = 0,
        verify: bool = True,
    ):
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"Unknown data.name={name!r}; choose one of: {', '.join(DATASETS)}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("subset", subset)):
            if value is None and key == "subset":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Invalid data.{key}={value!r}; it must be a positive integer.")
        if val_split is not None and (not isinstance(val_split, int | float) or not 0 < val_split < 60_000):
            raise ValueError(f"Invalid data.val_split={val_split}; give a count or fraction of the 60k, or null.")
        self.name, self.root, self.download = name, Path(root).expanduser(), download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.subset, self.seed, self.verify = val_split, subset, seed, verify
        self.spec = DATASETS[name]
        self.raw = self.root / self.spec.folder.__name__ / "raw"
        self.file_md5: dict[str, str] = {}
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- files -----------------------------------------------------------------------------
    def _missing(self) -> list[Path]:
        return [self.raw / f for f in self.spec.md5 if not (self.raw / f).exists()]

    def _extract_local_archives(self) -> None:
        """Use ``<file>.gz`` copies already on disk, in the raw folder or where an OS package put them, offline."""
        for path in self._missing():
            for folder in (self.raw, *map(Path, self.spec.system_dirs)):
                gz = folder / (path.name + ".gz")
                if gz.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with gzip.open(gz, "rb") as src, open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    break

    def prepare_data(self) -> None:
        self._extract_local_archives()
        missing = self._missing()
        if not missing:
            return
        hint = (
            f"Expected the {self.name} IDX files under {self.raw}/ (missing: {', '.join(p.name for p in missing)}). "
            f"Point data.root (or the env variable {DATA_ROOT_ENV}) at a folder holding "
            f"{self.spec.folder.__name__}/raw/"
        )
        if not self.download:
            raise DataError(f"Dataset not found. {hint}, or run online with data.download=true.")
        try:
            for train in (True, False):
                self.spec.folder(str(self.root), train=train, download=True)
        except (RuntimeError, URLError, OSError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(
                f"Could not download {self.name} ({reason}); are you offline? {hint}, or run again once online."
            ) from None

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images_path, labels_path = split_files(self.raw, split)
        count = SPLIT_SIZES[split]
        for path, magic, item in ((images_path, IMAGE_MAGIC, 28 * 28), (labels_path, LABEL_MAGIC, 1)):
            expected = self.spec.md5[path.name] if self.verify else None
            self.file_md5[path.name] = check_idx(path, magic, count, item, expected)
        return read_image_file(str(images_path)), read_label_file(str(labels_path))

    @property
    def digest(self) -> str:
        """One MD5 over the MD5s of the files actually read: changes when any of them changes."""
        joined = "".join(f"{name}:{md5};" for name, md5 in sorted(self.file_md5.items()))
        return hashlib.md5(joined.encode()).hexdigest()

    # -- splits ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self._missing():
            self.prepare_data()
        train_x, train_y = self._load("train")
        test = self._load("t10k")
        if self.val_split is None:
            train, val = (train_x, train_y), test
        else:
            n_val = int(self.val_split * len(train_y)) if self.val_split < 1 else int(self.val_split)
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
