"""Every config of every group composes, and instantiates into the object it names."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from optbench.config import ConfigError, build, instantiate_group, options, validate
from optbench.data import MNISTDataModule
from optbench.module import ClassifierModule
from optbench.optim import BaseOptimizer
from optbench.torchvision_data import TorchvisionDataModule
from optbench.tracking import RunTracking

from .helpers import REPO, compose_cfg


def test_every_group_exists():
    for group in ("optimizer", "data", "model", "trainer", "logger", "callbacks", "experiment", "hydra/launcher"):
        assert options(group), f"conf/{group}/ has no configs"


def test_groups_mirror_the_top_level_conf_folder():
    """The configs the package reads are the top-level conf/ folder (one source)."""
    assert options("optimizer") == sorted(p.stem for p in (REPO / "conf" / "optimizer").glob("*.yaml"))


@pytest.mark.parametrize("name", options("optimizer"))
@pytest.mark.parametrize("preset", ["keras", "torch"])
def test_optimizer_configs(name, preset):
    cfg = compose_cfg(f"optimizer={name}", f"optimizer.preset={preset}")
    assert cfg.optimizer.name == name
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    opt = model.configure_optimizers()
    assert isinstance(opt, BaseOptimizer)
    assert cfg.run_name == f"{name}-mnist-seed42"


# The options that take the user's own class, given the example package's.
OWN_CLASS = {
    "data": {"custom": ["data._target_=optbench_example.NormalizedMNIST"]},
    "model": {"custom": ["model.net._target_=optbench_example.MLP"]},
}


@pytest.mark.parametrize("name", options("data"))
def test_data_configs(name):
    cfg = compose_cfg(f"data={name}", *OWN_CLASS["data"].get(name, []))
    dm = instantiate_group(cfg, "data")
    assert isinstance(dm, pl.LightningDataModule) and dm.batch_size == 64 and dm.seed == cfg.seed
    assert isinstance(dm, MNISTDataModule | TorchvisionDataModule) == (name != "custom")
    assert getattr(dm, "val_split", None) is None


@pytest.mark.parametrize("group", ["model", "data"])
def test_an_option_for_your_own_class_says_what_to_set(group):
    with pytest.raises(ConfigError, match=rf"{group}(\.net)?\._target_ must be set.*README"):
        validate(compose_cfg(f"{group}=custom"))


@pytest.mark.parametrize("name", options("model"))
def test_model_configs(name):
    cfg = compose_cfg(f"model={name}", *OWN_CLASS["model"].get(name, []))
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    assert isinstance(model, ClassifierModule)
    logits = model(torch.zeros(2, 28, 28, dtype=torch.uint8))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize("name", [n for n in options("trainer") if n in ("cpu", "ddp_cpu")])
def test_trainer_configs(name):
    cfg = compose_cfg(f"trainer={name}")
    assert isinstance(instantiate_group(cfg, "trainer"), pl.Trainer)


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs(name, tmp_path):
    cfg = compose_cfg(f"logger={name}", f"logger.tracking_uri=sqlite:///{tmp_path}/m.db")
    assert isinstance(instantiate(cfg.logger), MLFlowLogger)


@pytest.mark.parametrize("name", options("callbacks"))
def test_callbacks_configs(name, tmp_path):
    cfg = compose_cfg(f"callbacks={name}")
    built = {key: instantiate(node) for key, node in cfg.callbacks.items()}
    assert isinstance(built["tracking"], RunTracking)
    assert isinstance(built["checkpoint"], pl.callbacks.ModelCheckpoint) and built["checkpoint"].save_top_k == 1


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_configs_list_every_hyperparameter(name):
    """Each conf/optimizer file names every constructor argument, so the effective values can be logged
    (``capturable`` is not the optimizer config's: ``trainer.cuda_graph`` sets it, and is logged)."""
    import inspect

    from optbench.optim import OPTIMIZERS

    cfg = compose_cfg(f"optimizer={name}")
    wanted = set(inspect.signature(OPTIMIZERS[name]).parameters) - {"params", "capturable"}
    assert wanted <= set(cfg.optimizer), wanted - set(cfg.optimizer)


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_configs(name):
    cfg = compose_cfg(f"experiment={name}")
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    assert isinstance(model.configure_optimizers(), BaseOptimizer)


def test_seed_table_protocol():
    cfg = compose_cfg("experiment=seed_table")
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 10 and cfg.model.net.init == "keras"
    assert cfg.optimizer.preset == "keras" and cfg.data.val_split is None


def test_tracking_uri_from_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert compose_cfg().logger.tracking_uri == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert compose_cfg().logger.tracking_uri == "sqlite:///mlruns/mlflow.db"


@pytest.mark.parametrize("name", options("optimizer"))
def test_every_effective_record_rebuilds_with_its_values(name, data_root):
    """What a run logs (its effective config, preset values filled in) passes the stored-value schema."""
    from optbench import restore
    from optbench.config import effective

    cfg = compose_cfg(f"optimizer={name}", f"data.root={data_root}")
    _, _, optimizer = build(cfg)
    record = effective(cfg, optimizer, threads=1)
    rebuilt = restore.rebuild(record)
    assert OmegaConf.to_container(rebuilt.optimizer) == record["optimizer"]
