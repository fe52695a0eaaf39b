"""The adaptive sweep's decision procedure by simulation (no training): family-wise error under the null with
optional stopping, power and seeds used under effects, beside naive peeking with the paired t-test.

    .venv/bin/python scripts/simulate_adaptive.py --trials 1000

Rows are normal per seed; an effect d is the standardised mean of the paired difference (d_z). Seeds are
added one per round from 3 to ``--max-seeds`` to the rows of unresolved adjacent pairs, as
``hydra/sweeper=adaptive`` does by default. "rounds: seeds" is the seeds of the longest row (the rounds'
length), "seeds per row" the mean over rows (what the sweep trains).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as st

from optbench.adaptive import Plan
from optbench.compare import sequential


def one(rng, means, plan):
    """One simulated adaptive sweep, rows frozen once their neighbours are resolved, as the sweeper does."""
    x = rng.normal(size=(len(means), plan.max_seeds)) / np.sqrt(2) + np.asarray(means)[:, None]
    last, active = [0] * len(means), set(range(len(means)))
    for seeds in plan.rounds():
        for i in active:
            last[i] = seeds[-1]
        values = {f"r{i}": dict(enumerate(x[i, : last[i]], 1)) for i in range(len(means))}
        decision = sequential.decide("sim", values, True, estimate=False)
        if decision.resolved:
            break
        active = {int(label[1:]) for p in decision.adjacent if not p.resolved for label in (p.a, p.b)}
    wrong = any(p.resolved and means[int(p.a[1:])] <= means[int(p.b[1:])] for p in decision.adjacent)
    return decision.resolved, wrong, max(last), sum(last) / len(means)


def naive(rng, trials, plan):
    """A paired t-test after every round, stop at the first p < 0.05: its false-positive rate."""
    d = rng.normal(size=(trials, plan.max_seeds))
    n = np.arange(1, plan.max_seeds + 1)
    mean = np.cumsum(d, axis=1) / n
    sd = np.sqrt((np.cumsum(d**2, axis=1) - n * mean**2)[:, 2:] / (n[2:] - 1))
    p = 2 * st.t.sf(np.abs(mean[:, 2:] / (sd / np.sqrt(n[2:]))), n[2:] - 1)
    return float(np.mean((p < 0.05).any(axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--max-seeds", type=int, default=20)
    args = parser.parse_args()
    rng, plan = np.random.default_rng(0), Plan(3, 1, args.max_seeds)
    cases = [
        ("2 rows, null", [0, 0]),
        ("6 rows, null", [0] * 6),
        ("2 rows, d = 0.5", [0, 0.5]),
        ("2 rows, d = 1", [0, 1]),
        ("2 rows, d = 2", [0, 2]),
        ("2 rows, d = 5", [0, 5]),
        ("6 rows, adjacent d = 2", [0, 2, 4, 6, 8, 10]),
        ("6 rows, adjacent d = 5", [0, 5, 10, 15, 20, 25]),
    ]
    print(f"{args.trials} simulated sweeps each, seeds 3..{args.max_seeds}, one seed per round, alpha 0.05")
    print(f"{'case':<24} {'resolved':>9} {'error':>7} {'rounds: seeds':>14} {'seeds per row':>14}")
    for name, means in cases:
        out = np.array([one(rng, means, plan) for _ in range(args.trials)])
        print(
            f"{name:<24} {out[:, 0].mean():>9.3f} {out[:, 1].mean():>7.3f} {out[:, 2].mean():>14.1f} "
            f"{out[:, 3].mean():>14.1f}"
        )
    print(
        f"naive peeking (paired t-test after every seed, 2 rows, null): error {naive(rng, 20 * args.trials, plan):.3f}"
    )


if __name__ == "__main__":
    main()
