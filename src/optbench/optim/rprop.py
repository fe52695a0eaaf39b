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
        capturable: bool = False,
    ):
        check(lr >= 0.0, f"Invalid learning rate: lr={lr}; it must be >= 0 (it is Rprop's initial step).")
        etaminus, etaplus = etas
        check(0.0 < etaminus < 1.0 < etaplus, f"Invalid etas={tuple(etas)}; need 0 < eta- < 1 < eta+.")
        check(
            0.0 < step_sizes[0] <= step_sizes[1],
            f"Invalid step_sizes={tuple(step_sizes)}; need 0 < min <= max.",
        )
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes))
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step_size"] = torch.full_like(p, group["lr"], memory_format=torch.preserve_format)

    @staticmethod
    def _adapt(group, grad, prev, step_size):
        """Grow or shrink the steps; write the gradient to remember (zero after a sign flip) into ``prev``."""
        etaminus, etaplus = (grad.new_tensor(e) for e in group["etas"])
        agreement = grad.mul(prev).sign_()
        flipped = agreement < 0
        factor = torch.where(agreement > 0, etaplus, torch.where(flipped, etaminus, grad.new_ones(())))
        step_size.mul_(factor).clamp_(*group["step_sizes"])
        prev.copy_(grad).masked_fill_(flipped, 0)

    def _update_single(self, group, p, grad, state):
        prev, step_size = state["prev"], state["step_size"]
        self._adapt(group, grad, prev, step_size)
        p.addcmul_(prev.sign(), step_size, value=-1)

    def _update_foreach(self, group, params, grads, states):
        prevs = [s["prev"] for s in states]
        step_sizes = [s["step_size"] for s in states]
        for g, prev, step_size in zip(grads, prevs, step_sizes, strict=True):
            self._adapt(group, g, prev, step_size)
        torch._foreach_addcmul_(params, torch._foreach_sign(prevs), step_sizes, value=-1)
