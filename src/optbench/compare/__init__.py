"""The comparison table as a query over tracked runs: select and group (``query``), the numbers
(``cells``, ``stats``), the published reference (``reference``), text (``render``), figures (``figures``),
the HTML report (``report``) and the sweep's summary run (``summary``)."""

from __future__ import annotations

import mlflow

from .cells import Comparison, attach_baseline, build
from .query import CompareError, group_runs, select_runs
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
) -> Comparison:
    runs = select_runs(client, experiment, sweep, filter_string)
    if not runs:
        where = f" with sweep_id={sweep}" if sweep else ""
        raise CompareError(
            f"No runs in experiment {experiment!r}{where}{' matching the filter' if filter_string else ''}."
        )
    comparison = build(client, group_runs(runs, include_reruns), list(epochs), rank_by, aggregate)
    if reference:
        attach_reference(comparison)
    if baseline:
        attach_baseline(comparison, baseline)
    return comparison


__all__ = ["Comparison", "CompareError", "compare"]
