"""Cells, aggregates, ranks and time to target on synthetic metric histories (no training): each bug the
review found, with the answer computed by hand."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from optbench.compare import profiles, render
from optbench.compare.cells import Cell, CompareError, build
from optbench.compare.query import Group, Selection

from .synthetic import comparison, fake_run


class Histories:
    """A stand-in for MlflowClient.get_metric_history: run id → metric → {epoch: value}."""

    def __init__(self, table):
        self.table = table

    def get_metric_history(self, run_id, metric):
        return [SimpleNamespace(step=e, value=v) for e, v in self.table.get(run_id, {}).get(metric, {}).items()]


def selection(runs_by_label: dict[str, dict[int, dict]], params: dict) -> tuple[Selection, Histories]:
    groups, table = [], {}
    for label, by_seed in runs_by_label.items():
        runs = {}
        for seed, metrics in by_seed.items():
            run = fake_run(label, seed, params=params)
            table[run.info.run_id] = metrics
            runs[seed] = run
        groups.append(Group(label, "mnist", (), runs))
    return Selection(groups, []), Histories(table)


HISTORY = {
    "val_acc": {1: 0.90, 2: 0.95, 3: 0.93},
    "val_loss": {1: 0.30, 2: 0.20, 3: 0.10},
    "epoch_time_s": {1: 1, 2: 1, 3: 1},
}


def test_aggregate_best_takes_every_cell_from_the_best_epoch():
    sel, client = selection({"adam": {1: HISTORY}}, {"data.val_split": "10000"})
    (row,) = build(client, sel, [1, 3], aggregate="best").rows
    # The best val_acc up to epoch 3 is epoch 2's: its loss (0.20) comes with it, not the lowest loss (0.10).
    assert row.cells["val_acc@3"].mean == 0.95 and row.cells["val_loss@3"].mean == 0.20
    (last,) = build(client, sel, [1, 3], aggregate="last").rows
    assert last.cells["val_acc@3"].mean == 0.93 and last.cells["val_loss@3"].mean == 0.10


def test_aggregate_best_on_the_test_set_is_refused():
    sel, client = selection({"adam": {1: HISTORY}}, {"data.val_split": "None"})
    with pytest.raises(CompareError, match="validated on the test set"):
        build(client, sel, [1, 3], aggregate="best")


def test_one_seed_has_no_spread():
    sel, client = selection({"adam": {1: HISTORY}}, {})
    result = build(client, sel, [3])
    assert math.isnan(result.rows[0].cells["val_acc@3"].std)
    rec = json.loads(render.render(result, "json"))["rows"][0]
    assert rec["val_acc@3_std"] is None and rec["val_acc@3_ci_low"] is None and rec["val_acc@3"] == 0.93


def test_ranks_keep_split_rows_apart_and_average_ties():
    values = {
        "adam [data.subset=512]": {1: 0.99, 2: 0.99, 3: 0.99},
        "adam [data.subset=1024]": {1: 0.99, 2: 0.99, 3: 0.99},
        "sgd": {1: 0.95, 2: 0.95, 3: 0.95},
    }
    ranks = profiles.ranks(comparison(values))
    assert ranks["adam [data.subset=512]"]["mnist"] == ranks["adam [data.subset=1024]"]["mnist"] == 1.5
    assert ranks["sgd"]["mnist"] == 3.0


def test_time_to_target_counts_the_seeds_that_never_got_there():
    result = comparison({"adam": {s: 0.99 for s in range(1, 7)}})
    row = result.rows[0]
    # seeds 1-3 reach 0.98 after 1, 2, 3 epochs of 10 s; seeds 4-6 never do.
    row.curves = {
        "val_acc": {s: [0.97] * (s - 1) + [0.985] if s <= 3 else [0.97] * 3 for s in range(1, 7)},
        "epoch_time_s": {s: [10.0] * 3 for s in range(1, 7)},
    }
    reached = profiles.time_to_target(row, 0.98)
    assert (reached.reached, reached.seeds) == (3, 6) and reached.median == 30.0, "the Kaplan-Meier median"
    assert reached.text == "30 (3/6)"
    assert reached.share_low < 0.5 < reached.share_high


def test_rank_by_a_target_uses_the_seeds_that_missed_it():
    # "fast" reached the target quickly but on 1 seed of 3; "steady" on all three, later.
    result = comparison({"fast": {1: 0.9, 2: 0.9, 3: 0.9}, "steady": {1: 0.9, 2: 0.9, 3: 0.9}})
    metric = "time_to_val_acc_0.98_s"
    by = {r.label: r for r in result.rows}
    by["fast"].cells[metric] = Cell({1: 5.0})
    by["steady"].cells[metric] = Cell({1: 20.0, 2: 21.0, 3: 22.0})
    result.rank_by = metric
    profiles.sort_by_target(result)
    assert [r.label for r in result.rows] == ["steady", "fast"], (
        "a mean of the one seed that got there would put fast first"
    )
    assert render.cell_text(by["fast"], metric) == "∞ (1/3)" and render.cell_text(by["steady"], metric) == "21 (3/3)"


def test_times_are_ratios_and_say_when_runs_shared_the_machine():
    values = {"adam": {s: 0.99 for s in range(1, 5)}, "sgd": {s: 0.97 for s in range(1, 5)}}
    times = {"adam": {1: 100.0, 2: 104.0, 3: 98.0, 4: 101.0}, "sgd": {1: 80.0, 2: 83.0, 3: 79.0, 4: 82.0}}
    shared = comparison(values, times=times, tags={"concurrent_jobs": "2", "torch_threads": "1"})
    sgd = next(r for r in shared.rows if r.label == "sgd")
    assert sgd.time.ratio == pytest.approx(
        math.exp(
            sum(math.log(t) for t in times["sgd"].values()) / 4 - sum(math.log(t) for t in times["adam"].values()) / 4
        )
    )
    assert "total_time_s" not in sgd.paired, "seeds do not pair wall times"
    assert "up to 2 at once" in shared.time_sharing["mnist"]
    assert "not like-for-like" in render.render(shared, "markdown")
    alone = comparison(values, times=times, tags={"concurrent_jobs": "1", "torch_threads": "2"})
    assert alone.time_sharing == {}
