"""An adaptive seed sweep: rounds of seeds until every adjacent pair of the ranking is resolved on the
primary endpoint (``compare.sequential``, valid under this optional stopping), or ``max_seeds``.

The Hydra sweeper (``hydra/sweeper=adaptive``) launches each round through the chosen launcher; this module
plans the rounds, reads the store after each one (the same query as ``optbench-compare --sweep``) and
records the decision: printed at the end and logged as the sweep's decision run, which the comparison's
verdict then shows. Rounds that the store already holds cost nothing (``cache``), so rerunning the command
with a larger ``max_seeds`` trains only the new seeds.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field

import mlflow

from . import store
from .compare import compare, sequential
from .compare.cells import base_label, better
from .compare.query import DECISION, SUMMARY_TAG
from .jobs import clock


@dataclass
class Plan:
    initial_seeds: int = 3
    seeds_per_round: int = 1
    max_seeds: int = 20
    first_seed: int = 1

    def __post_init__(self):
        if self.initial_seeds < 2:
            raise ValueError(f"initial_seeds={self.initial_seeds}: the test needs at least 2 seeds per row")
        if self.seeds_per_round < 1:
            raise ValueError(f"seeds_per_round={self.seeds_per_round}; it must be >= 1")
        if self.max_seeds < self.initial_seeds:
            raise ValueError(f"max_seeds={self.max_seeds} is below initial_seeds={self.initial_seeds}")

    def rounds(self) -> list[list[int]]:
        """The seeds of each round, up to ``max_seeds`` seeds per row."""
        last = self.first_seed + self.max_seeds
        out = [list(range(self.first_seed, self.first_seed + self.initial_seeds))]
        while out[-1][-1] + 1 < last:
            start = out[-1][-1] + 1
            out.append(list(range(start, min(start + self.seeds_per_round, last))))
        return out


@dataclass
class Round:
    number: int
    seeds: list[int]
    trained: int
    reused: int
    not_finished: int
    elapsed_s: float
    resolved: list[str] = field(default_factory=list)  # adjacent pairs first resolved at this round
    rows: int = 0  # rows that got seeds this round (rows whose neighbours are resolved get no more)


@dataclass
class Decision:
    sweep: str
    primary: str
    alpha: float
    plan: Plan
    rounds: list[Round] = field(default_factory=list)
    datasets: dict[str, sequential.DatasetDecision] = field(default_factory=dict)
    seeds_per_row: dict[str, int] = field(default_factory=dict)
    stopped: str = ""  # "resolved", "max_seeds", or why the sweep stopped early

    @property
    def resolved(self) -> bool:
        return bool(self.datasets) and all(d.resolved for d in self.datasets.values())

    def as_dict(self) -> dict:
        out = asdict(self)
        out["procedure"] = sequential.PROCEDURE
        out["datasets"] = {
            data: {"ranking": d.ranking, "family": d.family, "adjacent": [asdict(p) for p in d.adjacent]}
            for data, d in self.datasets.items()
        }
        out["sentence"] = self.sentence()
        return out

    def sentence(self) -> str:
        seeds = sorted(set(self.seeds_per_row.values()))
        used = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}" if seeds else "no"
        how = {"resolved": "every adjacent pair of the ranking resolved", "max_seeds": "max_seeds reached"}
        text = (
            f"Adaptive sweep {self.sweep}: stopped after round {len(self.rounds)} with {used} seeds per row "
            f"({how.get(self.stopped, self.stopped)}; {self.primary}, anytime-valid at alpha {self.alpha:g})."
        )
        open_pairs = [p for d in self.datasets.values() for p in d.adjacent if not p.resolved]
        if open_pairs:
            text += " Unresolved: " + "; ".join(_unresolved(p) for p in open_pairs) + "."
        return text

    def lines(self, width: int = 120, wrap_sentence: bool = False) -> list[str]:
        """The decision as printed at the end of the sweep: one line per round (its list of resolved pairs
        wrapped under its own column to ``width``), then the sentence (wrapped too for a terminal; one line in a
        log, where it is grepped)."""
        out = ["  round  seeds    rows  trained  reused  not finished  time     resolved at this round"]
        for r in self.rounds:
            seeds = _span(r.seeds).lstrip("s ")
            head = (
                f"  {r.number:<5}  {seeds:<7}  {r.rows:<4}  {r.trained:<7}  {r.reused:<6}  {r.not_finished:<12}  "
                f"{clock(r.elapsed_s):<7}  "
            )
            whole = ", ".join(p.replace(" ", "\xa0") for p in r.resolved) or "-"  # a pair never splits
            pairs = [
                line.replace("\xa0", " ")
                for line in textwrap.wrap(whole, max(24, width - len(head)), break_long_words=False)
            ]
            out += [head + pairs[0], *(" " * len(head) + more for more in pairs[1:])]
        return [*out, *(textwrap.wrap(self.sentence(), width) if wrap_sentence else [self.sentence()])]


def round_line(decision: Decision) -> str:
    """One line after each round: what it cost and what is still open."""
    r = decision.rounds[-1]
    open_pairs = [f"{p.a} vs {p.b}" for d in decision.datasets.values() for p in d.adjacent if not p.resolved]
    return (
        f"[optbench] adaptive round {r.number} (seed{_span(r.seeds)}, {r.rows} rows): {r.trained} trained, "
        f"{r.reused} from the store, {clock(r.elapsed_s)}; resolved now: {', '.join(r.resolved) or 'none'}; "
        f"open: {', '.join(open_pairs) or 'none'}"
    )


def _span(seeds: list[int]) -> str:
    return f"s {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else f" {seeds[0]}"


def _unresolved(pair: sequential.PairResult) -> str:
    if pair.seeds is None:
        return f"{pair.a} vs {pair.b} (identical on every seed; no number of seeds separates them)"
    many = pair.seeds > sequential.MAX_SEEDS_ESTIMATE
    about = f"more than {sequential.MAX_SEEDS_ESTIMATE:,}" if many else f"about {pair.seeds}"
    return f"{pair.a} vs {pair.b} (difference {pair.diff:+.4f}; {about} seeds at the observed effect)"


def look(
    decision: Decision,
    client: mlflow.MlflowClient,
    experiment: str,
    epochs: list[int],
    launched: dict[tuple[str, str], int],
) -> None:
    """Read the sweep's runs from the store and decide every dataset on the seeds launched so far
    (``launched``: (data, label) → last seed; the store may hold more, from an earlier run of the sweep);
    mark pairs newly resolved."""
    before = {(d, p.a, p.b) for d, dd in decision.datasets.items() for p in dd.adjacent if p.resolved}
    comparison = compare(client, experiment, decision.sweep, epochs=tuple(epochs), primary=decision.primary)
    primary = comparison.primary
    decision.datasets, decision.seeds_per_row = {}, {}
    for data in comparison.datasets:
        values = {
            r.label: {s: v for s, v in r.cells[primary].by_seed.items() if s <= launched[(data, base_label(r))]}
            for r in comparison.rows_of(data)
            if primary in r.cells and (data, base_label(r)) in launched
        }
        decision.seeds_per_row.update({label: len(v) for label, v in values.items()})
        decision.datasets[data] = sequential.decide(data, values, better(primary), decision.alpha)
    if decision.rounds:
        decision.rounds[-1].resolved = [
            f"{p.a} > {p.b}" if better(primary) else f"{p.a} < {p.b}"
            for d, dd in decision.datasets.items()
            for p in dd.adjacent
            if p.resolved and (d, p.a, p.b) not in before
        ]


def open_rows(decision: Decision) -> set[tuple[str, str]]:
    """(data, label) of every row in an unresolved adjacent pair: the rows the next round gives seeds."""
    return {
        (data, label.split(" [")[0])
        for data, d in decision.datasets.items()
        for p in d.adjacent
        if not p.resolved
        for label in (p.a, p.b)
    }


def log_decision(client: mlflow.MlflowClient, experiment: str, decision: Decision) -> str:
    """The decision as a run of the sweep (kind ``decision``): its sentence as a tag, the rest as JSON."""
    exp_id = store.get_or_create_experiment(client, experiment)
    tags = {SUMMARY_TAG: DECISION, "sweep_id": decision.sweep, DECISION: decision.sentence()[:5000]}
    run = client.create_run(exp_id, run_name=f"decision-{decision.sweep}", tags=tags)
    client.log_text(run.info.run_id, json.dumps(_strict(decision.as_dict()), indent=1), "decision.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _strict(value):
    """NaN and infinities as null: strict JSON parsers reject them."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
