"""Rerun a tracked run and say honestly whether it gave the same numbers.

Before training, the run's config is rebuilt from this checkout (``restore``) with every setting that
changes numbers (thread count, deterministic kernels, effective hyperparameters), and the differences of
environment that can still change them (torch version, device, CPU, threads) are listed. After training,
the epochs the original completed are compared value by value: "identical", "within float tolerance" or
"differs"; a run with nothing to compare is never called a match.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from . import config, data_identity, provenance, restore, store, stored
from .jobs import RECORD

COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc")
FAILURE_METRICS = ("diverged_epoch", "diverged_step")
RTOL = 1e-4  # another device, CPU or thread count reorders float sums: "within float tolerance"


class RerunError(ValueError):
    pass


@dataclass
class Verdict:
    rows: list[dict]
    text: str  # identical | within float tolerance | differs | nothing to compare
    match: bool


def load(source: str, client: mlflow.MlflowClient, local: DictConfig) -> tuple[DictConfig, mlflow.entities.Run | None]:
    """The config to rerun (rebuilt here) and, when known, the original run."""
    folder = Path(source)
    if folder.is_dir():
        if not (folder / ".hydra" / "config.yaml").is_file():
            raise RerunError(f"{folder} is not a Hydra output folder: {folder / '.hydra' / 'config.yaml'} is missing.")
        cfg = restore.from_folder(folder, local)
        record = folder / RECORD
        run_id = json.loads(record.read_text()).get("run_id") if record.is_file() else None
        if run_id is not None and not re.fullmatch(stored.RUN_ID, str(run_id)):
            raise RerunError(f"{record} names no valid run id ({run_id!r}).")
        return cfg, store.get_run(client, run_id) if run_id else None
    original = store.get_run(client, source)
    with tempfile.TemporaryDirectory(prefix="optbench-rerun-") as tmp:
        logged = stored.logged_config(client, source, Path(tmp))
    return restore.rebuild(logged, local, f"run {source}'s logged config"), original


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` on existing keys only; a group switch (``optimizer=sgd``) is a new run instead."""
    for item in overrides:
        try:
            override = OverridesParser.create().parse_overrides([item])[0]
        except HydraException as err:
            raise RerunError(f"Override {item!r} does not parse: {str(err).splitlines()[0]}") from None
        key, value = override.key_or_group, override.value()
        if key in config.GROUPS or OmegaConf.is_dict(OmegaConf.select(cfg, key)):
            raise RerunError(
                f"{item!r} switches a whole config group; a rerun changes values only "
                f"(e.g. {key}.lr=0.01). For another {key}, start a new run with optbench-train."
            )
        if override.is_sweep_override() or "${" in item:
            raise RerunError(f"{item!r} is not a single plain value.")
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise RerunError(f"{item!r}: this run's config has no key {key}.")
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def environment_differences(original: mlflow.entities.Run, cfg: DictConfig) -> list[str]:
    """What differs from the original's machine that can change numbers (code, data, torch, device, CPU, threads)."""
    was = original.data.tags
    now = {**provenance.versions(), **provenance.git_state(), **provenance.device(config.device_of(cfg))}
    now["torch_threads"] = str(cfg.threads)
    out = []
    for tag, what in (
        ("git_commit", "code commit"),
        ("version.torch", "torch version"),
        ("device", "device"),
        ("cpu_model", "CPU"),
        ("torch_threads", "threads"),
    ):
        if was.get(tag) and now.get(tag) and was[tag] != now[tag]:
            out.append(f"{what}: original {was[tag]}, now {now[tag]}")
    if now.get("git_dirty") == "true":
        out.append("the working tree has uncommitted changes")
    return out


def dataset_difference(original: mlflow.entities.Run, datamodule, name: str | None = None) -> str | None:
    digest = original.data.tags.get("dataset_digest")
    now = data_identity.of(datamodule, name)
    if digest and now is not None and now.digest != digest:
        return f"dataset digest differs: original {digest}, now {now.digest} (the data of {now.source} changed)"
    return None


def compare(client: mlflow.MlflowClient, original: mlflow.entities.Run, new_id: str) -> Verdict:
    """The original's completed epochs (and, for a diverged run, where it diverged) against the rerun's."""
    names = COMPARED + tuple(m for m in FAILURE_METRICS if m in original.data.metrics)
    rows = []
    for metric in names:
        old = {m.step: m.value for m in client.get_metric_history(original.info.run_id, metric)}
        new = {m.step: m.value for m in client.get_metric_history(new_id, metric)}
        for epoch in sorted(old):
            a, b = old[epoch], new.get(epoch)
            same = (
                "identical" if a == b else "close" if b is not None and math.isclose(a, b, rel_tol=RTOL) else "differs"
            )
            rows.append({"metric": metric, "epoch": epoch, "original": a, "rerun": b, "result": same})
    results = {r["result"] for r in rows}
    if not rows:
        return Verdict(rows, "nothing to compare", False)
    if results == {"identical"}:
        return Verdict(rows, "identical", True)
    if "differs" not in results:
        return Verdict(rows, f"within float tolerance (rtol {RTOL:g})", True)
    return Verdict(rows, "differs", False)


def _tracking_uri(source: str, given: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else (for a Hydra folder) the store its run was logged to."""
    if given:
        return given
    folder = Path(source) / ".hydra" / "config.yaml"
    logged = None
    if "MLFLOW_TRACKING_URI" not in os.environ and folder.is_file():
        logged = (stored.read_yaml(folder, str(folder)) or {}).get("logger", {}).get("tracking_uri")
    return logged if isinstance(logged, str) and "${" not in logged else store.default_tracking_uri()


def rerun(source: str, overrides: list[str], tracking_uri: str | None = None) -> int:
    """Rerun ``source`` (a run id or a Hydra output folder) here; print and log the verdict; return 0 or 3."""
    from . import pipeline  # the training stack, only once the arguments are known to be good

    uri = _tracking_uri(source, tracking_uri)
    client = store.open_existing(uri)
    trusting = [o for o in overrides if o.partition("=")[0] == "trusted_modules"]  # this machine's, not the run's
    overrides = [o for o in overrides if o not in trusting]
    local = config.compose(f"logger.tracking_uri={uri}", *trusting)
    cfg, original = load(source, client, local)
    cfg = apply_overrides(cfg, overrides)
    warnings = environment_differences(original, cfg) if original else []
    if original is not None and cfg.get("data") is not None:
        datamodule = config.instantiate_group(cfg, "data")
        datamodule.setup()
        warnings += [w for w in [dataset_difference(original, datamodule, cfg.data.get("name"))] if w]
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    if original is not None and not warnings:
        print("optbench-rerun: same code, torch, device, CPU, threads and data as the original", flush=True)
    tags = {"rerun_of": original.info.run_id if original else str(Path(source).resolve())}
    tags.update(rerun_overrides=" ".join(overrides), **({"rerun_warnings": "; ".join(warnings)} if warnings else {}))
    if original is not None and "pack" in original.data.tags:
        print(
            f"optbench-rerun: {original.info.run_id} was trained packed (pack {original.data.tags['pack']} of "
            f"{original.data.tags.get('pack_size', '?')}); rerunning it alone, unpacked: other kernels, so expect "
            "float-level differences",
            flush=True,
        )
    name = f"{original.info.run_name if original else cfg.run_name}-rerun"
    result = pipeline.run(cfg, run_name=name, tags=tags)
    if original is None or result.run_id is None:
        print(f"optbench-rerun: no original run to compare with; the new run is {result.run_id}")
        return 0
    verdict = compare(client, original, result.run_id)
    for r in verdict.rows:
        print(
            f"  {r['metric']:<14} epoch {r['epoch']:>3}: original {r['original']!r:<22} rerun {r['rerun']!r:<22} {r['result']}"
        )
    expected = f" (expected: overrides {' '.join(overrides)})" if overrides and not verdict.match else ""
    print(
        f"optbench-rerun: {verdict.text}{expected}: {len(verdict.rows)} per-epoch values compared; "
        f"original {original.info.run_id} ({original.info.status}), rerun {result.run_id} ({result.status})"
    )
    client.set_tag(result.run_id, "rerun_match", str(verdict.match).lower())
    client.set_tag(result.run_id, "rerun_verdict", verdict.text)
    client.log_metric(result.run_id, "rerun_mismatches", sum(r["result"] != "identical" for r in verdict.rows))
    client.log_text(result.run_id, json.dumps(verdict.rows, indent=1), "rerun_comparison.json")
    return 0 if verdict.match else 3
