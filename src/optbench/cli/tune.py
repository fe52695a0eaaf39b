"""``optbench-tune``: the same Optuna budget for every optimizer, then seeds of the best and the default.

    optbench-tune [--optimizers sgd,adam,...] [--trials 10] [--seeds 3] [--epochs 10] [--subset N] [OVERRIDES]
    optbench-tune --trials 5 model=custom model.net._target_=mypkg.MyNet    # overrides of every run: your net
    optbench-tune --workers 2 ...                               # 2 local processes share each study
    optbench-tune --storage postgresql://... --sweep-id S --workers 4 --only-workers 2,3 --no-finish   # on another machine

Exit status: 0 when the comparison was printed, 2 on a bad argument or config.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from hydra.errors import HydraException

from .. import config, runtime, store, tune
from ..compare import CompareError, compare, figures, render, report, summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="optbench-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(tune.DEFAULT_OPTIMIZERS))
    parser.add_argument("--trials", type=int, default=10, help="Optuna trials per optimizer (the same for all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the best and the default setting")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=None, help="first N samples of every split (quick look)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="optbench")
    parser.add_argument(
        "--sweep-id", default=None, help="tag of this comparison (default: tuned-<time>); workers share it"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage the workers share: an RDB URL or journal:PATH (default with --workers > 1: SQLite under --out)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing each optimizer's study, on all machines together"
    )
    parser.add_argument(
        "--only-workers", default=None, help="run just these worker shares here, e.g. 2,3 (default: all)"
    )
    parser.add_argument("--no-finish", action="store_true", help="only search; another machine retrains and compares")
    parser.add_argument("--out", type=Path, default=Path("multirun/tune"), help="folder for the default Optuna storage")
    parser.add_argument("overrides", nargs="*", help="config overrides of every run, as for optbench-train")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.seeds < 1 or args.workers < 1:
        parser.error("--trials, --seeds and --workers must be positive")
    return args


def worker_command(args: argparse.Namespace, plan: tune.Plan, share: int) -> list[str]:
    """This command for one worker share, searching only."""
    return [
        sys.executable, "-m", "optbench.cli.tune", "--optimizers", ",".join(plan.optimizers),
        "--trials", str(plan.trials), "--seeds", str(plan.seeds), "--epochs", str(plan.epochs),
        *(["--subset", str(plan.subset)] if plan.subset else []), "--tracking-uri", plan.uri,
        "--experiment", plan.experiment, "--sweep-id", plan.sweep, "--storage", plan.storage,
        "--workers", str(plan.workers), "--only-workers", str(share), "--no-finish", *plan.extra,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runtime.quiet_libraries()
    sweep = args.sweep_id or time.strftime("tuned-%Y%m%d-%H%M%S")
    storage = args.storage
    if storage is None and args.workers > 1:
        (args.out / sweep).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(args.out / sweep / 'optuna.db').resolve()}"
    plan = tune.Plan(
        sweep, args.tracking_uri or store.default_tracking_uri(), tuple(args.optimizers.split(",")), args.trials,
        args.seeds, args.epochs, args.subset, args.experiment, storage, args.workers, extra=args.overrides,
    )  # fmt: skip
    shares = [int(k) for k in args.only_workers.split(",")] if args.only_workers else list(range(args.workers))
    try:
        config.check_overrides(plan.extra)
        config.validate(config.compose("experiment=tuned", *plan.overrides()))  # a bad override: before any run
        store.prepare(plan.uri, plan.experiment)
        if len(shares) == 1:
            for optimizer in plan.optimizers:
                tune.search(plan, optimizer, shares[0])
        else:  # one process per share, all at once, on studies (and storage tables) made here first
            for optimizer in plan.optimizers:
                tune.study(plan, optimizer)
            procs = [subprocess.Popen(worker_command(args, plan, k)) for k in shares]
            if any(p.wait() != 0 for p in procs):
                print("optbench-tune: a worker failed; see its output above", file=sys.stderr)
                return 1
        if args.no_finish:
            return 0
        for optimizer in plan.optimizers:
            best = tune.log_best(plan, optimizer, tune.wait_for_budget(plan, optimizer))
            print(f"optbench-tune: {optimizer} best {best} over {plan.trials} trials", flush=True)
            tune.retrain(plan, optimizer, best)
        epochs = sorted({1, (plan.epochs + 1) // 2, plan.epochs})
        comparison = compare(store.open_existing(plan.uri), plan.experiment, sweep, epochs=epochs)
    except (config.ConfigError, CompareError, store.StoreError, HydraException) as err:
        print(f"optbench-tune: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render.render(comparison, "table"))
    page = report.build(comparison, f"optbench tuned comparison — sweep {sweep}")
    summary.log_summary(
        store.open_existing(plan.uri), plan.experiment, sweep, comparison, figures.learning_curves(comparison), page
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
