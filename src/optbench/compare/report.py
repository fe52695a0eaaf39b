"""The comparison as one self-contained HTML page: tables, intervals, paired tests, learning curves,
time to target, ranks across datasets and performance profiles. Figures are inline SVG and the style is
inline CSS: the page fetches nothing, so it opens offline and inside the MLflow UI's artifact view."""

from __future__ import annotations

import html
import io
import math

from . import render
from .cells import Comparison, base_label, profiles, ranks, time_to_target
from .figures import learning_curves, performance_profiles

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1300px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
.ref td{color:#777;font-size:.78rem}.note{color:#555;font-size:.85rem}.sig{font-weight:600}
svg{max-width:100%;height:auto}
"""


def _table(heads: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def main_table(comparison: Comparison) -> str:
    heads = ["optimizer", "data", "seeds", *map(render.header, comparison.columns)]
    rows, classes = [], []
    for row in comparison.rows:
        rows.append(
            [row.label, row.data, str(len(row.run_ids)), *(render.cell_text(row, c) for c in comparison.columns)]
        )
        classes.append("")
        if row.reference:
            rows.append(["seed (gap)", "", "", *(render.reference_text(row, c) for c in comparison.columns)])
            classes.append("ref")
    return _table(heads, rows, classes)


def build(comparison: Comparison, title: str, profile_level: float = 0.99) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.append(
        f'<p class="note">Cells: mean ± half-width of the {render.INTERVAL}; aggregate: {comparison.aggregate}.</p>'
    )
    parts += ["<h2>Comparison</h2>", main_table(comparison)]
    if comparison.baseline:
        parts += [
            f"<h2>Paired difference to {html.escape(comparison.baseline)}</h2>",
            f'<p class="note">{render.TEST}.</p>',
        ]
        parts.append(_table(render.BASELINE_HEADS, render.baseline_rows(comparison)))
        if note := render.too_few_pairs(comparison):
            parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts += ["<h2>Learning curves</h2>", _svg(learning_curves(comparison))]
    targets, ratios = profiles(comparison, profile_level)
    if targets:
        parts.append("<h2>Time to target</h2>")
        parts.append(
            f'<p class="note">Training time (median over seeds) until val_acc first reaches {profile_level:g} × the '
            "best final mean val_acc on that dataset; ∞: most seeds never reached it.</p>"
        )
        datasets = sorted(targets)
        rows = []
        for label in sorted({base_label(r) for r in comparison.rows}):
            cells = []
            for data in datasets:
                row = next((r for r in comparison.rows if r.data == data and base_label(r) == label), None)
                t = time_to_target(row, targets[data]) if row else math.nan
                cells.append("—" if math.isnan(t) else "∞" if math.isinf(t) else f"{t:.1f} s")
            rows.append([label, *cells])
        parts.append(_table(["optimizer", *(f"{d} (≥ {targets[d]:.4f})" for d in datasets)], rows))
        by_label = ranks(comparison)
        if by_label:
            parts.append("<h2>Ranks across datasets (final validation accuracy, mean over seeds; 1 = best)</h2>")
            rank_rows = []
            for label, by_data in sorted(by_label.items(), key=lambda kv: sum(kv[1].values()) / len(kv[1])):
                mean = sum(by_data.values()) / len(by_data)
                rank_rows.append([label, *(str(by_data.get(d, "—")) for d in datasets), f"{mean:.2f}"])
            parts.append(_table(["optimizer", *datasets, "mean rank"], rank_rows))
        parts += ["<h2>Performance profiles (Dolan–Moré)</h2>", _svg(performance_profiles(targets, ratios))]
    notes = render.notes(comparison)
    if notes:
        parts += ["<h2>Not counted</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
