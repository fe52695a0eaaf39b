"""The numbers of a comparison: per-seed cells with intervals, paired differences to a baseline, ranks
across datasets and Dolan-Moré performance profiles on time to target."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import mlflow

from . import stats
from .query import CompareError, Group, Selection

CELL_METRICS = ("val_acc", "val_loss")
CURVES = ("val_acc", "val_loss", "epoch_time_s")
HIGHER_IS_BETTER = {"val_acc": True, "val_loss": False}


@dataclass
class Cell:
    by_seed: dict[int, float] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [self.by_seed[s] for s in sorted(self.by_seed)]

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.by_seed else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0 if self.by_seed else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return stats.t_interval(self.values)


@dataclass
class Row:
    group: Group
    cells: dict[str, Cell] = field(default_factory=dict)  # "val_acc@1", ..., "total_time_s"
    curves: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # metric → seed → per-epoch values
    reference: dict[str, float] = field(default_factory=dict)
    paired: dict[str, stats.Paired] = field(default_factory=dict)  # column → difference to the baseline
    p_holm: dict[str, float | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.group.label

    @property
    def data(self) -> str:
        return self.group.data

    @property
    def run_ids(self) -> list[str]:
        return [self.group.runs[s].info.run_id for s in self.group.seeds]


@dataclass
class Comparison:
    epochs: list[int]
    rows: list[Row]
    selection: Selection
    rank_by: str | None = None
    aggregate: str = "last"
    baseline: str | None = None

    @property
    def columns(self) -> list[str]:
        extra = [self.rank_by] if self.rank_by else []
        return [f"{m}@{e}" for e in self.epochs for m in CELL_METRICS] + ["total_time_s", *extra]


def _at_epoch(history: dict[int, float], epoch: int, metric: str, aggregate: str) -> float | None:
    if epoch not in history:
        return None
    if aggregate == "last":
        return history[epoch]
    upto = [v for e, v in history.items() if e <= epoch]
    return max(upto) if HIGHER_IS_BETTER[metric] else min(upto)


def build(
    client: mlflow.MlflowClient,
    selection: Selection,
    epochs: list[int],
    rank_by: str | None = None,
    aggregate: str = "last",
) -> Comparison:
    """Cells from the runs' metric histories: the value at each epoch (``last``) or the best up to it (``best``)."""
    rows = []
    for group in selection.groups:
        row = Row(group)
        for seed, run in sorted(group.runs.items()):
            for metric in CURVES:
                history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
                row.curves.setdefault(metric, {})[seed] = [history[e] for e in sorted(history)]
                if metric not in CELL_METRICS:
                    continue
                for epoch in epochs:
                    value = _at_epoch(history, epoch, metric, aggregate)
                    if value is not None:
                        row.cells.setdefault(f"{metric}@{epoch}", Cell()).by_seed[seed] = value
            for metric in ("total_time_s", rank_by):
                if metric and metric in run.data.metrics:
                    row.cells.setdefault(metric, Cell()).by_seed[seed] = run.data.metrics[metric]
        rows.append(row)
    comparison = Comparison(epochs, rows, selection, rank_by, aggregate)
    if rank_by:  # ascending; rows where no seed reached it go last
        rows.sort(key=lambda r: (rank_by not in r.cells, r.cells[rank_by].mean if rank_by in r.cells else 0.0))
    return comparison


def attach_baseline(comparison: Comparison, name: str) -> None:
    """Paired differences of every row to the baseline row of the same data, Holm-corrected per column."""
    labels = {r.label for r in comparison.rows}
    if name not in labels:
        raise CompareError(f"No row named {name!r} to use as --baseline; the rows are: {', '.join(sorted(labels))}.")
    comparison.baseline = name
    for data in {r.data for r in comparison.rows}:
        rows = [r for r in comparison.rows if r.data == data]
        base = next((r for r in rows if r.label == name), None)
        if base is None:
            continue
        others = [r for r in rows if r is not base]
        for column in comparison.columns:
            for row in others:
                if column in row.cells and column in base.cells:
                    row.paired[column] = stats.paired(base.cells[column].by_seed, row.cells[column].by_seed)
            tested = [r for r in others if column in r.paired]
            for row, adjusted in zip(tested, stats.holm([r.paired[column].p for r in tested]), strict=True):
                row.p_holm[column] = adjusted


def base_label(row: Row) -> str:
    return row.label.split(" [")[0]


def final_mean(row: Row, metric: str = "val_acc") -> float:
    """The mean over seeds of each run's last logged value of ``metric``."""
    finals = [c[-1] for c in row.curves.get(metric, {}).values() if c]
    return statistics.fmean(finals) if finals else math.nan


def ranks(comparison: Comparison, metric: str = "val_acc") -> dict[str, dict[str, int]]:
    """label → data → rank of its final mean ``metric`` (1 = best) among the rows of that data."""
    out: dict[str, dict[str, int]] = {}
    finals = {id(r): final_mean(r, metric) for r in comparison.rows}
    for data in sorted({r.data for r in comparison.rows}):
        rows = [r for r in comparison.rows if r.data == data and not math.isnan(finals[id(r)])]
        rows.sort(key=lambda r: finals[id(r)], reverse=HIGHER_IS_BETTER.get(metric, False))
        for rank, row in enumerate(rows, start=1):
            out.setdefault(base_label(row), {})[data] = rank
    return out


def time_to_target(row: Row, target: float) -> float:
    """Median over seeds of the training time at which val_acc first reached ``target`` (inf if not)."""
    times = []
    for seed, accs in row.curves.get("val_acc", {}).items():
        clock = 0.0
        reached = math.inf
        for acc, seconds in zip(accs, row.curves.get("epoch_time_s", {}).get(seed, []), strict=False):
            clock += seconds
            if acc >= target:
                reached = clock
                break
        times.append(reached)
    return statistics.median(times) if times else math.inf


def profiles(comparison: Comparison, level: float = 0.99) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Dolan-Moré ratios: problem (data) → target, and label → problem → time / best time on that problem.

    Each problem's target is ``level`` × the best final mean val_acc any row reached on it, so problems of
    different difficulty (MNIST, Fashion-MNIST) count alike.
    """
    targets, ratios = {}, {}
    for data in sorted({r.data for r in comparison.rows}):
        rows = [r for r in comparison.rows if r.data == data and r.curves.get("val_acc")]
        finals = [final_mean(r) for r in rows]
        if not finals:
            continue
        targets[data] = level * max(finals)
        times = {base_label(r): time_to_target(r, targets[data]) for r in rows}
        best = min(times.values())
        for label, t in times.items():
            ratios.setdefault(label, {})[data] = t / best if math.isfinite(best) and best > 0 else math.inf
    return targets, ratios
