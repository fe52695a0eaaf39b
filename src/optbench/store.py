"""The MLflow tracking store: where it is, creating it once, and opening it without creating it.

A new SQLite store is created by the first process that uses it: MLflow runs its alembic
migrations then, and two processes doing so at once collide ("Online migration expected to match
one row"). ``prepare`` serialises that first use with a file lock beside the database, so any number
of optbench processes can start together on a new store. Readers (compare, rerun) use ``open_existing``,
which never creates a store as a side effect.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


class StoreError(LookupError):
    """No such store, experiment or run; the message says what to check."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``mlruns/``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")).expanduser() if uri.startswith("sqlite:///") else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (MLflow's default is ./mlruns of the cwd)."""
    path = sqlite_path(uri)
    return str(path.resolve().parent / "artifacts" / experiment) if path else None


def get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=artifact_location(client.tracking_uri, name),
            tags={"mlflow.experimentKind": "custom_model_development"},  # the UI opens on the runs table
        )
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def prepare(uri: str, experiment: str) -> str:
    """Create the store (once, under a lock for SQLite) and the experiment; return the experiment id."""
    path = sqlite_path(uri)
    if path is None:
        return get_or_create_experiment(mlflow.MlflowClient(uri), experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=300):
        return get_or_create_experiment(mlflow.MlflowClient(uri), experiment)


def open_existing(uri: str) -> mlflow.MlflowClient:
    """A client of a store that must already exist (a missing SQLite file is an error, not a new store)."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise StoreError(
            f"No tracking store at {path} (from {uri}). Train a run first, or point --tracking-uri / "
            "MLFLOW_TRACKING_URI at the store that holds your runs."
        )
    return mlflow.MlflowClient(uri)


def get_run(client: mlflow.MlflowClient, run_id: str) -> mlflow.entities.Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise StoreError(
            f"No run with id {run_id!r} in the tracking store {client.tracking_uri} "
            "(check the id in the MLflow UI, or set the tracking URI / MLFLOW_TRACKING_URI)."
        ) from err


def ui_hint(uri: str, experiment_id: str, sweep: str | None = None) -> str:
    """How to see these runs in the MLflow UI, with the URL of the experiment's runs table (MLflow 3 opens
    an experiment on its GenAI overview otherwise), filtered to the sweep when one is given."""
    query = "?searchFilter=" + quote(f"tags.sweep_id = '{sweep}'") if sweep else ""
    if uri.startswith(("http://", "https://")):
        return f"MLflow UI: {uri.rstrip('/')}/#/experiments/{experiment_id}/runs{query}"
    return (
        f"MLflow UI: mlflow ui --backend-store-uri {uri}, then open\n  "
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs{query}"
    )
