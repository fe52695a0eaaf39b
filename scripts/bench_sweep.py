"""Whole sweeps, timed end to end (tracking included) in different layouts on this machine, side by side.

    python scripts/bench_sweep.py [--seeds 1] [--epochs 1] [--subset N] [--device cpu|cuda] [--layouts ...]

The sweep is the seed protocol (``experiment=seed_table``: six optimizers) with ``--seeds`` seeds. Layouts:
  serial     jobs one after another, each with all usable cores (Hydra's basic launcher, threads=null)
  per-core   one job per core at a time, one thread each (``hydra/launcher=joblib``, threads=1)
  packed     jobs that can share a process trained as one batched model (``hydra/launcher=packed``)
  packed-graph   packed, each step recorded once as a CUDA graph and replayed (``trainer.cuda_graph=true``)
Each layout runs as a fresh ``optbench-train -m`` process into its own temporary store; the layouts
alternate when ``--repeats`` > 1. Prints the wall time of each, the ratios to the fastest, and last
``ratio packed/unpacked = X.XX`` (the fastest packed layout against the fastest unpacked one) when a
packed layout ran.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {
    "serial": [],
    "per-core": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={len(os.sched_getaffinity(0))}", "threads=1"],
    "packed": ["hydra/launcher=packed"],
    "packed-graph": ["hydra/launcher=packed", "trainer.cuda_graph=true"],
}


def sweep(layout: str, args: argparse.Namespace, store: Path) -> float:
    overrides = [
        "-m",
        "experiment=seed_table",
        f"seed={','.join(str(s) for s in range(1, args.seeds + 1))}",
        f"trainer.max_epochs={args.epochs}",
        f"data.root={args.data_root}",
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
        f"hydra.sweep.dir={store}/multirun",
        "trainer.enable_progress_bar=false",
        "callbacks.tracking.system_metrics=false",
        *([f"data.subset={args.subset}"] if args.subset else []),
        *(["trainer=gpu"] if args.device == "cuda" else []),
        *LAYOUTS[layout],
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "optbench", *overrides], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_sweep: the {layout} sweep failed:\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--layouts",
        default=None,
        help="comma-separated (default: serial,per-core,packed on CPU; serial,packed,packed-graph on CUDA)",
    )
    parser.add_argument(
        "--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", str(REPO.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    default = "serial,per-core,packed" if args.device == "cpu" else "serial,packed,packed-graph"
    layouts = (args.layouts or default).split(",")
    if unknown := set(layouts) - set(LAYOUTS):
        parser.error(f"unknown layout(s) {', '.join(sorted(unknown))}; choose from {', '.join(LAYOUTS)}")
    walls: dict[str, list[float]] = {layout: [] for layout in layouts}
    jobs = 6 * args.seeds
    for repeat in range(args.repeats):
        for layout in layouts:
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as store:
                walls[layout].append(sweep(layout, args, Path(store)))
            print(f"repeat {repeat + 1}: {layout} {walls[layout][-1]:.1f} s", file=sys.stderr, flush=True)
    median = {layout: statistics.median(w) for layout, w in walls.items()}
    fastest = min(median, key=median.get)
    print(f"sweep: seed protocol, {jobs} jobs x {args.epochs} epoch(s){f', subset {args.subset}' if args.subset else ''}, "
          f"device {args.device}, {len(os.sched_getaffinity(0))} usable cores, median of {args.repeats}")  # fmt: skip
    for layout in layouts:
        print(
            f"  {layout:<9} {median[layout]:8.1f} s   {median[layout] / jobs:6.1f} s/job   x{median[layout] / median[fastest]:.2f} of the fastest"
        )
    print(f"fastest layout: {fastest}")
    packed = [layout for layout in layouts if layout.startswith("packed")]
    unpacked = [layout for layout in layouts if layout not in packed]
    if packed and unpacked:
        best_packed, best = min(packed, key=median.get), min(unpacked, key=median.get)
        print(f"ratio packed/unpacked = {median[best_packed] / median[best]:.2f}  ({best_packed} / {best})")


if __name__ == "__main__":
    main()
