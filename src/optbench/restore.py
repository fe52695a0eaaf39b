"""A logged run's config, rebuilt from this checkout's own config groups: stored text is data, never code.

Anyone who can log a run to a shared server can write its ``config.yaml``, so rerun and resume never
hand that file to Hydra's ``instantiate`` or to OmegaConf's resolvers. Instead:

1. it is read with ``yaml.safe_load`` (plain data, at most 1 MB, no anchors or aliases) and refused if
   any string holds ``${...}`` (an interpolation or resolver) or a list holds a mapping;
2. each config group is matched to this checkout's option whose keys and ``_target_`` values it has:
   an unknown key or a changed target anywhere, nested too, is refused with the difference shown;
3. that option is composed here and the stored *values* are set on it, each of the type this checkout
   has for that key (ranges are checked where a command-line value is: ``config.validate`` and the
   constructors); places and identities on this machine (``MACHINE_LOCAL``) come from here;
4. every ``_target_`` of the result is checked before anything is built (``trust``): optbench's own,
   torchvision's dataset classes, and modules this machine trusts. A node whose ``_target_`` this
   checkout leaves open (``???``: ``model=custom``'s net, ``data=custom``) takes the stored target and
   its arguments; a torchvision dataset class may stand for another.

A Hydra output folder must hold exactly what this checkout composes from its ``.hydra/overrides.yaml``.
Stored files are read by ``stored``: YAML capped and alias-free, checkpoints tensors and plain data only.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from . import config, trust
from .compare.query import BEFORE_ADDED, added_to
from .stored import read_yaml, refuse

OPEN = "???"  # a value this checkout leaves to the command line (OmegaConf's MISSING)
META_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
# Places and identities on this machine: always this checkout's and the command line's, never a stored
# config's (a forged checkpoint filename wrote outside its folder; a forged experiment name sent a rerun's
# record elsewhere).
MACHINE_LOCAL = (
    "data.root",
    "data.download",
    "logger.tracking_uri",
    "logger.experiment_name",
    "callbacks.checkpoint.dirpath",
    "callbacks.checkpoint.filename",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trusted_modules",
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


def _open_target(stored: Any, ours: Any) -> bool:
    """A stored ``_target_`` that may replace ours: ours is left open (``???``) for one outside optbench,
    or both are torchvision dataset classes. Which targets may be built is ``trust``'s to say."""
    if ours == OPEN:
        return isinstance(stored, str) and stored not in trust.OWN_TARGETS
    return trust.is_torchvision_dataset(stored) and trust.is_torchvision_dataset(ours)


def _mismatches(stored: dict, ours: dict, path: str) -> list[str]:
    """Keys of ``stored`` that ``ours`` lacks, targets that differ, mappings where we have values; a node
    whose target is left open takes any further keys (its constructor's arguments)."""
    out = []
    free = ours.get("_target_") == OPEN
    for key, value in stored.items():
        name = f"{path}.{key}" if path else key
        if key not in ours:
            if not free or key in META_KEYS:
                out.append(f"unknown key {name} (= {value!r})")
        elif key in META_KEYS:
            if value != ours[key] and not (key == "_target_" and _open_target(value, ours[key])):
                out.append(f"{name} is {value!r} where this checkout has {ours[key]!r}")
        elif isinstance(value, dict):
            if isinstance(ours[key], dict):
                out += _mismatches(value, ours[key], name)
            else:
                out.append(f"{name} is a mapping where this checkout has the value {ours[key]!r}")
        elif isinstance(ours[key], dict):
            out.append(f"{name} is {value!r} where this checkout has a mapping")
        elif not _same_kind(value, ours[key]):
            out.append(f"{name} is {_shown(value)} where this checkout has a {type(ours[key]).__name__}")
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_kind(stored: Any, ours: Any) -> bool:
    """A stored value of the type this checkout's value has (ints pass for floats; a None default, which
    has no type here, takes plain scalars; lists element by element)."""
    if ours is None:  # a preset fills it in (optimizer.betas): any plain scalar, or a flat list of them
        scalar = (bool, int, float, str)
        return (
            stored is None
            or isinstance(stored, scalar)
            or (isinstance(stored, list) and all(isinstance(v, scalar) for v in stored))
        )
    if isinstance(ours, bool) or isinstance(stored, bool):
        return isinstance(stored, bool) and isinstance(ours, bool)
    if isinstance(ours, float):
        return isinstance(stored, int | float) and math.isfinite(stored)
    if isinstance(ours, list):
        return isinstance(stored, list) and all(_same_kind(v, ours[0] if ours else None) for v in stored)
    return isinstance(stored, type(ours))


def _agreement(stored: Any, ours: Any) -> int:
    if isinstance(stored, dict) and isinstance(ours, dict):
        return sum(_agreement(v, ours.get(k)) for k, v in stored.items())
    return int(stored == ours)


def _set_values(ours: dict, stored: dict) -> None:
    for key, value in stored.items():
        if key in META_KEYS:
            if key == "_target_" and _open_target(value, ours[key]):
                ours[key] = value
            continue
        if key not in ours:  # an argument of an open node's target
            ours[key] = copy.deepcopy(value)
        elif isinstance(value, dict):
            _set_values(ours[key], value)
        else:
            ours[key] = value


def _set_added(result: dict, stored: dict) -> None:
    """A setting added after ``stored`` was logged (its section there, the key not) takes the value the
    run ran with (``BEFORE_ADDED``), not this checkout's default."""
    for key, value in BEFORE_ADDED.items():
        section, _, name = key.rpartition(".")
        ours, theirs = _lookup(result, section), _lookup(stored, section)
        if (
            isinstance(ours, dict)
            and isinstance(theirs, dict)
            and name in ours  # a setting of this checkout's section (sgd has no fused)
            and name not in theirs
            and added_to(theirs.get("_target_"))
        ):
            ours[name] = value


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
    _set_added(result, stored)
    cfg = OmegaConf.create(result)
    here = OmegaConf.to_container(local, resolve=True) if local is not None else _resolved()
    _localize(cfg, here)
    trust.check_targets(OmegaConf.to_container(cfg), trust.trusted_modules(here), what)
    return cfg


def _localize(cfg: DictConfig, here: dict) -> None:
    """Places and identities of this machine (``MACHINE_LOCAL``) from this checkout and command line;
    one this checkout does not set is removed, and none is added to a config that lacks it (a user's
    datamodule without ``root``)."""
    for key in MACHINE_LOCAL:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or name not in node or ("_target_" in node and node["_target_"] not in trust.OWN_TARGETS):
            continue  # absent, or an argument of a user's own module: theirs to set
        value = _lookup(here, key)
        if value is _ABSENT:
            node.pop(name, None)
        else:
            node[name] = value


_ABSENT = object()


def _lookup(tree: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


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
        if "${" in text or override.is_sweep_override():
            problems.append(f"override {text!r} is not a plain value")
        elif key.startswith("hydra") or key.lstrip("~").split(".")[0] not in (*_resolved(), *config.GROUPS):
            problems.append(f"override {text!r} sets a key this checkout does not define")
    if problems:
        raise refuse(what, problems)
    ours = OmegaConf.to_container(config.compose(*overrides), resolve=False)
    differences = _differences(stored, ours, "")
    if differences:
        raise refuse(what, differences)
    composed = _resolved(*overrides)
    _set_added(composed, stored)
    return rebuild(composed, local, what)


def _differences(stored: Any, ours: Any, path: str) -> list[str]:
    if isinstance(stored, dict) and isinstance(ours, dict):
        out = [f"unknown key {path}{k}" for k in stored if k not in ours]
        return out + [d for k in stored if k in ours for d in _differences(stored[k], ours[k], f"{path}{k}.")]
    if stored != ours:
        return [f"{path.rstrip('.')} is {stored!r} where this checkout composes {ours!r}"]
    return []
