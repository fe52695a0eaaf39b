"""Comparisons built from synthetic per-seed values (no training, no store): where exactness matters."""

from __future__ import annotations

from types import SimpleNamespace

from optbench.compare import verdict
from optbench.compare.cells import Cell, Comparison, Row, attach_tests
from optbench.compare.query import Group, Selection


def fake_run(label: str, seed: int, tags: dict | None = None, params: dict | None = None):
    info = SimpleNamespace(
        run_id=f"{abs(hash((label, seed))):032x}"[:32], run_name=f"{label}-seed{seed}", status="FINISHED"
    )
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags or {}, params=params or {}, metrics={}))


def full_rows(values: dict[str, dict[int, float]], epochs=(1, 5, 10)) -> dict[str, dict[str, dict[int, float]]]:
    """Every column of a seed-protocol table from one final accuracy per seed (made-up but plausible)."""
    out = {}
    for label, by_seed in values.items():
        cols = {}
        for e in epochs:
            cols[f"val_acc@{e}"] = {s: v - 0.02 * (10 - e) / 9 for s, v in by_seed.items()}
            cols[f"val_loss@{e}"] = {s: (1 - v) * 3 + 0.01 * (10 - e) for s, v in by_seed.items()}
        cols["total_time_s"] = {s: 300 + 10 * s + 40 * v for s, v in by_seed.items()}
        out[label] = cols
    return out


def comparison(
    values: dict[str, dict[int, float]],
    *,
    columns: dict[str, dict[str, dict[int, float]]] | None = None,
    column: str = "val_acc@10",
    data: str = "mnist",
    times: dict[str, dict[int, float]] | None = None,
    tags: dict | None = None,
    baseline: str | None = None,
    test: str = "t",
    val_count: int | None = None,
    references: dict[str, dict[str, float]] | None = None,
) -> Comparison:
    """Rows named by ``values``' keys, each a seed → value map of ``column`` (plus optional times)."""
    rows = []
    for label, by_seed in values.items():
        group = Group(label, data, (), {s: fake_run(label, s, tags) for s in by_seed})
        row = Row(group, cells={column: Cell(dict(by_seed))}, val_count=val_count)
        for name, cells in (columns or {}).get(label, {}).items():
            row.cells[name] = Cell(dict(cells))
        row.curves = {"val_acc": {s: [v] for s, v in by_seed.items()}, "epoch_time_s": {s: [1.0] for s in by_seed}}
        if times and label in times:
            row.cells["total_time_s"] = Cell(dict(times[label]))
        rows.append(row)
    epochs = sorted(
        {int(c.split("@")[1]) for cols in (columns or {}).values() for c in cols if "@" in c}
        | {int(column.split("@")[1])}
    )
    result = Comparison(epochs, rows, Selection([r.group for r in rows], []), primary=column)
    for row in rows:
        row.reference = (references or {}).get(row.label, {})
    attach_tests(result, baseline, test)
    result.verdicts = verdict.decide(result)
    return result
