"""Lion: the sign of an interpolated momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms").

    c = β₁·m + (1 − β₁)·g
    w ← w·(1 − η·λ) − η·sign(c)
    m ← β₂·m + (1 − β₂)·g

Every coordinate moves by exactly η (plus the decay), so Lion's η is 3–10× smaller than AdamW's and
its λ larger. Weight decay is decoupled, as in the paper, Keras and ``lion-pytorch``.
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, check_betas, check_common


class Lion(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay)
        betas = check_betas(betas, closed=True)
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay), foreach, capturable)

    def _init_state(self, group, p, state):
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update_single(self, group, p, grad, state):
        (beta1, beta2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
        m = state["exp_avg"]
        if wd != 0:
            p.mul_(1 - lr * wd)
        p.add_(m.mul(beta1).add_(grad, alpha=1 - beta1).sign_(), alpha=-lr)
        m.mul_(beta2).add_(grad, alpha=1 - beta2)

    def _update_foreach(self, group, params, grads, states):
        (beta1, beta2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
        ms = [s["exp_avg"] for s in states]
        if wd != 0:
            torch._foreach_mul_(params, 1 - lr * wd)
        update = torch._foreach_mul(ms, beta1)
        torch._foreach_add_(update, grads, alpha=1 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_add_(params, update, alpha=-lr)
        torch._foreach_mul_(ms, beta2)
        torch._foreach_add_(ms, grads, alpha=1 - beta2)
