"""What data a run read, for any datamodule: a name, a digest that changes with any byte, and its parts.

optbench's own modules know it (``file_md5``: the MD5 of each file or split they read). A user's
``LightningDataModule`` may say it with a ``digest`` attribute of its own; otherwise the datasets behind
its train and val loaders are hashed sample by sample, in index order, once per run. Lightning and
MLflow hash neither a datamodule nor a torch ``Dataset`` (MLflow's dataset digests cover its own
dataset types), hence this module.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("optbench")


@dataclass(frozen=True)
class DataIdentity:
    name: str
    digest: str | None  # None: this datamodule's data could not be read back to hash it
    parts: dict[str, str]  # file or split → MD5
    num_train: int | None
    subset: int | None
    source: str  # where it came from: a folder, or the datamodule's class


def _sample_bytes(value) -> bytes:
    if isinstance(value, tuple | list):
        return b"".join(_sample_bytes(v) for v in value)
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode() + tensor.contiguous().numpy().tobytes()


def _dataset_md5(loader) -> tuple[str | None, int | None]:
    """The MD5 over every sample of the map-style dataset behind ``loader``, and its length."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return None, None
    md5 = hashlib.md5()
    for i in range(len(dataset)):
        md5.update(_sample_bytes(dataset[i]))
    return md5.hexdigest(), len(dataset)


def of(datamodule, name: str | None = None) -> DataIdentity | None:
    """The identity of ``datamodule``'s data (after its ``setup``); None without a datamodule."""
    if datamodule is None:
        return None
    name = name or getattr(datamodule, "name", None) or type(datamodule).__name__
    if getattr(datamodule, "file_md5", None):  # optbench's own: the files or splits it read
        return DataIdentity(
            name, datamodule.digest, dict(datamodule.file_md5), datamodule.num_train, datamodule.subset,
            str(Path(datamodule.raw).resolve()),
        )  # fmt: skip
    source = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
    own = getattr(datamodule, "digest", None)
    if isinstance(own, str) and own:
        return DataIdentity(name, own, {}, None, None, source)
    parts, num_train = {}, None
    for split in ("train", "val"):
        loader_of = getattr(datamodule, f"{split}_dataloader", None)
        md5, n = _dataset_md5(loader_of()) if loader_of is not None else (None, None)
        if md5 is None:
            log.warning(
                "The %s loader of %s has no map-style dataset to hash: its run records no dataset digest. "
                "Give the datamodule a `digest` attribute (a string that changes with its data) to have one.",
                split,
                source,
            )
            return DataIdentity(name, None, {}, None, None, source)
        parts[split] = md5
        num_train = n if split == "train" else num_train
    joined = "".join(f"{k}:{v};" for k, v in sorted(parts.items()))
    return DataIdentity(name, hashlib.md5(joined.encode()).hexdigest(), parts, num_train, None, source)
