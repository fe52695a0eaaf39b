"""The comparison as one self-contained HTML page: the verdict first, the table, a forest plot of the
primary endpoint's differences, learning curves of the error rate on a log axis, time ratios, time to
target, ranks across datasets and performance profiles; the per-cell wall of p-values is collapsed.
Figures are inline SVG and the style is inline CSS: the page fetches nothing, so it opens offline and
inside the MLflow UI's artifact view. Every stored string is HTML-escaped."""

from __future__ import annotations

import io

from . import escape, render
from .cells import TIME, Comparison
from .figures import forest_plot, learning_curves, performance_profiles
from .profiles import mean_rank, profiles, ranks, time_to_target

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1300px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
.ref td{color:#777;font-size:.78rem}.note{color:#555;font-size:.85rem}
.verdict{background:#f3f8ff;border-left:4px solid #2a6ebb;padding:.6rem 1rem;font-size:1rem}
details summary{cursor:pointer;font-weight:600;margin:.8rem 0}
svg{max-width:100%;height:auto}
"""


_e = escape.html_text


def _table(heads: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def svg(fig) -> str:
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
            rows.append(["published (gap)", "", "", *(render.reference_text(row, c) for c in comparison.columns)])
            classes.append("ref")
    return _table(heads, rows, classes)


def verdict_section(comparison: Comparison) -> list[str]:
    if not comparison.verdicts:
        return ['<p class="verdict">No verdict: each dataset needs a reference row and one other row to compare.</p>']
    parts = ["<h2>Verdict</h2>"]
    for v in comparison.verdicts:
        parts.append(f'<p class="verdict">{_e(v.sentence)}</p>')
        if v.unresolved:
            parts.append("<ul>" + "".join(f"<li>{_e(u.text)}</li>" for u in v.unresolved) + "</ul>")
    if comparison.decision:
        parts.append(f'<p class="verdict">{_e(comparison.decision)}</p>')
    parts += [f'<p class="note">{_e(line)}</p>' for line in render.footer(comparison)]
    return parts


def differences(comparison: Comparison) -> list[str]:
    primary, parts = comparison.primary, []
    for data, reference in sorted(comparison.references.items()):
        rows = render.difference_rows(comparison, data, [primary])
        if not rows:
            continue
        with_effects = [
            [*cells, render.effect_text(r.paired[primary].effect), render.improvement_text(r)]
            for cells, r in zip(rows, [r for r in comparison.rows_of(data) if primary in r.paired], strict=True)
        ]
        parts.append(f"<h2>{_e(data)}: {_e(primary)} against {_e(reference)}</h2>")
        parts.append(_table([*render.DIFF_HEADS, "d_z", "P(better) [95%]"], with_effects))
        if times := render.time_rows(comparison, data):
            parts.append(f"<h3>{_e(render.header(TIME))} relative to {_e(reference)}</h3>")
            parts.append(_table(render.TIME_HEADS, times))
        others = [c for c in comparison.columns if c not in (primary, TIME)]
        wall = render.difference_rows(comparison, data, others)
        if wall:
            parts.append(
                "<details><summary>Every other cell: paired differences and unadjusted p-values (descriptive)</summary>"
                + _table(render.DIFF_HEADS, wall)
                + "</details>"
            )
    return parts


def build(comparison: Comparison, title: str, profile_level: float = 0.99, sections: list[str] = ()) -> str:
    """The HTML report; ``sections`` (HTML a command adds, e.g. the tuning-budget figure) go before the notes."""
    parts = [f"<h1>{_e(title)}</h1>", *verdict_section(comparison)]
    parts.append(
        f'<p class="note">Cells: mean ± half-width of the {render.INTERVAL}; aggregate: {comparison.aggregate}.</p>'
    )
    parts += ["<h2>Comparison</h2>", main_table(comparison)]
    if any(comparison.primary in r.paired for r in comparison.rows):
        parts += ["<h2>Differences on the primary endpoint</h2>", svg(forest_plot(comparison))]
    parts += differences(comparison)
    parts += ["<h2>Learning curves</h2>", svg(learning_curves(comparison))]
    targets, ratios = profiles(comparison, profile_level)
    if targets:
        parts.append("<h2>Time to target</h2>")
        parts.append(
            f'<p class="note">Training time until val_acc first reaches {profile_level:g} × the best final mean '
            "val_acc on that dataset: the Kaplan–Meier median over seeds (∞ while fewer than half reached it), "
            "the seeds that reached it, and Wilson's 95% interval of that share.</p>"
        )
        rows = []
        for data in sorted(targets):
            for row in comparison.rows_of(data):
                r = time_to_target(row, targets[data])
                median = "∞" if r.median == float("inf") else f"{r.median:.1f} s"
                share = f"{r.reached}/{r.seeds} [{r.share_low:.2f}, {r.share_high:.2f}]"
                rows.append([row.label, data, f"≥ {targets[data]:.4f}", median, share])
        parts.append(_table(["optimizer", "data", "target", "KM median", "reached [95%]"], rows))
        by_label = ranks(comparison)
        if by_label:
            datasets = sorted(targets)
            parts.append("<h2>Ranks across datasets (final validation accuracy, mean over seeds; 1 = best)</h2>")
            rank_rows = [
                [label, *(f"{by_data[d]:g}" if d in by_data else "—" for d in datasets), f"{mean_rank(by_data):.2f}"]
                for label, by_data in sorted(by_label.items(), key=lambda kv: mean_rank(kv[1]))
            ]
            parts.append(_table(["optimizer", *datasets, "mean rank"], rank_rows))
            parts.append('<p class="note">Equal means share the average of their ranks.</p>')
        parts += ["<h2>Performance profiles (Dolan–Moré)</h2>", svg(performance_profiles(targets, ratios))]
    parts += list(sections)
    notes = render.notes(comparison)
    if notes:
        parts += ["<h2>Not counted</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
