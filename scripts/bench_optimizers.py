"""Step time of optbench's optimizers vs torch.optim's foreach implementation on the seed CNN.

    python scripts/bench_optimizers.py [--steps 200] [--repeats 7] [--device cpu]

Both run in this process, alternating, on identical parameters and gradients; the ratio is the
median of per-repeat ratios (ours / torch). Target: every ratio <= 1.15. Adam also runs fused on the
CPU (one pass per tensor): ours (optbench.optim.fused) against torch.optim.Adam(fused=True).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optbench import optim as O
from optbench.model import SeedCNN

# (ours by name, torch.optim class, shared hyperparameters): torch's formulas, torch's defaults.
CASES = [
    ("sgd", torch.optim.SGD, dict(lr=1e-3)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
    ("adagrad", torch.optim.Adagrad, dict(lr=1e-2)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2)),
    ("adadelta", torch.optim.Adadelta, dict(lr=1.0)),
    ("adam", torch.optim.Adam, dict(lr=1e-3)),
    ("rprop", torch.optim.Rprop, dict(lr=1e-2)),
]
FUSED_CASES = [("adam", torch.optim.Adam, dict(lr=1e-3))]


def time_steps(opt, params, steps: int, device: torch.device) -> float:
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # state initialised outside the timed region
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    n_params = sum(p.numel() for p in SeedCNN().parameters())
    print(
        f"seed CNN: {n_params:,} parameters on {device}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'optimizer':<14}{'ours ms/step':>14}{'torch ms/step':>15}{'ratio':>8}")
    worst = 0.0
    cases = [(*case, "foreach") for case in CASES]
    cases += [(*case, "fused") for case in FUSED_CASES] if device.type == "cpu" else []
    for name, reference, hp, path in cases:
        ours_ms, theirs_ms, ratios = [], [], []
        for _ in range(args.repeats):
            a = list(SeedCNN().to(device).parameters())
            b = [p.detach().clone().requires_grad_() for p in a]
            t_ours = time_steps(O.OPTIMIZERS[name](a, **{path: True}, **hp), a, args.steps, device)
            t_ref = time_steps(reference(b, **{path: True}, **hp), b, args.steps, device)
            ours_ms.append(t_ours * 1e3)
            theirs_ms.append(t_ref * 1e3)
            ratios.append(t_ours / t_ref)
        ratio = statistics.median(ratios)
        worst = max(worst, ratio)
        name = name if path == "foreach" else f"{name} ({path})"
        print(f"{name:<14}{statistics.median(ours_ms):>14.3f}{statistics.median(theirs_ms):>15.3f}{ratio:>8.2f}")
    print(f"worst ratio ours/torch = {worst:.2f} (target <= 1.15)")


if __name__ == "__main__":
    main()
