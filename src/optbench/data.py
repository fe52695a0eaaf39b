"""MNIST and Fashion-MNIST from torchvision's IDX files, sizes, headers and checksums checked, held in
memory (``in_memory``)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from .in_memory import InMemoryBatches, InMemoryDataModule, as_float_images

__all__ = ["DataError", "InMemoryBatches", "InMemoryDataModule", "MNISTDataModule", "as_float_images"]

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


class MNISTDataModule(InMemoryDataModule):
    """MNIST or Fashion-MNIST from torchvision's IDX files, their sizes, headers and checksums checked."""

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
        if name not in DATASETS:
            raise ValueError(f"Unknown data.name={name!r}; choose one of: {', '.join(DATASETS)}.")
        if val_split is not None and isinstance(val_split, int | float) and not 0 < val_split < 60_000:
            raise ValueError(f"Invalid data.val_split={val_split}; give a count or fraction of the 60k, or null.")
        super().__init__(name, batch_size, eval_batch_size, val_split, subset, seed)
        self.root, self.download, self.verify = Path(root).expanduser(), download, verify
        self.spec = DATASETS[name]
        self.raw = self.root / self.spec.folder.__name__ / "raw"

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

    def _read(self):
        if self._missing():
            self.prepare_data()
        return self._load("train"), self._load("t10k")
