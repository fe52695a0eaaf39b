"""The seed CNN: its shapes, its inits, and that the fast layout keeps the seed's numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optbench import pipeline
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN

from .helpers import compose_cfg


def keras_order(net: SeedCNN) -> nn.Sequential:
    """The seed's layers in the seed's order, sharing ``net``'s (default-layout) weights."""
    return nn.Sequential(
        net.conv,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        net.dense,
        nn.ReLU(),
        nn.Dropout(0.5),
        net.out,
    )


def loss_and_grads(model: nn.Module, params, x, y):
    model.train()
    torch.manual_seed(1)  # the same dropout masks
    for p in params:
        p.grad = None
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.contiguous() for p in params]


def batch():
    torch.manual_seed(0)
    x = as_float_images(torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8))
    return x, torch.randint(0, 10, (64,))


def test_relu_after_pool_is_the_seed_order_bit_for_bit():
    """max commutes with ReLU: the reordered forward gives the seed order's loss and gradients exactly
    (with ``nn.Dropout``'s masks: ``dropout_rng=bernoulli`` draws them call for call)."""
    x, y = batch()
    net = SeedCNN(dropout_rng="bernoulli", conv_pool="torch")
    params = list(net.parameters())
    loss_a, grads_a = loss_and_grads(net, params, x, y)
    loss_b, grads_b = loss_and_grads(keras_order(net), params, x, y)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def test_channels_last_keeps_masks_and_numbers():
    """Conv and pool in channels_last: same dropout masks, loss and gradients up to float summation order."""
    x, y = batch()
    slow = SeedCNN(channels_last=False, conv_pool="torch")
    fast = SeedCNN(channels_last=True, conv_pool="torch")
    fast.load_state_dict(slow.state_dict())
    loss_a, grads_a = loss_and_grads(slow, list(slow.parameters()), x, y)
    loss_b, grads_b = loss_and_grads(fast, list(fast.parameters()), x, y)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


class WithoutGradientCopy(nn.Module):
    """``SeedCNN``'s channels_last forward as it was before the pooled gradient was copied back."""

    def __init__(self, net: SeedCNN):
        super().__init__()
        self.net = net

    def forward(self, x):
        net = self.net
        x = torch.relu_(net.pool(net.conv(x.contiguous(memory_format=torch.channels_last)))).contiguous()
        x = F.dropout(x, 0.25).flatten(1)
        return net.out(F.dropout(torch.relu_(net.dense(x)), 0.5))


def test_channels_last_gradient_copy_changes_no_bit():
    """The pooled gradient copied back to channels_last before the pool's backward (a speed rewrite):
    loss and every gradient equal, bit for bit, those of the channels_last forward without it."""
    x, y = batch()
    net = SeedCNN(channels_last=True, dropout_rng="bernoulli", conv_pool="torch")
    params = list(net.parameters())
    loss_a, grads_a = loss_and_grads(net, params, x, y)
    loss_b, grads_b = loss_and_grads(WithoutGradientCopy(net), params, x, y)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def test_shapes_and_inits():
    torch.manual_seed(0)
    keras, torch_init = SeedCNN("keras"), SeedCNN("torch")
    assert sum(p.numel() for p in keras.parameters()) == 1_387_594  # 320 + 1,384,704 + 2,570
    assert torch.all(keras.dense.bias == 0) and not torch.all(torch_init.dense.bias == 0)
    bound = math.sqrt(6 / (5408 + 256))  # Glorot-uniform
    assert keras.dense.weight.abs().max() <= bound and keras.dense.weight.abs().max() > 0.9 * bound
    assert torch_init.dense.weight.abs().max() <= 1 / math.sqrt(5408)  # kaiming-uniform(a=√5)
    with pytest.raises(ValueError, match="model.net.init='he'"):
        SeedCNN("he")


@pytest.mark.parametrize("conv_pool", ["fused", "torch"])
def test_fast_path_keeps_per_epoch_metrics(data_root, conv_pool):
    """Default (fast) settings vs every speed switch off, on either path of the first block (the two draw
    other masks): the same per-epoch metrics up to float noise."""

    def run(*extra):
        cfg = compose_cfg(
            f"data.root={data_root}",
            "data.subset=1024",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "~logger",
            f"model.net.conv_pool={conv_pool}",
            *extra,
        )
        return pipeline.run(cfg).metrics

    fast, slow = run(), run("model.net.channels_last=false", "threads=1")
    assert fast.keys() == slow.keys() and "val_loss" in fast
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert fast[key] == pytest.approx(slow[key], rel=1e-4, abs=1e-6), key


def test_a_non_finite_parameter_is_divergence():
    from optbench.module import ClassifierModule, DivergenceError
    from optbench.optim import create

    module = ClassifierModule(SeedCNN(), optimizer=lambda params: create(params, "adam"))
    module.raise_if_diverged()  # healthy: nothing raised
    with torch.no_grad():
        module.net.dense.weight[3, 7] = math.inf
    with pytest.raises(DivergenceError, match="the value of a parameter became inf"):
        module.raise_if_diverged()


def test_gradients_have_their_parameters_strides():
    """DDP builds its gradient buckets with each parameter's strides; the channels_last conv weight
    ([9, 1, 3, 1]) with a contiguous gradient ([9, 9, 3, 1], what a GPU returned) made DDP copy gradients
    every step. The gradient is handed over in the weight's strides, with the same values."""
    net = SeedCNN(channels_last=True)
    assert net.conv.weight.stride() == (9, 1, 3, 1)
    contiguous_grad = torch.arange(288.0).reshape(32, 1, 3, 3)  # what a GPU's conv backward gave
    hooks = list((net.conv.weight._backward_hooks or {}).values())
    assert len(hooks) == 1, "the weight's gradient hook is registered"
    restrided = hooks[0](contiguous_grad)
    assert restrided.stride() == net.conv.weight.stride() and torch.equal(restrided, contiguous_grad)
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    assert all(p.grad.stride() == p.stride() for p in net.parameters())
