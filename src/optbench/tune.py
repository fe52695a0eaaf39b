"""Tuned comparison: the same Optuna budget for every optimizer, then seeds of the best setting.

    optbench-tune [--optimizers sgd,adam,...] [--trials 10] [--seeds 3] [--epochs 10] [--subset N]

For each optimizer: an Optuna sweep (``experiment=tuned``) over the search space kept in its
``conf/optimizer`` file, scored on a held-out slice of the training set; the best parameters are
logged on a ``tuning-<optimizer>`` summary run; then the best setting (label ``<optimizer>-tuned``)
and the defaults (label ``<optimizer>``) are trained with the same seeds and validated on the test
set. The closing table shows both side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import yaml
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric, Param, RunTag

from . import compare
from .tracking import default_tracking_uri, get_or_create_experiment, prepare_store
from .train import CONFIG_DIR

DEFAULT_OPTIMIZERS = "sgd,sgd_momentum,adagrad,rmsprop,adadelta,adam"


def search_space(optimizer: str) -> dict[str, str]:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"optimizer={optimizer}"])
    return dict(cfg.optimizer.get("search_space") or {})


def train_cli(*overrides: str) -> None:
    cmd = [sys.executable, "-m", "optbench.train", "-m", *overrides]
    print("$ optbench-train " + " ".join(cmd[4:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"optbench-tune: a training sweep failed: {' '.join(cmd[3:])}")


def log_best(uri: str, experiment: str, sweep: str, optimizer: str, results: dict, trials: int) -> str:
    client = mlflow.MlflowClient(uri)
    run = client.create_run(
        get_or_create_experiment(client, experiment),
        run_name=f"tuning-{optimizer}",
        tags={compare.SUMMARY_TAG: "summary", "sweep_id": sweep, "optimizer": optimizer, "tuning_trials": str(trials)},
    )
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("best_val_acc", results["best_value"], int(time.time() * 1000), 0)],
        params=[Param(k, str(v)) for k, v in results["best_params"].items()],
        tags=[RunTag("best_params", str(results["best_params"]))],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optbench-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS)
    parser.add_argument("--trials", type=int, default=10, help="Optuna trials per optimizer (the same for all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the best and the default setting")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=None, help="first N samples of every split (quick look)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="optbench")
    parser.add_argument("--sweep-id", default=None, help="tag of this comparison (default: tuned-<time>)")
    parser.add_argument("--out", type=Path, default=Path("multirun/tune"), help="folder for the Optuna sweeps")
    args = parser.parse_args(argv)
    uri = prepare_store(args.tracking_uri or default_tracking_uri())
    sweep = args.sweep_id or time.strftime("tuned-%Y%m%d-%H%M%S")
    seeds = ",".join(str(s) for s in range(1, args.seeds + 1))
    common = [
        f"trainer.max_epochs={args.epochs}",
        f"logger.tracking_uri={uri}",
        f"logger.experiment_name={args.experiment}",
        "trainer.enable_progress_bar=false",
        *([f"data.subset={args.subset}"] if args.subset else []),
    ]
    for optimizer in args.optimizers.split(","):
        space = search_space(optimizer)
        if not space:
            raise SystemExit(f"optbench-tune: conf/optimizer/{optimizer}.yaml has no search_space")
        folder = args.out / sweep / optimizer
        train_cli(
            "experiment=tuned",
            f"optimizer={optimizer}",
            f"hydra.sweeper.n_trials={args.trials}",
            f"hydra.sweep.dir={folder}",
            f"sweep_id={sweep}-search",
            *(f"{k}={v}" for k, v in space.items()),
            *common,
        )
        results = yaml.safe_load((folder / "optimization_results.yaml").read_text())
        log_best(uri, args.experiment, sweep, optimizer, results, args.trials)
        print(
            f"optbench-tune: {optimizer} best {results['best_params']} (val_acc {results['best_value']:.4f})",
            flush=True,
        )
        best = [f"{k}={v}" for k, v in results["best_params"].items()]
        train_cli(
            f"optimizer={optimizer}", *best, f"label={optimizer}-tuned", f"seed={seeds}", f"sweep_id={sweep}", *common
        )
        train_cli(f"optimizer={optimizer}", f"seed={seeds}", f"sweep_id={sweep}", *common)
    epochs = ",".join(str(e) for e in sorted({1, (args.epochs + 1) // 2, args.epochs}))
    return compare.main(["--tracking-uri", uri, "--experiment", args.experiment, "--sweep", sweep, "--epochs", epochs])


if __name__ == "__main__":
    sys.exit(main())
