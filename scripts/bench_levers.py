"""Each speed lever of the CPU step measured alone: the default pipeline against the same with one lever undone.

    python scripts/bench_levers.py [--steps 300] [--repeats 3] [--data-root ../shared/data] [--only NAME]

Per repeat, in fresh worker processes (``bench_epoch.py``'s), alternating: the floor (the step's dense
matrix products, ``bench_floor.py``), the default pipeline (tracking off), and the pipeline with each
lever undone in turn. Prints ms/step (median over repeats), what the lever saves, and each variant's
``ratio/floor`` (the median of the per-repeat ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_epoch import measure  # scripts/: this file's folder is on sys.path

# lever → (what it is, the override that undoes it)
LEVERS = {
    "dropout_rng": ("dropout masks from bulk random bytes", "model.net.dropout_rng=bernoulli"),
    "channels_last": ("conv and pool in channels_last", "model.net.channels_last=false"),
    "foreach": ("multi-tensor optimizer update", "optimizer.foreach=false"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", "../shared/data"))
    parser.add_argument("--only", action="append", choices=sorted(LEVERS), help="measure only these levers")
    args = parser.parse_args()
    levers = args.only or list(LEVERS)
    base = argparse.Namespace(
        steps=args.steps, data_root=str(Path(args.data_root).resolve()), device="cpu", overrides=[], store=""
    )
    variants = {"floor": ("floor", []), "default": ("pipeline-off", [])}
    variants |= {f"without {name}": ("pipeline-off", [LEVERS[name][1]]) for name in levers}
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as store:
        for r in range(args.repeats):
            for name, (kind, overrides) in variants.items():
                run_args = argparse.Namespace(**vars(base) | {"overrides": overrides, "store": store})
                results[name].append(measure(kind, run_args)["step_s"] * 1e3)
            shown = {k: f"{v[-1]:.2f}" for k, v in results.items()}
            print(f"repeat {r + 1}: ms/step {shown}", file=sys.stderr, flush=True)
    med = statistics.median
    default = med(results["default"])
    print(f"{'':<44}{'ms/step':>9}{'saves':>9}{'ratio/floor':>13}")
    for name, times in results.items():
        ratio = med(t / f for t, f in zip(times, results["floor"], strict=True))
        what = name if name in ("floor", "default") else f"{name} ({LEVERS[name[8:]][0]})"
        saves = "" if name in ("floor", "default") else f"{med(times) - default:+.2f}"
        print(f"{what[:43]:<44}{med(times):>9.2f}{saves:>9}{ratio:>13.2f}")


if __name__ == "__main__":
    main()
