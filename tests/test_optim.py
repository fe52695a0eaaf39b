"""optbench's optimizers against torch.optim, hand-computed steps, Keras's formulas and toy problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench import optim as O

# (ours, torch.optim's, hyperparameters): the combinations both libraries support.
AGAINST_TORCH = [
    ("sgd", torch.optim.SGD, dict(lr=0.05)),
    ("sgd", torch.optim.SGD, dict(lr=0.05, weight_decay=0.01)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adagrad", torch.optim.Adagrad, dict(lr=0.05)),
    ("adagrad", torch.optim.Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adadelta", torch.optim.Adadelta, dict(lr=1.0)),
    ("adadelta", torch.optim.Adadelta, dict(lr=0.5, rho=0.95, weight_decay=0.01)),
    ("adam", torch.optim.Adam, dict(lr=0.01)),
    ("adam", torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.01)),
    ("rprop", torch.optim.Rprop, dict(lr=0.01)),
    ("rprop", torch.optim.Rprop, dict(lr=0.02, etas=(0.3, 1.5), step_sizes=(1e-4, 1.0))),
]


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()


def train(model, opt, steps: int, gen: torch.Generator | None = None):
    gen = gen or torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, dtype=torch.float64, generator=gen)
        y = torch.randn(16, 3, dtype=torch.float64, generator=gen)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


# Each path of the update: one tensor at a time, multi-tensor kernels, and the one-pass CPU kernel
# (optbench.optim.fused) where the optimizer has one.
PATHS = {"single": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def with_paths(cases: list, name_of=lambda case: case[0]) -> list:
    """``(*case, path)`` for every path ``case``'s optimizer has."""
    return [
        pytest.param(*case if isinstance(case, tuple) else (case,), path, id=f"{path}-{name_of(case)}")
        for case in cases
        for path in PATHS
        if path != "fused" or O.OPTIMIZERS[name_of(case)].has_fused
    ]


def ours(params, name, path="foreach", **hp):
    """Our class with explicit hyperparameters (torch's formula: no preset-specific flags)."""
    return O.OPTIMIZERS[name](params, **PATHS[path], **hp)


@pytest.mark.parametrize(("name", "reference", "hp", "path"), with_paths(AGAINST_TORCH))
def test_matches_torch_optim(name, reference, hp, path):
    a, b = small_net(), small_net()
    got = train(a, ours(a.parameters(), name, path, **hp), 200)
    want = train(b, reference(b.parameters(), foreach=False, **hp), 200)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)
    moved = [not torch.allclose(g, p0) for g, p0 in zip(got, small_net().parameters(), strict=True)]
    assert all(moved), "200 steps must move every parameter"


# -- one step by hand on a 3-element tensor -------------------------------------------------
W0 = [1.0, -2.0, 0.5]
G = [0.5, -1.0, 2.0]


def one_step(name, preset, steps=1, **overrides):
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = O.create([w], name, preset, **overrides)
    for _ in range(steps):
        w.grad = torch.tensor(G, dtype=torch.float64)
        opt.step()
    return w.detach().numpy()


def expected(name, preset):
    w, g = np.array(W0), np.array(G)
    if name in ("sgd", "sgd_momentum"):  # first momentum step equals the plain step (v₁ = g)
        return w - (0.01 if preset == "keras" else 1e-3) * g
    if name == "adagrad":
        if preset == "keras":
            return w - 1e-3 * g / np.sqrt(0.1 + g**2 + 1e-7)
        return w - 1e-2 * g / (np.sqrt(g**2) + 1e-10)
    if name == "rmsprop":
        if preset == "keras":
            return w - 1e-3 * g / np.sqrt(0.1 * g**2 + 1e-7)
        return w - 1e-2 * g / (np.sqrt(0.01 * g**2) + 1e-8)
    if name == "adadelta":
        lr, rho, eps = (1e-3, 0.95, 1e-7) if preset == "keras" else (1.0, 0.9, 1e-6)
        return w - lr * np.sqrt(eps) / np.sqrt((1 - rho) * g**2 + eps) * g
    if name == "adam":
        m, v = 0.1 * g, 0.001 * g**2
        if preset == "keras":  # lr·√(1−β₂)/(1−β₁) · m/(√v + ε̂)
            return w - 1e-3 * math.sqrt(0.001) / 0.1 * m / (np.sqrt(v) + 1e-7)
        return w - 1e-3 / 0.1 * m / (np.sqrt(v) / math.sqrt(0.001) + 1e-8)
    if name == "rprop":  # first step: sign(g)·lr
        return w - np.sign(g) * 0.01
    if name == "adamw":  # the weights shrink by lr·λ first, then Adam's step
        m, v = 0.1 * g, 0.001 * g**2
        if preset == "keras":
            return w * (1 - 1e-3 * 0.004) - 1e-3 * math.sqrt(0.001) / 0.1 * m / (np.sqrt(v) + 1e-7)
        return w * (1 - 1e-3 * 1e-2) - 1e-3 / 0.1 * m / (np.sqrt(v) / math.sqrt(0.001) + 1e-8)
    if name == "nadam":  # μ₁, μ₂ from the preset's ψ; Π₁ = μ₁
        lr, eps, psi = (1e-3, 1e-7, 1.0) if preset == "keras" else (2e-3, 1e-8, 4e-3)
        mu1, mu2 = (0.9 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (1, 2))
        d = np.sqrt(0.001 * g**2 / 0.001) + eps
        return w - lr * (1 - mu1) / (1 - mu1) * g / d - lr * mu2 / (1 - mu1 * mu2) * 0.1 * g / d
    if name == "lion":  # sign((1 − β₁)·g)·lr
        return w - np.sign(g) * (1e-3 if preset == "keras" else 1e-4)
    if name == "muon":  # a vector: AdamW's first step under the preset (Muon takes matrices only)
        m, v = 0.1 * g, 0.001 * g**2
        if preset == "keras":
            return w * (1 - 1e-3 * 0.004) - 1e-3 * math.sqrt(0.001) / 0.1 * m / (np.sqrt(v) + 1e-7)
        return w * (1 - 1e-3 * 1e-2) - 1e-3 / 0.1 * m / (np.sqrt(v) / math.sqrt(0.001) + 1e-8)
    if name == "schedule_free_adamw":  # c₁ = 1: y = z = w − γ·g/(|g| + ε) (both presets: the authors' values)
        return w - 2.5e-3 * g / (np.abs(g) + 1e-8)
    raise AssertionError(name)


@pytest.mark.parametrize("preset", ["keras", "torch"])
@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_hand_computed_first_step(name, preset):
    np.testing.assert_allclose(one_step(name, preset), expected(name, preset), rtol=1e-12)


def test_hand_computed_second_steps():
    w, g = np.array(W0), np.array(G)
    # Heavy-ball, torch preset: v₂ = 0.9·g + g; w₂ = w₁ − η·v₂.
    np.testing.assert_allclose(one_step("sgd_momentum", "torch", 2), w - 1e-3 * g - 1e-3 * 1.9 * g, rtol=1e-12)
    # Rprop: same sign twice → step grows by η⁺ = 1.2.
    np.testing.assert_allclose(one_step("rprop", "torch", 2), w - np.sign(g) * 0.01 * 2.2, rtol=1e-12)
    # Nesterov: update uses g + μ·v.
    np.testing.assert_allclose(one_step("sgd_momentum", "torch", 1, nesterov=True), w - 1e-3 * 1.9 * g, rtol=1e-12)


# -- Keras 3's published update rules, written out in NumPy ----------------------------------
def keras_reference(name, steps, grads):
    """Keras 3 optimizers (keras/src/optimizers/*.py) at their default arguments."""
    w = np.array(W0)
    m = np.zeros(3)
    v = np.zeros(3)
    acc = np.full(3, 0.1)
    for t in range(1, steps + 1):
        g = grads(w)
        if name == "sgd_momentum":  # m ← μm − ηg; w ← w + m
            m = 0.9 * m - 0.01 * g
            w = w + m
        elif name == "adagrad":
            acc = acc + g**2
            w = w - 1e-3 * g / np.sqrt(acc + 1e-7)
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g**2
            w = w - 1e-3 * g / np.sqrt(v + 1e-7)
        elif name == "adadelta":
            v = 0.95 * v + 0.05 * g**2
            delta = -np.sqrt(m + 1e-7) / np.sqrt(v + 1e-7) * g  # m holds the accumulated delta
            m = 0.95 * m + 0.05 * delta**2
            w = w + 1e-3 * delta
        elif name == "adam":
            alpha = 1e-3 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            m = m + (g - m) * 0.1
            v = v + (g**2 - v) * 0.001
            w = w - alpha * m / (np.sqrt(v) + 1e-7)
    return w


@pytest.mark.parametrize(
    ("name", "path"), with_paths(["sgd_momentum", "adagrad", "rmsprop", "adadelta", "adam"], lambda c: c)
)
def test_keras_preset_follows_keras_formulas(name, path):
    def grads(w):  # gradient of a tilted quadratic, so steps vary in size and sign
        return np.array([3.0, 1.0, 0.2]) * w + np.array([0.1, -0.3, 0.05])

    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = O.create([w], name, "keras", **PATHS[path])
    for _ in range(50):
        w.grad = torch.tensor(grads(w.detach().numpy()))
        opt.step()
    np.testing.assert_allclose(w.detach().numpy(), keras_reference(name, 50, grads), rtol=1e-9)


def test_keras_and_torch_adam_differ_only_in_epsilon():
    """Keras's ε̂ equals PyTorch's ε·√(1−β₂ᵗ): with ε → 0 both presets' formulas agree."""
    a = one_step("adam", "keras", 5, eps=1e-300)
    b = one_step("adam", "torch", 5, eps=1e-300)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(one_step("adam", "keras", 1, eps=1.0), one_step("adam", "torch", 1, eps=1.0))


# -- toy problems -------------------------------------------------------------------------------
TOY_LR = {
    "sgd": 0.01,
    "sgd_momentum": 0.01,
    "adagrad": 0.3,
    "rmsprop": 0.01,
    "adadelta": 1.0,
    "adam": 0.02,
    "rprop": 0.01,
    "adamw": 0.02,
    "nadam": 0.02,
    "lion": 0.005,
    "schedule_free_adamw": 0.02,
    "muon": 0.02,
}


def quadratic(xy):
    return 0.5 * (xy[0] ** 2 + 10 * xy[1] ** 2)


def rosenbrock(xy):
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


@pytest.mark.parametrize("fn", [quadratic, rosenbrock])
@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_lowers_loss_on_toy_problems(name, fn):
    xy = torch.tensor([-1.5, 1.5], dtype=torch.float64, requires_grad=True)
    start = fn(xy).item()
    opt = O.create([xy], name, "torch", lr=TOY_LR[name] * (0.1 if fn is rosenbrock and name != "adadelta" else 1))
    for _ in range(300):
        opt.zero_grad()
        fn(xy).backward()
        opt.step()
    assert fn(xy).item() < 0.5 * start
    assert torch.isfinite(xy).all()


# -- state, groups, closures, validation -------------------------------------------------------
@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_state_dict_round_trip_resumes_exactly(name):
    straight = small_net()
    want = train(straight, O.create(straight.parameters(), name, "torch"), 40)

    gen = torch.Generator().manual_seed(1)  # the same batches as the straight run, in two halves
    first = small_net()
    opt = O.create(first.parameters(), name, "torch")
    train(first, opt, 20, gen)
    saved_model, saved_opt = first.state_dict(), opt.state_dict()

    resumed = small_net(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = O.create(resumed.parameters(), name, "torch")
    opt2.load_state_dict(saved_opt)
    train(resumed, opt2, 20, gen)
    for g, w in zip(resumed.parameters(), want, strict=True):
        torch.testing.assert_close(g.detach(), w, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_params_without_grad_and_several_groups(name):
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    frozen = torch.ones(4, requires_grad=True)
    opt = O.create([{"params": [a]}, {"params": [b, frozen], "lr": 0.5}], name, "torch")
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[0]["lr"] != 0.5
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    assert torch.equal(frozen, torch.ones(4)) and frozen not in opt.state
    assert (a < 1).all() and (b < 1).all()
    assert (1 - b[0]) > (1 - a[0]) or name in ("adadelta", "rprop")  # larger lr, larger first step


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_closure_is_called_and_returned(name):
    w = torch.ones(3, requires_grad=True)
    opt = O.create([w], name, "torch")
    calls = []

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    assert opt.step(closure).item() == 3.0 and calls == [3.0]


@pytest.mark.parametrize(
    ("name", "bad", "match"),
    [
        ("sgd", dict(lr=-0.1), "lr=-0.1"),
        ("sgd_momentum", dict(momentum=-0.5), "momentum=-0.5"),
        ("adam", dict(betas=(1.0, 0.999)), "beta1=1.0"),
        ("adam", dict(betas=(0.9, -0.1)), "beta2=-0.1"),
        ("adam", dict(eps=0.0), "eps=0.0"),
        ("adagrad", dict(eps=-1e-8), "eps=-1e-08"),
        ("adagrad", dict(initial_accumulator_value=-1), "initial_accumulator_value=-1"),
        ("rmsprop", dict(alpha=1.5), "alpha=1.5"),
        ("adadelta", dict(rho=2.0), "rho=2.0"),
        ("rprop", dict(etas=(1.5, 1.2)), "etas"),
        ("adam", dict(weight_decay=-1.0), "weight_decay=-1.0"),
        ("adamw", dict(betas=(0.9, 1.0)), "beta2=1.0"),
        ("nadam", dict(momentum_decay=-1.0), "momentum_decay=-1.0"),
        ("nadam", dict(eps=0.0), "eps=0.0"),
        ("lion", dict(betas=(1.5, 0.99)), "beta1=1.5"),
        ("lion", dict(lr=-1e-4), "lr=-0.0001"),
        ("schedule_free_adamw", dict(betas=(0.0, 0.999)), "beta1=0.0"),
        ("schedule_free_adamw", dict(warmup_steps=-1), "warmup_steps=-1"),
        ("muon", dict(adjust_lr="spectral"), "adjust_lr='spectral'"),
        ("muon", dict(ns_steps=0), "ns_steps=0"),
        ("muon", dict(momentum=1.0), "momentum=1.0"),
    ],
)
def test_invalid_hyperparameters_raise_clear_errors(name, bad, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        O.create([torch.ones(1, requires_grad=True)], name, "keras", **bad)


def test_unknown_names_and_presets():
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'; choose one of: sgd"):
        O.create([torch.ones(1)], "lamb")
    with pytest.raises(ValueError, match="optimizer.preset='jax'"):
        O.create([torch.ones(1)], "adam", "jax")
    with pytest.raises(ValueError, match="Check the optimizer"):
        O.create([torch.ones(1)], "adam", "keras", momentum=0.9)


def test_foreach_is_default_when_tensors_allow():
    net = small_net()
    opt = O.create(net.parameters(), "rmsprop", "torch")
    assert opt.param_groups[0]["foreach"] is None and opt.uses_foreach(opt.param_groups[0])
    mixed = [torch.ones(2, requires_grad=True), torch.ones(2, dtype=torch.float64, requires_grad=True)]
    for p in mixed:
        p.grad = torch.ones_like(p)
    assert not opt.uses_foreach(opt.param_groups[0], mixed)
