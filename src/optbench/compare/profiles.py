"""Time to target, ranks across datasets and Dolan-Moré performance profiles.

A target some seeds never reach is a censored time, not a missing one: each row reports the share of
seeds that reached it (with Wilson's interval) and the Kaplan-Meier median, the time by which half the
seeds are estimated to be there (∞ when fewer than half ever were). Rows are keyed by their whole label,
so split rows (``adam [data.subset=512]``) rank on their own; equal means share an average rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from . import stats
from .cells import HIGHER_IS_BETTER, Comparison, Row, final_mean


@dataclass
class Reached:
    seeds: int
    reached: int
    share_low: float
    share_high: float
    median: float  # Kaplan-Meier, inf when fewer than half reached it

    @property
    def text(self) -> str:
        median = "∞" if math.isinf(self.median) else f"{self.median:g}"
        return f"{median} ({self.reached}/{self.seeds})"


def summarise(times: list[float | None]) -> Reached:
    """Per-seed times to a target (None: never reached in the run) → share reached and KM median.
    The runs of a row are equally long, so a seed that never got there is censored after every event."""
    events = [t for t in times if t is not None]
    censor = max(events, default=0.0) + 1.0
    median = stats.km_median([censor if t is None else t for t in times], [t is not None for t in times])
    low, high = stats.wilson(len(events), len(times))
    return Reached(len(times), len(events), low, high, median)


def row_target_metric(row: Row, metric: str) -> Reached:
    """A logged ``*_to_val_acc_*`` metric (absent where never reached) over the row's seeds."""
    cell = row.cells.get(metric)
    by_seed = cell.by_seed if cell else {}
    return summarise([by_seed.get(s) for s in row.group.seeds])


def time_to_target(row: Row, target: float) -> Reached:
    """Training time at which val_acc first reached ``target``, per seed, from the logged curves."""
    times: list[float | None] = []
    for seed, accs in row.curves.get("val_acc", {}).items():
        clock, reached = 0.0, None
        for acc, seconds in zip(accs, row.curves.get("epoch_time_s", {}).get(seed, []), strict=False):
            clock += seconds
            if acc >= target:
                reached = clock
                break
        times.append(reached)
    return summarise(times)


def sort_by_target(comparison: Comparison) -> None:
    """``--rank-by`` a time/epoch/step to target: by Kaplan-Meier median, then by the share that reached it."""
    metric = comparison.rank_by

    def key(row: Row):
        r = row_target_metric(row, metric)
        return (r.median, -r.reached / max(r.seeds, 1))

    comparison.rows.sort(key=key)


def sort_by_mean(comparison: Comparison) -> None:
    """``--rank-by`` any other final metric: ascending mean; rows without it go last."""
    metric = comparison.rank_by
    comparison.rows.sort(key=lambda r: (metric not in r.cells, r.cells[metric].mean if metric in r.cells else 0.0))


def ranks(comparison: Comparison, metric: str = "val_acc") -> dict[str, dict[str, float]]:
    """label → data → rank of its final mean ``metric`` among the rows of that data (1 = best; ties
    share the average rank, as in Demšar's comparisons over data sets)."""
    out: dict[str, dict[str, float]] = {}
    sign = -1.0 if HIGHER_IS_BETTER.get(metric, False) else 1.0
    for data in comparison.datasets:
        rows = [r for r in comparison.rows_of(data) if not math.isnan(final_mean(r, metric))]
        if not rows:
            continue
        ranked = rankdata([sign * final_mean(r, metric) for r in rows], method="average")
        for row, rank in zip(rows, ranked, strict=True):
            out.setdefault(row.label, {})[data] = float(rank)
    return out


def profiles(comparison: Comparison, level: float = 0.99) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Dolan-Moré ratios: problem (data) → target, and label → problem → KM median time / best on that problem.

    Each problem's target is ``level`` × the best final mean val_acc any row reached on it, so problems of
    different difficulty (MNIST, Fashion-MNIST) count alike.
    """
    targets: dict[str, float] = {}
    ratios: dict[str, dict[str, float]] = {}
    for data in comparison.datasets:
        rows = [r for r in comparison.rows_of(data) if r.curves.get("val_acc")]
        finals = [final_mean(r) for r in rows]
        if not finals:
            continue
        targets[data] = level * max(finals)
        times = {r.label: time_to_target(r, targets[data]).median for r in rows}
        best = min(times.values())
        for label, t in times.items():
            ratios.setdefault(label, {})[data] = t / best if math.isfinite(best) and best > 0 else math.inf
    return targets, ratios


def mean_rank(by_data: dict[str, float]) -> float:
    return float(np.mean(list(by_data.values())))
