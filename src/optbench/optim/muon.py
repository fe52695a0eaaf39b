"""Muon: momentum, orthogonalised by a Newton–Schulz iteration, on 2-D weights; AdamW on every other tensor,
as its authors use it (Jordan et al. 2024; the optimizer of the CIFAR-10 and nanoGPT speed records).

    matrices:  b ← momentum of g (Nesterov: u = g + μ·b, else u = b);  O = NS₅(u) ≈ U·Vᵀ of u = U·S·Vᵀ
               W ← W·(1 − η·λ) − η·s(W)·O
    others:    AdamW (``adamw_*`` hyperparameters; ``adamw_lr=None``: η, as Keras's ``adam_lr_ratio=1``)

NS₅ runs five steps of X ← a·X + (b·A + c·A²)·X, A = X·Xᵀ, from X = u/‖u‖_F (transposed when tall). The
two libraries differ in details that the presets set: PyTorch iterates in bfloat16, clamps ‖u‖ at ε,
keeps b as an average (b ← b + (1 − μ)·(g − b)) and scales by s = √max(1, rows/cols); Keras iterates in
the weight's dtype, adds ε to ‖u‖, keeps b as a sum (b ← μ·b + g) and scales by s = 0.2·√max(rows, cols)
(Moonlight's "match the RMS of AdamW"). A conv kernel (4-D) gets AdamW in both, as in Keras.
"""

from __future__ import annotations

import math

import torch

from .adam import Adam
from .base import BaseOptimizer, check, check_betas, check_common

ADJUST_LR = ("original", "match_rms_adamw")


def newton_schulz(u: torch.Tensor, group: dict) -> torch.Tensor:
    """The orthogonalised ``u`` (same shape and dtype) under the group's conventions."""
    a, b, c = group["ns_coefficients"]
    x = u.to(torch.bfloat16) if group["ns_dtype"] == "bfloat16" else u.clone()
    tall = u.size(0) > u.size(1)
    if tall:
        x = x.T
    norm = x.norm()
    x = x / (norm.clamp(min=group["eps"]) if group["norm_eps"] == "clamp" else norm + group["eps"])
    for _ in range(group["ns_steps"]):
        gram = x @ x.T
        if group["ns_dtype"] == "bfloat16":  # PyTorch's fused form (one rounding per product)
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        else:  # Keras's, term by term
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.T if tall else x).to(u.dtype)


class Muon(Adam):
    has_fused = False  # its own rule on matrices; Adam's kernel is not it

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.1,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        ns_steps: int = 5,
        eps: float = 1e-7,
        adjust_lr: str = "original",
        ns_dtype: str = "bfloat16",
        norm_eps: str = "clamp",
        momentum_form: str = "lerp",
        adamw_lr: float | None = None,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.01,
        adamw_epsilon_hat: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        check_common(lr if adamw_lr is None else adamw_lr, adamw_weight_decay, adamw_eps)
        check(0.0 <= momentum < 1.0, f"Invalid momentum={momentum}; it must be in [0, 1).")
        check(len(ns_coefficients) == 3, f"Invalid ns_coefficients={ns_coefficients}; give three values (a, b, c).")
        check(isinstance(ns_steps, int) and 0 < ns_steps < 100, f"Invalid ns_steps={ns_steps}; give 1 to 99.")
        for key, value, allowed in (
            ("adjust_lr", adjust_lr, ADJUST_LR),
            ("ns_dtype", ns_dtype, ("bfloat16", "param")),
            ("norm_eps", norm_eps, ("clamp", "add")),
            ("momentum_form", momentum_form, ("lerp", "sum")),
        ):
            check(value in allowed, f"Invalid {key}={value!r}; choose one of: {', '.join(allowed)}.")
        adamw_betas = check_betas(adamw_betas, "adamw_betas")
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            ns_coefficients=tuple(ns_coefficients), ns_steps=ns_steps, eps=eps, adjust_lr=adjust_lr,
            ns_dtype=ns_dtype, norm_eps=norm_eps, momentum_form=momentum_form, adamw_lr=adamw_lr,
            adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
            adamw_epsilon_hat=adamw_epsilon_hat,
        )  # fmt: skip
        BaseOptimizer.__init__(self, params, defaults, foreach, capturable)

    @staticmethod
    def _adamw(group: dict) -> dict:
        """The group as Adam sees it, for the tensors that are not matrices."""
        return dict(
            lr=group["lr"] if group["adamw_lr"] is None else group["adamw_lr"], betas=group["adamw_betas"], eps=group["adamw_eps"],
            weight_decay=group["adamw_weight_decay"], amsgrad=False, epsilon_hat=group["adamw_epsilon_hat"],
            decoupled_weight_decay=True, capturable=group["capturable"],
        )  # fmt: skip

    def _init_state(self, group, p, state):
        if p.ndim == 2:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            super()._init_state(self._adamw(group), p, state)

    def _muon(self, group, p, grad, state):
        mu, buf = group["momentum"], state["momentum_buffer"]
        if group["momentum_form"] == "lerp":
            buf.lerp_(grad, 1 - mu)
            update = grad.lerp(buf, mu) if group["nesterov"] else buf
        else:
            buf.mul_(mu).add_(grad)
            update = grad.add(buf, alpha=mu) if group["nesterov"] else buf
        rows, cols = p.shape
        scale = (
            math.sqrt(max(1.0, rows / cols)) if group["adjust_lr"] == "original" else 0.2 * math.sqrt(max(rows, cols))
        )
        if group["weight_decay"] != 0:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(newton_schulz(update, group), alpha=-group["lr"] * scale)

    def _update_single(self, group, p, grad, state):
        if p.ndim == 2:
            self._muon(group, p, grad, state)
        else:
            super()._update_single(self._adamw(group), p, grad, state)

    def _update_foreach(self, group, params, grads, states):
        """Each matrix alone (its iteration is its own); the other tensors through Adam's foreach path."""
        others = []
        for p, g, s in zip(params, grads, states, strict=True):
            if p.ndim == 2:
                self._muon(group, p, g, s)
            else:
                others.append((p, g, s))
        if others:
            super()._update_foreach(self._adamw(group), *(list(t) for t in zip(*others, strict=True)))
