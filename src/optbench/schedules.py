"""Learning-rate schedules, stepped once per optimizer step: ``torch.optim.lr_scheduler``'s own classes.

Each function takes the optimizer and the run's number of steps (Lightning's ``estimated_stepping_batches``)
and returns the scheduler; ``conf/scheduler/*.yaml`` name them. ``scheduler=constant`` (the default) builds
none, so runs without a schedule log no ``scheduler.*`` params, as runs logged before schedules existed.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def _check(total_steps: int, warmup_steps: int = 0, **fractions: float) -> None:
    if warmup_steps < 0 or warmup_steps >= total_steps:
        raise ValueError(
            f"Invalid scheduler.warmup_steps={warmup_steps}; it must be >= 0 and below the run's {total_steps} steps."
        )
    for key, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Invalid scheduler.{key}={value}; it must be in [0, 1].")


def cosine(optimizer: Optimizer, total_steps: int, min_lr_ratio: float = 0.0) -> LRScheduler:
    """η from its base value down to ``min_lr_ratio``·η along half a cosine over the run."""
    _check(total_steps, min_lr_ratio=min_lr_ratio)
    return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min_lr_ratio * optimizer.defaults["lr"])


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 100,
    start_factor: float = 0.01,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """A linear warm-up from ``start_factor``·η to η over ``warmup_steps``, then the cosine over the rest."""
    _check(total_steps, warmup_steps, start_factor=start_factor, min_lr_ratio=min_lr_ratio)
    warmup = LinearLR(optimizer, start_factor=start_factor or 1e-8, end_factor=1.0, total_iters=warmup_steps)
    decay = CosineAnnealingLR(
        optimizer, T_max=total_steps - warmup_steps, eta_min=min_lr_ratio * optimizer.defaults["lr"]
    )
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])


def linear(optimizer: Optimizer, total_steps: int, end_factor: float = 0.0) -> LRScheduler:
    """η decayed linearly to ``end_factor``·η at the last step."""
    _check(total_steps, end_factor=end_factor)
    return LinearLR(optimizer, start_factor=1.0, end_factor=end_factor, total_iters=total_steps)
