"""Files from a store, read as data: a run's ``config.yaml`` (plain YAML, size-capped, no anchors or
aliases) and its checkpoint (``torch.load(weights_only=True)``: tensors and plain data, no pickled code)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from mlflow.exceptions import MlflowException

CHECKPOINT = "last/last.ckpt"  # where MLFlowLogger uploads ModelCheckpoint's last.ckpt
RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_YAML_BYTES = 1_000_000  # a logged config.yaml is a few kB


class RestoreError(ValueError):
    """A stored config or checkpoint that this checkout will not run; the message names what and why."""


def refuse(what: str, problems: list[str]) -> RestoreError:
    shown = "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "")
    return RestoreError(
        f"Refusing {what}: {shown}. A logged config is data, never code: rerun and resume only accept the "
        "keys and targets this checkout's own config groups produce (see README, Security)."
    )


def read_yaml(path: Path, what: str) -> Any:
    """Plain YAML data of at most ``MAX_YAML_BYTES``, without anchors or aliases (an alias bomb of a few
    hundred bytes expands to gigabytes)."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise refuse(
                what, [f"{path.name} is {path.stat().st_size:,} bytes, more than a config's {MAX_YAML_BYTES:,}"]
            )
        text = path.read_text()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise refuse(what, [f"{path.name} uses YAML anchors or aliases, which no logged config has"])
        return yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as err:
        raise refuse(what, [f"{path.name} is not plain YAML ({str(err).splitlines()[0]})"]) from None


def logged_config(client: mlflow.MlflowClient, run_id: str, dest: Path) -> Any:
    """A run's ``config.yaml`` artifact as plain data."""
    try:
        path = Path(client.download_artifacts(run_id, "config.yaml", str(dest)))
    except (MlflowException, OSError) as err:
        raise RestoreError(f"Run {run_id} has no config.yaml artifact to rebuild its config from.") from err
    return read_yaml(path, f"run {run_id}'s logged config")


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
