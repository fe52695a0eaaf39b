"""A comparison as flat records, one per row: every number JSON, CSV and the summary run's table hold
(keys named in ``render``'s docstring; non-finite numbers as None)."""

from __future__ import annotations

import math

from .cells import TIME, Cell, Comparison
from .profiles import row_target_metric


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def records(comparison: Comparison) -> list[dict]:
    out = []
    for row in comparison.rows:
        rec = {"optimizer": row.label, "data": row.data, "seeds": len(row.run_ids)}
        rec["reference"] = comparison.references.get(row.data)
        for column in comparison.columns:
            cell = row.cells.get(column, Cell())
            low, high = cell.ci
            rec.update({column: _num(cell.mean), f"{column}_std": _num(cell.std), f"{column}_n": cell.n})
            rec.update({f"{column}_ci_low": _num(low), f"{column}_ci_high": _num(high)})
            if "_to_" in column:
                reached = row_target_metric(row, column)
                rec.update({f"{column}_km_median": _num(reached.median), f"{column}_reached": reached.reached})
                rec.update(
                    {
                        f"{column}_reached_low": _num(reached.share_low),
                        f"{column}_reached_high": _num(reached.share_high),
                    }
                )
            if column in row.reference:
                rec[f"{column}_seed"] = row.reference[column]
                rec[f"{column}_seed_diff"] = None if rec[column] is None else rec[column] - row.reference[column]
            if column in row.paired:
                p = row.paired[column]
                rec.update({f"{column}_diff": _num(p.diff), f"{column}_diff_ci_low": _num(p.ci_low)})
                rec.update({f"{column}_diff_ci_high": _num(p.ci_high), f"{column}_p": p.p, f"{column}_wins": p.wins})
                rec.update(
                    {f"{column}_pairs": p.pairs, f"{column}_unpaired": p.unpaired, f"{column}_effect": _num(p.effect)}
                )
            if column in row.p_holm:
                rec[f"{column}_p_holm"] = row.p_holm[column]
            if column == comparison.primary and row.improvement is not None:
                point, low, high = row.improvement
                rec.update(
                    {
                        f"{column}_improvement": point,
                        f"{column}_improvement_low": _num(low),
                        f"{column}_improvement_high": _num(high),
                    }
                )
        if row.time is not None:
            t = row.time
            rec.update(
                {
                    f"{TIME}_ratio": _num(t.ratio),
                    f"{TIME}_ratio_low": _num(t.low),
                    f"{TIME}_ratio_high": _num(t.high),
                    f"{TIME}_ratio_p": t.p,
                }
            )
        out.append(rec)
    return out  # fmt: skip
