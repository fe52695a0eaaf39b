"""Adam: momentum on the gradient plus RMSProp's scaling, both bias-corrected.

    m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²,   v ← max(v̂_prev, v) with ``amsgrad``
    PyTorch: w ← w − η/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)
    Keras:   w ← w − η·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε̂)      (``epsilon_hat=True``)

The two differ only in where ε sits: Keras's ε̂ equals PyTorch's ε·√(1 − β₂ᵗ).
"""

from __future__ import annotations

import math

import torch

from . import fused
from .base import (
    BaseOptimizer,
    addcdiv_scaled_foreach,
    addcdiv_scaled_single,
    apply_weight_decay_foreach,
    apply_weight_decay_single,
    check_betas,
    check_common,
)


class Adam(BaseOptimizer):
    has_fused = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        epsilon_hat: bool = False,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        fused: bool | None = None,
    ):
        check_common(lr, weight_decay, eps)
        betas = check_betas(betas)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            epsilon_hat=epsilon_hat,
            decoupled_weight_decay=decoupled_weight_decay,
            fused=fused,
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _corrections(group, step):
        """(step size, divisor of √v) for this step under the group's ε convention (tensors for a tensor step)."""
        beta1, beta2 = group["betas"]
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        bc2_sqrt = bc2.sqrt() if isinstance(bc2, torch.Tensor) else math.sqrt(bc2)
        if group["epsilon_hat"]:
            return group["lr"] * bc2_sqrt / bc1, 1.0
        return group["lr"] / bc1, bc2_sqrt

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        step_size, sqrt_div = self._corrections(group, state["step"])
        denom = (v.sqrt() / sqrt_div).add_(group["eps"])
        addcdiv_scaled_single(p, m, denom, -step_size)

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        beta1, beta2 = group["betas"]
        ms = [s["exp_avg"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        if group["amsgrad"]:
            maxs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(maxs, vs)
            vs = maxs
        corrections = [self._corrections(group, s["step"]) for s in states]
        denom = torch._foreach_sqrt(vs)
        if not group["epsilon_hat"]:
            torch._foreach_div_(denom, [c[1] for c in corrections])
        torch._foreach_add_(denom, group["eps"])
        addcdiv_scaled_foreach(params, ms, denom, [-c[0] for c in corrections])

    def _update_fused(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        corrections = [self._corrections(group, s["step"]) for s in states]
        fused.adam_(
            params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else None,
            *group["betas"], [c[0] for c in corrections], [c[1] for c in corrections], group["eps"],
        )  # fmt: skip
