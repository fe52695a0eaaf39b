"""``optbench-rerun``: rerun a tracked run from its id or Hydra output folder and check its numbers.

    optbench-rerun RUN_ID [key=value ...] [--tracking-uri URI]
    optbench-rerun multirun/2026-11-24/04-02-33/0 [key=value ...]

Exit status: 0 when the rerun is identical (or within float tolerance), 3 when values differ or there was
nothing to compare, 2 when the run cannot be rerun (unknown id, a refused config, a bad override).
"""

from __future__ import annotations

import argparse
import sys

from .. import config, runtime, stored
from ..data import DataError
from ..rerun import RerunError, rerun
from ..store import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optbench-rerun", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="an MLflow run id, or a Hydra output folder")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the run's config")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="the store to read and write (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)",
    )
    args = parser.parse_args(argv)
    runtime.quiet_libraries()
    try:
        return rerun(args.source, args.overrides, args.tracking_uri)
    except (RerunError, StoreError, stored.RestoreError, config.ConfigError, DataError) as err:
        print(f"optbench-rerun: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
