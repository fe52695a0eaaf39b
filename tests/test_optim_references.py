"""The newer optimizers equal their references over 100 steps in float64, for every preset: PyTorch's own
classes, lion-pytorch, and Keras 3 (torch backend) at their defaults, against ours at the preset's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from optbench import optim as O

os.environ.setdefault("KERAS_BACKEND", "torch")
STEPS = 100
W0 = np.linspace(-1.5, 2.0, 12)
A = np.linspace(0.2, 3.0, 12)
RTOL = 1e-9  # float64: what remains is the order of float operations


def grad(w: np.ndarray) -> np.ndarray:
    """A tilted quadratic with a ripple: steps change size and sign along the trajectory."""
    return A * w + 0.1 - 0.3 * np.sin(3 * w)


def torch_trajectory(make) -> np.ndarray:
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = make([w])
    for _ in range(STEPS):
        w.grad = torch.tensor(grad(w.detach().numpy()))
        opt.step()
    return w.detach().numpy()


def keras_trajectory(make) -> np.ndarray:
    keras = pytest.importorskip("keras")
    before = keras.config.floatx()
    keras.config.set_floatx("float64")  # the learning-rate variable too, else it is float32
    try:
        w = keras.Variable(W0.copy(), dtype="float64")
        opt = make(keras)
        for _ in range(STEPS):
            opt.apply_gradients([(keras.ops.convert_to_tensor(grad(np.asarray(w.numpy())), dtype="float64"), w)])
        return np.asarray(w.numpy())
    finally:
        keras.config.set_floatx(before)


def lion_pytorch(params):
    return pytest.importorskip("lion_pytorch").Lion(params)


def schedulefree_adamw(params, **hp):
    opt = pytest.importorskip("schedulefree").AdamWScheduleFree(params, foreach=False, **hp)
    opt.train()  # the package starts in eval mode
    return opt


# (ours, preset, reference): each library's optimizer at its own defaults. Neither Keras nor PyTorch has a
# Schedule-Free optimizer: both presets take the authors' package's defaults.
REFERENCES = {
    ("adamw", "torch"): lambda: torch_trajectory(lambda p: torch.optim.AdamW(p, foreach=False)),
    ("adamw", "keras"): lambda: keras_trajectory(lambda k: k.optimizers.AdamW()),
    ("nadam", "torch"): lambda: torch_trajectory(lambda p: torch.optim.NAdam(p, foreach=False)),
    ("nadam", "keras"): lambda: keras_trajectory(lambda k: k.optimizers.Nadam()),
    ("lion", "torch"): lambda: torch_trajectory(lion_pytorch),
    ("lion", "keras"): lambda: keras_trajectory(lambda k: k.optimizers.Lion()),
    ("schedule_free_adamw", "torch"): lambda: torch_trajectory(schedulefree_adamw),
    ("schedule_free_adamw", "keras"): lambda: torch_trajectory(schedulefree_adamw),
}


def worst_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize(("name", "preset"), list(REFERENCES))
def test_equals_its_reference(name, preset, foreach):
    want = REFERENCES[name, preset]()
    got = torch_trajectory(lambda p: O.create(p, name, preset, foreach=foreach))
    assert not np.allclose(want, W0), "the reference must have moved"
    error = worst_relative_error(got, want)
    print(f"{name} {preset} {'foreach' if foreach else 'single'}: worst relative error {error:.2e}")
    assert error < RTOL


@pytest.mark.parametrize(("name", "preset"), list(REFERENCES))
def test_capturable_takes_the_same_steps(name, preset):
    """Tensor step counters (what a CUDA graph needs) give the same trajectory, on the CPU too, up to the
    float32 precision of the counter and the scalars derived from it (as in torch.optim)."""
    plain = torch_trajectory(lambda p: O.create(p, name, preset))
    captured = torch_trajectory(lambda p: O.create(p, name, preset, capturable=True))
    np.testing.assert_allclose(captured, plain, rtol=1e-5, atol=1e-5)


def test_schedule_free_evaluates_the_average_and_trains_on_y():
    """eval() turns the weights into the authors' average x, train() back into y; a step in eval mode is
    refused. With warm-up and weight decay, so that every term of the rule is exercised."""
    hp = dict(lr=0.01, weight_decay=0.01, warmup_steps=10)
    theirs = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    mine = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    ref, opt = schedulefree_adamw([theirs], **hp), O.create([mine], "schedule_free_adamw", "torch", **hp)
    for _ in range(STEPS):
        for w, o in ((theirs, ref), (mine, opt)):
            w.grad = torch.tensor(grad(w.detach().numpy()))
            o.step()
    y = mine.detach().clone()
    ref.eval()
    opt.eval()
    assert worst_relative_error(mine.detach().numpy(), theirs.detach().numpy()) < RTOL
    assert not torch.allclose(mine, y), "x is not y"
    with pytest.raises(ValueError, match="eval mode"):
        opt.step()
    opt.train()
    torch.testing.assert_close(mine.detach(), y, rtol=1e-12, atol=1e-15)
