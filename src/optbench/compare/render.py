"""A comparison as text: the cells' wording, markdown, CSV and JSON (the terminal table: ``terminal``).

Cells read ``mean ±h`` where ``h`` is the half-width of the 95% t-interval over seeds. JSON and CSV hold
every number flat: ``val_acc@10``, ``_std``, ``_ci_low``/``_ci_high``, ``_n``; with a reference ``_seed`` and
``_seed_diff``; against the reference row ``_diff``, ``_diff_ci_low``/``_high``, ``_p`` (unadjusted),
``_wins``, ``_pairs``, ``_unpaired``, ``_effect``, and on the primary endpoint ``_p_holm`` and
``_improvement`` (with ``_low``/``_high``); times ``total_time_s_ratio`` (with ``_low``/``_high``/``_p``).
Non-finite numbers are JSON ``null``; every stored string goes through ``escape``.
"""

from __future__ import annotations

import csv
import io
import json
import math

from . import escape, stats
from .cells import TIME, Comparison, Row
from .profiles import row_target_metric
from .records import records

INTERVAL = "95% t-interval over seeds"


def fmt(value: float | None, column: str) -> str:
    if value is None or not math.isfinite(value):
        return "—" if value is None or math.isnan(value) else ("∞" if value > 0 else "-∞")
    if abs(value) >= 1e7:
        return f"{value:.3g}"
    if column.endswith("_s"):  # times, total_time_s included
        return f"{value:.1f}"
    return f"{value:g}" if "_to_" in column else f"{value:.4f}"


def header(column: str) -> str:
    if column == TIME:
        return "time (s)"
    if "@" not in column:
        return column
    metric, epoch = column.split("@")
    return f"{'acc' if metric == 'val_acc' else 'loss'} e{epoch}"


def cell_text(row: Row, column: str) -> str:
    if "_to_" in column:  # a target: Kaplan-Meier median (seeds that reached it / seeds)
        return row_target_metric(row, column).text
    cell = row.cells.get(column)
    if cell is None:
        return "—"
    text = fmt(cell.mean, column)
    low, high = cell.ci
    if math.isfinite(low) and math.isfinite(high):
        text += f" ±{fmt((high - low) / 2, column)}"
    return text


def reference_text(row: Row, column: str) -> str:
    if column not in row.reference:
        return ""
    ref, cell = row.reference[column], row.cells.get(column)
    gap = f" {cell.mean - ref:+.4f}" if cell and column != TIME and math.isfinite(cell.mean) else ""
    return fmt(ref, column) + gap


def interval_text(low: float, high: float, signed: bool = True) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.4f}, {high:+.4f}]" if signed else f"[{low:.3f}, {high:.3f}]"


def p_text(p: float | None) -> str:
    return "—" if p is None else f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def difference_rows(comparison: Comparison, data: str, columns: list[str]) -> list[list[str]]:
    """[optimizer, cell, wins/n, diff, 95% CI, p, p (Holm)] for each row and column against the reference."""
    out = []
    for row in comparison.rows_of(data):
        for column in columns:
            p = row.paired.get(column)
            if p is None:
                continue
            holm = row.p_holm.get(column) if p.p is not None else None  # untested: counted in the family, not shown
            pairs = f"{p.wins}/{p.pairs}" + (f" (+{p.unpaired})" if p.unpaired else "")
            diff = "—" if math.isnan(p.diff) else f"{p.diff:+.4f}"
            out.append([row.label, header(column), pairs, diff, interval_text(p.ci_low, p.ci_high), p_text(p.p),
                        "—" if holm is None else p_text(holm)])  # fmt: skip
    return out


DIFF_HEADS = ["optimizer", "cell", "wins/n", "diff", "95% CI of diff", "p", "p (Holm)"]


def time_rows(comparison: Comparison, data: str) -> list[list[str]]:
    """[optimizer, time ratio, 95% CI, Welch p] against the reference row."""
    return [
        [
            row.label,
            f"×{row.time.ratio:.3f}",
            interval_text(row.time.low, row.time.high, signed=False),
            p_text(row.time.p),
        ]
        for row in comparison.rows_of(data)
        if row.time is not None and math.isfinite(row.time.ratio)
    ]


TIME_HEADS = ["optimizer", "time ratio", "95% CI", "p (Welch)"]


def effect_text(effect: float) -> str:
    return f"{effect:+.2f}" if math.isfinite(effect) else "—"


def improvement_text(row: Row) -> str:
    if row.improvement is None:
        return "—"
    point, low, high = row.improvement
    return f"{point:.2f}" + (f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) else "")


def footer(comparison: Comparison) -> list[str]:
    """The declarations under the tables: what was tested, how, and what is descriptive."""
    if not comparison.primary or not comparison.references:
        return []
    lines = [
        f"Primary endpoint: {comparison.primary} (--primary); {stats.TEST_NAMES[comparison.test]}, Holm-corrected "
        "over the rows of each dataset against its reference row. Tiers below the reference tier come from "
        "adjacent-pair tests, their own Holm family. Every other column is descriptive (intervals, unadjusted p)."
    ]
    small = sorted(
        {
            p.pairs
            for r in comparison.rows
            for p in r.paired.values()
            if stats.MIN_TESTED <= p.pairs < stats.NORMALITY_CHECKABLE
        }
    )
    if small and comparison.test == "t":
        lines.append(
            f"With {', '.join(map(str, small))} pairs the normality of the differences cannot be checked; "
            "--test permutation or --test wilcoxon give a check without it."
        )
    if comparison.test == "permutation":
        counts = sorted({p.nonzero for r in comparison.rows for p in r.paired.values() if p.pairs >= stats.MIN_TESTED})
        if counts:
            lines.append(
                f"Exact sign flips: with k non-zero pairs p cannot go below 2/2^k (k = {counts[0]}: {stats.sign_flip_floor(counts[0]):.4f})."
            )
    for data, why in sorted(comparison.time_sharing.items()):
        lines.append(f"Times on {data} are not like-for-like: {why}; read the time ratios as indicative only.")
    return lines


def notes(comparison: Comparison) -> list[str]:
    """What the table left out, and why (stored strings shown as data, control characters visible)."""
    lines = []
    for ex in comparison.selection.excluded:
        reason = f" — {ex['reason']}" if ex["reason"] else ""
        unfinished = " — did not finish" if ex["status"] != "FINISHED" else ""
        lines.append(f"{ex['run_name']} ({ex['run_id'][:8]}): {ex['status']}{reason}{unfinished}, not averaged in")
    for row in comparison.rows:
        for dup in row.group.duplicates:
            lines.append(
                f"{dup.info.run_name} ({dup.info.run_id[:8]}): same configuration and seed as a later run of "
                f"{row.label}; counted once (the latest finished)"
            )
        for seed, runs in sorted(row.group.conflicts.items()):
            who = ", ".join(f"{r.info.run_id[:8]} by {r.data.tags.get('mlflow.user', '?')}" for r in runs)
            lines.append(
                f"CONFLICT {row.label} seed {seed}: runs of different users with the same configuration and seed "
                f"({who}); none is averaged in until one is deleted"
            )
    if comparison.selection.reruns_hidden:
        lines.append(
            f"{comparison.selection.reruns_hidden} rerun(s) not counted as seeds (--include-reruns shows them)"
        )
    return [escape.terminal(line) for line in lines]


def payload(comparison: Comparison) -> dict:
    return {
        "epochs": comparison.epochs,
        "aggregate": comparison.aggregate,
        "interval": INTERVAL,
        "primary": comparison.primary,
        "baseline": comparison.baseline,
        "references": comparison.references,
        "test": stats.TEST_NAMES[comparison.test] if comparison.references else None,
        "verdict": [v.as_dict() for v in comparison.verdicts],
        "decision": comparison.decision,
        "time_not_like_for_like": comparison.time_sharing,
        "rows": records(comparison),
        "excluded": comparison.selection.excluded,
        "notes": notes(comparison),
    }


def render(comparison: Comparison, fmt_name: str, width: int | None = None) -> str:
    if fmt_name == "json":
        return json.dumps(payload(comparison), indent=2, allow_nan=False)
    if fmt_name == "csv":
        recs = [{k: escape.csv_cell(v) for k, v in r.items()} for r in records(comparison)]
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=list(dict.fromkeys(k for r in recs for k in r)) or ["optimizer"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(recs)
        return buf.getvalue()
    if fmt_name == "markdown":
        return markdown(comparison)
    from .terminal import terminal

    return terminal(comparison, width)


def _md_table(heads: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + [
        "| " + " | ".join(escape.markdown(c) for c in r) + " |" for r in rows
    ]


def markdown(comparison: Comparison) -> str:
    lines = []
    for verdict in comparison.verdicts:
        lines += [f"**Verdict.** {escape.markdown(verdict.sentence)}", ""]
        lines += [f"- {escape.markdown(u.text)}" for u in verdict.unresolved]
        lines += [""] if verdict.unresolved else []
    if comparison.decision:
        lines += [escape.markdown(comparison.decision), ""]
    heads = ["optimizer", "data", "seeds", *map(header, comparison.columns)]
    body = []
    for row in comparison.rows:
        cells = []
        for c in comparison.columns:
            ref = reference_text(row, c)
            cells.append(cell_text(row, c) + (f" (seed {ref})" if ref else ""))
        body.append([row.label, row.data, str(len(row.run_ids)), *cells])
    lines += _md_table(heads, body)
    lines.append(f"\nCells: mean ± half-width of the {INTERVAL} (aggregate: {comparison.aggregate}).")
    for data, reference in sorted(comparison.references.items()):
        ordered = [comparison.primary, *(c for c in comparison.columns if c not in (comparison.primary, TIME))]
        rows = difference_rows(comparison, data, ordered)
        if not rows:
            continue
        lines += ["", f"Paired difference to **{escape.markdown(reference)}** on {data} (primary endpoint first):", ""]
        lines += _md_table(DIFF_HEADS, rows)
        if times := time_rows(comparison, data):
            lines += ["", f"Wall time relative to {escape.markdown(reference)} on {data}:", ""]
            lines += _md_table(TIME_HEADS, times)
    lines += ["", *footer(comparison)] if footer(comparison) else []
    lines += ["", *(f"- {escape.markdown(n)}" for n in notes(comparison))] if notes(comparison) else []
    return "\n".join(lines) + "\n"
