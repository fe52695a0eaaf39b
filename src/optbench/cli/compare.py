"""``optbench-compare``: the comparison table, with intervals, paired tests and a report, from tracked runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow

from .. import store
from ..compare import CompareError, compare, figures, render, report, stats, summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="optbench-compare", description="Compare optimizers from tracked MLflow runs."
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    parser.add_argument("--experiment", default="optbench", help="experiment name (default: optbench)")
    parser.add_argument("--sweep", default=None, help="only runs of this sweep id (tag sweep_id)")
    parser.add_argument("--filter", default=None, help="extra MLflow filter, e.g. \"tags.data = 'mnist'\"")
    parser.add_argument("--epochs", default="1,5,10", help="epochs to tabulate (default: 1,5,10)")
    parser.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    parser.add_argument(
        "--reference", choices=("seed",), default=None, help="add the seed article's values and the gap"
    )
    parser.add_argument(
        "--baseline", default=None, help="compare every row with this one (default: the best row of each dataset)"
    )
    parser.add_argument(
        "--primary",
        default=None,
        help="the endpoint of the verdict and the corrected tests, METRIC@EPOCH (default: val_acc at the last epoch)",
    )
    parser.add_argument(
        "--test",
        choices=stats.TESTS,
        default="t",
        help="paired test: t (default, the dual of the interval), permutation or wilcoxon (robustness checks)",
    )
    parser.add_argument(
        "--aggregate", choices=("last", "best"), default="last", help="value at each epoch, or the best up to it"
    )
    parser.add_argument("--include-reruns", action="store_true", help="show reruns as rows of their own")
    parser.add_argument(
        "--plot", type=Path, default=None, help="save learning curves here (PNG, plus an SVG beside it)"
    )
    parser.add_argument("--html", type=Path, default=None, help="write a self-contained HTML report here")
    parser.add_argument(
        "--rank-by", default=None, help="sort by a final metric, ascending, e.g. time_to_val_acc_0.98_s"
    )
    parser.add_argument("--no-log", action="store_true", help="do not log a summary run for --sweep")
    args = parser.parse_args(argv)
    try:
        args.epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
    except ValueError:
        parser.error(f"--epochs takes comma-separated integers, got {args.epochs!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = store.open_existing(args.tracking_uri or store.default_tracking_uri())
        comparison = compare(
            client,
            args.experiment,
            args.sweep,
            args.filter,
            args.epochs,
            rank_by=args.rank_by,
            aggregate=args.aggregate,
            include_reruns=args.include_reruns,
            reference=args.reference == "seed",
            baseline=args.baseline,
            primary=args.primary,
            test=args.test,
        )
    except (CompareError, store.StoreError, mlflow.exceptions.MlflowException) as err:
        print(f"optbench-compare: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render.render(comparison, args.format))
    if args.format == "table" and (exp := client.get_experiment_by_name(args.experiment)) is not None:
        print(store.ui_hint(client.tracking_uri, exp.experiment_id, args.sweep), file=sys.stderr)
    page = None
    if args.html is not None or (args.sweep and not args.no_log):
        page = report.build(comparison, f"optbench comparison{f' — sweep {args.sweep}' if args.sweep else ''}")
    if args.html is not None:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(page)
        print(f"report: {args.html}", file=sys.stderr)
    if args.plot is not None or (args.sweep and not args.no_log):
        fig = figures.learning_curves(comparison)
        if args.plot is not None:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot.with_suffix(".png"))
            fig.savefig(args.plot.with_suffix(".svg"))
            print(f"learning curves: {args.plot.with_suffix('.png')} (+ .svg)", file=sys.stderr)
        if args.sweep and not args.no_log:
            run_id = summary.log_summary(client, args.experiment, args.sweep, comparison, fig, page)
            print(f"summary run: {run_id} (table, figure and report.html as artifacts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
