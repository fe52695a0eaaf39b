"""optbench's own optimizers, written from their update rules (see docs/optimizers.md)."""

from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .base import BaseOptimizer
from .lion import Lion
from .muon import Muon
from .nadam import NAdam
from .registry import OPTIMIZERS, PRESETS, create, resolve_hparams
from .rmsprop import RMSprop
from .rprop import Rprop
from .schedule_free import ScheduleFreeAdamW, set_mode
from .sgd import SGD

__all__ = [
    "OPTIMIZERS",
    "PRESETS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "BaseOptimizer",
    "Lion",
    "Muon",
    "NAdam",
    "RMSprop",
    "Rprop",
    "ScheduleFreeAdamW",
    "create",
    "resolve_hparams",
    "set_mode",
]
