"""RMSProp: divide the gradient by a running root-mean-square of recent gradients.

    v ← α·v + (1 − α)·g²
    c ← α·c + (1 − α)·g,  v̂ = v − c²          (``centered=True``; otherwise v̂ = v)
    d = √v̂ + ε   (PyTorch)   or   √(v̂ + ε)    (Keras, ``eps_inside_sqrt=True``)
    b ← μ·b + g/d,  w ← w − η·b                (momentum μ > 0; otherwise w ← w − η·g/d)

Keras's momentum buffer stores η-scaled steps; that is the same trajectory at a constant η.
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, apply_weight_decay_foreach, apply_weight_decay_single, check, check_common


class RMSprop(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        eps_inside_sqrt: bool = False,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        check(0.0 <= alpha < 1.0, f"Invalid alpha={alpha} (the decay rho of Keras); it must be in [0, 1).")
        check(momentum >= 0.0, f"Invalid momentum={momentum}; it must be >= 0.")
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            eps_inside_sqrt=eps_inside_sqrt,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        alpha, eps = group["alpha"], group["eps"]
        v = state["square_avg"]
        v.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            c = state["grad_avg"]
            c.lerp_(grad, 1 - alpha)
            v_hat = v.addcmul(c, c, value=-1)
        else:
            v_hat = v
        if group["eps_inside_sqrt"]:
            denom = v_hat.add(eps).sqrt_()
        else:
            denom = v_hat.sqrt().add_(eps)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf.mul_(group["momentum"]).addcdiv_(grad, denom)
            p.add_(buf, alpha=-group["lr"])
        else:
            p.addcdiv_(grad, denom, value=-group["lr"])

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        alpha, eps = group["alpha"], group["eps"]
        vs = [s["square_avg"] for s in states]
        torch._foreach_mul_(vs, alpha)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - alpha)
        if group["centered"]:
            cs = [s["grad_avg"] for s in states]
            torch._foreach_lerp_(cs, grads, 1 - alpha)
            v_hat = torch._foreach_addcmul(vs, cs, cs, value=-1)
        else:
            v_hat = vs
        if group["eps_inside_sqrt"]:
            denom = torch._foreach_add(v_hat, eps)
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(v_hat)
            torch._foreach_add_(denom, eps)
        if group["momentum"] > 0:
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, denom)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
