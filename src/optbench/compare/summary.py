"""A sweep's summary run: the table, figures and report as artifacts beside the sweep's runs in MLflow."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.entities import RunTag

from .. import store
from . import render
from .cells import Comparison
from .query import SUMMARY_TAG


def log_summary(
    client: mlflow.MlflowClient, experiment: str, sweep: str, comparison: Comparison, figure, report: str | None
) -> str:
    exp_id = store.get_or_create_experiment(client, experiment)
    run = client.create_run(exp_id, run_name=f"summary-{sweep}", tags={SUMMARY_TAG: "summary", "sweep_id": sweep})
    run_id = run.info.run_id
    try:
        client.log_figure(run_id, figure, "learning_curves.png")
        client.log_text(run_id, render.render(comparison, "csv"), "comparison.csv")
        client.log_text(run_id, render.render(comparison, "markdown"), "comparison.md")
        client.log_dict(run_id, render.payload(comparison), "comparison.json")
        client.log_table(run_id, data=pd.DataFrame(render.records(comparison)), artifact_file="comparison_table.json")
        if report is not None:
            client.log_text(run_id, report, "report.html")
        tags = [RunTag("runs", ",".join(i for r in comparison.rows for i in r.run_ids))]
        tags += [RunTag(f"verdict.{v.data}", v.sentence[:5000]) for v in comparison.verdicts]
        client.log_batch(run_id, tags=tags)
    except BaseException as err:  # a summary run is never left RUNNING
        client.set_tag(run_id, "failure_reason", f"{type(err).__name__}: {err}"[:5000])
        client.set_terminated(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
