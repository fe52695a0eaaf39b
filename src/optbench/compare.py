"""The comparison table as a query over tracked runs: ``optbench-compare`` / ``python -m optbench.compare``.

One row per configuration label (optimizer) and dataset: validation accuracy and loss at the
chosen epochs and total training time, as mean ± std over seeds with the seed count. Runs that
did not finish are listed apart and never averaged in.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Run, RunTag, ViewType

from .tracking import default_tracking_uri, get_or_create_experiment

CELL_METRICS = ("val_acc", "val_loss")
SUMMARY_TAG = "optbench.kind"
# Our optimizer names → the seed table's row names.
SEED_NAMES = {
    "sgd": "SGD",
    "sgd_momentum": "SGD with momentum",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
    "adam": "Adam",
}


class CompareError(RuntimeError):
    """Nothing to compare (unknown experiment, empty selection, unreachable store)."""


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0 if self.values else math.nan


@dataclass
class Row:
    label: str
    data: str
    run_ids: list[str] = field(default_factory=list)
    cells: dict[str, Cell] = field(default_factory=dict)  # "val_acc@1", ..., "total_time_s"
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # metric → one per-epoch list per seed
    reference: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    epochs: list[int]
    rows: list[Row]
    excluded: list[dict]  # runs that did not finish
    rank_by: str | None = None  # a final metric (e.g. time_to_val_acc_0.98_s) to sort by, ascending

    @property
    def columns(self) -> list[str]:
        extra = [self.rank_by] if self.rank_by else []
        return [f"{m}@{e}" for e in self.epochs for m in CELL_METRICS] + ["total_time_s", *extra]

    def rank(self) -> None:
        """Sort rows by the rank metric's mean; rows where no seed reached it go last."""
        if self.rank_by:
            key = self.rank_by
            self.rows.sort(key=lambda r: (key not in r.cells, r.cells[key].mean if key in r.cells else 0.0))


# -- query -----------------------------------------------------------------------------------------
def select_runs(
    client: mlflow.MlflowClient, experiment: str, sweep: str | None, filter_string: str | None
) -> list[Run]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        raise CompareError(f"No experiment named {experiment!r} in this store; it has: {', '.join(names) or 'none'}.")
    clauses = [f"tags.sweep_id = '{sweep}'"] if sweep else []
    if filter_string:  # MLflow's filter grammar joins clauses with AND only
        clauses.append(filter_string)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id], " and ".join(clauses), ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs.extend(r for r in page if SUMMARY_TAG not in r.data.tags)  # summaries, paths: not training runs
        token = page.token
        if not token:
            return runs


def history(client: mlflow.MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


def build(client: mlflow.MlflowClient, runs: list[Run], epochs: list[int], rank_by: str | None = None) -> Comparison:
    rows: dict[tuple[str, str], Row] = {}
    excluded = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags
        label = tags.get("label") or tags.get("optimizer") or run.info.run_name
        if run.info.status != "FINISHED":
            reason = tags.get("failure_reason", "")
            excluded.append(
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "label": label,
                    "status": "DIVERGED" if reason == "diverged" else run.info.status,
                    "reason": reason,
                }
            )
            continue
        row = rows.setdefault((label, tags.get("data", "?")), Row(label, tags.get("data", "?")))
        row.run_ids.append(run.info.run_id)
        for metric in CELL_METRICS:
            per_epoch = history(client, run.info.run_id, metric)
            row.curves.setdefault(metric, []).append([per_epoch[e] for e in sorted(per_epoch)])
            for epoch in epochs:
                if epoch in per_epoch:
                    row.cells.setdefault(f"{metric}@{epoch}", Cell()).values.append(per_epoch[epoch])
        for metric in ("total_time_s", rank_by):
            if metric and metric in run.data.metrics:
                row.cells.setdefault(metric, Cell()).values.append(run.data.metrics[metric])
    comparison = Comparison(epochs, sorted(rows.values(), key=lambda r: (r.data, r.label)), excluded, rank_by)
    comparison.rank()
    return comparison


# -- the published table -----------------------------------------------------------------------------
def load_seed_reference() -> dict[str, dict[str, float]]:
    """The seed article's table (shipped with the package): optimizer → column → value."""
    text = resources.files("optbench.reference").joinpath("seed_table.csv").read_text()
    table = {}
    for rec in csv.DictReader(io.StringIO(text)):
        minutes, seconds = rec["total_time"].split(":")
        values = {"total_time_s": int(minutes) * 60 + int(seconds)}
        for epoch in (1, 5, 10):
            values[f"val_acc@{epoch}"] = float(rec[f"epoch{epoch}_val_acc"])
            values[f"val_loss@{epoch}"] = float(rec[f"epoch{epoch}_val_loss"])
        table[rec["optimizer"]] = values
    return table


def attach_reference(comparison: Comparison) -> None:
    seed = load_seed_reference()
    for row in comparison.rows:
        name = SEED_NAMES.get(row.label)
        if name in seed and row.data == "mnist":
            row.reference = seed[name]


# -- output --------------------------------------------------------------------------------------------
def fmt(value: float, column: str) -> str:
    if math.isnan(value):
        return "—"
    if column.endswith("_s"):  # times, total_time_s included
        return f"{value:.1f}"
    return f"{value:g}" if "_to_" in column else f"{value:.4f}"


def cell_text(row: Row, column: str, with_reference: bool) -> str:
    cell = row.cells.get(column)
    if cell is None:
        text = "—"
    elif cell.n > 1:
        text = f"{fmt(cell.mean, column)} ± {fmt(cell.std, column)}"
    else:
        text = fmt(cell.mean, column)
    if "_to_" in column:  # a target: say how many seeds reached it
        text += f" ({cell.n if cell else 0}/{len(row.run_ids)})"
    if with_reference and column in row.reference:
        ref = row.reference[column]
        diff = f", {cell.mean - ref:+.4f}" if cell and column != "total_time_s" else ""
        text += f" (seed {fmt(ref, column)}{diff})"
    return text


def header(column: str) -> str:
    if column == "total_time_s":
        return "time (s)"
    if "@" not in column:
        return column
    metric, epoch = column.split("@")
    return f"{'acc' if metric == 'val_acc' else 'loss'} e{epoch}"


def records(comparison: Comparison) -> list[dict]:
    out = []
    for row in comparison.rows:
        rec = {"optimizer": row.label, "data": row.data, "seeds": len(row.run_ids)}
        for column in comparison.columns:
            cell = row.cells.get(column, Cell())
            rec[column] = None if math.isnan(cell.mean) else cell.mean
            rec[f"{column}_std"] = None if math.isnan(cell.std) else cell.std
            rec[f"{column}_n"] = cell.n
            if column in row.reference:
                rec[f"{column}_seed"] = row.reference[column]
                rec[f"{column}_diff"] = None if rec[column] is None else rec[column] - row.reference[column]
        out.append(rec)
    return out


def render(comparison: Comparison, fmt_name: str, with_reference: bool) -> str:
    if fmt_name == "json":
        payload = {"epochs": comparison.epochs, "rows": records(comparison), "excluded": comparison.excluded}
        return json.dumps(payload, indent=2)
    if fmt_name == "csv":
        recs = records(comparison)
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for rec in recs for k in rec)) or ["optimizer"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(recs)
        return buf.getvalue()
    heads = ["optimizer", "data", "seeds", *map(header, comparison.columns)]
    body = [
        [row.label, row.data, str(len(row.run_ids)), *(cell_text(row, c, with_reference) for c in comparison.columns)]
        for row in comparison.rows
    ]
    if fmt_name == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines += excluded_lines(comparison, markdown=True)
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Validation accuracy / loss by epoch, mean ± std over seeds", title_justify="left")
    for h in heads:
        table.add_column(h, justify="left" if h in ("optimizer", "data") else "right")
    for cells in body:
        table.add_row(*cells)
    console = Console(file=io.StringIO(), width=240, force_terminal=sys.stdout.isatty())
    console.print(table)
    for line in excluded_lines(comparison, markdown=False):
        console.print(line, markup=False)
    return console.file.getvalue()


def excluded_lines(comparison: Comparison, markdown: bool) -> list[str]:
    if not comparison.excluded:
        return []
    lines = ["", "Not averaged in (did not finish):"]
    for ex in comparison.excluded:
        reason = f" — {ex['reason']}" if ex["reason"] else ""
        lines.append(f"{'- ' if markdown else '  '}{ex['run_name']} ({ex['run_id'][:8]}): {ex['status']}{reason}")
    return lines


# -- figure and summary run ------------------------------------------------------------------------------
def learning_curves(comparison: Comparison):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for metric, ax in zip(CELL_METRICS, axes, strict=True):
        for row in comparison.rows:
            curves = row.curves.get(metric, [])
            length = min((len(c) for c in curves), default=0)
            if not length:
                continue
            values = np.array([c[:length] for c in curves])
            epochs = np.arange(1, length + 1)
            mean = values.mean(axis=0)
            (line,) = ax.plot(epochs, mean, marker="o", label=f"{row.label} ({row.data}, n={len(curves)})")
            if len(curves) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy" if metric == "val_acc" else "validation loss")
        ax.grid(alpha=0.3)
    if comparison.rows:
        axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves: mean over seeds, band = ±1 std")
    fig.tight_layout()
    return fig


def log_summary(client: mlflow.MlflowClient, experiment: str, sweep: str, comparison: Comparison, fig, table: str):
    """A summary run of the sweep holding the figure and the table, so the MLflow UI shows both."""
    exp_id = get_or_create_experiment(client, experiment)
    run = client.create_run(exp_id, run_name=f"summary-{sweep}", tags={SUMMARY_TAG: "summary", "sweep_id": sweep})
    client.log_figure(run.info.run_id, fig, "learning_curves.png")
    client.log_text(run.info.run_id, render(comparison, "csv", False), "comparison.csv")
    client.log_text(run.info.run_id, table, "comparison.md")
    client.log_table(run.info.run_id, data=pd.DataFrame(records(comparison)), artifact_file="comparison_table.json")
    client.log_batch(run.info.run_id, tags=[RunTag("runs", ",".join(i for r in comparison.rows for i in r.run_ids))])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


# -- CLI ---------------------------------------------------------------------------------------------------
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
        "--plot", type=Path, default=None, help="save learning curves here (PNG, plus an SVG beside it)"
    )
    parser.add_argument(
        "--rank-by",
        default=None,
        help="sort by a final metric, ascending, e.g. time_to_val_acc_0.98_s or epoch_to_val_acc_0.98",
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
    client = mlflow.MlflowClient(args.tracking_uri or default_tracking_uri())
    try:
        runs = select_runs(client, args.experiment, args.sweep, args.filter)
        if not runs:
            where = f" with sweep_id={args.sweep}" if args.sweep else ""
            raise CompareError(
                f"No runs in experiment {args.experiment!r}{where}{' matching the filter' if args.filter else ''}."
            )
        comparison = build(client, runs, args.epochs, args.rank_by)
    except (CompareError, mlflow.exceptions.MlflowException) as err:
        print(f"optbench-compare: {err}", file=sys.stderr)
        return 2
    if args.reference == "seed":
        attach_reference(comparison)
    output = render(comparison, args.format, args.reference is not None)
    sys.stdout.write(output)
    if args.plot is not None or args.sweep:
        fig = learning_curves(comparison)
        if args.plot is not None:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot.with_suffix(".png"))
            fig.savefig(args.plot.with_suffix(".svg"))
            print(f"learning curves: {args.plot.with_suffix('.png')} (+ .svg)", file=sys.stderr)
        if args.sweep and not args.no_log:
            run_id = log_summary(
                client,
                args.experiment,
                args.sweep,
                comparison,
                fig,
                render(comparison, "markdown", args.reference is not None),
            )
            print(f"summary run: {run_id} (figure and table as artifacts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
