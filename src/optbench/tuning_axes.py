"""Two axes of an optimizer comparison beyond one tuned setting, each run over seeds and drawn in the report.

- **Tuning budget** (Schmidt, Schneider & Hennig 2021, "Descending through a Crowded Valley"): each
  optimizer after 1 setting tried (its defaults), after 10, after 25, … One Optuna study per optimizer runs
  the largest budget; budget b keeps the best of its first b trials (by trial number: a smaller budget is a
  prefix of a larger one, as a user who stopped early would have it).
- **Learning-rate sensitivity** (DeepOBS): the result over a log grid of ``optimizer.lr``, all else default.

Runs are labelled ``<optimizer>@budget=<b>`` and ``<optimizer>@lr=<η>``; the tables and figures read them
back from the comparison, so they are a query over tracked runs like every other table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from .compare import stats
from .compare.cells import Comparison
from .compare.figures import _pyplot

Table = dict[str, dict[float, tuple[float, float, float, int]]]  # optimizer → x → (mean, low, high, seeds)


@dataclass(frozen=True)
class Axis:
    name: str
    title: str

    def label(self, optimizer: str, x: float) -> str:
        return f"{optimizer}@{self.name}={x:g}"

    def of(self, label: str) -> tuple[str, float] | None:
        match = re.fullmatch(rf"(?P<optimizer>.+)@{self.name}=(?P<x>[^@=]+)", label)
        return (match["optimizer"], float(match["x"])) if match else None


BUDGET = Axis("budget", "tuning budget (settings tried; 1 = the defaults)")
LR = Axis("lr", "learning rate (optimizer.lr; the rest at the preset's defaults)")


def parse(text: str, what: str, integers: bool = False) -> tuple[float, ...]:
    """``"1,10,25"`` → (1, 10, 25): positive values, sorted, no repeats."""
    try:
        values = sorted({(int if integers else float)(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] <= 0 or not all(math.isfinite(v) for v in values):
        example = "1,10,25 (1 = the defaults)" if integers else "1e-4,1e-3,1e-2"
        raise ValueError(f"{what}={text!r}: give positive {'trial counts' if integers else 'values'}, e.g. {example}.")
    return tuple(values)


def best_within(study: optuna.Study, budget: int) -> dict:
    """The best setting among the study's first ``budget`` trials; {} (the defaults) for a budget of 1, or
    when every one of those trials failed."""
    if budget <= 1:
        return {}
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number < budget]
    return dict(max(done, key=lambda t: t.value).params) if done else {}


def table(comparison: Comparison, column: str, axis: Axis) -> Table:
    """optimizer → x → (mean, 95% t-interval low, high, seeds) of ``column`` (e.g. ``val_acc@10``)."""
    out: Table = {}
    for row in comparison.rows:
        found, cell = axis.of(row.label), row.cells.get(column)
        if found is None or cell is None or not cell.n:
            continue
        low, high = stats.t_interval(cell.values)  # NaN for one seed
        out.setdefault(found[0], {})[found[1]] = (cell.mean, low, high, cell.n)
    return out


def render(rows: Table, column: str, axis: Axis) -> str:
    """The table as text: one row per optimizer, one column per x, mean ± half-width."""
    xs = sorted({x for by_x in rows.values() for x in by_x})
    head = ["optimizer", *(f"{axis.name} {x:g}" for x in xs)]
    lines = [[name, *(_cell(by_x.get(x)) for x in xs)] for name, by_x in sorted(rows.items())]
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [f"{column} by {axis.title}, mean ± 95% t-interval over seeds"]
    out += [fmt.format(*head), "─" * (sum(widths) + 2 * (len(widths) - 1)), *(fmt.format(*r) for r in lines)]
    return "\n".join(out) + "\n"


def _cell(value: tuple[float, float, float, int] | None) -> str:
    if value is None:
        return "—"
    mean, low, high, n = value
    return f"{mean:.4f} (n={n})" if n < 2 else f"{mean:.4f} ±{(high - low) / 2:.4f}"


def figure(rows: Table, column: str, axis: Axis):
    """The result against x (log axis), one line per optimizer, bars = 95% t-intervals."""
    fig, ax = _pyplot().subplots(figsize=(7, 4.5), dpi=100)
    for name, by_x in sorted(rows.items()):
        xs = sorted(by_x)
        means = [by_x[x][0] for x in xs]
        errors = np.nan_to_num([[m - by_x[x][1] for x, m in zip(xs, means, strict=True)],
                                [by_x[x][2] - m for x, m in zip(xs, means, strict=True)]])  # fmt: skip
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ticks = sorted({x for by_x in rows.values() for x in by_x})
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])  # the values run, not log-decade ticks (2×10⁰ …)
    ax.minorticks_off()
    ax.set_xlabel(axis.title)
    ax.set_ylabel(column)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(f"{column} by {axis.name}: mean over seeds, bars = 95% t-interval")
    fig.tight_layout()
    return fig
