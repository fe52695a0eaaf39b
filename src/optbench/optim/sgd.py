"""SGD, with optional heavy-ball or Nesterov momentum.

    g ← ∇L(w) (+ wd·w for L2 weight decay)
    v ← μ·v + (1 − dampening)·g          (v₁ = g)
    w ← w − η·(g + μ·v if nesterov else v)

Keras writes momentum as m ← μ·m − η·g, w ← w + m; at a constant learning rate that is
the same trajectory (m = −η·v), so one class serves both presets.
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, apply_weight_decay_foreach, apply_weight_decay_single, check, check_common


class SGD(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay)
        check(momentum >= 0.0, f"Invalid momentum={momentum}; it must be >= 0 (0 disables momentum).")
        check(dampening >= 0.0, f"Invalid dampening={dampening}; it must be >= 0.")
        check(
            not nesterov or (momentum > 0 and dampening == 0),
            "Nesterov momentum needs momentum > 0 and dampening = 0.",
        )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, foreach, capturable)

    def _init_state(self, group, p, state):
        if group["momentum"] != 0:
            state["momentum_buffer"] = None

    def _update_single(self, group, p, grad, state):
        grad = apply_weight_decay_single(group, p, grad)
        mu = group["momentum"]
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.detach().clone()
            else:
                buf.mul_(mu).add_(grad, alpha=1 - group["dampening"])
            grad = grad.add(buf, alpha=mu) if group["nesterov"] else buf
        p.add_(grad, alpha=-group["lr"])

    def _update_foreach(self, group, params, grads, states):
        grads = apply_weight_decay_foreach(group, params, grads)
        mu = group["momentum"]
        if mu != 0:
            if any(s.get("momentum_buffer") is None for s in states):
                for s, g in zip(states, grads, strict=True):
                    if s.get("momentum_buffer") is None:
                        s["momentum_buffer"] = g.detach().clone()
                    else:
                        s["momentum_buffer"].mul_(mu).add_(g, alpha=1 - group["dampening"])
                bufs = [s["momentum_buffer"] for s in states]
            else:
                bufs = [s["momentum_buffer"] for s in states]
                torch._foreach_mul_(bufs, mu)
                torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
            grads = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
        torch._foreach_add_(params, grads, alpha=-group["lr"])
