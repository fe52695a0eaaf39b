"""The fused first block (``model.net.conv_pool=fused``): PyTorch's conv → max-pool → ReLU (→ dropout) computed
another way, its rules of ties and NaN, its layout, and the setting's place in a run's identity."""

from __future__ import annotations

import mlflow
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from optbench import config, pipeline, restore
from optbench import conv_pool as fused_block
from optbench.compare.query import identity_of
from optbench.dropout import Dropout, keep_bytes
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN
from optbench.packed.model import PackedSeedCNN

from .helpers import tiny_cfg


def reference(x, weight, bias, groups=1):
    """PyTorch's layers in float64: ``(N, C, Hp, Wp)``."""
    return torch.relu(F.max_pool2d(F.conv2d(x, weight, bias, groups=groups), 2))


def samples_first(out: torch.Tensor) -> torch.Tensor:
    return out.permute(3, 0, 1, 2)


SHAPES = [  # N, Cin, H, W, C, groups
    (64, 1, 28, 28, 32, 1),  # the seed CNN
    (5, 1, 29, 27, 32, 1),  # odd sizes: the pool drops the last row and column
    (7, 3, 32, 32, 16, 1),  # three input channels (CIFAR-like)
    (6, 3, 28, 30, 12, 3),  # groups: a pack of three replicas
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_gradients_equal_pytorchs_layers_in_float64(shape, dtype):
    n, cin, h, w, c, groups = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(n, cin, h, w, generator=g, dtype=dtype)
    weight = (torch.randn(c, cin // groups, 3, 3, generator=g, dtype=dtype) * 0.3).requires_grad_()
    bias = (torch.randn(c, generator=g, dtype=dtype) * 0.1).requires_grad_()
    out = fused_block.conv_relu_pool(x, weight, bias, groups)
    assert out.shape == (c, (h - 2) // 2, (w - 2) // 2, n) and out.is_contiguous()
    grad = torch.randn(out.shape, generator=g, dtype=dtype)
    out.backward(grad)

    w64, b64 = weight.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    want = reference(x.double(), w64, b64, groups)
    want.backward(samples_first(grad).double())
    tol = 2e-6 if dtype == torch.float32 else 1e-14
    assert (samples_first(out).double() - want).abs().max() <= tol * want.abs().max()
    assert (out > 0).sum() > out.numel() // 4, "ReLU passes a good share: the gradients are not trivial"
    for got, expected in ((weight.grad, w64.grad), (bias.grad, b64.grad)):
        assert (got.double() - expected).abs().max() <= tol * expected.abs().max()


def test_ties_go_to_the_first_position_and_nan_wins_as_in_max_pool2d():
    """A constant image ties every window: the value and the whole gradient go to the window's first
    position, as in ``max_pool2d``. A NaN pixel makes its windows NaN (and the weight gradient NaN: a NaN
    is never dropped silently)."""
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    x[1, 0, :, 3::4] = 0.25  # other columns: the first position is not the only one that could win
    weight = torch.ones(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    out = fused_block.conv_relu_pool(x, weight, bias)
    grad = torch.arange(1.0, out.numel() + 1, dtype=torch.float64).view(out.shape)
    out.backward(grad)
    w_ref, b_ref = weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    want = reference(x, w_ref, b_ref)
    want.backward(samples_first(grad))
    assert torch.equal(samples_first(out), want)
    torch.testing.assert_close(weight.grad, w_ref.grad, rtol=0, atol=1e-12)
    assert not torch.equal(weight.grad, torch.full_like(weight.grad, weight.grad[0, 0, 0, 0].item()))

    x[1, 0, 4, 5] = float("nan")
    weight.grad = None
    out = fused_block.conv_relu_pool(x, weight, bias)
    torch.testing.assert_close(samples_first(out), reference(x, weight, bias), equal_nan=True, rtol=0, atol=0)
    assert samples_first(out)[1].isnan().sum() == 4, "the NaN pixel reaches four windows"
    out.backward(grad)
    assert weight.grad.isnan().any()


def test_relu_passes_no_gradient_where_it_cut():
    x = torch.rand(4, 1, 10, 10, dtype=torch.float64)
    weight = torch.full((2, 1, 3, 3), 0.1, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([-10.0, 0.0], dtype=torch.float64, requires_grad=True)  # channel 0: always cut
    out = fused_block.conv_relu_pool(x, weight, bias)
    out.backward(torch.ones_like(out))
    assert torch.all(out[0] == 0) and bias.grad[0] == 0 and torch.all(weight.grad[0] == 0)
    assert torch.all(out[1] > 0) and bias.grad[1] == out[1].numel()


def test_dropout_inside_the_kernels_is_dropout_after_them_bit_for_bit():
    """The mask applied in the kernels (``keep_bytes``) equals ``Dropout`` of the block's output: the same
    draws, values and gradients, and the generator left in the same state."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g)
    weight = (torch.randn(32, 1, 3, 3, generator=g) * 0.3).requires_grad_()
    bias = torch.zeros(32, requires_grad=True)
    grad = torch.randn(32, 13, 13, 64, generator=g)
    results = []
    for inside in (True, False):
        torch.manual_seed(7)
        if inside:
            keep = keep_bytes(fused_block.pooled_numel(x, weight), 0.25)
            out = fused_block.conv_relu_pool(x, weight, bias, keep=keep)
        else:
            out = Dropout(0.25, "bits")(fused_block.conv_relu_pool(x, weight, bias))
        dw, db = torch.autograd.grad(out, (weight, bias), grad)
        results.append((out, dw, db, torch.get_rng_state()))
    (a, *rest_a), (b, *rest_b) = results
    assert torch.equal(a, b) and all(torch.equal(u, v) for u, v in zip(rest_a, rest_b, strict=True))
    kept = (a > 0).sum() / (fused_block.conv_relu_pool(x, weight, bias) > 0).sum()
    assert 0.72 < kept < 0.78, "a quarter of the positive values dropped"


def test_the_threads_change_no_bit():
    x = torch.rand(64, 1, 28, 28)
    weight, bias = torch.randn(32, 1, 3, 3, requires_grad=True), torch.randn(32, requires_grad=True)
    results = []
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            out = fused_block.conv_relu_pool(x, weight, bias)
            results.append((out, *torch.autograd.grad(out.square().sum(), (weight, bias))))
        finally:
            torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_the_seed_cnn_takes_the_kernels_on_the_cpu_and_agrees_with_pytorchs_layers():
    """Without dropout the two paths give the same loss and gradients up to float summation order."""
    torch.manual_seed(0)
    x = as_float_images(torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8))
    y = torch.randint(0, 10, (64,))
    nets = {path: SeedCNN(dropout_conv=0, dropout_dense=0, conv_pool=path) for path in ("fused", "torch", None)}
    for net in nets.values():
        net.load_state_dict(nets["torch"].state_dict())
    logits, losses, grads = {}, {}, {}
    for path, net in nets.items():
        logits[path] = net(x)
        losses[path] = F.cross_entropy(logits[path], y)
        grads[path] = torch.autograd.grad(losses[path], list(net.parameters()))
    assert torch.equal(logits[None], logits["fused"]), "null takes the kernels on the CPU"
    assert not torch.equal(logits["fused"], logits["torch"]), "two paths, other sums"
    torch.testing.assert_close(losses["fused"], losses["torch"], rtol=1e-6, atol=0)
    for a, b in zip(grads["fused"], grads["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("rng", ["bits", "bernoulli"])
def test_a_packed_replica_is_its_single_run_bit_for_bit(rng):
    """The pack's grouped kernels, each replica's bytes from its own generator: the logits and the
    replica's conv gradients of a single run, exactly."""
    images = torch.randint(0, 256, (3, 16, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    nets = [SeedCNN(dropout_rng=rng, conv_pool="fused") for _ in range(3)]
    packed = PackedSeedCNN(nets, [torch.Generator().manual_seed(10 + k) for k in range(3)])
    together = packed(images)
    together.square().sum().backward()
    for k, net in enumerate(nets):
        torch.manual_seed(10 + k)  # a single run draws from the global generator
        alone = net(as_float_images(images[k]))
        alone.square().sum().backward()
        assert torch.equal(together[k], alone)
        assert torch.equal(packed.conv_weight.grad[32 * k : 32 * (k + 1)], net.conv.weight.grad)


def test_refusals():
    with pytest.raises(ValueError, match="model.net.conv_pool='fast'; choose one of: fused, torch, or null"):
        SeedCNN(conv_pool="fast")
    x16 = torch.rand(2, 1, 28, 28, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="runs on the CPU in float32 or float64; got torch.bfloat16"):
        SeedCNN(conv_pool="fused").to(torch.bfloat16)(x16)
    assert SeedCNN().to(torch.bfloat16)(x16).shape == (2, 10), "null takes PyTorch's layers for bfloat16"
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradient for its input"):
        SeedCNN(conv_pool="fused")(x).sum().backward()
    with pytest.raises(config.ConfigError, match="conv_pool=fused: its kernels run on the CPU"):
        config.validate(config.compose("trainer=gpu", "model.net.conv_pool=fused"))


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ((), "fused"),
        (("trainer=gpu",), "torch"),
        (("trainer.precision=bf16-mixed",), "torch"),
        (("model.net.conv_pool=torch",), "torch"),
        (("trainer=ddp_cpu",), "fused"),
    ],
)
def test_the_record_and_the_model_take_the_same_path(overrides, path):
    cfg = config.compose(*overrides)
    record = config.effective(cfg, config.instantiate_group(cfg, "optimizer")([torch.nn.Parameter(torch.ones(1))]), 1)
    assert record["model"]["net"]["conv_pool"] == path
    if "trainer=gpu" not in overrides:  # building needs no GPU, but its data would load; the net is enough
        assert (
            config.instantiate_group(cfg, "model", net=config.seed_cnn_paths(cfg), optimizer=None).net.conv_pool == path
        )


def test_a_run_logged_before_the_setting_is_its_torch_row():
    old = {"model.net.init": "keras", "optimizer.name": "adam"}
    assert identity_of(old) == identity_of({**old, "model.net.conv_pool": "torch"})
    assert identity_of(old) != identity_of({**old, "model.net.conv_pool": "fused"})
    record = OmegaConf.to_container(config.compose(), resolve=True)
    del record["model"]["net"]["conv_pool"]
    assert restore.rebuild(record).model.net.conv_pool == "torch"
    record["model"]["net"]["conv_pool"] = "fused"
    assert restore.rebuild(record).model.net.conv_pool == "fused"


def test_a_default_run_logs_the_path_it_took_and_repeats_itself(data_root, tracking_uri):
    cfg = tiny_cfg(data_root, tracking_uri, "trainer.max_epochs=1")
    assert cfg.model.net.conv_pool is None
    first, again = pipeline.run(cfg), pipeline.run(cfg)
    client = mlflow.MlflowClient(tracking_uri)
    assert client.get_run(first.run_id).data.params["model.net.conv_pool"] == "fused"
    same = {k: v for k, v in first.metrics.items() if k != "total_time_s"}
    assert same == {k: v for k, v in again.metrics.items() if k != "total_time_s"}
    other = pipeline.run(tiny_cfg(data_root, tracking_uri, "trainer.max_epochs=1", "model.net.conv_pool=torch"))
    assert client.get_run(other.run_id).data.params["model.net.conv_pool"] == "torch"
    assert other.metrics["train_loss"] != first.metrics["train_loss"]
    assert other.metrics["train_loss"] == pytest.approx(first.metrics["train_loss"], rel=0.05)
