"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"; AlgoPerf v0.5's self-tuning winner).

No learning-rate schedule: an iterate average replaces it. Three sequences share one set of weights:

    z ← z − γₜ·(ĝ + λ·y)                    the base AdamW-like sequence (ĝ = g/(√(v/(1−β₂ᵗ)) + ε))
    x ← (1 − cₜ)·x + cₜ·z                    the average, weighted cₜ = wₜ/Σw, wₜ = tʳ·max γ^p
    y = (1 − β₁)·z + β₁·x                    where the gradient is taken; the weights hold y in training

γₜ = η·min(1, t/warm-up). Evaluation needs x: ``eval()`` turns the weights into x and ``train()`` back
into y, as the authors require (``ClassifierModule`` calls them around validation and testing).
"""

from __future__ import annotations

import torch

from .base import BaseOptimizer, check, check_betas, check_common


def set_mode(optimizers, train: bool) -> None:
    """``train()`` or ``eval()`` on each optimizer that keeps evaluation weights apart (Schedule-Free, ours
    or the authors' package); a no-op for the others."""
    for optimizer in optimizers:
        switch = getattr(getattr(optimizer, "optimizer", optimizer), "train" if train else "eval", None)
        if callable(switch):
            switch()


class ScheduleFreeAdamW(BaseOptimizer):
    def __init__(
        self,
        params,
        lr: float = 2.5e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        capturable: bool = False,
    ):
        check_common(lr, weight_decay, eps)
        betas = check_betas(betas)
        check(betas[0] > 0.0, f"Invalid beta1={betas[0]} in betas={betas}; it must be in (0, 1).")
        check(isinstance(warmup_steps, int) and warmup_steps >= 0, f"Invalid warmup_steps={warmup_steps}; >= 0.")
        check(r >= 0.0, f"Invalid r={r}; it must be >= 0.")
        check(weight_lr_power >= 0.0, f"Invalid weight_lr_power={weight_lr_power}; it must be >= 0.")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
            weight_lr_power=weight_lr_power, train_mode=True,
        )  # fmt: skip
        super().__init__(params, defaults, foreach, capturable)

    # -- the weights hold y while training, x while evaluating --------------------------------------
    @torch.no_grad()
    def eval(self) -> None:
        self._switch(False, lambda beta1: 1 - 1 / beta1)

    @torch.no_grad()
    def train(self) -> None:
        self._switch(True, lambda beta1: 1 - beta1)

    def _switch(self, train: bool, weight) -> None:
        for group in self.param_groups:
            if group["train_mode"] != train:
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(self.state[p]["z"], weight(group["betas"][0]))
                group["train_mode"] = train

    def step(self, closure=None):
        check(
            all(g["train_mode"] for g in self.param_groups),
            "ScheduleFreeAdamW.step() in eval mode: the weights hold the average x; call train() first.",
        )
        return super().step(closure)

    # -- the step -----------------------------------------------------------------------------------
    def _init_state(self, group, p, state):
        state["z"] = p.detach().clone(memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        for key in ("lr_max", "weight_sum"):  # of this parameter's steps (a tensor when capturable)
            state[key] = torch.zeros((), device=p.device) if group["capturable"] else 0.0

    @staticmethod
    def _scalars(group, state):
        """(γₜ, cₜ, 1 − β₂ᵗ) of this step; advances the running max of γ and the sum of weights."""
        t, warmup = state["step"], group["warmup_steps"]
        beta2 = group["betas"][1]
        if isinstance(t, torch.Tensor):
            lr = group["lr"] * (torch.clamp(t / warmup, max=1.0) if warmup else torch.ones_like(t))
            torch.maximum(state["lr_max"], lr, out=state["lr_max"])
            weight = t ** group["r"] * state["lr_max"] ** group["weight_lr_power"]
            state["weight_sum"].add_(weight)
            ckp1 = torch.where(state["weight_sum"] > 0, weight / state["weight_sum"], torch.zeros_like(weight))
        else:
            lr = group["lr"] * (min(1.0, t / warmup) if warmup else 1.0)
            state["lr_max"] = max(lr, state["lr_max"])
            weight = t ** group["r"] * state["lr_max"] ** group["weight_lr_power"]
            state["weight_sum"] += weight
            ckp1 = weight / state["weight_sum"] if state["weight_sum"] > 0 else 0.0
        return lr, ckp1, 1 - beta2**t

    def _update_single(self, group, p, grad, state):
        beta1, beta2 = group["betas"]
        z, v = state["z"], state["exp_avg_sq"]
        lr, ckp1, bc2 = self._scalars(group, state)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = grad.div(v.div(bc2).sqrt_().add_(group["eps"]))
        if group["weight_decay"] != 0:
            step.add_(p, alpha=group["weight_decay"])
        p.lerp_(z, ckp1)
        if isinstance(lr, torch.Tensor):
            p.add_(step * (lr * (beta1 * (1 - ckp1) - 1)))
            z.sub_(step * lr)
        else:
            p.add_(step, alpha=lr * (beta1 * (1 - ckp1) - 1))
            z.sub_(step, alpha=lr)

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        zs = [s["z"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        lrs, ckp1s, bc2s = zip(*(self._scalars(group, s) for s in states), strict=True)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(vs, list(bc2s))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        steps = torch._foreach_div(grads, denom)
        if group["weight_decay"] != 0:
            torch._foreach_add_(steps, params, alpha=group["weight_decay"])
        torch._foreach_lerp_(params, zs, list(ckp1s))
        torch._foreach_add_(
            params, torch._foreach_mul(steps, [lr * (beta1 * (1 - c) - 1) for lr, c in zip(lrs, ckp1s, strict=True)])
        )
        torch._foreach_sub_(zs, torch._foreach_mul(steps, list(lrs)))
