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


PATHS = {"single": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


@pytest.mark.parametrize(
    ("name", "preset", "path"),
    [
        pytest.param(name, preset, path, id=f"{name}-{preset}-{path}")
        for name, preset in REFERENCES
        for path in PATHS
        if path != "fused" or O.OPTIMIZERS[name].has_fused
    ],
)
def test_equals_its_reference(name, preset, path):
    want = REFERENCES[name, preset]()
    got = torch_trajectory(lambda p: O.create(p, name, preset, **PATHS[path]))
    assert not np.allclose(want, W0), "the reference must have moved"
    error = worst_relative_error(got, want)
    print(f"{name} {preset} {path}: worst relative error {error:.2e}")
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


# -- Muon: a matrix (Muon) and a vector (AdamW) --------------------------------------------------------
M0 = np.linspace(-1.0, 1.5, 24).reshape(6, 4) + 0.3 * np.sin(np.arange(24.0)).reshape(6, 4)


def rippled(p: np.ndarray) -> np.ndarray:
    scale = np.linspace(0.2, 3.0, p.size).reshape(p.shape)
    return scale * p + 0.1 - 0.3 * np.sin(3 * p)


def muon_torch(make) -> np.ndarray:
    """A matrix and a vector, ``make(matrix, vector)`` the optimizers that step them; both flattened after."""
    w = torch.tensor(M0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(W0[:4], dtype=torch.float64, requires_grad=True)
    optimizers = make(w, b)
    for _ in range(STEPS):
        for p in (w, b):
            p.grad = torch.tensor(rippled(p.detach().numpy()))
        for opt in optimizers:
            opt.step()
    return np.concatenate([w.detach().numpy().ravel(), b.detach().numpy()])


def muon_keras() -> np.ndarray:
    keras = pytest.importorskip("keras")
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        w = keras.Variable(M0.copy(), dtype="float64", name="kernel")
        b = keras.Variable(W0[:4].copy(), dtype="float64", name="bias")
        opt = keras.optimizers.Muon()
        for _ in range(STEPS):
            grads = [keras.ops.convert_to_tensor(rippled(np.asarray(v.numpy())), dtype="float64") for v in (w, b)]
            opt.apply_gradients(list(zip(grads, (w, b), strict=True)))
        return np.concatenate([np.asarray(w.numpy()).ravel(), np.asarray(b.numpy())])
    finally:
        keras.config.set_floatx(before)


MUON_REFERENCES = {
    "torch": lambda: muon_torch(lambda w, b: [torch.optim.Muon([w]), torch.optim.AdamW([b], foreach=False)]),
    "keras": muon_keras,
}


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("preset", list(MUON_REFERENCES))
def test_muon_equals_its_reference(preset, foreach):
    """torch: torch.optim.Muon on the matrix, torch.optim.AdamW on the vector; keras: keras.optimizers.Muon."""
    want = MUON_REFERENCES[preset]()
    got = muon_torch(lambda w, b: [O.create([w, b], "muon", preset, foreach=foreach)])
    error = worst_relative_error(got, want)
    print(f"muon {preset} {'foreach' if foreach else 'single'}: worst relative error {error:.2e}")
    # Keras takes √max(rows, cols) in float32 (ops.sqrt of an integer): a 4e-8 relative error in every
    # Muon step size, 7e-9 in the weights after 100 steps; ours is float64 (float32 there gives 2e-10).
    assert error < (1e-8 if preset == "keras" else RTOL)


@pytest.mark.parametrize("preset", list(MUON_REFERENCES))
def test_muon_capturable_takes_the_same_steps(preset):
    """Capturable reaches only the AdamW tensors (Muon's matrices keep no step counter)."""
    plain = muon_torch(lambda w, b: [O.create([w, b], "muon", preset)])
    captured = muon_torch(lambda w, b: [O.create([w, b], "muon", preset, capturable=True)])
    np.testing.assert_allclose(captured, plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain, np.concatenate([M0.ravel(), W0[:4]])), "both tensors must have moved"


def test_muon_orthogonalises_the_update():
    """NS₅ maps a matrix to one whose singular values lie near 1 (0.5–1.5, its authors' design)."""
    from optbench.optim.muon import newton_schulz

    u = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    group = dict(ns_coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=1e-7, ns_dtype="param", norm_eps="add")
    s = torch.linalg.svdvals(newton_schulz(u, group))
    assert s.min() > 0.5 and s.max() < 1.5 and torch.linalg.svdvals(u).max() > 2
