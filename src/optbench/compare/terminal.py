"""The comparison in a terminal, readable at any width from 80 columns, on a screen or piped to a file.

The verdict comes first. Each table keeps every label whole and every row on one line: when its columns
do not fit the width, they are dealt into several tables that repeat the label column. The published
values and our gaps are a table of their own, as are the differences on the primary endpoint and the
time ratios; the per-cell wall of p-values is in ``--format markdown``/``json`` and the HTML report.
"""

from __future__ import annotations

import io
import os
import sys
import textwrap

from . import escape, render
from .cells import TIME, Comparison

PIPED_WIDTH = 120  # when stdout is not a terminal and COLUMNS is unset
GAP = 3  # what rich adds to a cell: one space of padding each side and one of separator


def width_for(stream=None) -> int:
    stream = stream or sys.stdout
    if stream.isatty():
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except OSError:
            pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else PIPED_WIDTH


def chunks(labels: list[str], columns: list[tuple[str, list[str]]], width: int) -> list[list[tuple[str, list[str]]]]:
    """Columns dealt into groups that fit ``width`` beside the label column (at least one per group)."""
    first = max(len(x) for x in labels) + GAP
    groups: list[list[tuple[str, list[str]]]] = [[]]
    used = first
    for head, cells in columns:
        need = max(len(head), *(len(c) for c in cells)) + GAP
        if groups[-1] and used + need > width:
            groups.append([])
            used = first
        groups[-1].append((head, cells))
        used += need
    return groups


def tables(console, title: str, label_head: str, labels: list[str], columns, style_rows=None) -> None:
    """``title``, then one or more tables with every label whole, one line per row."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console.print()
    for line in textwrap.wrap(title, console.width, subsequent_indent="  "):
        console.print(Text(line, style="bold"), soft_wrap=True)
    groups = chunks([label_head, *labels], columns, console.width)
    for i, group in enumerate(groups):
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False)
        table.add_column(label_head, justify="left", no_wrap=True)
        for head, _ in group:
            table.add_column(head, justify="right", no_wrap=True)
        for r, label in enumerate(labels):
            table.add_row(Text(label), *(Text(cells[r]) for _, cells in group), style=(style_rows or {}).get(r))
        console.print(table)
        if len(groups) > 1 and i < len(groups) - 1:
            console.print(Text("  (continued)", style="dim"))


def terminal(comparison: Comparison, width: int | None = None, color: bool | None = None) -> str:
    from rich.console import Console
    from rich.text import Text

    console = Console(
        file=io.StringIO(), width=width or width_for(), force_terminal=sys.stdout.isatty() if color is None else color,
        highlight=False, emoji=False, markup=False,
    )  # fmt: skip

    def say(text: str, style: str | None = None, indent: str = "", hang: str = "  ") -> None:
        """A paragraph wrapped to the width, continuation lines indented."""
        for line in textwrap.wrap(
            escape.terminal(text), console.width, initial_indent=indent, subsequent_indent=indent + hang
        ):
            console.print(Text(line, style=style or ""), soft_wrap=True)

    for verdict in comparison.verdicts:
        say(f"Verdict — {verdict.sentence}", "bold")
        for u in verdict.unresolved:
            say(f"unresolved: {u.text}", indent="  ", hang="    ")
    if comparison.decision:
        say(comparison.decision)
    for data in comparison.datasets:
        rows = comparison.rows_of(data)
        labels = [escape.terminal(r.label) for r in rows]
        cols = [(render.header(c), [render.cell_text(r, c) for r in rows]) for c in comparison.columns]
        title = f"{data}: validation accuracy / loss by epoch, mean ± half-width of the {render.INTERVAL} (aggregate: {comparison.aggregate})"
        tables(
            console, escape.terminal(title), "optimizer", labels, [("n", [str(len(r.run_ids)) for r in rows]), *cols]
        )
        published = [r for r in rows if r.reference]
        if published:
            labels = [escape.terminal(r.label) for r in published]
            cols = [(render.header(c), [render.reference_text(r, c) for r in published]) for c in comparison.columns]
            tables(
                console,
                f"{data}: the seed article's published values and our gap (ours − published)",
                "optimizer",
                labels,
                cols,
            )
        _differences(console, comparison, data)
    console.print()
    for line in render.footer(comparison):
        say(line, "dim")
    for line in render.notes(comparison):
        say(line, indent="  ")
    return console.file.getvalue()


def _differences(console, comparison: Comparison, data: str) -> None:
    reference = comparison.references.get(data)
    primary = comparison.primary
    rows = [r for r in comparison.rows_of(data) if primary in r.paired]
    if reference is None or not rows:
        return
    labels = [escape.terminal(r.label) for r in rows]
    diff = render.difference_rows(comparison, data, [primary])
    cols = [(h, [d[i] for d in diff]) for i, h in enumerate(render.DIFF_HEADS) if h not in ("optimizer", "cell")]
    cols.append(("d_z", [render.effect_text(r.paired[primary].effect) for r in rows]))
    cols.append(("P(better) [95%]", [render.improvement_text(r) for r in rows]))
    title = f"{data}: {primary} against {escape.terminal(reference)} ({'baseline' if comparison.baseline == reference else 'best'}), the primary endpoint"
    tables(console, title, "optimizer", labels, cols)
    times = render.time_rows(comparison, data)
    if times:
        cols = [(h, [t[i] for t in times]) for i, h in enumerate(render.TIME_HEADS) if i]
        title = f"{data}: {render.header(TIME)} relative to {escape.terminal(reference)} (Welch's test on log times)"
        tables(console, title, "optimizer", [escape.terminal(t[0]) for t in times], cols)
