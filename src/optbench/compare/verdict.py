"""The verdict: the rows of each dataset in tiers of optimizers that the primary endpoint cannot tell
apart, one plain sentence, and what would change it (the seeds each unresolved pair would need).

The reference tier is the reference row (the ``--baseline``, else the best row) and every row not
significantly different from it (the Holm family of ``cells.attach_tests``). Rows significantly better
or worse are ordered by mean and split into further tiers where an adjacent pair differs significantly;
those adjacent-pair tests are a second declared family, Holm-corrected on their own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from . import stats
from .cells import Comparison, Row, better, paired_rows

NEEDS = f"a verdict needs at least {stats.MIN_TESTED} paired seeds per row"


@dataclass
class Unresolved:
    a: str
    b: str
    diff: float  # b - a on the primary endpoint
    half: float  # half-width of its 95% interval
    seeds: tuple[int, int] | None  # seeds to resolve it at 80% power (observed spread, upper bound); None: identical

    @property
    def text(self) -> str:
        gap = f"difference {self.diff:+.4f}" + ("" if math.isnan(self.half) else f" ± {self.half:.4f}")
        if self.seeds is None:
            return f"{self.a} vs {self.b}: identical on every seed; no number of seeds separates them"
        low, high = self.seeds
        cap = f"{stats.SEEDS_CAP:,}"
        span = f"more than {cap}" if low >= stats.SEEDS_CAP else f"{low}" if low == high else f"{low}–{high}"
        span = span.replace(f"–{stats.SEEDS_CAP}", f" to more than {cap}")
        return f"{self.a} vs {self.b}: {gap}; about {span} seeds to resolve it"


@dataclass
class Verdict:
    data: str
    primary: str
    reference: str
    against: str  # "best" or "baseline"
    tiers: list[list[str]] = field(default_factory=list)
    sentence: str = ""
    unresolved: list[Unresolved] = field(default_factory=list)
    test: str = "t"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["unresolved"] = [{**asdict(u), "text": u.text} for u in self.unresolved]
        return out


def endpoint_words(primary: str) -> str:
    metric, _, epoch = primary.partition("@")
    return f"{metric} at epoch {epoch}"


def decide(comparison: Comparison) -> list[Verdict]:
    """One verdict per dataset with a reference row and at least one other row."""
    out = []
    primary = comparison.primary
    for data, ref_label in sorted(comparison.references.items()):
        rows = [r for r in comparison.rows_of(data) if primary in r.cells]
        reference = next(r for r in rows if r.label == ref_label)
        others = [r for r in rows if r is not reference and primary in r.paired]
        if not others:
            continue
        against = "baseline" if comparison.baseline == ref_label else "best"
        verdict = Verdict(data, primary, ref_label, against, test=comparison.test)
        few = min(r.paired[primary].pairs for r in others)
        if few < stats.MIN_TESTED:
            verdict.sentence = (
                f"On {data} at {endpoint_words(primary)}: {few} paired seed{'s' if few != 1 else ''} per row, too "
                f"few to tell optimizers apart ({NEEDS}); {ref_label} has the {'best' if against == 'best' else 'baseline'} mean."
            )
            out.append(verdict)
            continue
        significant = {r.label: r.p_holm[primary] < stats.ALPHA for r in others}
        sign = 1 if better(primary) else -1
        tied = [r for r in others if not significant[r.label]]
        above = [r for r in others if significant[r.label] and sign * r.paired[primary].diff > 0]
        below = [r for r in others if significant[r.label] and sign * r.paired[primary].diff < 0]
        for r in tied:
            verdict.unresolved.append(_unresolved(reference, r, r.paired[primary], alpha=stats.ALPHA / len(others)))
        top = [reference, *sorted(tied, key=lambda r: -sign * r.cells[primary].mean)]
        (upper, lower), open_pairs, family = _split_outside([above, below], comparison)
        verdict.tiers = [[r.label for r in t] for t in (*upper, top, *lower)]
        verdict.unresolved += [_unresolved(a, b, pair, alpha=stats.ALPHA / family) for a, b, pair in open_pairs]
        verdict.sentence = _sentence(verdict, comparison, [*upper, top, *lower], reference)
        out.append(verdict)
    return out


def _split_outside(groups: list[list[Row]], comparison: Comparison):
    """Each group (rows above, rows below the reference tier) ordered best first, a new tier wherever an
    adjacent pair differs significantly: Holm over all adjacent pairs of both groups, one family.
    Returns the tiers per group, the adjacent pairs left unresolved, and the family's size."""
    primary = comparison.primary
    sign = 1 if better(primary) else -1
    ordered = [sorted(g, key=lambda r: -sign * r.cells[primary].mean) for g in groups]
    pairs = [
        (a, b, paired_rows(a, b, primary, comparison.test))
        for rows in ordered
        for a, b in zip(rows, rows[1:], strict=False)
    ]
    resolved = {
        (a.label, b.label): p < stats.ALPHA
        for (a, b, _), p in zip(pairs, stats.holm([pair.p for _, _, pair in pairs]), strict=True)
    }
    tiers = []
    for rows in ordered:
        split: list[list[Row]] = []
        for row in rows:
            if split and not resolved[(split[-1][-1].label, row.label)]:
                split[-1].append(row)
            else:
                split.append([row])
        tiers.append(split)
    return tiers, [t for t in pairs if not resolved[(t[0].label, t[1].label)]], max(1, len(pairs))


def _unresolved(a: Row, b: Row, pair: stats.Paired, alpha: float) -> Unresolved:
    half = (pair.ci_high - pair.ci_low) / 2 if not math.isnan(pair.ci_low) else math.nan
    return Unresolved(a.label, b.label, pair.diff, half, stats.seeds_needed(pair.diffs, alpha))


def _sentence(verdict: Verdict, comparison: Comparison, tiers: list[list[Row]], reference: Row) -> str:
    primary = comparison.primary

    def named(row: Row) -> str:
        if row is reference:
            return f"{row.label} ({verdict.against})"
        p = row.paired[primary]
        ci = "" if math.isnan(p.ci_low) else f" [{p.ci_low:+.4f}, {p.ci_high:+.4f}]"
        return f"{row.label} ({p.diff:+.4f}{ci})"

    where = f"On {verdict.data} at {endpoint_words(primary)}"
    if verdict.against == "baseline":
        where += f", against the baseline {reference.label}"
    text = "; then ".join(" ≈ ".join(named(r) for r in tier) for tier in tiers)
    return f"{where}: {text}."
