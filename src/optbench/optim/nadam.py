"""NAdam: Adam with Nesterov momentum, the momentum coefficient warmed up over steps (Dozat 2016).

    μₜ = β₁·(1 − ½·0.96^(t·ψ)),   Πₜ = μ₁···μₜ
    m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²,   d = √(v/(1 − β₂ᵗ)) + ε
    w ← w − η·(1 − μₜ)/(1 − Πₜ) · g/d − η·μₜ₊₁/(1 − Πₜ·μₜ₊₁) · m/d

PyTorch's ψ (``momentum_decay``) is 0.004; Keras writes 0.96^t, which is ψ = 1: the one formula, two
schedules of μ. Weight decay is L2 by default (PyTorch), decoupled with ``decoupled_weight_decay``.
"""

from __future__ import annotations

import torch

from .base import (
    BaseOptimizer,
    apply_weight_decay_foreach,
    apply_weight_decay_single,
    check,
    check_betas,
    check_common,
)


class NAdam(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        betas = check_betas(betas)
        check(momentum_decay >= 0.0, f"Invalid momentum_decay={momentum_decay}; it must be >= 0.")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["mu_product"] = torch.ones((), device=p.device) if group["capturable"] else 1.0

    @staticmethod
    def _coefficients(group, state):
        """(coefficient of g/d, of m/d, 1 − β₂ᵗ) for this step; advances Πₜ (tensors for a tensor step)."""
        (beta1, beta2), psi, lr, t = group["betas"], group["momentum_decay"], group["lr"], state["step"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        if isinstance(state["mu_product"], torch.Tensor):
            state["mu_product"].mul_(mu)
        else:
            state["mu_product"] *= mu
        product = state["mu_product"]
        return -lr * (1.0 - mu) / (1.0 - product), -lr * mu_next / (1.0 - product * mu_next), 1 - beta2**t

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        grad_coef, m_coef, bc2 = self._coefficients(group, state)
        denom = v.div(bc2).sqrt_().add_(group["eps"])
        if isinstance(grad_coef, torch.Tensor):  # capturable: the coefficients live on the device
            p.add_(grad / denom * grad_coef).add_(m / denom * m_coef)
        else:
            p.addcdiv_(grad, denom, value=grad_coef).addcdiv_(m, denom, value=m_coef)

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        beta1, beta2 = group["betas"]
        ms = [s["exp_avg"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        grad_coefs, m_coefs, bc2s = zip(*(self._coefficients(group, s) for s in states), strict=True)
        denom = torch._foreach_div(vs, list(bc2s))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        if isinstance(grad_coefs[0], torch.Tensor):
            for nums, coefs in ((grads, grad_coefs), (ms, m_coefs)):
                scaled = torch._foreach_div(nums, denom)
                torch._foreach_mul_(scaled, list(coefs))
                torch._foreach_add_(params, scaled)
        else:
            torch._foreach_addcdiv_(params, grads, denom, list(grad_coefs))
            torch._foreach_addcdiv_(params, ms, denom, list(m_coefs))
