"""Rprop: adapt a per-coordinate step from the *sign* of successive gradients (full-batch method).

    s ← s·η⁺ if g·g_prev > 0;  s·η⁻ if g·g_prev < 0 (and that g is then treated as 0);  else s
    s ← clip(s, step_min, step_max),   w ← w − sign(g)·s,   s₀ = lr

RMSProp grew out of making this work with mini-batches, which is why it is in the set.
Keras has no Rprop; both presets use PyTorch's defaults.
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, check


class Rprop(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50.0),
        foreach: bool | None = None,
    ):
        check(lr >= 0.0, f"Invalid learning rate: lr={lr}; it must be >= 0 (it is Rprop's initial step).")
        etaminus, etaplus = etas
        check(0.0 < etaminus < 1.0 < etaplus, f"Invalid etas={tuple(etas)}; need 0 < eta- < 1 < eta+.")
        check(
            0.0 < step_sizes[0] <= step_sizes[1],
            f"Invalid step_sizes={tuple(step_sizes)}; need 0 < min <= max.",
        )
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes))
        super().__init__(params, defaults, foreach)

    def _init_state(self, group, p, state):
        state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step_size"] = torch.full_like(p, group["lr"], memory_format=torch.preserve_format)

    @staticmethod
    def _factors(group, signs):
        etaminus, etaplus = group["etas"]
        return torch.ones_like(signs).masked_fill_(signs > 0, etaplus).masked_fill_(signs < 0, etaminus)

    def _update_single(self, group, p, grad, state):
        prev, step_size = state["prev"], state["step_size"]
        factor = self._factors(group, grad.mul(prev).sign())
        step_size.mul_(factor).clamp_(*group["step_sizes"])
        grad = grad.masked_fill(factor == group["etas"][0], 0)
        p.addcmul_(grad.sign(), step_size, value=-1)
        prev.copy_(grad)

    def _update_foreach(self, group, params, grads, states):
        prevs = [s["prev"] for s in states]
        step_sizes = [s["step_size"] for s in states]
        signs = torch._foreach_mul(grads, prevs)
        torch._foreach_sign_(signs)
        factors = [self._factors(group, s) for s in signs]
        torch._foreach_mul_(step_sizes, factors)
        torch._foreach_clamp_min_(step_sizes, group["step_sizes"][0])
        torch._foreach_clamp_max_(step_sizes, group["step_sizes"][1])
        grads = [g.masked_fill(f == group["etas"][0], 0) for g, f in zip(grads, factors, strict=True)]
        torch._foreach_addcmul_(params, torch._foreach_sign(grads), step_sizes, value=-1)
        for prev, g in zip(prevs, grads, strict=True):
            prev.copy_(g)
