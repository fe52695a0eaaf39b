"""The run config: composing it from ``conf/``, checking it, building its objects, and what actually ran.

Every config mistake surfaces here as one ``ConfigError`` paragraph naming the key, before any MLflow
run exists. ``effective`` turns the composed config into the record of what ran: the preset values an
optimizer filled in, the thread count, every interpolation resolved.
"""

from __future__ import annotations

import importlib.resources
import inspect
from pathlib import Path
from typing import Any

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import conv_pool, graphs
from .optim import BaseOptimizer

CONFIG_MODULE = "optbench.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"  # for @hydra.main: the configs shipped inside the package
GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment")
SEED_RANGE = (0, 2**32 - 1)  # NumPy's seeds, which seed_everything sets too

# ``data=torchvision``'s default name: torchvision.datasets.KMNIST → kmnist.
OmegaConf.register_new_resolver(
    "optbench.class_name", lambda target: str(target).rpartition(".")[2].lower(), replace=True
)


class ConfigError(ValueError):
    """A config value that cannot work; raised before any run is created."""


def config_dir() -> Path:
    return Path(str(importlib.resources.files(CONFIG_MODULE)))


def options(group: str) -> list[str]:
    """The config names of a group (``optimizer`` → adadelta, adagrad, ...)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config ``optbench-train OVERRIDES`` would run (with the ``hydra`` node when asked).

    Works inside a running Hydra app too (``resume=`` rebuilds a config there): the app's Hydra is set
    aside while the package's own configs are composed, then put back.
    """
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().hydra = running


def check_overrides(overrides: list[str]) -> None:
    """Reject a config group set to something other than a config name (``optimizer=0``, ``optimizer=[0]``).

    Hydra reports most bad overrides cleanly, but these crash deep inside its defaults list.
    """
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and not o.startswith("-")])
    except HydraException:
        return  # Hydra's own parse error message is clear
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        if group not in GROUPS:
            continue
        try:
            value = override.value()
            items = list(override.sweep_iterator()) if override.is_sweep_override() else [value]
        except (HydraException, TypeError, ValueError):
            items = [None]
        if override.is_delete() and not value:
            continue
        if not all(isinstance(v, str) for v in items):
            raise ConfigError(
                f"Invalid override {override.input_line!r}: {group} takes a config name ({', '.join(options(group))})."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(cfg: DictConfig) -> None:
    """The top-level values that no constructor checks."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        epochs, seed, threads = cfg.trainer.get("max_epochs"), cfg.get("seed"), cfg.get("threads")
    except OmegaConfBaseException as err:
        raise ConfigError(f"Invalid config: {str(err).splitlines()[0]}") from None
    if missing:
        raise ConfigError(
            f"Invalid config: {', '.join(missing)} must be set: model=custom and data=custom build your own class, e.g. "
            "model.net._target_=mypkg.MyNet or data._target_=mypkg.MyDataModule (README, Your own network and data)."
        )
    if not _is_int(epochs) or epochs < 1:
        raise ConfigError(f"Invalid trainer.max_epochs={epochs!r}; it must be an integer >= 1 (e.g. 10).")
    if not _is_int(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(f"Invalid seed={seed!r}; it must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}.")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise ConfigError(f"Invalid threads={threads!r}; give a positive integer, or null for the usable cores.")
    if _seed_cnn(cfg).get("conv_pool") == "fused":
        if device_of(cfg).type != "cpu" or cfg.trainer.get("cuda_graph"):
            raise ConfigError(
                "Invalid model.net.conv_pool=fused: its kernels run on the CPU, in steps that are not recorded; "
                "use conv_pool=torch (or null, which picks it) with trainer=gpu and trainer.cuda_graph."
            )
    if cfg.trainer.get("cuda_graph"):
        try:
            graphs.recorder(device_of(cfg))
        except ValueError as err:
            raise ConfigError(f"Invalid trainer.cuda_graph=true: {err}.") from None
        if cfg.get("scheduler"):
            raise ConfigError(
                "Invalid trainer.cuda_graph=true with a scheduler: a recorded step replays the learning rate it was "
                "recorded with; use scheduler=constant with cuda_graph, or train the schedule without it."
            )
        if not one_process(cfg):
            raise ConfigError(
                "Invalid trainer.cuda_graph=true with several devices: a recorded step would hold DDP's gradient "
                "all-reduce; record single-device runs (trainer=gpu) or packed sweeps."
            )


OURS = {"trainer": ("cuda_graph",)}  # keys of a group that optbench reads and its _target_ does not take
# Keys optbench reads that a group's target gets only if its constructor takes them (a user's datamodule).
OURS_IF_UNTAKEN = {"data": ("name", "seed")}


def _takes(target: Any, key: str) -> bool:
    try:
        params = inspect.signature(get_object(target)).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return True  # instantiate reports a target it cannot find
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def instantiate_group(cfg: DictConfig, group: str, **kwargs):
    """``instantiate(cfg[group])``, with a constructor's complaint as a ``ConfigError`` naming the group."""
    node = cfg[group]
    drop = [*OURS.get(group, ()), *(k for k in OURS_IF_UNTAKEN.get(group, ()) if not _takes(node.get("_target_"), k))]
    if drop:
        node = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in drop})
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"Invalid {group} config: {cause}") from None


def build(cfg: DictConfig):
    """Data module, LightningModule and its optimizer from ``cfg``; a bad value raises ``ConfigError``."""
    validate(cfg)
    try:
        datamodule = instantiate_group(cfg, "data")
        module = instantiate_group(
            cfg,
            "model",
            **({"net": net} if (net := seed_cnn_paths(cfg)) else {}),
            optimizer=instantiate_group(cfg, "optimizer"),
            scheduler=instantiate_group(cfg, "scheduler") if cfg.get("scheduler") else None,
            cuda_graph=bool(cfg.trainer.get("cuda_graph")),
        )
        try:
            optimizer = module.configure_optimizers()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Invalid optimizer config: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"Invalid config: {str(err).splitlines()[0]}") from None
    return datamodule, module, optimizer


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def one_process(cfg: DictConfig) -> bool:
    """Whether a config trains in one process on one device: no DDP strategy, one device, one node."""
    trainer = cfg.trainer
    return not trainer.get("strategy") and trainer.get("devices", 1) == 1 and trainer.get("num_nodes", 1) == 1


def device_of(cfg: DictConfig) -> torch.device:
    """The device a config trains on (before any trainer exists)."""
    return torch.device("cuda" if cfg.trainer.get("accelerator") in ("gpu", "cuda") else "cpu")


SEED_CNN = "optbench.model.SeedCNN"


def _seed_cnn(cfg: DictConfig) -> DictConfig | dict:
    """``model.net`` when it is the seed CNN, else an empty dict."""
    net = cfg.get("model", {}).get("net") or {}
    return net if net.get("_target_") == SEED_CNN else {}


def seed_cnn_paths(cfg: DictConfig) -> dict[str, str]:
    """The seed CNN's code paths that ``null`` leaves to the device (``model.net.conv_pool``), as the run takes
    them: the model is built with these and the record logs them, so the two cannot disagree."""
    net = _seed_cnn(cfg)
    if "conv_pool" not in net or net.conv_pool is not None:
        return {}
    if cfg.trainer.get("cuda_graph"):  # a recorded step replays PyTorch's kernels only
        return {"conv_pool": "torch"}
    return {"conv_pool": conv_pool.auto_path(device_of(cfg), cfg.trainer.get("precision"))}


def optimizer_values(optimizer: BaseOptimizer) -> dict[str, Any]:
    """The hyperparameters an optimizer runs with, after its preset and overrides (lists for tuples)."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in optimizer.defaults.items()}
    group = optimizer.param_groups[0]
    if "fused" in values:  # "auto" (null): say which path it takes; it changes the last bits of a step
        values["fused"] = optimizer.uses_fused(group)
    if values.get("foreach") is None:
        values["foreach"] = not values.get("fused") and optimizer.uses_foreach(group)
    return values


def effective(cfg: DictConfig, optimizer: BaseOptimizer, threads: int) -> dict[str, Any]:
    """The resolved config with every value the run used filled in: what is logged, compared and rerun."""
    record = resolved(cfg)
    for key, value in optimizer_values(optimizer).items():
        if key in record["optimizer"] or key == "fused":  # fused changes numbers: logged even if a config omits it
            record["optimizer"][key] = value
    if paths := seed_cnn_paths(cfg):  # like fused, the conv_pool path changes numbers: logged as taken
        record["model"]["net"].update(paths)
    record["threads"] = threads
    record.pop("resume", None)  # how a run was started, not what it is
    record.pop("trusted_modules", None)  # what this machine trusts, not what the run is
    return record
