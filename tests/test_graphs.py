"""Recorded training steps (``trainer.cuda_graph``) against eager ones, and no host reads in the loop, on a CPU.

There is no CUDA here, so ``record_traced`` records a step with ``make_fx`` instead of a CUDA graph. It
keeps the contract a CUDA graph imposes: the step's Python runs once, every tensor the step touches keeps
its address, only in-place updates of long-lived tensors survive a replay, and random draws advance on
each replay. A step that replays right here differs from a CUDA capture only in the kernels.
"""

from __future__ import annotations

import copy

import mlflow
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from optbench import config, graphs, pipeline
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN
from optbench.optim import create
from optbench.packed import run_pack

from .helpers import histories, tiny_cfg

SEED_TABLE = ("sgd", "sgd_momentum", "adagrad", "rmsprop", "adadelta", "adam")


def record_traced(step, generators=()):
    graph = make_fx(step)()  # runs the step once, as record_cuda's capture and first replay do

    def replay():
        with torch.no_grad():  # the recording holds the backward's kernels itself
            graph()

    return replay


@pytest.fixture
def traced(monkeypatch):
    """``trainer.cuda_graph=true`` allowed on the CPU, recording with ``make_fx``."""
    monkeypatch.setattr(graphs, "recorder", lambda device: record_traced)


def train_steps(
    name: str, graphed: bool, capturable: bool, steps: int = 8, device: str = "cpu", recorder=None, **hparams
) -> list[torch.Tensor]:
    """``steps`` steps of the seed CNN with dropout, eager or recorded after the warm-ups (``recorder``:
    ``record_traced`` on the CPU, ``graphs.record_cuda`` on a GPU); the final parameters, on the CPU."""
    torch.manual_seed(0)
    net = SeedCNN(conv_pool="torch").to(device)  # the layers a recorded step runs (conv_pool=null picks them)
    opt = create(net.parameters(), name, capturable=capturable, **hparams)
    data = torch.Generator().manual_seed(1)
    batches = [
        (torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8, generator=data).to(device),
         torch.randint(0, 10, (32,), generator=data).to(device))
        for _ in range(steps)
    ]  # fmt: skip

    def step(x, y):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(as_float_images(x)), y).backward()
        opt.step()

    run = graphs.GraphedStep(step, batches[0], recorder or record_traced) if graphed else step
    torch.manual_seed(2)  # the dropout stream
    for x, y in batches:
        run(x, y)
    assert not graphed or run.replay is not None, "the last steps were replays"
    return [p.detach().cpu().clone() for p in net.parameters()]


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", [*SEED_TABLE, "rprop"])
def test_recorded_steps_equal_eager_steps(name, foreach):
    """A capturable optimizer recorded once and replayed takes exactly the eager steps, dropout included."""
    eager = train_steps(name, graphed=False, capturable=True, foreach=foreach)
    recorded = train_steps(name, graphed=True, capturable=True, foreach=foreach)
    for a, b in zip(recorded, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_capturable_steps_equal_the_default_ones(name):
    """Step counters on the device change only the float rounding of the step-dependent scalars
    (given gradients: in a network, Adam's sign-like first steps would amplify any rounding)."""
    hparams = {"lr_decay": 0.01} if name == "adagrad" else {}
    start = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    final = []
    for capturable in (False, True):
        w = start.clone().requires_grad_()
        opt = create([w], name, capturable=capturable, **hparams)
        grads = torch.Generator().manual_seed(1)
        for _ in range(20):
            w.grad = torch.randn(1000, generator=grads)
            opt.step()
        final.append(w.detach())
    assert (final[0] - start).abs().max() > 1e-3, "the steps moved the weights far beyond the tolerance"
    torch.testing.assert_close(final[1], final[0], rtol=0, atol=1e-6)


def test_a_host_step_counter_is_frozen_by_recording():
    """Why ``capturable`` exists: Adam's bias corrections from a Python counter replay step 4's forever."""
    eager = train_steps("adam", graphed=False, capturable=False)
    recorded = train_steps("adam", graphed=True, capturable=False)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(recorded, eager, strict=True))


def test_state_dict_round_trip_keeps_device_step_counters():
    net = SeedCNN()
    opt = create(net.parameters(), "adam", capturable=True)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    again = create(copy.deepcopy(net).parameters(), "adam", capturable=True)
    again.load_state_dict(opt.state_dict())
    steps = [s["step"] for s in again.state.values()]
    assert all(isinstance(s, torch.Tensor) and s.item() == 2 for s in steps)
    torch.testing.assert_close(again.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_cuda_graph_on_cpu_and_with_ddp_is_refused(monkeypatch):
    with pytest.raises(config.ConfigError, match="trains on the CPU .*use trainer=gpu"):
        config.validate(config.compose("trainer.cuda_graph=true"))
    monkeypatch.setattr(graphs, "recorder", lambda device: record_traced)
    with pytest.raises(config.ConfigError, match="several devices"):
        config.validate(config.compose("trainer=ddp_cpu", "trainer.cuda_graph=true"))


class StepCount(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        self.global_step = trainer.global_step
        self.replayed = pl_module._graphed is not None and pl_module._graphed.replay is not None


def test_recorded_run_equals_eager_run(traced, data_root, tmp_path):
    """A whole run with its steps recorded: same per-epoch metrics, same step count, last partial batch eager."""
    results, steps = {}, {}
    for mode in ("false", "true"):
        uri = f"sqlite:///{tmp_path / mode}.db"
        step_counter = StepCount()
        # 15 full batches + 40; both runs with the layers a recorded step runs (conv_pool=null picks them there)
        cfg = tiny_cfg(data_root, uri, "data.subset=1000", f"trainer.cuda_graph={mode}", "model.net.conv_pool=torch")
        run = pipeline.run(cfg, callbacks=[step_counter])
        assert run.status == "FINISHED"
        results[mode], steps[mode] = histories(mlflow.MlflowClient(uri), run.run_id), step_counter
    assert steps["true"].replayed, "the recorded path ran"
    assert steps["true"].global_step == steps["false"].global_step == 2 * 16
    # The recorded run's optimizer is capturable (its bias corrections round differently, by ~1e-7) and 32
    # Adam steps amplify that: losses agree to 1e-3 and accuracies to a sample or two of the 1,000. Other
    # dropout masks (another stream, the same seed) move them by ~3 %.
    for metric, eager in results["false"].items():
        assert [s for s, _ in results["true"][metric]] == [1, 2]
        tolerance = {"abs": 2e-3} if metric.endswith("_acc") else {"rel": 1e-3}
        assert [v for _, v in results["true"][metric]] == pytest.approx([v for _, v in eager], **tolerance), metric


@pytest.mark.slow
def test_recorded_pack_equals_eager_pack(traced, data_root, tmp_path):
    """A pack with its steps recorded, dropout on: each replica's per-epoch metrics as in the eager pack."""
    got = {}
    for mode in ("false", "true"):
        uri = f"sqlite:///{tmp_path / mode}.db"
        cfgs = [
            tiny_cfg(
                data_root,
                uri,
                "threads=1",
                f"optimizer={o}",
                f"seed={i}",
                f"trainer.cuda_graph={mode}",
                "model.net.conv_pool=torch",
            )  # fmt: skip
            for i, o in enumerate(("adam", "sgd_momentum", "adagrad"))
        ]
        results = run_pack(cfgs)
        assert [r.status for r in results] == ["FINISHED"] * 3
        got[mode] = [histories(mlflow.MlflowClient(uri), r.run_id) for r in results]
    for recorded, eager in zip(got["true"], got["false"], strict=True):
        for metric, values in eager.items():
            assert [v for _, v in recorded[metric]] == pytest.approx([v for _, v in values], rel=1e-4), metric


@pytest.mark.slow
def test_recorded_pack_records_again_when_a_replica_fails(data_root, tmp_path, monkeypatch):
    """Divergence read at step 6, after the recording at step 4: the step is recorded again without the
    failed replica, and the other one trains exactly as in an eager pack."""
    records = []
    monkeypatch.setattr(graphs, "recorder", lambda device: lambda step, g: records.append(1) or record_traced(step))
    got = {}
    for mode in ("false", "true"):
        uri = f"sqlite:///{tmp_path / mode}.db"
        extra = (
            "threads=1",
            "+model.check_finite_every_n_steps=6",
            f"trainer.cuda_graph={mode}",
            "model.net.conv_pool=torch",
        )
        cfgs = [tiny_cfg(data_root, uri, "optimizer=sgd", "optimizer.lr=1e12", *extra),
                tiny_cfg(data_root, uri, "optimizer=adam", *extra)]  # fmt: skip
        results = run_pack(cfgs)
        assert [r.status for r in results] == ["FAILED", "FINISHED"]
        got[mode] = histories(mlflow.MlflowClient(uri), results[1].run_id)
    assert len(records) == 2, "recorded once, then again without the failed replica"
    for metric, values in got["false"].items():
        assert [v for _, v in got["true"][metric]] == pytest.approx([v for _, v in values], rel=1e-4), metric


class HostReads(TorchDispatchMode):
    """Counts reads of tensor values into Python (``item``, ``bool``, ``tolist``, ``numpy``): each is a
    device synchronisation on a GPU."""

    OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default}

    def __init__(self, monkeypatch):
        super().__init__()
        self.count = 0
        for name in ("tolist", "numpy"):
            method = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(method))

    def _counted(self, method):
        def counted(tensor, *args, **kwargs):
            self.count += 1
            return method(tensor, *args, **kwargs)

        return counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.OPS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layout", ["single", "packed"])
def test_no_host_reads_per_training_step(layout, data_root, tmp_path, monkeypatch):
    """Reads of device values happen per epoch (and every check_finite_every_n_steps), never per step:
    a run of 12 steps reads exactly as often as a run of 4. With the paths a GPU takes: the CPU's own
    kernels (conv_pool=fused, optimizer.fused) hand their tensors to NumPy every step, free on a CPU."""
    reads = []
    for n, steps in enumerate((4, 12)):
        extra = (f"trainer.limit_train_batches={steps}", "+model.check_finite_every_n_steps=1000", "threads=1",
                 "data.subset=1024", "model.net.conv_pool=torch", "optimizer.fused=false")  # 16 batches an epoch  # fmt: skip
        cfg = tiny_cfg(data_root, f"sqlite:///{tmp_path / str(n)}.db", "trainer.enable_progress_bar=true", *extra)
        with monkeypatch.context() as patch, HostReads(patch) as probe:
            result = run_pack([cfg])[0] if layout == "packed" else pipeline.run(cfg)
        assert result.status == "FINISHED"
        reads.append(probe.count)
    assert reads[0] > 0, "the probe sees the per-epoch reads"
    assert reads[1] == reads[0], f"{reads[1] - reads[0]} reads in 8 more steps"
