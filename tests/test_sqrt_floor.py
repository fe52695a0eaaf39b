"""The √ floor of the adaptive optimizers (``optim.base.sqrt_floor``): a CPU speed rewrite that changes no bit."""

from __future__ import annotations

import math

import pytest
import torch

from optbench import optim as O
from optbench.optim import adagrad, adam, base, rmsprop

TINY32 = torch.finfo(torch.float32).tiny


def awkward_values(dtype: torch.dtype) -> torch.Tensor:
    """0, −0, denormals, the smallest normals and ordinary magnitudes: where √ is slow and where it is not."""
    info = torch.finfo(dtype)
    special = [0.0, -0.0, info.smallest_normal / 2**20, info.smallest_normal / 3, info.tiny, info.tiny * 1.5]
    ordinary = torch.logspace(-30, 2, 200, dtype=torch.float64).tolist()
    return torch.tensor(special + ordinary, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("divisor", [1.0, math.sqrt(1 - 0.999)])
def test_floor_leaves_every_sum_as_it_was(dtype, divisor):
    """√v / d + eps with v raised to the floor equals it without, for every d ≥ the divisor given and every
    eps the floor is offered for, down to where it stops being offered."""
    v = awkward_values(dtype)
    offered = []
    for eps in torch.logspace(-6, -13, 71, dtype=torch.float64).tolist():
        floor = base.sqrt_floor(v, eps, divisor)
        if floor is None:
            continue
        offered.append(eps)
        assert floor == torch.finfo(dtype).tiny
        for d in (divisor, divisor * 1.7, 1.0):
            assert torch.equal(base.sqrt_single(v, floor) / d + eps, v.sqrt() / d + eps), (eps, d)
        assert torch.equal(base.sqrt_foreach([v], floor)[0], base.sqrt_single(v, floor))
    # the defaults: Keras's 1e-7 and torch's 1e-8 (Adam: divisor √(1 − β₂) at step 1), torch Adagrad's 1e-10 (1)
    assert max(offered) >= 1e-6 and min(offered) <= (1e-10 if divisor == 1 else 1e-8)
    assert not torch.equal(base.sqrt_single(v, torch.finfo(dtype).tiny), v.sqrt())  # it raises the zeros


def test_no_floor_where_it_could_show():
    """A floor is used only where √floor vanishes in eps, on a CPU; otherwise √ runs as it is."""
    assert base.sqrt_floor(torch.zeros(2), 1e-12) is None  # √tiny ≈ 1.1e-19 is not below eps's last bit
    assert base.sqrt_floor(torch.zeros(2), 1e-8, divisor=1e-4) is None
    assert base.sqrt_floor(torch.zeros(2, dtype=torch.float16), 1e-8) is None
    assert base.sqrt_floor(torch.zeros(2, device="meta"), 1e-8) is None
    assert base.sqrt_floor(torch.zeros(2, dtype=torch.float64), 1e-12) == torch.finfo(torch.float64).tiny
    v = torch.tensor([0.0, 4.0])
    assert base.sqrt_single(v, None).tolist() == [0.0, 2.0]


CASES = [
    ("adam", adam, "keras"),
    ("adam", adam, "torch"),
    ("adam", adam, dict(amsgrad=True, betas=(0.8, 0.99))),
    ("adagrad", adagrad, "torch"),
    ("rmsprop", rmsprop, "torch"),
]


def train_dead_inputs(name, preset, foreach: bool, steps: int = 60) -> tuple[list[torch.Tensor], torch.Tensor]:
    """float32 weights whose inputs are zero in half the columns (exact-zero gradients there, as the seed
    CNN's always-zero features give); returns the weights and the optimizer's second-moment state."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 3)
    hp = preset if isinstance(preset, dict) else {}
    opt = O.create(layer.parameters(), name, "torch" if hp else preset, foreach=foreach, **hp)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=gen)
        x[:, 4:] = 0
        opt.zero_grad()
        ((layer(x) - 1) ** 2).mean().backward()
        opt.step()
    state = opt.state[layer.weight]
    second = state.get("exp_avg_sq", state.get("square_avg", state.get("sum")))
    return [p.detach().clone() for p in layer.parameters()], second


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize(("name", "module", "preset"), CASES, ids=lambda c: c if isinstance(c, str) else "")
def test_training_with_the_floor_is_bit_identical(name, module, preset, foreach, monkeypatch):
    with_floor, second = train_dead_inputs(name, preset, foreach)
    assert (second == 0).any() and (second > 0).any()  # zeros the floor acts on, and others it must leave
    monkeypatch.setattr(module, "sqrt_floor", lambda *args, **kwargs: None)
    without, _ = train_dead_inputs(name, preset, foreach)
    assert all(torch.equal(a, b) for a, b in zip(with_floor, without, strict=True))
