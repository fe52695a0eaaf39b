"""The numbers of a comparison: per-seed cells with intervals, and the differences of every row to a
reference row of its dataset (the ``--baseline``, else the best row on the primary endpoint).

One **primary endpoint** (default ``val_acc`` at the last tabulated epoch that has values) carries the
corrected tests and the verdict: Holm over the rows of one dataset. Every other column is descriptive: its
paired difference, interval and unadjusted p. Wall times are not paired by seeds: they are compared as a
ratio, Welch's test on log times, and flagged when the runs shared the machine with other jobs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import mlflow

from . import stats
from .plausible import TIME, unusable
from .query import CompareError, Group, Selection, excluded_record

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
        """NaN ("n/a") below two seeds: one value has no spread to estimate."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return stats.t_interval(self.values)


@dataclass
class Row:
    group: Group
    cells: dict[str, Cell] = field(default_factory=dict)  # "val_acc@1", ..., "total_time_s"
    curves: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # metric → seed → per-epoch values
    reference: dict[str, float] = field(default_factory=dict)  # the published values (--reference seed)
    paired: dict[str, stats.Paired] = field(default_factory=dict)  # column → difference to the reference row
    p_holm: dict[str, float] = field(default_factory=dict)  # the primary endpoint only
    time: stats.Ratio | None = None
    improvement: tuple[float, float, float] | None = None  # P(this row beats the reference) [95% bootstrap]
    val_count: int | None = None  # validation images per run: accuracies are counts / val_count

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
    primary: str | None = None  # "val_acc@10"
    test: str = "t"
    references: dict[str, str] = field(default_factory=dict)  # data → label of the reference row
    time_sharing: dict[str, str] = field(default_factory=dict)  # data → why its times are not like-for-like
    verdicts: list = field(default_factory=list)  # verdict.Verdict per dataset
    decision: str | None = None  # an adaptive sweep's decision (query.decision_of)

    @property
    def columns(self) -> list[str]:
        extra = [self.rank_by] if self.rank_by else []
        return [f"{m}@{e}" for e in self.epochs for m in CELL_METRICS] + [TIME, *extra]

    @property
    def datasets(self) -> list[str]:
        return sorted({r.data for r in self.rows})

    def rows_of(self, data: str) -> list[Row]:
        return [r for r in self.rows if r.data == data]


def metric_of(column: str) -> str:
    return column.split("@")[0]


def better(column: str) -> bool:
    """Whether a larger value of ``column`` is better."""
    return HIGHER_IS_BETTER.get(metric_of(column), False)


def parse_primary(text: str | None, epochs: list[int]) -> tuple[str | None, list[int]]:
    """``METRIC@EPOCH`` checked; its epoch joins the tabulated ones."""
    if text is None:
        return None, epochs
    metric, _, epoch = text.partition("@")
    if metric not in CELL_METRICS or not epoch.isdigit() or int(epoch) < 1:
        raise CompareError(f"--primary takes METRIC@EPOCH with METRIC one of {', '.join(CELL_METRICS)}, got {text!r}.")
    return text, sorted({*epochs, int(epoch)})


def held_out(run) -> bool:
    return run.data.params.get("data.val_split", "None") not in ("None", "null", "")


def val_count(run) -> int | None:
    """How many images a run validated on, from its params (accuracies are multiples of 1/that)."""
    params = run.data.params
    if params.get("trainer.limit_val_batches", "1.0") not in ("1.0", "1", "None"):
        return None
    try:
        split = params.get("data.val_split", "None")
        n = 10_000 if split in ("None", "null") else int(float(split) * 60_000 if float(split) < 1 else float(split))
        subset = params.get("data.subset", "None")
        return min(n, int(subset)) if subset not in ("None", "null") else n
    except ValueError:
        return None


def build(
    client: mlflow.MlflowClient,
    selection: Selection,
    epochs: list[int],
    rank_by: str | None = None,
    aggregate: str = "last",
    primary: str | None = None,
) -> Comparison:
    """Cells from the runs' metric histories: the value at each epoch (``last``), or (``best``) the values
    of the epoch up to it that is best on the primary metric, every cell from that one epoch."""
    primary, epochs = parse_primary(primary, epochs)
    if aggregate == "best":
        refuse_best_on_test_data(selection)
    select_by = metric_of(primary) if primary else "val_acc"
    rows = []
    for group in selection.groups:
        row = Row(group, val_count=val_count(next(iter(group.runs.values()))) if group.runs else None)
        for seed, run in sorted(group.runs.items()):
            histories = {m: {x.step: x.value for x in client.get_metric_history(run.info.run_id, m)} for m in CURVES}
            if why := unusable(histories, run, rank_by):
                del group.runs[seed]
                selection.excluded.append(excluded_record(run, group.label, why))
                continue
            for metric in CURVES:
                row.curves.setdefault(metric, {})[seed] = [histories[metric][e] for e in sorted(histories[metric])]
            for epoch in epochs:
                source = _source_epoch(histories[select_by], epoch, select_by, aggregate)
                for metric in CELL_METRICS:
                    if source is not None and source in histories[metric]:
                        row.cells.setdefault(f"{metric}@{epoch}", Cell()).by_seed[seed] = histories[metric][source]
            for metric in (TIME, rank_by):
                if metric and metric in run.data.metrics:
                    row.cells.setdefault(metric, Cell()).by_seed[seed] = run.data.metrics[metric]
        if group.runs or group.conflicts:
            rows.append(row)
    selection.groups = [r.group for r in rows]
    if primary is None:
        tabulated = [e for e in epochs if any(f"val_acc@{e}" in r.cells for r in rows)]
        primary = f"val_acc@{tabulated[-1]}" if tabulated else None
    return Comparison(epochs, rows, selection, rank_by, aggregate, primary=primary)


def _source_epoch(history: dict[int, float], epoch: int, metric: str, aggregate: str) -> int | None:
    if epoch not in history:
        return None
    if aggregate == "last":
        return epoch
    upto = [e for e in history if e <= epoch]
    return (max if HIGHER_IS_BETTER[metric] else min)(upto, key=lambda e: (history[e], -e))


def refuse_best_on_test_data(selection: Selection) -> None:
    on_test = sorted({g.label for g in selection.groups for r in g.runs.values() if not held_out(r)})
    if on_test:
        raise CompareError(
            f"--aggregate best picks each run's best epoch on its validation data, but {', '.join(on_test)} "
            "validated on the test set (data.val_split=null, as the seed did): choosing the best epoch on the "
            "test set and reporting it inflates the result (by about 1.5 standard deviations at 10 epochs, "
            "the size of the gaps compared here). Use --aggregate last, or train with a held-out split "
            "(data.val_split=10000, as experiment=tuned does) and compare those runs."
        )


def attach_tests(comparison: Comparison, baseline: str | None = None, test: str = "t") -> None:
    """Every row against its dataset's reference row: paired differences per column (descriptive), the
    primary endpoint Holm-corrected over the dataset's rows, times as Welch ratios, P(improvement)."""
    labels = {r.label for r in comparison.rows}
    if baseline is not None and baseline not in labels:
        raise CompareError(
            f"No row named {baseline!r} to use as --baseline; the rows are: {', '.join(sorted(labels))}."
        )
    comparison.baseline, comparison.test = baseline, test
    primary = comparison.primary
    for data in comparison.datasets:
        rows = comparison.rows_of(data)
        reference = next((r for r in rows if r.label == baseline), None) or best_row(rows, primary)
        if reference is None:
            continue
        comparison.references[data] = reference.label
        others = [r for r in rows if r is not reference]
        for row in others:
            for column in comparison.columns:
                if column == TIME or column not in row.cells or column not in reference.cells:
                    continue
                row.paired[column] = paired_rows(reference, row, column, test)
            if TIME in row.cells and TIME in reference.cells:
                row.time = stats.time_ratio(reference.cells[TIME].values, row.cells[TIME].values)
            if primary in row.paired and row.paired[primary].pairs >= stats.MIN_TESTED:
                shared = sorted(reference.cells[primary].by_seed.keys() & row.cells[primary].by_seed.keys())
                row.improvement = stats.probability_of_improvement(
                    [reference.cells[primary].by_seed[s] for s in shared],
                    [row.cells[primary].by_seed[s] for s in shared],
                    better(primary),
                )
        family = [r for r in others if primary in r.paired]
        for row, adjusted in zip(family, stats.holm([r.paired[primary].p for r in family]), strict=True):
            row.p_holm[primary] = adjusted
        if sharing := time_sharing(rows):
            comparison.time_sharing[data] = sharing


def paired_rows(reference: Row, other: Row, column: str, test: str) -> stats.Paired:
    """``other - reference`` on ``column`` over shared seeds; accuracies as counts of images where both
    rows validated on the same number of them (so the rank tests tie exactly)."""
    same = metric_of(column) == "val_acc" and other.val_count == reference.val_count
    return stats.paired(
        reference.cells[column].by_seed, other.cells[column].by_seed,
        test=test, scale=other.val_count if same else None, higher_is_better=better(column),
    )  # fmt: skip


def best_row(rows: list[Row], column: str | None) -> Row | None:
    scored = [r for r in rows if column and column in r.cells]
    if not scored:
        return None
    sign = 1 if better(column) else -1
    return max(scored, key=lambda r: sign * r.cells[column].mean)


def time_sharing(rows: list[Row]) -> str:
    """Why wall times of these rows are not like-for-like ('' when they are): jobs that ran beside each
    other, different thread counts, or runs that did not record either."""
    runs = [run for r in rows for run in r.group.runs.values()]
    beside = {run.data.tags.get("concurrent_jobs") for run in runs}
    threads = {run.data.tags.get("torch_threads") for run in runs}
    if None in beside:
        return "some runs did not record how many jobs ran beside them"
    if "packed" in beside:
        return "some runs trained packed, several as one batched model, so a run's wall time is its pack's"
    if beside != {"1"}:
        return f"runs shared the machine with other jobs (up to {max(beside, key=lambda b: int(b) if b.isdigit() else 0)} at once)"
    if len(threads) > 1:
        return f"runs used different thread counts ({', '.join(sorted(t for t in threads if t))})"
    return ""


def base_label(row: Row) -> str:
    return row.label.split(" [")[0]


def final_mean(row: Row, metric: str = "val_acc") -> float:
    """The mean over seeds of each run's last logged value of ``metric``."""
    finals = [c[-1] for c in row.curves.get(metric, {}).values() if c]
    return statistics.fmean(finals) if finals else math.nan
