"""The store as a cache: a sweep job whose configuration and seed a FINISHED run of the same code already
holds is not trained again; the job reports that run and the sweep goes on.

"The same configuration" is the identity ``optbench-compare`` groups seeds by (``compare.query``) plus the
label and dataset; "the same code" is the commit of a clean checkout, or the package version of an installed
wheel (a dirty tree never matches). Only this user's runs are reused: a run another user logged cannot be
told from a forged one (the comparison treats such pairs as conflicts, too). Killed, failed and rerun runs
are never reused. The reused run joins the sweep: its ``sweeps`` tag lists every sweep id it belongs to, so
``optbench-compare --sweep`` finds it as it finds the sweep's own runs.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import torch
from mlflow.entities import Run, ViewType
from mlflow.tracking.context.default_context import DefaultRunContext
from mlflow.utils.mlflow_tags import MLFLOW_USER
from omegaconf import DictConfig

from . import config, provenance
from .compare.query import SUMMARY_TAG, SWEEPS_TAG, CompareError, identity_of, quoted


def code_tags() -> dict[str, str] | None:
    """The tags that say which code trained a run; None when this code has no reproducible version."""
    git = provenance.git_state()
    if git:
        return None if git["git_dirty"] != "false" else git
    version = provenance.versions().get("version.optbench")
    return {"version.optbench": version} if version else None


def identity_params(cfg: DictConfig) -> dict[str, str]:
    """The params this job's run would log (the effective config, flattened), without building its data or
    model: the optimizer's effective hyperparameters come from constructing it on one scalar of the run's device."""
    from .pipeline import flatten  # pipeline imports this module

    factory = config.instantiate_group(cfg, "optimizer")
    optimizer = factory([torch.nn.Parameter(torch.zeros(1, device=config.device_of(cfg)))])  # fused: by device
    record = config.effective(cfg, optimizer, int(cfg.get("threads") or 0))
    return {k: str(v) for k, v in flatten(record).items()}


def _user() -> str | None:
    return DefaultRunContext().tags().get(MLFLOW_USER)


def find(cfg: DictConfig, client: mlflow.MlflowClient | None = None) -> Run | None:
    """The latest FINISHED run of this user and code with this job's configuration and seed, or None."""
    code = code_tags()
    if code is None or not cfg.get("logger"):
        return None
    client = client or mlflow.MlflowClient(cfg.logger.tracking_uri)
    exp = client.get_experiment_by_name(cfg.logger.experiment_name)
    if exp is None:
        return None
    want = {"label": str(cfg.label), "data": str(cfg.data.name), "seed": str(cfg.seed), **code}
    try:
        clauses = ["attributes.status = 'FINISHED'", *(f"tags.`{k}` = {quoted(v)}" for k, v in want.items())]
    except CompareError:  # a label with both kinds of quote cannot be searched for: train it
        return None
    runs = client.search_runs(
        [exp.experiment_id], " and ".join(clauses), ViewType.ACTIVE_ONLY, max_results=100,
        order_by=["attributes.end_time DESC"],
    )  # fmt: skip
    mine, same = _user(), identity_of(identity_params(cfg))
    for run in runs:
        tags = run.data.tags
        if SUMMARY_TAG in tags or "rerun_of" in tags or tags.get(MLFLOW_USER) != mine:
            continue
        if "git_commit" not in code and "git_commit" in tags:  # a checkout's run, at some commit: not this wheel
            continue
        if identity_of(run.data.params) == same and run.data.params.get("seed") == str(cfg.seed):
            return run
    return None


def join_sweep(client: mlflow.MlflowClient, run: Run, sweep_id: str | None) -> None:
    """Tag ``run`` as a member of ``sweep_id`` too (no-op when it already is)."""
    if not sweep_id or run.data.tags.get("sweep_id") == sweep_id:
        return
    members = [s for s in run.data.tags.get(SWEEPS_TAG, "").split(",") if s]
    if sweep_id not in members:
        client.set_tag(run.info.run_id, SWEEPS_TAG, "," + ",".join([*members, sweep_id]) + ",")


def reuse(cfg: DictConfig, sweep_id: str | None) -> dict[str, Any] | None:
    """This job's result from the store (run id and final metrics), the run joined to the sweep; None
    when the store holds no such run and the job must train."""
    if not cfg.get("logger"):
        return None
    client = mlflow.MlflowClient(cfg.logger.tracking_uri)
    run = find(cfg, client)
    if run is None:
        return None
    join_sweep(client, run, sweep_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k in ("val_acc", "val_loss", "total_time_s")}
    shown = {k: metrics.get(k, math.nan) for k in ("val_acc", "val_loss")}
    print(
        f"[optbench] {cfg.run_name}: FINISHED (already in the store) val_acc={shown['val_acc']:.4f} "
        f"val_loss={shown['val_loss']:.4f} run_id={run.info.run_id}",
        flush=True,
    )
    return {"run_id": run.info.run_id, "metrics": metrics}
