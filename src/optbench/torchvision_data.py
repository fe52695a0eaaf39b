"""Any torchvision image-classification dataset class, read once through the class and held in memory.

``data=torchvision data.dataset._target_=torchvision.datasets.KMNIST``: the class reads (and, online,
downloads: torchvision's own code) its own files in its own format; we decode every sample once into uint8 tensors and serve them
as the MNIST module does (``in_memory``), so a run's speed, its batches and its digest do not depend on
the class's per-sample transforms. The digest is over the decoded tensors: any changed pixel or label
changes it, whatever the file format.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch
from torchvision.datasets import VisionDataset

from .data import DATA_ROOT_ENV, DataError
from .in_memory import InMemoryDataModule


def dataset_class(dataset: Callable[..., Any]) -> type:
    """The class behind ``data.dataset`` (Hydra hands it over as a partial)."""
    return dataset.func if isinstance(dataset, functools.partial) else dataset


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of ``ds`` as uint8 images ``(N, H, W)`` (one channel) or ``(N, C, H, W)``, int64 labels."""
    images, labels = [], []
    for i in range(len(ds)):
        image, label = ds[i]
        images.append(torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)))
        labels.append(int(label))
    x = torch.stack(images)
    if x.ndim == 4:  # PIL's (H, W, C) → (C, H, W)
        x = x.permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def _md5(tensor: torch.Tensor) -> str:
    return hashlib.md5(tensor.contiguous().numpy().tobytes()).hexdigest()


class TorchvisionDataModule(InMemoryDataModule):
    """``dataset(root, download=..., **train_args)`` for training, ``**test_args`` for the test set.

    ``train_args``/``test_args`` say how the class names its splits: ``{train: true}``/``{train: false}``
    for the MNIST family and CIFAR, ``{split: train}``/``{split: test}`` for SVHN.
    """

    def __init__(
        self,
        dataset: Callable[..., Any],
        name: str,
        root: str | os.PathLike = "data",
        download: bool = True,
        train_args: dict | None = None,
        test_args: dict | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 2000,
        val_split: int | float | None = None,
        subset: int | None = None,
        seed: int = 0,
    ):
        cls = dataset_class(dataset)
        if not (isinstance(cls, type) and issubclass(cls, VisionDataset)):
            raise ValueError(f"data.dataset must be a torchvision dataset class, got {cls!r}.")
        super().__init__(name, batch_size, eval_batch_size, val_split, subset, seed)
        self.dataset, self.cls = dataset, cls
        self.root, self.download = Path(root).expanduser(), download
        self.train_args = dict(train_args if train_args is not None else {"train": True})
        self.test_args = dict(test_args if test_args is not None else {"train": False})
        self.raw = self.root  # where the class read its files; set once it has (``raw_folder`` for MNIST's kin)

    def _open(self, args: dict, download: bool):
        return self.dataset(root=str(self.root), download=download, **args)

    def prepare_data(self) -> None:
        """The class's own check, and its own download when ``download`` is set (online users)."""
        hint = (
            f"{self.cls.__name__} reads its files under {self.root}/ in its own layout; point data.root (or the env "
            f"variable {DATA_ROOT_ENV}) at the folder that holds them"
        )
        for args in (self.train_args, self.test_args):
            try:
                self._open(args, download=False)
                continue
            except (RuntimeError, OSError) as err:  # not there (or corrupt): the class says which
                if not self.download:
                    raise DataError(
                        f"Dataset not found ({_first_line(err)}). {hint}, or set data.download=true."
                    ) from None
            try:
                self._open(args, download=True)
            except (RuntimeError, URLError, OSError) as err:
                raise DataError(
                    f"Could not download {self.cls.__name__} ({_first_line(err)}); are you offline? {hint}."
                ) from None

    def _read(self):
        self.prepare_data()
        out = []
        for split, args in (("train", self.train_args), ("test", self.test_args)):
            dataset = self._open(args, download=False)
            self.raw = Path(getattr(dataset, "raw_folder", dataset.root))
            images, labels = _tensors(dataset)
            self.file_md5[f"{split}.images"], self.file_md5[f"{split}.labels"] = _md5(images), _md5(labels)
            out.append((images, labels))
        return tuple(out)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
