"""Adagrad: per-coordinate steps shrink with the sum of all past squared gradients.

s ← s + g²                      (s₀ = initial_accumulator_value)
w ← w − η_t · g / (√s + ε)      PyTorch (ε outside the root, η_t = η / (1 + (t−1)·lr_decay))
w ← w − η   · g / √(s + ε)      Keras   (``eps_inside_sqrt=True``)
"""

from __future__ import annotations

import torch

from .base import (
    BaseOptimizer,
    addcdiv_scaled_foreach,
    addcdiv_scaled_single,
    apply_weight_decay_foreach,
    apply_weight_decay_single,
    check,
    check_common,
)


class Adagrad(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        eps_inside_sqrt: bool = False,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        check(lr_decay >= 0.0, f"Invalid lr_decay={lr_decay}; it must be >= 0.")
        check(
            initial_accumulator_value >= 0.0,
            f"Invalid initial_accumulator_value={initial_accumulator_value}; it must be >= 0.",
        )
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            eps_inside_sqrt=eps_inside_sqrt,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["sum"] = torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    @staticmethod
    def _clr(group, step):
        return group["lr"] / (1 + (step - 1) * group["lr_decay"])

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        s = state["sum"]
        s.addcmul_(grad, grad, value=1)
        if group["eps_inside_sqrt"]:
            denom = s.add(group["eps"]).sqrt_()
        else:
            denom = s.sqrt().add_(group["eps"])
        addcdiv_scaled_single(p, grad, denom, -self._clr(group, state["step"]))

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        sums = [s["sum"] for s in states]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        if group["eps_inside_sqrt"]:
            denom = torch._foreach_add(sums, group["eps"])
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(sums)
            torch._foreach_add_(denom, group["eps"])
        addcdiv_scaled_foreach(params, grads, denom, [-self._clr(group, s["step"]) for s in states])
