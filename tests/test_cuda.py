"""The GPU paths on a GPU: CUDA-graph runs and packs against eager ones, capturable optimizers, DDP.

Marked ``cuda`` and skipped where torch sees no GPU (CI never has one): ``pytest -m cuda`` on a GPU
machine runs them, and ``scripts/gpu_check.sh`` does so first. Each mirrors a CPU test of
``test_graphs.py``, with ``graphs.record_cuda`` (a real ``torch.cuda.graph`` capture) in place of the
``make_fx`` recording, so a failure here is the GPU's, not the test's logic.
"""

from __future__ import annotations

import warnings

import mlflow
import pytest
import torch

from optbench import graphs, pipeline
from optbench.packed import run_pack

from .helpers import histories, tiny_cfg
from .test_graphs import SEED_TABLE, HostReads, StepCount, train_steps

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (pytest -m cuda on a GPU machine)"),
]
GPU = ("trainer=gpu",)


@pytest.mark.parametrize("name", [*SEED_TABLE, "rprop"])
def test_capturable_optimizers_replay_their_eager_steps(name):
    recorded = train_steps(name, graphed=True, capturable=True, device="cuda", recorder=graphs.record_cuda)
    eager = train_steps(name, graphed=False, capturable=True, device="cuda")
    for a, b in zip(recorded, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cuda_graph_run_equals_the_eager_run(data_root, tmp_path):
    results, steps = {}, {}
    for mode in ("false", "true"):
        uri = f"sqlite:///{tmp_path / mode}.db"
        counter = StepCount()
        run = pipeline.run(tiny_cfg(data_root, uri, *GPU, "data.subset=1000", f"trainer.cuda_graph={mode}"),
                           callbacks=[counter])  # fmt: skip
        assert run.status == "FINISHED"
        results[mode], steps[mode] = histories(mlflow.MlflowClient(uri), run.run_id), counter
    assert steps["true"].replayed and steps["true"].global_step == steps["false"].global_step == 2 * 16
    for metric, eager in results["false"].items():
        assert [v for _, v in results["true"][metric]] == pytest.approx([v for _, v in eager], rel=1e-4), metric


@pytest.mark.parametrize("graph", ["false", "true"])
def test_a_packed_run_equals_the_same_runs_unpacked(data_root, tmp_path, graph):
    # No dropout: a pack draws its masks with other kernels than a single run does.
    cfgs = {
        kind: [tiny_cfg(data_root, f"sqlite:///{tmp_path / kind}.db", *GPU, f"optimizer={o}", f"seed={i}",
                        "model.net.dropout_conv=0", "model.net.dropout_dense=0", f"trainer.cuda_graph={graph}")
               for i, o in enumerate(("adam", "sgd_momentum", "adagrad"))]
        for kind in ("packed", "single")
    }  # fmt: skip
    packed = run_pack(cfgs["packed"])
    single = [pipeline.run(cfg) for cfg in cfgs["single"]]
    for a, b in zip(packed, single, strict=True):
        assert a.status == b.status == "FINISHED"
        got = histories(mlflow.MlflowClient(f"sqlite:///{tmp_path / 'packed'}.db"), a.run_id)
        want = histories(mlflow.MlflowClient(f"sqlite:///{tmp_path / 'single'}.db"), b.run_id)
        for metric, values in want.items():
            assert [v for _, v in got[metric]] == pytest.approx([v for _, v in values], rel=1e-3), metric


@pytest.mark.parametrize("graph", ["false", "true"])
def test_no_host_reads_per_step_on_the_gpu(data_root, tmp_path, monkeypatch, graph):
    reads = []
    for n, steps in enumerate((4, 12)):
        extra = (*GPU, f"trainer.limit_train_batches={steps}", f"trainer.cuda_graph={graph}")
        cfg = tiny_cfg(data_root, f"sqlite:///{tmp_path / str(n)}.db", *extra)
        with monkeypatch.context() as patch, HostReads(patch) as probe:
            assert pipeline.run(cfg).status == "FINISHED"
        reads.append(probe.count)
    assert reads[1] == reads[0] > 0, f"{reads[1] - reads[0]} reads in 8 more steps"


def test_ddp_on_the_gpu_keeps_the_gradient_strides(data_root, tmp_path):
    """One DDP rank on the GPU (NCCL): the channels_last gradient hook leaves DDP no stride copy to warn of,
    and the run equals a plain one with the same global batch."""
    runs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kind, trainer in (("ddp", ("trainer=ddp", "trainer.devices=1")), ("plain", GPU)):
            uri = f"sqlite:///{tmp_path / kind}.db"
            result = pipeline.run(tiny_cfg(data_root, uri, *trainer))
            runs[kind] = histories(mlflow.MlflowClient(uri), result.run_id)
    assert not [w for w in caught if "stride" in str(w.message).lower()], [str(w.message) for w in caught]
    for metric, values in runs["plain"].items():
        assert [v for _, v in runs["ddp"][metric]] == pytest.approx([v for _, v in values], rel=1e-4), metric


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two DDP ranks need two GPUs in Lightning's device list")
def test_two_ranks_equal_one_with_the_same_global_batch(data_root, tmp_path):
    runs = {}
    for kind, trainer in (("two", ("trainer=ddp", "trainer.devices=2")), ("one", GPU)):
        uri = f"sqlite:///{tmp_path / kind}.db"
        result = pipeline.run(
            tiny_cfg(data_root, uri, *trainer, "model.net.dropout_conv=0", "model.net.dropout_dense=0")
        )
        runs[kind] = histories(mlflow.MlflowClient(uri), result.run_id)
    for metric, values in runs["one"].items():
        assert [v for _, v in runs["two"][metric]] == pytest.approx([v for _, v in values], rel=1e-3), metric
