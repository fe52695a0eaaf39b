"""Which targets a stored run may have built: optbench's own, torchvision's datasets, and what you trust.

Building a target runs its module's code, and a stored config is data that anyone who can log a run to
a shared store could have written. So rerun and resume build a target outside optbench only when its
module is trusted on *this* machine: listed in ``OPTBENCH_TRUSTED_MODULES`` (comma-separated) or in
this checkout's ``trusted_modules`` (``conf/config.yaml`` or the command line), never because a stored
run names it. Trusting ``mypkg`` trusts ``mypkg.models.MyNet`` too.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torchvision.datasets
from torchvision.datasets import VisionDataset

from .stored import RestoreError

TRUST_ENV = "OPTBENCH_TRUSTED_MODULES"
OWN_TARGETS = frozenset(
    {
        "optbench.optim.create",
        "optbench.schedules.cosine",
        "optbench.schedules.warmup_cosine",
        "optbench.schedules.linear",
        "optbench.data.MNISTDataModule",
        "optbench.torchvision_data.TorchvisionDataModule",
        "optbench.module.ClassifierModule",
        "optbench.model.SeedCNN",
        "optbench.tracking.RunTracking",
        "pytorch_lightning.Trainer",
        "pytorch_lightning.strategies.DDPStrategy",
        "pytorch_lightning.loggers.MLFlowLogger",
        "pytorch_lightning.callbacks.ModelCheckpoint",
    }
)
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
TORCHVISION_DATASETS = "torchvision.datasets."


def trusted_modules(local: dict | None) -> tuple[str, ...]:
    """The modules this machine trusts: the environment's, then this checkout's ``trusted_modules``."""
    env = [m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()]
    here = (local or {}).get("trusted_modules") or []
    return tuple(dict.fromkeys([*env, *(str(m).strip() for m in here)]))


def is_torchvision_dataset(target: Any) -> bool:
    """``torchvision.datasets.<Class>``, a ``VisionDataset`` class that torchvision itself defines."""
    if not isinstance(target, str) or not target.startswith(TORCHVISION_DATASETS):
        return False
    name = target[len(TORCHVISION_DATASETS) :]
    found = getattr(torchvision.datasets, name, None) if name.isidentifier() else None
    return isinstance(found, type) and issubclass(found, VisionDataset)


def is_trusted(target: str, trusted: tuple[str, ...]) -> bool:
    return any(target.startswith(module + ".") for module in trusted)


def check_targets(tree: Any, trusted: tuple[str, ...], what: str, path: str = "") -> None:
    """Refuse any ``_target_`` in ``tree`` that is neither optbench's, a torchvision dataset class, nor in a
    trusted module, before anything is instantiated."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        name = f"{path}.{key}" if path else key
        if key == "_target_" and not (
            value in OWN_TARGETS
            or is_torchvision_dataset(value)
            or (DOTTED.fullmatch(str(value)) and is_trusted(value, trusted))
        ):
            raise untrusted(what, name, value)
        check_targets(value, trusted, what, name)


def untrusted(what: str, key: str, target: Any) -> RestoreError:
    if not isinstance(target, str) or not DOTTED.fullmatch(target):
        return RestoreError(
            f"Refusing to build {what}: {key} = {target!r} is not a dotted name of a class or function."
        )
    module, package = target.rpartition(".")[0], target.partition(".")[0]
    return RestoreError(
        f"Refusing to build {what}: {key} = {target!r} is not one of optbench's own targets, and its module "
        f"{module} is not trusted on this machine. Building it would run that module's code, and a stored run "
        f"is data that anyone who can write to the store could have written. If {package} is your own code, "
        f"trust it: {TRUST_ENV}={package} in the environment, or trusted_modules: [{package}] in this "
        f"checkout's conf/config.yaml (or trusted_modules=[{package}] on the command line). README, Security."
    )
