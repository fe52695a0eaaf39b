"""The comparison table as a query over tracked runs: select and group (``query``), the numbers
(``cells``, ``stats``), the verdict (``verdict``), time to target and ranks (``profiles``), the published
reference (``reference``), text (``render``, ``terminal``, ``escape``), figures (``figures``), the HTML
report (``report``) and the sweep's summary run (``summary``)."""

from __future__ import annotations

import mlflow

from . import profiles, verdict
from .cells import Comparison, attach_tests, build
from .query import CompareError, decision_of, group_runs, select_runs
from .reference import attach_reference


def compare(
    client: mlflow.MlflowClient,
    experiment: str = "optbench",
    sweep: str | None = None,
    filter_string: str | None = None,
    epochs: tuple[int, ...] = (1, 5, 10),
    *,
    rank_by: str | None = None,
    aggregate: str = "last",
    include_reruns: bool = False,
    reference: bool = False,
    baseline: str | None = None,
    primary: str | None = None,
    test: str = "t",
) -> Comparison:
    runs = select_runs(client, experiment, sweep, filter_string)
    if not runs:
        where = f" with sweep_id={sweep}" if sweep else ""
        raise CompareError(
            f"No runs in experiment {experiment!r}{where}{' matching the filter' if filter_string else ''}."
        )
    comparison = build(client, group_runs(runs, include_reruns), list(epochs), rank_by, aggregate, primary)
    if rank_by:
        (profiles.sort_by_target if "_to_" in rank_by else profiles.sort_by_mean)(comparison)
    if reference:
        attach_reference(comparison)
    attach_tests(comparison, baseline, test)
    comparison.verdicts = verdict.decide(comparison)
    if sweep:
        comparison.decision = decision_of(client, experiment, sweep)
    return comparison


__all__ = ["Comparison", "CompareError", "compare"]
