"""Figures of a comparison: learning curves with seed bands, a forest plot of the primary endpoint's
differences, and performance profiles on time to target."""

from __future__ import annotations

import math

import numpy as np

from . import escape, stats
from .cells import CELL_METRICS, Comparison


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(comparison: Comparison):
    """Validation error rate (1 − accuracy) and loss per epoch on log axes (at 0.97–0.99 accuracy a linear
    axis shows nothing): mean over seeds, band = 95% t-interval of the mean."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for metric, ax in zip(CELL_METRICS, axes, strict=True):
        for row in comparison.rows:
            curves = list(row.curves.get(metric, {}).values())
            length = min((len(c) for c in curves), default=0)
            if not length:
                continue
            values = np.array([c[:length] for c in curves], dtype=float)
            if metric == "val_acc":
                values = 1.0 - values
            epochs = np.arange(1, length + 1)
            mean = values.mean(axis=0)
            (line,) = ax.plot(
                epochs, mean, marker="o", label=escape.terminal(f"{row.label} ({row.data}, n={len(curves)})")
            )
            if len(curves) > 1:
                bands = np.array([stats.t_interval(list(values[:, i])) for i in range(length)])
                low = np.maximum(bands[:, 0], mean * 0.05)  # a log axis has no room for values <= 0
                ax.fill_between(epochs, low, bands[:, 1], color=line.get_color(), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation error rate (1 − accuracy), log" if metric == "val_acc" else "validation loss, log")
        ax.grid(alpha=0.3, which="both")
    if comparison.rows:
        axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves: mean over seeds, band = 95% t-interval")
    fig.tight_layout()
    return fig


def forest_plot(comparison: Comparison):
    """The primary endpoint's paired difference of every row to its dataset's reference row, with its 95%
    interval; filled markers are significant after Holm's correction."""
    plt = _pyplot()
    primary = comparison.primary
    rows = [r for r in comparison.rows if primary in r.paired and math.isfinite(r.paired[primary].diff)]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6), dpi=100)
    for y, row in enumerate(reversed(rows)):
        p = row.paired[primary]
        significant = row.p_holm.get(primary, 1.0) < stats.ALPHA
        if math.isfinite(p.ci_low):
            ax.plot([p.ci_low, p.ci_high], [y, y], color="#333", lw=1.5)
        ax.plot(p.diff, y, "o", color="#333", markerfacecolor="#333" if significant else "white", markersize=7)
    ax.axvline(0.0, color="#b00", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [escape.terminal(f"{r.label} ({r.data})") for r in reversed(rows)], fontsize=8)
    ax.set_xlabel(f"{primary}: difference to the reference row (95% interval; filled = significant, Holm)")
    refs = escape.terminal(", ".join(f"{d}: {label}" for d, label in sorted(comparison.references.items())))
    ax.set_title(f"Paired differences on the primary endpoint (reference {refs})", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def performance_profiles(targets: dict[str, float], ratios: dict[str, dict[str, float]]):
    """Dolan-Moré profiles: for each optimizer, the share of problems it solves within τ × the best time."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    problems = sorted(targets)
    finite = [r for by in ratios.values() for r in by.values() if math.isfinite(r)]
    top = max([2.0, *finite]) * 1.1
    taus = np.linspace(1.0, top, 400)
    for label, by_problem in sorted(ratios.items()):
        r = np.array([by_problem.get(p, math.inf) for p in problems])
        share = [(r <= tau).mean() for tau in taus]
        ax.step(taus, share, where="post", label=escape.terminal(label))
    ax.set_xlabel("τ (time to target / best time on that problem)")
    ax.set_ylabel("share of problems solved within τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    shown = ", ".join(f"{p}: val_acc ≥ {t:.4f}" for p, t in targets.items())
    ax.set_title(f"Performance profiles on time to target ({shown})", fontsize=9)
    fig.tight_layout()
    return fig
