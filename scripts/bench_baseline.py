"""This checkout's pipeline against another checkout's (an earlier commit), side by side, with the floor.

    git worktree add ../before 267c2eb   # any earlier optbench checkout
    python scripts/bench_baseline.py ../before [--steps 300] [--repeats 5] [--data-root ../shared/data]

The machine's speed swings by tens of per cent from one hour to the next (docs/benchmarks.md), so a
before/after claim from two ``bench_epoch.py`` runs on different hours says more about the hours than
about the code. Here each repeat measures, alternating and each in a fresh worker process
(``bench_epoch.py``'s): the floor (the step's dense matrix products), the default pipeline of this
checkout and the default pipeline of ``BASELINE`` (its package and configs, laid out as its wheel
would install them, first on ``PYTHONPATH``; this environment's other packages), both with tracking on.
Prints ms/step (medians), each pipeline's ``ratio/floor`` (the median of the per-repeat ratios) and
``ratio after/before``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_epoch import measure  # scripts/: this file's folder is on sys.path


def install_baseline(checkout: str, into: Path) -> Path:
    """``checkout``'s packages under ``into``, its ``conf/`` as ``optbench.conf`` (pyproject's package-dir)."""
    root = Path(checkout).resolve()
    if not (root / "src" / "optbench" / "pipeline.py").is_file():
        raise SystemExit(f"error: {checkout} is not an optbench checkout (no src/optbench/pipeline.py)")
    for package in ("optbench", "hydra_plugins"):
        shutil.copytree(root / "src" / package, into / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "conf", into / "optbench" / "conf")
    return into


def with_path(src: Path) -> dict[str, str]:
    """This environment with ``src`` first on ``PYTHONPATH``: a worker that imports optbench from there."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="another optbench checkout, e.g. a git worktree of an earlier commit")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", "../shared/data"))
    args = parser.parse_args()
    data_root = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as installed:
        before = with_path(install_baseline(args.baseline, Path(installed)))
        variants = {"floor": ("floor", None), "after": ("pipeline-on", None), "before": ("pipeline-on", before)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.repeats):
            for name, (kind, env) in variants.items():
                with tempfile.TemporaryDirectory() as store:  # each pipeline its own store: schemas may differ
                    run_args = argparse.Namespace(
                        steps=args.steps, data_root=data_root, device="cpu", overrides=[], store=store
                    )
                    times[name].append(measure(kind, run_args, env=env)["step_s"] * 1e3)
            shown = {k: f"{v[-1]:.2f}" for k, v in times.items()}
            print(f"repeat {r + 1}: ms/step {shown}", file=sys.stderr, flush=True)
    med = statistics.median

    def ratio(a: str, b: str) -> tuple[float, list[float]]:
        each = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return med(each), each

    print(f"baseline: {Path(args.baseline).resolve()}")
    for name in variants:
        print(f"{name:<8}{med(times[name]):>9.2f} ms/step  ({', '.join(f'{t:.2f}' for t in times[name])})")
    for a, b in (("before", "floor"), ("after", "floor"), ("after", "before")):
        value, each = ratio(a, b)
        print(f"ratio {a}/{b} = {value:.2f}  (per repeat {', '.join(f'{x:.2f}' for x in each)})")


if __name__ == "__main__":
    main()
