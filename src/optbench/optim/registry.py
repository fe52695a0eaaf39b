"""Optimizers by name, and the two default presets (Keras 3 and PyTorch 2.x).

The seed's published table was made with Keras defaults, so ``keras`` is the default preset.
A preset sets both the default values and the formula variant (where ε sits, decoupled
weight decay); any hyperparameter given explicitly wins over the preset.
"""

from __future__ import annotations

from typing import Any

from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .base import BaseOptimizer
from .lion import Lion
from .muon import Muon
from .nadam import NAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .schedule_free import ScheduleFreeAdamW
from .sgd import SGD

OPTIMIZERS: dict[str, type[BaseOptimizer]] = {
    "sgd": SGD,
    "sgd_momentum": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "rprop": Rprop,
    "adamw": Adam,
    "nadam": NAdam,
    "lion": Lion,
    "schedule_free_adamw": ScheduleFreeAdamW,
    "muon": Muon,
}

# Momentum 0.9 is our choice for "SGD with momentum": neither library has a non-zero default.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "keras": {
        "sgd": dict(lr=0.01, momentum=0.0, decoupled_weight_decay=True),
        "sgd_momentum": dict(lr=0.01, momentum=0.9, decoupled_weight_decay=True),
        "adagrad": dict(
            lr=1e-3,
            initial_accumulator_value=0.1,
            eps=1e-7,
            eps_inside_sqrt=True,
            decoupled_weight_decay=True,
        ),
        "rmsprop": dict(lr=1e-3, alpha=0.9, eps=1e-7, eps_inside_sqrt=True, decoupled_weight_decay=True),
        "adadelta": dict(lr=1e-3, rho=0.95, eps=1e-7, decoupled_weight_decay=True),
        "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-7, epsilon_hat=True, decoupled_weight_decay=True),
        "rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
        "adamw": dict(
            lr=1e-3, betas=(0.9, 0.999), eps=1e-7, epsilon_hat=True, weight_decay=0.004, decoupled_weight_decay=True
        ),
        "nadam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-7, momentum_decay=1.0, decoupled_weight_decay=True),
        "lion": dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0),
        # Keras has no Schedule-Free optimizer: the authors' defaults (the schedulefree package), as for torch.
        "schedule_free_adamw": dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0),
        "muon": dict(
            lr=1e-3,
            momentum=0.95,
            nesterov=True,
            weight_decay=0.004,
            eps=1e-7,
            adjust_lr="match_rms_adamw",
            ns_dtype="param",
            norm_eps="add",
            momentum_form="sum",
            adamw_betas=(0.9, 0.999),
            adamw_eps=1e-7,
            adamw_weight_decay=0.004,
            adamw_epsilon_hat=True,
        ),
    },
    "torch": {
        "sgd": dict(lr=1e-3, momentum=0.0),
        "sgd_momentum": dict(lr=1e-3, momentum=0.9),
        "adagrad": dict(lr=1e-2, initial_accumulator_value=0.0, eps=1e-10),
        "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8),
        "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6),
        "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
        "rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
        "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decoupled_weight_decay=True),
        "nadam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3),
        # PyTorch has no Lion: the defaults of lion-pytorch, the implementation PyTorch users take.
        "lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
        # PyTorch has none either: the schedulefree package's defaults.
        "schedule_free_adamw": dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0),
        # torch.optim.Muon on the matrices, torch.optim.AdamW's defaults on the rest (its lr 1e-3 is Muon's).
        "muon": dict(
            lr=1e-3,
            momentum=0.95,
            nesterov=True,
            weight_decay=0.1,
            eps=1e-7,
            adjust_lr="original",
            ns_dtype="bfloat16",
            norm_eps="clamp",
            momentum_form="lerp",
            adamw_betas=(0.9, 0.999),
            adamw_eps=1e-8,
            adamw_weight_decay=0.01,
            adamw_epsilon_hat=False,
        ),
    },
}


def resolve_hparams(name: str, preset: str = "keras", **overrides: Any) -> dict[str, Any]:
    """The preset's hyperparameters for ``name`` with every non-``None`` override applied."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}.")
    if preset not in PRESETS:
        raise ValueError(f"Unknown optimizer.preset={preset!r}; choose one of: {', '.join(PRESETS)}.")
    hparams = dict(PRESETS[preset][name])
    hparams.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None})
    return hparams


def create(params, name: str, preset: str = "keras", search_space: Any = None, **overrides: Any) -> BaseOptimizer:
    """Build optimizer ``name`` over ``params`` (the ``_target_`` of every ``conf/optimizer`` file).

    ``search_space`` is the tuned mode's Optuna search space, kept beside the hyperparameters it searches.
    """
    hparams = resolve_hparams(name, preset, **overrides)
    try:
        return OPTIMIZERS[name](params, **hparams)
    except TypeError as err:
        raise ValueError(f"optimizer={name}: {err}. Check the optimizer.* overrides.") from err
