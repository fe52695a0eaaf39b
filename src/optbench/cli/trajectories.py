"""``optbench-trajectories``: figures of the optimizers' trajectories on 2-D test functions.

    optbench-trajectories [--out reports/trajectories] [--functions bowl,valley] [--no-log]

Figures are saved as ``DIR/trajectories_<function>.png`` and logged to MLflow on a ``trajectories`` run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
import torch

from .. import optim, store
from ..compare.query import SUMMARY_TAG
from ..trajectories import FUNCTIONS, draw, trajectory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optbench-trajectories", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/trajectories"))
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--optimizers", default=",".join(optim.OPTIMIZERS))
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--no-log", action="store_true", help="do not log the figures to MLflow")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    client = run_id = None
    if not args.no_log:
        uri = args.tracking_uri or store.default_tracking_uri()
        experiment_id = store.prepare(uri, "optbench")
        client = mlflow.MlflowClient(uri)
        run_id = client.create_run(
            experiment_id, run_name="trajectories", tags={SUMMARY_TAG: "trajectories"}
        ).info.run_id
    for name in args.functions.split(","):
        fn = FUNCTIONS[name]
        found = {o: trajectory(o, fn) for o in args.optimizers.split(",")}
        fig = draw(fn, found)
        target = args.out / f"trajectories_{name}.png"
        fig.savefig(target)
        start = float(fn.f(torch.tensor(fn.start, dtype=torch.float64)))
        finals = ", ".join(f"{o} {float(fn.f(torch.tensor(p[-1]))):.3g}" for o, p in found.items())
        print(f"{target}: f(start)={start:.3g}; final f: {finals}")
        if client is not None:
            client.log_figure(run_id, fig, f"trajectories_{name}.png")
    if client is not None:
        client.set_terminated(run_id)
        print(f"logged to MLflow run {run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
