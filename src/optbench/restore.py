"""A logged run's config, rebuilt from this checkout's own config groups: stored text is data, never code.

Anyone who can log a run to a shared server can write its ``config.yaml``, so rerun and resume never
hand that file to Hydra's ``instantiate`` or to OmegaConf's resolvers. Instead:

1. it is read with ``yaml.safe_load`` (plain data) and refused if any string holds ``${...}``
   (an interpolation or resolver) or a list holds a mapping;
2. each config group is matched to this checkout's option whose keys and ``_target_`` values it has:
   an unknown key or a changed target anywhere, nested too, is refused with the difference shown;
3. that option is composed here and the stored *values* are set on it; machine-local keys (data root,
   tracking URI, progress bar) come from this machine;
4. every ``_target_`` of the result is checked against an explicit allowlist before anything is built.

A Hydra output folder must hold exactly what this checkout composes from its ``.hydra/overrides.yaml``.
Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain data, no pickled code.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import re
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from . import config
from .data import DATASETS

ALLOWED_TARGETS = frozenset(
    {
        "optbench.optim.create",
        "optbench.data.MNISTDataModule",
        "optbench.module.ClassifierModule",
        "optbench.model.SeedCNN",
        "optbench.tracking.RunTracking",
        "pytorch_lightning.Trainer",
        "pytorch_lightning.strategies.DDPStrategy",
        "pytorch_lightning.loggers.MLFlowLogger",
        "pytorch_lightning.callbacks.ModelCheckpoint",
    }
)
META_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
# Where things are on this machine: taken from here, not from a stored config (a logged data root only
# where it holds the data on this machine too).
MACHINE_LOCAL = ("data.root", "data.download", "logger.tracking_uri", "trainer.enable_progress_bar")
CHECKPOINT = "last/last.ckpt"  # where MLFlowLogger uploads ModelCheckpoint's last.ckpt
RUN_ID = re.compile(r"[0-9a-f]{32}")


class RestoreError(ValueError):
    """A stored config or checkpoint that this checkout will not run; the message names what and why."""


def refuse(what: str, problems: list[str]) -> RestoreError:
    shown = "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "")
    return RestoreError(
        f"Refusing {what}: {shown}. A logged config is data, never code: rerun and resume only accept the "
        "keys and targets this checkout's own config groups produce (see README, Security)."
    )


def _plain_problems(tree: Any, path: str = "") -> list[str]:
    """Interpolations, resolvers and non-plain structures anywhere in ``tree``."""
    if isinstance(tree, dict):
        out = []
        for key, value in tree.items():
            if not isinstance(key, str):
                out.append(f"non-string key {key!r} under {path or 'the top level'}")
                continue
            out += _plain_problems(value, f"{path}.{key}" if path else key)
        return out
    if isinstance(tree, list):
        if any(isinstance(v, dict | list) for v in tree):
            return [f"{path} holds a nested structure in a list"]
        return [p for v in tree for p in _plain_problems(v, path)]
    if isinstance(tree, str) and "${" in tree:
        return [f"{path} holds an interpolation {tree!r}"]
    return []


def _mismatches(stored: dict, ours: dict, path: str) -> list[str]:
    """Keys of ``stored`` that ``ours`` lacks, targets that differ, mappings where we have values."""
    out = []
    for key, value in stored.items():
        name = f"{path}.{key}" if path else key
        if key not in ours:
            out.append(f"unknown key {name} (= {value!r})")
        elif key in META_KEYS:
            if value != ours[key]:
                out.append(f"{name} is {value!r} where this checkout has {ours[key]!r}")
        elif isinstance(value, dict):
            if isinstance(ours[key], dict):
                out += _mismatches(value, ours[key], name)
            else:
                out.append(f"{name} is a mapping where this checkout has the value {ours[key]!r}")
        elif isinstance(ours[key], dict):
            out.append(f"{name} is {value!r} where this checkout has a mapping")
    return out


def _agreement(stored: Any, ours: Any) -> int:
    if isinstance(stored, dict) and isinstance(ours, dict):
        return sum(_agreement(v, ours.get(k)) for k, v in stored.items())
    return int(stored == ours)


def _set_values(ours: dict, stored: dict) -> None:
    for key, value in stored.items():
        if key in META_KEYS:
            continue
        if isinstance(value, dict):
            _set_values(ours[key], value)
        else:
            ours[key] = value


def check_targets(tree: Any, path: str = "") -> None:
    """Refuse any ``_target_`` outside the allowlist, before anything is instantiated."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            name = f"{path}.{key}" if path else key
            if key == "_target_" and value not in ALLOWED_TARGETS:
                raise refuse("to build this config", [f"{name} = {value!r} is not one of optbench's own targets"])
            check_targets(value, name)


@functools.lru_cache(maxsize=64)
def _composed(overrides: tuple[str, ...], env: tuple) -> dict:
    return OmegaConf.to_container(config.compose(*overrides), resolve=True)


def _resolved(*overrides: str) -> dict:
    """This checkout's resolved composition for ``overrides`` (a fresh copy; the configs read these env vars)."""
    env = tuple(os.environ.get(k) for k in ("OPTBENCH_DATA_ROOT", "MLFLOW_TRACKING_URI"))
    return copy.deepcopy(_composed(overrides, env))


def rebuild(stored: Any, local: DictConfig | None = None, what: str = "this logged config") -> DictConfig:
    """The config to run for ``stored`` (a logged, resolved config), built from this checkout's groups."""
    if not isinstance(stored, dict):
        raise refuse(what, ["it is not a mapping"])
    problems = _plain_problems(stored)
    root = _resolved()
    problems += [f"unknown key {k}" for k in stored if k not in root]
    choices = []
    for group in (g for g in config.GROUPS if g in root):
        if stored.get(group) is None:
            if group in stored:
                choices.append(f"~{group}")
            continue
        candidates = []
        for name in config.options(group):
            ours = _resolved(f"{group}={name}")[group]
            candidates.append((_mismatches(stored[group], ours, group), -_agreement(stored[group], ours), name))
        found, _, name = min(candidates, key=lambda c: (len(c[0]), c[1]))
        problems += found
        choices.append(f"{group}={name}")
    if problems:
        raise refuse(what, problems)
    result = _resolved(*choices)
    _set_values(result, stored)
    cfg = OmegaConf.create(result)
    _localize(cfg, OmegaConf.to_container(local, resolve=True) if local is not None else _resolved())
    check_targets(OmegaConf.to_container(cfg))
    return cfg


def _localize(cfg: DictConfig, here: dict) -> None:
    """This machine's tracking URI and progress bar; the logged data root where it holds the data here
    (the same files as the original), else this machine's."""
    for key in MACHINE_LOCAL:
        group, name = key.split(".")
        if cfg.get(group) is None or here.get(group) is None:
            continue
        if key == "data.root":
            folder = DATASETS[cfg.data.name].folder.__name__ if cfg.data.name in DATASETS else ""
            if (Path(str(cfg.data.root)).expanduser() / folder).is_dir():
                continue
        cfg[group][name] = here[group][name]


def read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise refuse(what, [f"{path.name} is not plain YAML ({str(err).splitlines()[0]})"]) from None


def logged_config(client: mlflow.MlflowClient, run_id: str, dest: Path) -> Any:
    """A run's ``config.yaml`` artifact as plain data."""
    try:
        path = Path(client.download_artifacts(run_id, "config.yaml", str(dest)))
    except (MlflowException, OSError) as err:
        raise RestoreError(f"Run {run_id} has no config.yaml artifact to rebuild its config from.") from err
    return read_yaml(path, f"run {run_id}'s logged config")


def from_folder(folder: Path, local: DictConfig | None = None) -> DictConfig:
    """The config a Hydra output folder ran, if it is exactly what this checkout composes from its overrides."""
    what = f"the Hydra output folder {folder}"
    overrides = read_yaml(folder / ".hydra" / "overrides.yaml", what)
    stored = read_yaml(folder / ".hydra" / "config.yaml", what)
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise refuse(what, [".hydra/overrides.yaml is not a list of overrides"])
    problems = []
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise refuse(what, [f"an override does not parse ({str(err).splitlines()[0]})"]) from None
    for override, text in zip(parsed, overrides, strict=True):
        key = override.key_or_group
        if "${" in text or override.is_sweep_override() or override.is_add() or override.is_force_add():
            problems.append(f"override {text!r} is not a plain value")
        elif key.startswith("hydra") or key.lstrip("~").split(".")[0] not in (*_resolved(), *config.GROUPS):
            problems.append(f"override {text!r} sets a key this checkout does not define")
    if problems:
        raise refuse(what, problems)
    ours = OmegaConf.to_container(config.compose(*overrides), resolve=False)
    differences = _differences(stored, ours, "")
    if differences:
        raise refuse(what, differences)
    return rebuild(_resolved(*overrides), local, what)


def _differences(stored: Any, ours: Any, path: str) -> list[str]:
    if isinstance(stored, dict) and isinstance(ours, dict):
        out = [f"unknown key {path}{k}" for k in stored if k not in ours]
        return out + [d for k in stored if k in ours for d in _differences(stored[k], ours[k], f"{path}{k}.")]
    if stored != ours:
        return [f"{path.rstrip('.')} is {stored!r} where this checkout composes {ours!r}"]
    return []


def checkpoint(client: mlflow.MlflowClient, run_id: str, dest: Path) -> Path:
    """A run's last checkpoint, downloaded and verified to hold tensors and plain data only."""
    try:
        path = Path(client.download_artifacts(run_id, CHECKPOINT, str(dest)))
    except (MlflowException, OSError) as err:
        raise RestoreError(f"Run {run_id} has no {CHECKPOINT} artifact: it cannot be resumed.") from err
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RestoreError(
            f"Refusing the checkpoint of run {run_id} ({CHECKPOINT}): it holds more than tensors and plain data "
            f"(torch.load(weights_only=True) says: {first}). Loading it could run code from the store."
        ) from None
    return path
