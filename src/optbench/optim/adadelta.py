"""Adadelta: RMSProp whose step size is itself a running RMS of past updates (units match w).

    v ← ρ·v + (1 − ρ)·g²
    Δ = √(u + ε) / √(v + ε) · g
    u ← ρ·u + (1 − ρ)·Δ²
    w ← w − η·Δ

Keras and PyTorch share the formula; only the defaults differ (Keras η = 1e-3, ρ = 0.95,
ε = 1e-7; PyTorch η = 1.0, ρ = 0.9, ε = 1e-6), so Keras's default steps are 1000× smaller.
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, apply_weight_decay_foreach, apply_weight_decay_single, check, check_common


class Adadelta(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        check(0.0 <= rho <= 1.0, f"Invalid rho={rho}; it must be in [0, 1].")
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        rho, eps = group["rho"], group["eps"]
        v, u = state["square_avg"], state["acc_delta"]
        v.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = v.add(eps).sqrt_()
        delta = u.add(eps).sqrt_().div_(std).mul_(grad)
        u.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        p.add_(delta, alpha=-group["lr"])

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        rho, eps = group["rho"], group["eps"]
        vs = [s["square_avg"] for s in states]
        us = [s["acc_delta"] for s in states]
        torch._foreach_mul_(vs, rho)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - rho)
        std = torch._foreach_add(vs, eps)
        torch._foreach_sqrt_(std)
        delta = torch._foreach_add(us, eps)
        torch._foreach_sqrt_(delta)
        torch._foreach_div_(delta, std)
        torch._foreach_mul_(delta, grads)
        torch._foreach_mul_(us, rho)
        torch._foreach_addcmul_(us, delta, delta, value=1 - rho)
        torch._foreach_add_(params, delta, alpha=-group["lr"])
