"""Which stored numbers a comparison may average: what a run can log."""

from __future__ import annotations

import math

TIME = "total_time_s"  # the run-level wall time column
# What a run can log; beyond it a stored number is a forgery or corruption, not a result.
PLAUSIBLE = {"val_acc": (0.0, 1.0), "val_loss": (0.0, 1e12), "epoch_time_s": (0.0, 1e9), TIME: (0.0, 1e9)}


def unusable(histories: dict[str, dict[int, float]], run, rank_by: str | None = None) -> str:
    """Why a finished run's numbers cannot be averaged ('' when they can): a NaN, an infinity or a value
    outside what a run can log, in a curve or a final metric."""
    finals = {m: {0: run.data.metrics[m]} for m in (TIME, rank_by) if m and m in run.data.metrics}
    for metric, by_epoch in {**histories, **finals}.items():
        low, high = PLAUSIBLE.get(metric, (-1e12, 1e12))
        for epoch, value in sorted(by_epoch.items()):
            if not (math.isfinite(value) and low <= value <= high):
                where = f" at epoch {epoch}" if metric in histories else ""
                return f"{metric}{where} is {value!r}, outside [{low:g}, {high:g}]"
    return ""
