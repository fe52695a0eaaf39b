"""A user's own networks and data, trained and compared by optbench without changing optbench.

pip install -e examples/optbench-example
optbench-train -m model=custom model.net._target_=optbench_example.MLP optimizer=adam,sgd_momentum seed=1,2
"""

from .data import NormalizedMNIST
from .models import MLP, SmallResNet

__all__ = ["MLP", "NormalizedMNIST", "SmallResNet"]
