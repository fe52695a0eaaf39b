"""The data module: real MNIST in memory, file checks, clear errors, batch order."""

from __future__ import annotations

import shutil
from urllib.error import URLError

import pytest
import torch
from torchvision import datasets

from optbench.data import DataError, InMemoryBatches, MNISTDataModule, as_float_images

from .idx import write_fake_dataset


def test_real_mnist_in_memory(data_root):
    dm = MNISTDataModule(root=data_root, download=False)
    dm.setup()
    (train_x, train_y), (val_x, val_y) = dm.splits["train"], dm.splits["val"]
    assert train_x.shape == (60_000, 28, 28) and train_x.dtype == torch.uint8
    assert val_x.shape == (10_000, 28, 28), "default validation is the 10k test set, as the seed"
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's well-known first labels
    # The same pixels torchvision serves, without its per-sample PIL path.
    reference = datasets.MNIST(str(data_root), train=False, download=False)
    assert torch.equal(val_x, reference.data) and torch.equal(val_y, reference.targets)
    assert len(dm.digest) == 32


def test_val_split_holds_out_training_tail(data_root):
    dm = MNISTDataModule(root=data_root, download=False, val_split=10_000)
    dm.setup()
    assert dm.num_train == 50_000 and len(dm.splits["val"][1]) == 10_000
    assert len(dm.splits["test"][1]) == 10_000


def test_subset_and_pixel_scaling(data_root):

    dm = MNISTDataModule(root=data_root, download=False, subset=512)
    dm.setup()
    assert dm.num_train == 512 and len(dm.splits["val"][1]) == 512
    x = as_float_images(dm.splits["train"][0][:4])
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_batches_depend_on_seed_and_epoch_only():
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1).expand(100, 28, 28).contiguous()
    labels = torch.arange(100)
    epoch = [0]

    def order(seed, e):
        epoch[0] = e
        return torch.cat([y for _, y in InMemoryBatches(images, labels, 64, True, seed=seed, epoch=lambda: epoch[0])])

    assert torch.equal(order(1, 0), order(1, 0))
    assert not torch.equal(order(1, 0), order(1, 1))
    assert not torch.equal(order(1, 0), order(2, 0))
    assert sorted(order(1, 3).tolist()) == list(range(100))
    assert [len(y) for _, y in InMemoryBatches(images, labels, 64, True)] == [64, 36]


def test_global_batches_are_split_across_ranks():
    images, labels = torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10)
    one = [y for _, y in InMemoryBatches(images, labels, 4, True, seed=3)]
    two = [list(InMemoryBatches(images, labels, 4, True, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for global_batch, (_, y0), (_, y1) in zip(one, two[0], two[1], strict=True):
        assert torch.equal(torch.cat([y0, y1]), global_batch)
    shards = [
        torch.cat([y for _, y in InMemoryBatches(images, labels, 3, False, rank=r, world_size=3)]) for r in (0, 1, 2)
    ]
    assert torch.equal(torch.cat(shards), labels), "evaluation shards cover every sample once, no padding"


def test_offline_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    # An unreachable mirror stands in for "no internet": torchvision's real download path fails.
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    dm = MNISTDataModule(root=tmp_path / "nowhere", download=True)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "OPTBENCH_DATA_ROOT" in message and "offline" in message
    assert "data.download=true" not in message, "download was already on: the advice must not be to turn it on"
    assert not isinstance(info.value.__cause__, URLError)


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataError, match=r"Dataset not found.*MNIST/raw.*OPTBENCH_DATA_ROOT"):
        MNISTDataModule(root=tmp_path, download=False).setup()


def test_truncated_file_is_named(tmp_path):
    raw = write_fake_dataset(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is truncated or corrupt: 9998 bytes, expected 10008"):
        MNISTDataModule(root=tmp_path, download=False, verify=False).setup()


def test_a_corrupt_header_of_the_right_size_says_so(tmp_path):
    raw = write_fake_dataset(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte has a corrupt header: its IDX magic number is 2302, expected 2049"
    ):
        MNISTDataModule(root=tmp_path, download=False, verify=False).setup()


def test_checksum_mismatch_is_named_and_can_be_waived(tmp_path):
    write_fake_dataset(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has MD5 .* data.verify=false"):
        MNISTDataModule(root=tmp_path, download=False).setup()
    dm = MNISTDataModule(root=tmp_path, download=False, verify=False)
    dm.setup()
    assert dm.num_train == 60_000


def test_local_gzip_files_are_used_offline(tmp_path, data_root):
    import gzip

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").glob("*-ubyte"):
        with open(f, "rb") as src, gzip.open(raw / (f.name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    dm = MNISTDataModule(root=tmp_path, download=False)
    dm.setup()
    assert dm.num_train == 60_000


@pytest.mark.parametrize(
    "bad", [dict(batch_size=0), dict(batch_size=-3), dict(subset=0), dict(val_split=60_000), dict(batch_size=6.5)]
)
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValueError, match="data."):
        MNISTDataModule(**bad)
