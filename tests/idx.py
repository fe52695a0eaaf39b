"""Write tiny IDX files in MNIST's format (for tests that need the format, not the digits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fake_dataset(root: Path, folder: str = "MNIST", seed: int = 0) -> Path:
    """Full-size (60k/10k) random IDX files under ``root/folder/raw``; returns the raw folder."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for images, labels, n in FILES.values():
        write_idx(raw / images, rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(raw / labels, rng.integers(0, 10, size=n))
    return raw
