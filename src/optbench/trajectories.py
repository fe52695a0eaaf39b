"""Optimizer trajectories on 2-D test functions: the project's own optimizers from one start point on a
bowl, an ill-conditioned valley, Rosenbrock's banana and a saddle, drawn on the contour plot — the ball
rolling into the bowl, SGD's zig-zag across the valley against momentum's smoother path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import optim


@dataclass(frozen=True)
class TestFunction:
    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    start: tuple[float, float]
    box: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max of the plot
    lr: dict[str, float]  # a learning rate per optimizer that shows its character on this surface
    steps: int = 150
    convex: bool = True
    minimum: tuple[float, float] | None = (0.0, 0.0)


BASE_LR = {
    "sgd": 0.1,
    "sgd_momentum": 0.02,
    "adagrad": 0.5,
    "rmsprop": 0.05,
    "adadelta": 5.0,
    "adam": 0.1,
    "rprop": 0.05,
    "adamw": 0.1,
    "nadam": 0.1,
    "lion": 0.02,  # every coordinate moves by exactly lr
    "schedule_free_adamw": 0.1,
    "muon": 0.1,  # a point is a vector: Muon's AdamW part moves it
}

FUNCTIONS = {
    "bowl": TestFunction("bowl", lambda p: p[0] ** 2 + p[1] ** 2, (-1.5, 1.2), (-2, 2, -2, 2), BASE_LR),
    "valley": TestFunction(
        "valley", lambda p: 0.05 * p[0] ** 2 + 2.0 * p[1] ** 2, (-4.0, 1.0), (-5, 5, -2, 2), {**BASE_LR, "sgd": 0.45}
    ),
    "rosenbrock": TestFunction(
        "rosenbrock",
        lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
        (-1.5, 2.0),
        (-2, 2, -1, 3),
        {
            "sgd": 1e-3,
            "sgd_momentum": 2e-4,
            "adagrad": 0.3,
            "rmsprop": 0.01,
            "adadelta": 5.0,
            "adam": 0.05,
            "rprop": 0.01,
            "adamw": 0.05,
            "nadam": 0.05,
            "lion": 0.01,
            "schedule_free_adamw": 0.05,
            "muon": 0.05,
        },
        steps=500,
        minimum=(1.0, 1.0),
    ),
    "saddle": TestFunction(
        "saddle",
        lambda p: p[0] ** 2 - p[1] ** 2,
        (-1.5, 1e-3),
        (-2, 2, -2, 2),
        BASE_LR,
        steps=60,
        convex=False,
        minimum=None,
    ),
}


def trajectory(optimizer: str, fn: TestFunction) -> np.ndarray:
    """Points visited by ``optimizer`` (PyTorch preset, this surface's lr) from ``fn.start``."""
    point = torch.tensor(fn.start, dtype=torch.float64, requires_grad=True)
    opt = optim.create([point], optimizer, "torch", lr=fn.lr[optimizer])
    path = [point.detach().clone()]
    for _ in range(fn.steps):
        opt.zero_grad()
        fn.f(point).backward()
        opt.step()
        path.append(point.detach().clone())
    return torch.stack(path).numpy()


def draw(fn: TestFunction, trajectories: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x0, x1, y0, y1 = fn.box
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    zs = fn.f(torch.tensor(np.stack([xs, ys]))).numpy()
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    if fn.convex:
        levels = np.quantile(zs, np.linspace(0.002, 0.95, 25))
        ax.contour(xs, ys, zs, levels=np.unique(levels), cmap="Greys", linewidths=0.6)
    else:
        ax.contour(xs, ys, zs, levels=25, cmap="Greys", linewidths=0.6)
    for name, path in trajectories.items():
        clipped = path[(path[:, 0] >= x0) & (path[:, 0] <= x1) & (path[:, 1] >= y0) & (path[:, 1] <= y1)]
        ax.plot(
            clipped[:, 0], clipped[:, 1], marker=".", markersize=3, linewidth=1.2, label=f"{name} (lr {fn.lr[name]:g})"
        )
    ax.plot(*fn.start, "ko", markersize=7, label="start")
    if fn.minimum is not None:
        ax.plot(*fn.minimum, "r*", markersize=14, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"{fn.name}: {fn.steps} steps of each optimizer from the same start")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
