"""Your own network and data: plain modules from a package outside src/ (examples/optbench-example), any
torchvision dataset class on files in its own format, and trust that a stored run never grants itself."""

from __future__ import annotations

import bz2
import hashlib
import json

import mlflow
import numpy as np
import pytest
import torch

from optbench import pipeline, restore
from optbench.cli import rerun
from optbench.config import ConfigError
from optbench.data import DataError
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN
from optbench.packed import run_pack
from optbench.resume import resume
from optbench.stored import RestoreError
from optbench.trust import TRUST_ENV

from .helpers import (
    InterruptAt,
    compare_json,
    compose_cfg,
    quick_args,
    run_cli,
    runs_of,
    tiny_cfg,
)
from .idx import write_idx

MLP = ["model=custom", "model.net._target_=optbench_example.MLP", "+model.net.width=32"]


def stored_config(*overrides: str) -> dict:
    """What a run of ``overrides`` logs as its config (resolved; what this machine trusts left out)."""
    record = restore._resolved(*overrides)
    record.pop("trusted_modules")
    return record


def datamodule_cfg(data_root, tracking_uri: str, *extra: str):
    """A short run of the example's own datamodule (which has no optbench data keys to set)."""
    return compose_cfg(
        "data=custom", "data._target_=optbench_example.NormalizedMNIST", f"+data.root={data_root}",
        "trainer.max_epochs=2", "trainer.enable_progress_bar=false", f"logger.tracking_uri={tracking_uri}",
        "callbacks.tracking.system_metrics=false", *MLP, *extra,
    )  # fmt: skip


def dataset_input(uri: str, run_id: str):
    (entry,) = mlflow.MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    return entry.dataset, json.loads(entry.dataset.profile)


def md5(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


# -- the model ---------------------------------------------------------------------------------------
def test_the_seed_cnn_sees_the_pixels_it_always_did():
    """The conversion every net now gets is the seed's: uint8 / 255 with a channel axis, bit for bit."""
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    net = SeedCNN(dropout_conv=0, dropout_dense=0).eval()
    assert torch.equal(net(as_float_images(pixels)), net(pixels.unsqueeze(1).to(torch.float32) / 255.0))
    floats = torch.randn(4, 3, 8, 8)
    assert as_float_images(floats) is floats, "a user's float batch is passed on as it is"
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert as_float_images(rgb).shape == (2, 3, 8, 8)


def test_your_network_trains_and_reruns_only_when_trusted(data_root, tracking_uri, capsys, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    result = pipeline.run(tiny_cfg(data_root, tracking_uri, *MLP))
    assert result.status == "FINISHED" and result.metrics["val_acc"] > 0.3
    client = mlflow.MlflowClient(tracking_uri)
    params = client.get_run(result.run_id).data.params
    assert params["model.net._target_"] == "optbench_example.MLP" and params["model.net.width"] == "32"
    assert "model.net.dropout_rng" not in params and "trusted_modules" not in params

    assert rerun.main([result.run_id, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert "model.net._target_ = 'optbench_example.MLP'" in err and "module optbench_example is not trusted" in err
    assert f"{TRUST_ENV}=optbench_example" in err and "trusted_modules" in err
    assert len(runs_of(tracking_uri)[1]) == 1, "a refused rerun builds and logs nothing"

    assert rerun.main([result.run_id, "trusted_modules=[optbench_example]", "--tracking-uri", tracking_uri]) == 0
    assert "optbench-rerun: identical: 8 per-epoch values compared" in capsys.readouterr().out
    monkeypatch.setenv(TRUST_ENV, "other,optbench_example")
    assert rerun.main([result.run_id, "--tracking-uri", tracking_uri]) == 0
    assert "optbench-rerun: identical" in capsys.readouterr().out
    reruns = [r for r in runs_of(tracking_uri)[1] if r.data.tags.get("rerun_of") == result.run_id]
    assert len(reruns) == 2 and all(r.data.params["model.net.width"] == "32" for r in reruns)


def test_trust_is_this_machines_never_the_stored_runs(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    mine = stored_config(*MLP)
    with pytest.raises(RestoreError, match="optbench_example is not trusted"):
        restore.rebuild(mine)
    with pytest.raises(RestoreError, match="not trusted"):
        restore.rebuild({**mine, "trusted_modules": ["optbench_example"]})  # a forged run trusting itself

    monkeypatch.setenv(TRUST_ENV, "optbench_example")
    cfg = restore.rebuild(mine)
    assert cfg.model.net._target_ == "optbench_example.MLP" and cfg.model.net.width == 32
    assert "dropout_rng" not in cfg.model.net, "optbench's later settings are not added to your net"
    assert restore.rebuild({**mine, "trusted_modules": ["evil"]}).trusted_modules == []

    forged = stored_config(*MLP)
    forged["model"]["net"] = {"_target_": "optbench.data.MNISTDataModule", "root": "/etc"}
    with pytest.raises(RestoreError, match="model.net._target_"):
        restore.rebuild(forged)
    for target in ("torchvision.datasets.utils.download_url", "os.system"):
        forged = stored_config("data=torchvision")
        forged["data"]["dataset"]["_target_"] = target
        with pytest.raises(RestoreError, match=r"data\.dataset\._target_"):
            restore.rebuild(forged)
    kmnist = stored_config("data=torchvision", "data.dataset._target_=torchvision.datasets.KMNIST")
    assert restore.rebuild(kmnist).data.dataset._target_ == "torchvision.datasets.KMNIST", "no trust needed"


def test_your_datamodules_own_arguments_stay_its_own(monkeypatch, tmp_path):
    """``data.root`` is this machine's for optbench's datasets; for your datamodule it is your argument."""
    monkeypatch.setenv(TRUST_ENV, "optbench_example")
    mine = stored_config("data=custom", "data._target_=optbench_example.NormalizedMNIST", f"+data.root={tmp_path}")
    assert restore.rebuild(mine).data.root == str(tmp_path)
    assert restore.rebuild(stored_config("data.root=/elsewhere")).data.root != "/elsewhere"


# -- sweeps, comparison, resume, packing --------------------------------------------------------------
@pytest.mark.slow
def test_your_network_sweeps_and_compares(data_root, tracking_uri, tmp_path, example_env):
    args = quick_args(data_root, tracking_uri, tmp_path, *MLP, "data.subset=128", "trainer.max_epochs=1")
    run_cli("-m", *args, "optimizer=adam,sgd", "seed=1,2", "sweep_id=mine", env=example_env)
    client, runs = runs_of(tracking_uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    payload = compare_json(tracking_uri, "--sweep", "mine", "--epochs", "1")
    rows = {r["optimizer"]: r for r in payload["rows"]}
    assert set(rows) == {"adam", "sgd"}
    for name, row in rows.items():
        values = [r.data.metrics["val_acc"] for r in runs if r.data.params["optimizer.name"] == name]
        assert row["seeds"] == 2 and row["val_acc@1"] == pytest.approx(np.mean(values), abs=1e-12)


def test_resume_of_your_network_equals_an_uninterrupted_run(data_root, tracking_uri, monkeypatch):
    net = ["model=custom", "model.net._target_=optbench_example.SmallResNet", "+model.net.width=8"]
    args = [*net, "data.subset=512", "trainer.max_epochs=3", "seed=3"]
    straight = pipeline.run(tiny_cfg(data_root, tracking_uri, *args))
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        pipeline.run(tiny_cfg(data_root, tracking_uri, *args), callbacks=[InterruptAt(1)])
    client, runs = runs_of(tracking_uri)
    (killed,) = [r for r in runs if r.info.status == "KILLED"]
    where = [f"data.root={data_root}", f"logger.tracking_uri={tracking_uri}", "trainer.enable_progress_bar=false"]
    command = [*where, f"resume={killed.info.run_id}"]

    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(RestoreError, match="optbench_example is not trusted"):
        resume(compose_cfg(*command), command)
    monkeypatch.setenv(TRUST_ENV, "optbench_example")
    result = resume(compose_cfg(*command), command)

    def history(run_id):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))

    assert result.status == "FINISHED" and client.get_run(killed.info.run_id).info.status == "FINISHED"
    assert len(history(straight.run_id)) == 3 and history(killed.info.run_id) == history(straight.run_id)


def test_a_packed_sweep_of_your_network_is_refused(data_root, tracking_uri):
    cfgs = [tiny_cfg(data_root, tracking_uri, *MLP, f"seed={seed}") for seed in (1, 2)]
    with pytest.raises(ConfigError, match=r"packed trains the seed CNN only.*hydra/launcher=joblib"):
        run_pack(cfgs)
    assert runs_of(tracking_uri)[1] == [], "refused before any run exists"


# -- data ---------------------------------------------------------------------------------------------
def write_kmnist(root, n_train: int = 300, n_test: int = 100) -> dict[str, np.ndarray]:
    """KMNIST's own files (IDX, under KMNIST/raw/), random digits."""
    rng = np.random.default_rng(7)
    raw = root / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, name, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        arrays[f"{split}.images"] = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        arrays[f"{split}.labels"] = rng.integers(0, 10, size=n).astype(np.int64)
        write_idx(raw / f"{name}-images-idx3-ubyte", arrays[f"{split}.images"])
        write_idx(raw / f"{name}-labels-idx1-ubyte", arrays[f"{split}.labels"])
    return arrays


def test_a_torchvision_class_trains_the_seed_cnn_on_its_own_files_and_reruns(tmp_path, tracking_uri, capsys):
    arrays = write_kmnist(tmp_path / "tv")
    kmnist = ["data=torchvision", "data.dataset._target_=torchvision.datasets.KMNIST", f"data.root={tmp_path / 'tv'}"]
    cfg = tiny_cfg(tmp_path, tracking_uri, *kmnist, "data.subset=null")
    assert cfg.data.name == "kmnist" and cfg.run_name == "adam-kmnist-seed42"
    result = pipeline.run(cfg)
    assert result.status == "FINISHED"
    dataset, profile = dataset_input(tracking_uri, result.run_id)
    assert dataset.name == "kmnist" and profile["num_train"] == 300
    assert profile["files"] == {k: md5(v) for k, v in arrays.items()}, "the digest is over the decoded data"
    assert mlflow.MlflowClient(tracking_uri).get_run(result.run_id).data.tags["dataset_digest"] == dataset.digest
    assert rerun.main([result.run_id, f"data.root={tmp_path / 'tv'}", "--tracking-uri", tracking_uri]) == 0
    assert "optbench-rerun: identical" in capsys.readouterr().out


def write_usps(root, n: int, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """USPS's own format: bz2 lines of ``label i:value`` (labels 1-10, values in [-1, 1]); returns the
    images and labels torchvision decodes from it."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, size=(n, 256)).astype(np.float32)
    labels = rng.integers(1, 11, size=n)
    lines = [
        f"{y} " + " ".join(f"{i + 1}:{v!r}" for i, v in enumerate(row.tolist()))
        for y, row in zip(labels, values, strict=True)
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return ((values + 1) / 2 * 255).astype(np.uint8).reshape(n, 16, 16), labels - 1


def test_a_torchvision_class_with_another_format_and_your_network(tmp_path, tracking_uri, monkeypatch):
    train = write_usps(tmp_path / "usps", 200, "usps.bz2", 1)
    test = write_usps(tmp_path / "usps", 100, "usps.t.bz2", 2)
    usps = ["data=torchvision", "data.dataset._target_=torchvision.datasets.USPS", f"data.root={tmp_path / 'usps'}"]
    net = ["model=custom", "model.net._target_=optbench_example.MLP", "+model.net.in_features=256"]
    result = pipeline.run(tiny_cfg(tmp_path, tracking_uri, *usps, *net, "data.subset=null"))
    assert result.status == "FINISHED"
    dataset, profile = dataset_input(tracking_uri, result.run_id)
    assert dataset.name == "usps" and profile["num_train"] == 200
    assert profile["files"]["train.images"] == md5(train[0]) and profile["files"]["test.labels"] == md5(test[1])


def test_missing_torchvision_files_are_a_clear_error(tmp_path, tracking_uri):
    kmnist = ["data=torchvision", "data.dataset._target_=torchvision.datasets.KMNIST", f"data.root={tmp_path}"]
    with pytest.raises(DataError, match=rf"Dataset not found.*{tmp_path}.*data\.download=true"):
        pipeline.run(tiny_cfg(tmp_path, tracking_uri, *kmnist, "data.download=false"))
    assert runs_of(tracking_uri)[1] == [], "no run for data that is not there"


def test_your_datamodule_trains_and_records_its_data(data_root, tracking_uri, monkeypatch, capsys):
    result = pipeline.run(datamodule_cfg(data_root, tracking_uri, "+data.subset=256"))
    assert result.status == "FINISHED" and result.metrics["val_acc"] > 0.3
    dataset, profile = dataset_input(tracking_uri, result.run_id)
    assert dataset.name == "custom" and profile["num_train"] == 256 and set(profile["files"]) == {"train", "val"}
    assert json.loads(dataset.source)["uri"] == "optbench_example.data.NormalizedMNIST"
    other = pipeline.run(datamodule_cfg(data_root, tracking_uri, "+data.subset=128"))
    assert dataset_input(tracking_uri, other.run_id)[0].digest != dataset.digest, "other data, other digest"

    monkeypatch.setenv(TRUST_ENV, "optbench_example")
    assert rerun.main([result.run_id, "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr()
    assert "optbench-rerun: identical" in out.out and "dataset digest differs" not in out.err


def test_tune_takes_your_network(data_root, tracking_uri, tmp_path, monkeypatch, capsys):
    from optbench.cli import tune

    monkeypatch.setenv("OPTBENCH_DATA_ROOT", str(data_root))
    common = ["--optimizers", "adam", "--trials", "1", "--seeds", "1", "--epochs", "1", "--subset", "256"]
    common += ["--tracking-uri", tracking_uri, "--out", str(tmp_path)]
    assert tune.main([*common, "model=custom", "model.net._target_=optbench_example.MLP", "+model.net.width=16"]) == 0
    trained = [r for r in runs_of(tracking_uri)[1] if "model.net._target_" in r.data.params]
    assert len(trained) == 3, "one trial, the best and the default retrained"
    assert {(r.data.params["model.net._target_"], r.data.params["model.net.width"]) for r in trained} == {
        ("optbench_example.MLP", "16")
    }
    before = len(runs_of(tracking_uri)[1])
    assert tune.main([*common, "model=custom"]) == 2
    assert "model.net._target_ must be set" in capsys.readouterr().err
    assert len(runs_of(tracking_uri)[1]) == before, "a bad override fails before any run"


def test_the_example_datamodule_holds_out_what_tune_asks_for(data_root):
    from torchvision.datasets import MNIST

    from optbench.config import instantiate_group

    mine = ["data=custom", "data._target_=optbench_example.NormalizedMNIST", f"+data.root={data_root}"]
    dm = instantiate_group(compose_cfg("experiment=tuned", *mine), "data")
    dm.setup()
    assert len(dm.sets["train"]) == 50_000 and len(dm.sets["val"]) == 10_000
    assert torch.equal(dm.sets["val"].tensors[1], MNIST(str(data_root), train=True).targets[-10_000:])
