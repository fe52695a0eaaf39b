"""Rerun a tracked run from its id (or a Hydra output folder) and check it gives the same numbers.

    optbench-rerun RUN_ID [key=value ...]        # python -m optbench.rerun works too
    optbench-rerun outputs/2026-11-24/10-00-00 [key=value ...]

The config is the run's logged ``config.yaml`` (or the folder's ``.hydra/config.yaml``), with
``key=value`` overrides applied. Before training it warns when the code commit or the dataset's
digest differ from the original's; after, it compares every per-epoch metric and logs the verdict
on the new run (tagged ``rerun_of``). Exit status: 0 when all match, 3 when some differ.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import provenance
from .tracking import default_tracking_uri, get_run, logged_config
from .train import RUN_RECORD, quiet_libraries, train

COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc")
# On CPU the same seed gives bit-identical numbers; GPU kernels may reorder float sums.
GPU_RTOL = 1e-4


class RerunError(RuntimeError):
    pass


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` on the resolved config. Group switches (``optimizer=sgd``) need a new run instead."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise RerunError(f"Override {item!r} is not of the form key=value.")
        if OmegaConf.is_dict(OmegaConf.select(cfg, key.lstrip("+"))):
            raise RerunError(
                f"{item!r} switches a whole config group; a rerun changes values only "
                f"(e.g. {key}.lr=0.01). For another {key}, start a new run with optbench-train."
            )
        cfg.merge_with(OmegaConf.from_dotlist([item.lstrip("+")]))
    return cfg


def load_source(source: str, client: mlflow.MlflowClient) -> tuple[DictConfig, mlflow.entities.Run | None]:
    """The config to rerun and, when known, the original run."""
    folder = Path(source)
    if folder.is_dir():
        config_file = folder / ".hydra" / "config.yaml"
        if not config_file.exists():
            raise RerunError(f"{folder} is not a Hydra output folder: {config_file} is missing.")
        record = folder / RUN_RECORD
        original = get_run(client, json.loads(record.read_text())["run_id"]) if record.exists() else None
        return OmegaConf.load(config_file), original
    return logged_config(client, source), get_run(client, source)


def check_provenance(cfg: DictConfig, original: mlflow.entities.Run) -> list[str]:
    """Warn about what differs from the original before spending time on training."""
    tags = original.data.tags
    warnings = []
    now = provenance.git_state()
    if tags.get("git_commit") and now.get("git_commit") != tags["git_commit"]:
        warnings.append(
            f"code commit differs: original {tags['git_commit'][:10]}, now {now.get('git_commit', '?')[:10]}"
        )
    if now.get("git_dirty") == "true":
        warnings.append("the working tree has uncommitted changes")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    if tags.get("dataset_digest") and datamodule.digest != tags["dataset_digest"]:
        warnings.append(
            f"dataset digest differs: original {tags['dataset_digest']}, now {datamodule.digest} "
            f"(files under {datamodule.raw} changed)"
        )
    for w in warnings:
        warn(w)
    return warnings


def compare_histories(client: mlflow.MlflowClient, original_id: str, new_id: str, rtol: float) -> list[dict]:
    rows = []
    for metric in COMPARED:
        old = {m.step: m.value for m in client.get_metric_history(original_id, metric)}
        new = {m.step: m.value for m in client.get_metric_history(new_id, metric)}
        for epoch in sorted(old.keys() | new.keys()):
            a, b = old.get(epoch), new.get(epoch)
            same = a is not None and b is not None and (a == b if rtol == 0 else math.isclose(a, b, rel_tol=rtol))
            rows.append({"metric": metric, "epoch": epoch, "original": a, "rerun": b, "match": same})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optbench-rerun", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="an MLflow run id, or a Hydra output folder")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the logged config")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db"
    )
    args = parser.parse_args(argv)
    quiet_libraries()
    client = mlflow.MlflowClient(args.tracking_uri or default_tracking_uri())
    try:
        cfg, original = load_source(args.source, client)
        cfg = apply_overrides(cfg, args.overrides)
        if args.tracking_uri and "logger" in cfg:
            cfg.logger.tracking_uri = args.tracking_uri
        warnings = check_provenance(cfg, original) if original else []
    except (RerunError, LookupError, ValueError) as err:
        print(f"optbench-rerun: {err}", file=sys.stderr)
        return 2
    original_id = original.info.run_id if original else None
    tags = {"rerun_of": original_id or str(Path(args.source).resolve()), "rerun_overrides": " ".join(args.overrides)}
    if warnings:
        tags["rerun_warnings"] = "; ".join(warnings)
    name = f"{original.info.run_name if original else cfg.run_name}-rerun"
    result = train(cfg, extra_tags=tags, run_name=name)
    if original is None or result.run_id is None:
        print("optbench-rerun: no original run to compare with; the new run is", result.run_id)
        return 0
    new = client.get_run(result.run_id)
    rtol = GPU_RTOL if new.data.tags.get("device", "").startswith("cuda") else 0.0
    rows = compare_histories(client, original_id, result.run_id, rtol)
    mismatched = [r for r in rows if not r["match"]]
    rule = "exactly (CPU)" if rtol == 0 else f"within rtol={rtol} (GPU)"
    for r in rows:
        mark = "same" if r["match"] else "DIFFERS"
        print(
            f"  {r['metric']:<11} epoch {r['epoch']:>3}: original {r['original']!r:<22} rerun {r['rerun']!r:<22} {mark}"
        )
    verdict = "all per-epoch metrics match" if not mismatched else f"{len(mismatched)} of {len(rows)} values differ"
    if mismatched and args.overrides:
        verdict += f" (expected: overrides {' '.join(args.overrides)})"
    print(f"optbench-rerun: {verdict} {rule}; original {original_id}, rerun {result.run_id}")
    client.set_tag(result.run_id, "rerun_match", str(not mismatched).lower())
    client.log_metric(result.run_id, "rerun_mismatches", len(mismatched))
    client.log_text(result.run_id, json.dumps(rows, indent=1), "rerun_comparison.json")
    return 0 if not mismatched else 3


if __name__ == "__main__":
    sys.exit(main())
