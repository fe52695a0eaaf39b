"""``optbench-tune``: the same Optuna budget for every optimizer, then seeds of the best and the default.

    optbench-tune [--optimizers sgd,adam,...] [--trials 10] [--seeds 3] [--epochs 10] [--subset N] [OVERRIDES]
    optbench-tune --trials 5 model=custom model.net._target_=mypkg.MyNet    # overrides of every run: your net
    optbench-tune --budgets 1,10,25 --seeds 3    # the tuning-budget axis: each optimizer after 1 (defaults), 10, 25 trials
    optbench-tune --lr-grid 1e-4,1e-3,1e-2      # learning-rate sensitivity only (no search)
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

from .. import config, runtime, store, tune, tuning_axes
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
    parser.add_argument(
        "--budgets", default=None, help="trial counts to compare, e.g. 1,10,25 (1 = the defaults); runs the largest"
    )
    parser.add_argument("--lr-grid", default=None, help="learning rates to sweep, e.g. 1e-4,1e-3,1e-2 (log grid)")
    parser.add_argument("overrides", nargs="*", help="config overrides of every run, as for optbench-train")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.seeds < 1 or args.workers < 1:
        parser.error("--trials, --seeds and --workers must be positive")
    try:
        args.budgets = (
            tuple(map(int, tuning_axes.parse(args.budgets, "--budgets", integers=True))) if args.budgets else ()
        )
        args.lr_grid = tuning_axes.parse(args.lr_grid, "--lr-grid") if args.lr_grid else ()
    except ValueError as err:
        parser.error(str(err))
    if args.budgets:
        args.trials = args.budgets[-1]  # one study per optimizer, as long as the largest budget
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
        budgets=args.budgets, lr_grid=args.lr_grid,
    )  # fmt: skip
    shares = [int(k) for k in args.only_workers.split(",")] if args.only_workers else list(range(args.workers))
    try:
        config.check_overrides(plan.extra)
        config.validate(config.compose("experiment=tuned", *plan.overrides()))  # a bad override: before any run
        store.prepare(plan.uri, plan.experiment)
        searching = bool(plan.budgets) or not plan.lr_grid  # --lr-grid alone: the grid, no search
        if searching and len(shares) == 1:
            for optimizer in plan.optimizers:
                tune.search(plan, optimizer, shares[0])
        elif searching:  # one process per share, all at once, on studies (and storage tables) made here first
            for optimizer in plan.optimizers:
                tune.study(plan, optimizer)
            procs = [subprocess.Popen(worker_command(args, plan, k)) for k in shares]
            if any(p.wait() != 0 for p in procs):
                print("optbench-tune: a worker failed; see its output above", file=sys.stderr)
                return 1
        if args.no_finish:
            return 0
        for optimizer in plan.optimizers:
            if searching:
                shared = tune.wait_for_budget(plan, optimizer)
                best = tune.log_best(plan, optimizer, shared)
                print(f"optbench-tune: {optimizer} best {best} over {plan.trials} trials", flush=True)
                if plan.budgets:
                    tune.retrain_budgets(plan, optimizer, shared)
                else:
                    tune.retrain(plan, optimizer, best)
            if plan.lr_grid:
                tune.sweep_lr(plan, optimizer)
        epochs = sorted({1, (plan.epochs + 1) // 2, plan.epochs})
        comparison = compare(store.open_existing(plan.uri), plan.experiment, sweep, epochs=epochs)
    except (config.ConfigError, CompareError, store.StoreError, HydraException) as err:
        print(f"optbench-tune: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render.render(comparison, "table"))
    sections, column = [], f"val_acc@{plan.epochs}"
    for axis, used in ((tuning_axes.BUDGET, plan.budgets), (tuning_axes.LR, plan.lr_grid)):
        if used:
            rows = tuning_axes.table(comparison, column, axis)
            sys.stdout.write("\n" + tuning_axes.render(rows, column, axis))
            sections += [f"<h2>Result by {axis.title}</h2>", report.svg(tuning_axes.figure(rows, column, axis))]
    page = report.build(comparison, f"optbench tuned comparison — sweep {sweep}", sections=sections)
    summary.log_summary(
        store.open_existing(plan.uri), plan.experiment, sweep, comparison, figures.learning_curves(comparison), page
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
