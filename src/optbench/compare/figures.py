"""Figures of a comparison: learning curves with seed bands, and performance profiles on time to target."""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .cells import CELL_METRICS, Comparison


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(comparison: Comparison):
    """Validation accuracy and loss per epoch: mean over seeds, band = 95% t-interval of the mean."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for metric, ax in zip(CELL_METRICS, axes, strict=True):
        for row in comparison.rows:
            curves = list(row.curves.get(metric, {}).values())
            length = min((len(c) for c in curves), default=0)
            if not length:
                continue
            values = np.array([c[:length] for c in curves])
            epochs = np.arange(1, length + 1)
            mean = values.mean(axis=0)
            (line,) = ax.plot(epochs, mean, marker="o", label=f"{row.label} ({row.data}, n={len(curves)})")
            if len(curves) > 1:
                bands = np.array([stats.t_interval(list(values[:, i])) for i in range(length)])
                ax.fill_between(epochs, bands[:, 0], bands[:, 1], color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy" if metric == "val_acc" else "validation loss")
        ax.grid(alpha=0.3)
    if comparison.rows:
        axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves: mean over seeds, band = 95% t-interval")
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
        ax.step(taus, share, where="post", label=label)
    ax.set_xlabel("τ (time to target / best time on that problem)")
    ax.set_ylabel("share of problems solved within τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    shown = ", ".join(f"{p}: val_acc ≥ {t:.4f}" for p, t in targets.items())
    ax.set_title(f"Performance profiles on time to target ({shown})", fontsize=9)
    fig.tight_layout()
    return fig
