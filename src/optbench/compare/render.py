"""A comparison as text: a terminal table that fits 120 columns, markdown, CSV and JSON.

Cells read ``mean ±h`` where ``h`` is the half-width of the 95% t-interval over seeds. JSON and CSV hold
every number flat: ``val_acc@10``, ``val_acc@10_std``, ``val_acc@10_ci_low``/``_ci_high``, ``_n``; with a
reference ``_seed`` and ``_seed_diff``; with a baseline ``_diff``, ``_diff_ci_low``/``_high``, ``_p``,
``_p_holm``, ``_pairs`` and ``_unpaired``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys

from . import stats
from .cells import Cell, Comparison, Row

WIDTH = 120
INTERVAL = "95% t-interval over seeds"
TEST = "exact paired permutation test over shared seeds, Holm-adjusted across rows"


def _num(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def fmt(value: float, column: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if column.endswith("_s"):  # times, total_time_s included
        return f"{value:.1f}"
    return f"{value:g}" if "_to_" in column else f"{value:.4f}"


def header(column: str) -> str:
    if column == "total_time_s":
        return "time (s)"
    if "@" not in column:
        return column
    metric, epoch = column.split("@")
    return f"{'acc' if metric == 'val_acc' else 'loss'} e{epoch}"


def cell_text(row: Row, column: str) -> str:
    cell = row.cells.get(column)
    if cell is None:
        return "—"
    text = fmt(cell.mean, column)
    low, high = cell.ci
    if not math.isnan(low):
        text += f" ±{fmt((high - low) / 2, column)}"
    if "_to_" in column:  # a target: how many seeds reached it
        text += f" ({cell.n}/{len(row.run_ids)})"
    return text


def reference_text(row: Row, column: str) -> str:
    if column not in row.reference:
        return ""
    ref, cell = row.reference[column], row.cells.get(column)
    gap = f" {cell.mean - ref:+.4f}" if cell and column != "total_time_s" else ""
    return fmt(ref, column) + gap


def records(comparison: Comparison) -> list[dict]:
    out = []
    for row in comparison.rows:
        rec = {"optimizer": row.label, "data": row.data, "seeds": len(row.run_ids)}
        for column in comparison.columns:
            cell = row.cells.get(column, Cell())
            low, high = cell.ci
            rec.update({column: _num(cell.mean), f"{column}_std": _num(cell.std), f"{column}_n": cell.n})
            rec.update({f"{column}_ci_low": _num(low), f"{column}_ci_high": _num(high)})
            if column in row.reference:
                rec[f"{column}_seed"] = row.reference[column]
                rec[f"{column}_seed_diff"] = None if rec[column] is None else rec[column] - row.reference[column]
            if column in row.paired:
                p = row.paired[column]
                rec.update({f"{column}_diff": _num(p.diff), f"{column}_diff_ci_low": _num(p.ci_low)})
                rec.update({f"{column}_diff_ci_high": _num(p.ci_high), f"{column}_p": p.p})
                rec.update({f"{column}_p_holm": row.p_holm.get(column), f"{column}_pairs": p.pairs})
                rec[f"{column}_unpaired"] = p.unpaired
        out.append(rec)
    return out


def notes(comparison: Comparison) -> list[str]:
    """What the table left out, and why."""
    lines = []
    for ex in comparison.selection.excluded:
        reason = f" — {ex['reason']}" if ex["reason"] else ""
        lines.append(f"{ex['run_name']} ({ex['run_id'][:8]}): {ex['status']}{reason} — did not finish, not averaged in")
    for row in comparison.rows:
        for dup in row.group.duplicates:
            lines.append(
                f"{dup.info.run_name} ({dup.info.run_id[:8]}): same configuration and seed as a later run of "
                f"{row.label}; counted once (the latest finished)"
            )
    if comparison.selection.reruns_hidden:
        lines.append(
            f"{comparison.selection.reruns_hidden} rerun(s) not counted as seeds (--include-reruns shows them)"
        )
    return lines


def baseline_rows(comparison: Comparison) -> list[list[str]]:
    out = []
    for row in comparison.rows:
        for column in comparison.columns:
            p = row.paired.get(column)
            if p is None:
                continue
            ci = f"[{p.ci_low:+.4f}, {p.ci_high:+.4f}]" if not math.isnan(p.ci_low) else "—"
            shown_p = f"{p.p:.4f}" if p.p is not None else "—"  # why is said once, under the table
            holm = row.p_holm.get(column)
            pairs = f"{p.pairs}" + (f" (+{p.unpaired} unpaired)" if p.unpaired else "")
            diff = "—" if math.isnan(p.diff) else f"{p.diff:+.4f}"
            out.append(
                [row.label, row.data, header(column), pairs, diff, ci, shown_p, "—" if holm is None else f"{holm:.4f}"]
            )
    return out


BASELINE_HEADS = ["optimizer", "data", "cell", "pairs", "diff", "95% CI of diff", "p", "p (Holm)"]


def too_few_pairs(comparison: Comparison) -> str | None:
    """Why p-values are missing or cannot reach alpha: with n pairs the smallest possible p is 2/2^n, and
    Holm's correction across m rows makes the smallest adjusted p m times that."""
    smallest = min((p.pairs for r in comparison.rows for p in r.paired.values()), default=0)
    if smallest and stats.min_p(smallest) > stats.ALPHA:
        return (
            f"p: with {smallest} paired seeds no test can reach p < {stats.ALPHA:g} (the smallest possible p is "
            f"{stats.min_p(smallest):.4f}), so none is given; run at least 6 seeds for a p-value."
        )
    family = max((sum(c in r.paired for r in comparison.rows) for c in comparison.columns), default=0)
    if smallest and family * stats.min_p(smallest) > stats.ALPHA:
        return (
            f"p (Holm): with {smallest} paired seeds and {family} rows compared, no Holm-adjusted p can fall "
            f"below {family * stats.min_p(smallest):.4f}, however large a difference: none is significant at "
            f"{stats.ALPHA:g} after correction. Run at least {stats.pairs_needed(family)} seeds for that; "
            "until then read the intervals of the differences."
        )
    return None


def render(comparison: Comparison, fmt_name: str) -> str:
    if fmt_name == "json":
        payload = {
            "epochs": comparison.epochs,
            "aggregate": comparison.aggregate,
            "interval": INTERVAL,
            "baseline": comparison.baseline,
            "test": TEST if comparison.baseline else None,
            "rows": records(comparison),
            "excluded": comparison.selection.excluded,
            "notes": notes(comparison),
        }
        return json.dumps(payload, indent=2)
    if fmt_name == "csv":
        recs = records(comparison)
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=list(dict.fromkeys(k for r in recs for k in r)) or ["optimizer"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(recs)
        return buf.getvalue()
    if fmt_name == "markdown":
        return markdown(comparison)
    return terminal(comparison)


def markdown(comparison: Comparison) -> str:
    heads = ["optimizer", "data", "seeds", *map(header, comparison.columns)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in comparison.rows:
        cells = []
        for c in comparison.columns:
            ref = reference_text(row, c)
            cells.append(cell_text(row, c) + (f" (seed {ref})" if ref else ""))
        lines.append("| " + " | ".join([row.label, row.data, str(len(row.run_ids)), *cells]) + " |")
    lines.append(f"\nCells: mean ± half-width of the {INTERVAL} (aggregate: {comparison.aggregate}).")
    if comparison.baseline:
        lines += ["", f"Paired difference to **{comparison.baseline}** ({TEST}):", ""]
        lines += ["| " + " | ".join(BASELINE_HEADS) + " |", "|" + "---|" * len(BASELINE_HEADS)]
        lines += ["| " + " | ".join(r) + " |" for r in baseline_rows(comparison)]
        if note := too_few_pairs(comparison):
            lines += ["", note]
    lines += ["", *(f"- {n}" for n in notes(comparison))] if notes(comparison) else []
    return "\n".join(lines) + "\n"


def terminal(comparison: Comparison) -> str:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    datasets = sorted({r.data for r in comparison.rows})
    console = Console(file=io.StringIO(), width=WIDTH, force_terminal=sys.stdout.isatty())
    for data in datasets:
        rows = [r for r in comparison.rows if r.data == data]
        # Titles as lines of their own: rich would wrap a table's title to the (narrow) table's width.
        title = f"{data}: validation accuracy / loss by epoch, mean ±{INTERVAL} (aggregate: {comparison.aggregate})"
        console.print(title, markup=False)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        table.add_column("optimizer", justify="left", overflow="fold")
        table.add_column("n", justify="right")
        for column in comparison.columns:
            table.add_column(header(column), justify="right", no_wrap=True)
        for row in rows:
            # escape: a label like "adam [data.subset=512]" is not rich markup
            table.add_row(escape(row.label), str(len(row.run_ids)), *(cell_text(row, c) for c in comparison.columns))
            if row.reference:
                refs = [reference_text(row, c) for c in comparison.columns]
                table.add_row("  seed (gap)", "", *refs, style="dim")
        console.print(table)
    if comparison.baseline:
        console.print(f"Paired difference to {comparison.baseline} ({TEST})", markup=False)
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
        for h in BASELINE_HEADS:
            table.add_column(h, justify="left" if h in ("optimizer", "data", "cell") else "right", overflow="fold")
        for cells in baseline_rows(comparison):
            table.add_row(*map(escape, cells))
        console.print(table)
        if note := too_few_pairs(comparison):
            console.print(note, markup=False)
    for line in notes(comparison):
        console.print("  " + line, markup=False)
    return console.file.getvalue()
