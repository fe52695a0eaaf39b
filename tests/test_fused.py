"""The one-pass CPU update (optimizer.fused): its numbers, its choice of path, and its place in a run's identity."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from optbench import cache, config, pipeline, restore
from optbench.compare.query import identity_of
from optbench.optim import Adam, create, fused


def numpy_adam(p, g, m, v, vmax, beta1, beta2, step_size, sqrt_div, eps):
    """Adam's fused formula in NumPy: every operation one IEEE operation of the arrays' dtype."""
    f = p.dtype.type
    m = m + f(1 - beta1) * (g - m)
    v = v * f(beta2) + f(1 - beta2) * g * g
    denom_v = v if vmax is None else (vmax := np.maximum(vmax, v))
    p = p + f(-step_size) * (m / (np.sqrt(denom_v) / f(sqrt_div) + f(eps)))
    return p, m, v, vmax


def tensors(n: int, dtype, seed: int, amsgrad: bool):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(n, generator=g, dtype=dtype) for _ in range(3)] + [torch.rand(n, generator=g, dtype=dtype)]
    out[3].mul_(1e-4)
    out.append(out[3] * torch.rand(n, generator=g, dtype=dtype) * 2 if amsgrad else None)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1000, 300_001], ids=["serial", "parallel"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("sqrt_div", [1.0, 0.0447], ids=["keras", "torch"])
def test_the_kernel_equals_its_formula_in_numpy_bit_for_bit(dtype, n, amsgrad, sqrt_div, monkeypatch):
    monkeypatch.setattr(fused, "PARALLEL_FROM", 100_000)  # the larger size takes the threaded kernel
    p, g, m, v, vmax = tensors(n, dtype, seed=n, amsgrad=amsgrad)
    want = numpy_adam(
        *(None if t is None else t.numpy().copy() for t in (p, g, m, v, vmax)), 0.9, 0.999, 3e-3, sqrt_div, 1e-7
    )
    fused.adam_([p], [g], [m], [v], None if vmax is None else [vmax], 0.9, 0.999, [3e-3], [sqrt_div], 1e-7)
    for got, expected in zip((p, m, v, vmax), want, strict=True):
        if got is not None:
            np.testing.assert_array_equal(got.numpy(), expected)


def test_layouts_and_threads_change_no_bit(monkeypatch):
    """channels_last, a strided (non-dense) view and 1 or 2 threads: the same elementwise results."""
    monkeypatch.setattr(fused, "PARALLEL_FROM", 100_000)  # two threads split the update
    base = [t.reshape(64, 3, 40, 40) for t in tensors(64 * 3 * 1600, torch.float32, seed=3, amsgrad=False)[:4]]
    want = numpy_adam(*(t.numpy().copy() for t in base), None, 0.9, 0.999, 1e-3, 1.0, 1e-7)

    def step(layout, threads):
        ts = [layout(t.clone()) for t in base]
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fused.adam_([ts[0]], [ts[1]], [ts[2]], [ts[3]], None, 0.9, 0.999, [1e-3], [1.0], 1e-7)
        finally:
            torch.set_num_threads(before)
        return [t.contiguous().numpy() for t in ts]

    strided = torch.zeros(64, 3, 40, 80)

    def non_dense(t):
        view = strided.clone()[..., ::2]
        return view.copy_(t)

    for layout in (lambda t: t, lambda t: t.contiguous(memory_format=torch.channels_last), non_dense):
        for threads in (1, 2):
            got = step(layout, threads)
            for g, w in zip((got[0], got[2], got[3]), want[:3], strict=True):
                np.testing.assert_array_equal(g, w)
    assert not non_dense(base[0]).is_contiguous()


@pytest.mark.parametrize(
    "hp",
    [
        dict(epsilon_hat=True, eps=1e-7),
        dict(epsilon_hat=False, eps=1e-8),
        dict(epsilon_hat=True, eps=1e-7, amsgrad=True),
        dict(epsilon_hat=True, eps=1e-7, weight_decay=0.01),
        dict(epsilon_hat=True, eps=1e-7, weight_decay=0.004, decoupled_weight_decay=True),
    ],
    ids=["keras", "torch", "amsgrad", "l2", "decoupled"],
)
def test_a_fused_adam_trajectory_follows_the_foreach_one(hp):
    """Other last bits (sqrt rounding, no FMA in lerp), the same trajectory: 50 steps within 1e-5."""
    torch.manual_seed(0)
    start = [
        torch.randn(256, 300),
        torch.randn(32, 1, 3, 3).contiguous(memory_format=torch.channels_last),
        torch.randn(7),
    ]

    def run(**kw):
        params = [p.clone().requires_grad_() for p in start]
        opt = Adam(params, lr=1e-3, **hp, **kw)
        g = torch.Generator().manual_seed(1)
        for _ in range(50):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(memory_format=torch.preserve_format) + p.detach()
            opt.step()
        return params, opt

    got, opt = run()
    assert opt.uses_fused(opt.param_groups[0])
    want, other = run(foreach=True)
    assert not other.uses_fused(other.param_groups[0])
    differs = False
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        differs |= not torch.equal(a, b)
    assert differs  # the two paths are different settings, not one


def test_which_path_auto_takes_and_what_is_refused():
    p = torch.nn.Parameter(torch.zeros(3))
    assert Adam([p]).uses_fused(Adam([p]).param_groups[0])
    for kw in (dict(foreach=True), dict(foreach=False), dict(fused=False), dict(capturable=True)):
        opt = Adam([p], **kw)
        assert not opt.uses_fused(opt.param_groups[0]), kw
    half = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    assert not Adam([half]).uses_fused(Adam([half]).param_groups[0])
    with pytest.raises(ValueError, match=r"Adam\(fused=True\) cannot run here: .*float32 or float64.*float16"):
        Adam([half], fused=True)
    with pytest.raises(ValueError, match=r"capturable steps"):
        Adam([p], fused=True, capturable=True)
    with pytest.raises(ValueError, match=r"Invalid fused='yes'; give true, false or null"):
        Adam([p], fused="yes")  # a forged record's string must not pass as "insist"
    with pytest.raises(ValueError, match="fused=True and foreach=True exclude each other"):
        Adam([p], fused=True, foreach=True)
    assert "fused" not in create([p], "sgd").defaults  # no kernel of its own: no setting


def test_a_state_saved_before_the_setting_resumes_on_the_foreach_path():
    p = torch.nn.Parameter(torch.ones(4))
    opt = Adam([p])
    p.grad = torch.ones(4)
    opt.step()
    state = opt.state_dict()
    del state["param_groups"][0]["fused"]
    again = Adam([p])
    again.load_state_dict(state)
    assert not again.uses_fused(again.param_groups[0])
    state["param_groups"][0]["fused"] = None
    again.load_state_dict(state)
    assert again.uses_fused(again.param_groups[0])


def test_the_record_says_which_path_ran():
    cfg = config.compose()
    factory = config.instantiate_group(cfg, "optimizer")
    record = config.effective(cfg, factory([torch.nn.Parameter(torch.zeros(2))]), 1)
    assert record["optimizer"]["fused"] is True and record["optimizer"]["foreach"] is False
    cfg = config.compose("optimizer.foreach=true")
    record = config.effective(cfg, config.instantiate_group(cfg, "optimizer")([torch.nn.Parameter(torch.zeros(2))]), 1)
    assert record["optimizer"]["fused"] is False and record["optimizer"]["foreach"] is True
    assert cache.identity_params(config.compose())["optimizer.fused"] == "True"
    assert "optimizer.fused" not in cache.identity_params(config.compose("optimizer=sgd"))


def test_runs_logged_before_the_setting_are_their_foreach_row_and_rerun_so():
    old = {"optimizer.name": "adam", "optimizer.lr": "0.001"}
    assert identity_of(old) == identity_of({**old, "optimizer.fused": "False"})
    assert identity_of(old) != identity_of({**old, "optimizer.fused": "True"})
    record = OmegaConf.to_container(config.compose(), resolve=True)
    del record["optimizer"]["fused"]
    assert restore.rebuild(record).optimizer.fused is False
    record = OmegaConf.to_container(config.compose("optimizer=sgd"), resolve=True)
    assert "fused" not in restore.rebuild(record).optimizer  # sgd has no such setting to fill in


class _FinalWeights(pl.Callback):
    def on_fit_end(self, trainer, pl_module):
        self.weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])


def test_the_fused_default_trains_reproducibly_and_logs_itself(data_root, tmp_path):
    def run(store, *extra):  # a store each: a second run in one store would be the first one, reused
        cfg = config.compose(
            f"data.root={data_root}", "data.subset=512", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            f"logger.tracking_uri=sqlite:///{tmp_path}/{store}.db", *extra,
        )  # fmt: skip
        final = _FinalWeights()
        result = pipeline.run(cfg, callbacks=[final])
        return {k: v for k, v in result.metrics.items() if k != "total_time_s"}, final.weights, result

    (a, wa, first), (b, wb, _), (c, wc, _) = run("a"), run("b"), run("c", "optimizer.fused=false")
    assert a == b and torch.equal(wa, wb)
    # Other last bits than foreach: after 8 steps some weights differ (the metrics may still round alike).
    assert not torch.equal(wa, wc) and torch.allclose(wa, wc, rtol=1e-4, atol=1e-6)
    assert a["val_loss"] == pytest.approx(c["val_loss"], rel=1e-4)
    import mlflow

    params = mlflow.MlflowClient(f"sqlite:///{tmp_path}/a.db").get_run(first.run_id).data.params
    assert params["optimizer.fused"] == "True" and params["optimizer.foreach"] == "False"
