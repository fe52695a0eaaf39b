"""Shared skeleton of optbench's optimizers, in the manner of ``torch.optim``.

Each subclass writes its update rule twice: ``_update_single`` for one tensor at a
time (readable, the reference) and ``_update_foreach`` over lists of tensors with
``torch._foreach_*`` kernels (one launch per op for the whole group). A rule with a one-pass CPU kernel
(``fused.py``) also writes ``_update_fused`` and takes ``fused``: ``None`` (auto) uses it wherever the
tensors allow and ``foreach`` is not set, ``True`` insists, ``False`` never does.

``capturable=True`` (what ``trainer.cuda_graph`` asks for) keeps each step counter as a tensor on the
parameter's device and derives the step-dependent scalars (Adam's bias corrections, Adagrad's decayed
rate) from it with tensor ops, so a step recorded once in a CUDA graph stays right on every replay and
never reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from . import fused


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds (hyperparameter validation)."""
    if not condition:
        raise ValueError(message)


FLOAT32_MAX = 3.4028234663852886e38  # a hyperparameter multiplies float32 tensors: beyond this it overflows


def check_common(lr: float, weight_decay: float, eps: float | None = None) -> None:
    check(lr >= 0.0, f"Invalid learning rate: lr={lr}; it must be >= 0 (try e.g. 1e-3).")
    check(lr <= FLOAT32_MAX, f"Invalid learning rate: lr={lr}; it must be a finite number at most {FLOAT32_MAX:.3g}.")
    check(0.0 <= weight_decay <= FLOAT32_MAX, f"Invalid weight_decay={weight_decay}; it must be >= 0 and finite.")
    if eps is not None:
        check(0.0 < eps <= FLOAT32_MAX, f"Invalid epsilon: eps={eps}; it must be > 0 and finite (try e.g. 1e-8).")


def check_betas(betas, name: str = "betas", closed: bool = False) -> tuple[float, float]:
    """Two coefficients, each in [0, 1) (or [0, 1] with ``closed``); returned as a tuple."""
    betas = tuple(betas)
    check(len(betas) == 2, f"Invalid {name}={betas}; give two values (beta1, beta2).")
    for i, b in enumerate(betas):
        check(
            0.0 <= b <= 1.0 if closed else 0.0 <= b < 1.0,
            f"Invalid beta{i + 1}={b} in {name}={betas}; each must be in [0, 1{']' if closed else ')'}.",
        )
    return betas


class BaseOptimizer(Optimizer):
    """Runs closures, skips parameters without gradients, and dispatches to a single or foreach path.

    ``foreach=None`` picks the multi-tensor path whenever every parameter of a group shares
    one device and dtype and none is sparse, which is always the case for the seed CNN.
    """

    has_fused = False  # True where the class writes ``_update_fused`` and takes ``fused``

    def __init__(self, params, defaults: dict[str, Any], foreach: bool | None = None, capturable: bool = False):
        defaults = dict(defaults, foreach=foreach, capturable=capturable)
        super().__init__(params, defaults)
        for group in self.param_groups:
            value = group.get("fused")
            check(value is None or isinstance(value, bool), f"Invalid fused={value!r}; give true, false or null.")
            if value:
                check(not group["foreach"], "fused=True and foreach=True exclude each other; set one of them.")
                why = fused.available(group["params"], group["capturable"])
                check(
                    why is None,
                    f"{type(self).__name__}(fused=True) cannot run here: {why}. Use fused=None (optimizer.fused=null).",
                )

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            if self.has_fused:
                group.setdefault("fused", False)  # a state saved before the fused path existed ran without it

    # Subclasses implement these three.
    def _init_state(self, group: dict, p: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _update_single(self, group: dict, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _update_foreach(self, group: dict, params: list, grads: list, states: list) -> None:
        raise NotImplementedError

    def _update_fused(self, group: dict, params: list, grads: list, states: list) -> None:
        raise NotImplementedError

    def uses_fused(self, group: dict, params: list[torch.Tensor] | None = None) -> bool:
        """Whether ``group`` takes the one-pass CPU kernel (``fused=None``: when its tensors allow it and
        ``foreach`` is not set)."""
        if not self.has_fused or group.get("fused") is False:
            return False
        if group.get("fused"):
            return True
        return group["foreach"] is None and fused.available(params or group["params"], group["capturable"]) is None

    @staticmethod
    def uses_foreach(group: dict, params: list[torch.Tensor] | None = None) -> bool:
        """Whether ``group`` takes the multi-tensor path (``foreach=None``: when its tensors allow it)."""
        if group["foreach"] is not None:
            return group["foreach"]
        params = params or group["params"]
        first = params[0]
        return all(p.device == first.device and p.dtype == first.dtype for p in params)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                check(not p.grad.is_sparse, f"{type(self).__name__} does not support sparse gradients.")
            states = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), device=p.device) if group["capturable"] else 0
                    self._init_state(group, p, state)
                states.append(state)
            if group["capturable"]:
                torch._foreach_add_([s["step"] for s in states], 1)
            else:
                for state in states:
                    state["step"] += 1
            grads = [p.grad for p in params]
            if self.uses_fused(group, params):
                self._update_fused(group, params, grads, states)
            elif self.uses_foreach(group, params):
                self._update_foreach(group, params, grads, states)
            else:
                for p, g, s in zip(params, grads, states, strict=True):
                    self._update_single(group, p, g, s)
        return loss


def apply_weight_decay_single(group: dict, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """L2 (added to the gradient, PyTorch's default) or decoupled (Keras/AdamW: shrink the weights)."""
    wd = group["weight_decay"]
    if wd == 0:
        return grad
    if group["decoupled_weight_decay"]:
        p.mul_(1 - group["lr"] * wd)
        return grad
    return grad.add(p, alpha=wd)


def apply_weight_decay_foreach(group: dict, params: list, grads: list) -> list:
    wd = group["weight_decay"]
    if wd == 0:
        return grads
    if group["decoupled_weight_decay"]:
        torch._foreach_mul_(params, 1 - group["lr"] * wd)
        return grads
    return torch._foreach_add(grads, params, alpha=wd)


def addcdiv_scaled_single(p: torch.Tensor, num: torch.Tensor, denom: torch.Tensor, scale) -> None:
    """``p += scale · num / denom`` for a Python scale, or a device tensor one (capturable); clobbers ``denom``."""
    if isinstance(scale, torch.Tensor):
        p.addcdiv_(num, denom.div_(scale))
    else:
        p.addcdiv_(num, denom, value=scale)


def addcdiv_scaled_foreach(params: list, nums: list, denoms: list, scales: list) -> None:
    if isinstance(scales[0], torch.Tensor):
        torch._foreach_div_(denoms, scales)
        torch._foreach_addcdiv_(params, nums, denoms)
    else:
        torch._foreach_addcdiv_(params, nums, denoms, scales)
