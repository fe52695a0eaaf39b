"""Packed sweeps on the CPU: a pack trains every replica as its unpacked run would, one run per job."""

from __future__ import annotations

import signal

import mlflow
import pytest
import pytorch_lightning as pl
import torch

from hydra_plugins.optbench_packed.packed_launcher import group_jobs
from optbench import config, pipeline
from optbench.cli import rerun
from optbench.in_memory import as_float_images
from optbench.model import SeedCNN
from optbench.packed import pack_key, run_pack
from optbench.packed.model import PackedSeedCNN

from .helpers import histories, quick_args, resume_args, run_cli, runs_of, start_cli, tiny_cfg, wait_for_epoch

SEED_TABLE = ("sgd", "sgd_momentum", "adagrad", "rmsprop", "adadelta", "adam")


def tiny(data_root, uri, *extra):
    return tiny_cfg(data_root, uri, "threads=1", *extra)


def seeded(seed: int, rng: str = "bits", conv_pool: str | None = None) -> tuple[SeedCNN, torch.Generator]:
    """A net and its dropout stream exactly as a single run with this seed has them."""
    pl.seed_everything(seed, verbose=False)
    net = SeedCNN(channels_last=True, dropout_rng=rng, conv_pool=conv_pool)
    return net, torch.Generator().set_state(torch.get_rng_state())


@pytest.mark.parametrize("conv_pool", ["fused", "torch"])
@pytest.mark.parametrize("rng", ["bits", "bernoulli"])
def test_each_replica_draws_the_masks_it_would_draw_alone(rng, conv_pool):
    images = torch.randint(0, 256, (2, 16, 28, 28), dtype=torch.uint8)
    alone = []
    for k, seed in enumerate((3, 4)):
        net, generator = seeded(seed, rng, conv_pool)
        torch.set_rng_state(generator.get_state())  # a single run draws from the global generator
        net.train()
        alone.append(net(as_float_images(images[k])))
    nets, generators = zip(*(seeded(s, rng, conv_pool) for s in (3, 4)), strict=True)
    packed = PackedSeedCNN(list(nets), list(generators))
    packed.train()
    together = packed(images)
    for k in range(2):
        torch.testing.assert_close(together[k], alone[k], rtol=1e-5, atol=1e-6)
    nets, generators = zip(*(seeded(s, rng, conv_pool) for s in (4, 3)), strict=True)
    swapped = PackedSeedCNN(list(nets), list(generators))(images)
    assert not torch.allclose(swapped[0], alone[0], atol=1e-3), "another stream gives other masks: the check can fail"


def test_the_pooled_gradient_copy_changes_no_bit(monkeypatch):
    """The pack's pooled gradient copied back to channels_last (a speed rewrite, ``model.pooled_contiguous``):
    every gradient equal, bit for bit, to the pack's without the copy."""
    images = torch.randint(0, 256, (2, 16, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (2, 16), generator=torch.Generator().manual_seed(1))

    def grads():
        nets, generators = zip(*(seeded(s, conv_pool="torch") for s in (3, 4)), strict=True)
        packed = PackedSeedCNN(list(nets), list(generators))
        packed.train()
        torch.nn.functional.cross_entropy(packed(images).flatten(0, 1), labels.flatten()).backward()
        return [p.grad for p in packed.parameters()]

    with_copy = grads()
    monkeypatch.setattr("optbench.model._grad_channels_last", lambda grad: grad)
    without = grads()
    assert all(torch.equal(a, b) for a, b in zip(with_copy, without, strict=True))


def test_pack_keys_group_what_can_share_a_process():
    base = config.compose()
    same = [config.compose("optimizer=sgd", "seed=3", "optimizer.lr=0.1"), config.compose("label=x", "sweep_id=s")]
    assert all(pack_key(c) == pack_key(base) for c in same)
    for other in (
        "data.batch_size=32",
        "trainer.max_epochs=3",
        "model.net.dropout_conv=0",
        "data.subset=100",
        "trainer=ddp_cpu",
    ):
        assert pack_key(config.compose(other)) != pack_key(base), other
    assert group_jobs(["a", "b", "a", "a", "b"], max_pack=2) == [[0, 2], [3], [1, 4]]


@pytest.mark.slow
def test_packed_equals_unpacked_without_dropout(data_root, tmp_path):
    off = ("model.net.dropout_conv=0", "model.net.dropout_dense=0")
    packed_uri, single_uri = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 's.db'}"
    cfgs = [tiny(data_root, packed_uri, f"optimizer={o}", f"seed={i}", *off) for i, o in enumerate(SEED_TABLE)]
    results = run_pack(cfgs)
    assert [r.status for r in results] == ["FINISHED"] * 6
    client, runs = runs_of(packed_uri)
    assert len({r.data.tags["pack"] for r in runs}) == 1 and sorted(r.data.tags["pack_index"] for r in runs) == list(
        "012345"
    )
    for i, optimizer in enumerate(SEED_TABLE):
        alone = pipeline.run(tiny(data_root, single_uri, f"optimizer={optimizer}", f"seed={i}", *off))
        packed = next(r for r in runs if r.data.tags["optimizer"] == optimizer)
        got, want = histories(client, packed.info.run_id), histories(mlflow.MlflowClient(single_uri), alone.run_id)
        for metric in got:
            assert [s for s, _ in got[metric]] == [1, 2]
            assert [v for _, v in got[metric]] == pytest.approx([v for _, v in want[metric]], rel=1e-4), (
                optimizer,
                metric,
            )
        assert (
            packed.data.params["optimizer.lr"]
            == mlflow.MlflowClient(single_uri).get_run(alone.run_id).data.params["optimizer.lr"]
        )


@pytest.mark.slow
def test_one_diverging_replica_fails_alone(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    results = run_pack(
        [tiny(data_root, uri, "optimizer=sgd", "optimizer.lr=1e12"), tiny(data_root, uri, "optimizer=adam")]
    )
    assert [r.status for r in results] == ["FAILED", "FINISHED"]
    client = mlflow.MlflowClient(uri)
    failed = client.get_run(results[0].run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["failure_reason"] == "diverged"
    assert "Lower optimizer.lr" in failed.data.tags["failure_detail"], "the detail an unpacked run logs"
    assert [s for s, _ in histories(client, results[1].run_id)["val_acc"]] == [1, 2], "the other replica went on"


@pytest.mark.slow
def test_launcher_runs_each_job_as_its_own_run(data_root, tracking_uri, tmp_path, capsys):
    args = quick_args(
        data_root,
        tracking_uri,
        tmp_path,
        "optimizer=adam,sgd",
        "seed=1,2",
        "data.batch_size=64,32",
        "trainer.max_epochs=1",
    )
    run_cli("-m", "hydra/launcher=packed", *args, "sweep_id=pk")
    client, runs = runs_of(tracking_uri)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    packs = {}
    for run in runs:
        packs.setdefault(run.data.tags["pack"], set()).add(run.data.params["data.batch_size"])
    assert sorted(map(sorted, packs.values())) == [["32"], ["64"]], (
        "split by batch size, packed across optimizer and seed"
    )
    assert all(
        r.data.tags["sweep_id"] == "pk" and "config.yaml" in {a.path for a in client.list_artifacts(r.info.run_id)}
        for r in runs
    )
    folders = sorted(p.name for p in (tmp_path / "multirun").iterdir() if (p / "optbench_run.json").exists())
    assert folders == [str(i) for i in range(8)]
    adam = next(r for r in runs if r.data.tags["optimizer"] == "adam")
    assert rerun.main([adam.info.run_id, "--tracking-uri", tracking_uri]) in (0, 3)
    assert "rerunning it alone, unpacked" in capsys.readouterr().out


@pytest.mark.slow
def test_interrupt_then_resume_a_packed_run(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    args = quick_args(
        data_root, uri, tmp_path, "optimizer=adam,sgd", "data.subset=3072", "trainer.max_epochs=4", "threads=1"
    )
    proc = start_cli("-m", "hydra/launcher=packed", *args)
    wait_for_epoch(uri, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]  # README: 1 when a run was killed
    assert out.count(": KILLED run_id=") == 2 and "ended KILLED" in err
    client, runs = runs_of(uri)
    ends = [(r.info.status, r.data.tags.get("failure_reason")) for r in runs]
    assert ends == [("KILLED", "interrupted")] * 2, err[-2000:]
    adam = next(r for r in runs if r.data.tags["optimizer"] == "adam")
    kept = histories(client, adam.info.run_id)["val_loss"]
    assert 1 <= len(kept) < 4
    proc = run_cli(*resume_args(data_root, uri, tmp_path, adam.info.run_id))
    assert "resuming it alone" in proc.stdout
    resumed = client.get_run(adam.info.run_id)
    assert resumed.info.status == "FINISHED" and "failure_reason" not in resumed.data.tags
    history = histories(client, adam.info.run_id)["val_loss"]
    assert [s for s, _ in history] == [1, 2, 3, 4] and history[: len(kept)] == kept
    straight = f"sqlite:///{tmp_path / 'b.db'}"
    run_cli("-m", "hydra/launcher=packed", *quick_args(data_root, straight, tmp_path / "b", *args[7:]))
    reference = next(r for r in runs_of(straight)[1] if r.data.tags["optimizer"] == "adam")
    want = [v for _, v in histories(mlflow.MlflowClient(straight), reference.info.run_id)["val_loss"]]
    got = [v for _, v in history]
    assert got[: len(kept)] == want[: len(kept)], "the epochs before the interruption are the pack's, bit for bit"
    # After it the run goes on as a pack of one, which sums in another order than the pack of two: it may
    # differ from the pack by about as much as a single uninterrupted run does (1.5e-3 relative at epoch 4 on
    # an AVX-512 machine; a fixed tolerance of 1e-3 passed on AVX2 only), not more. A dropout stream not
    # restored misses by 1.5e-2.
    alone = f"sqlite:///{tmp_path / 'c.db'}"
    run_cli(*quick_args(data_root, alone, tmp_path / "c", "optimizer=adam", *args[8:]))
    client_alone, (run_alone,) = runs_of(alone)
    single = [v for _, v in histories(client_alone, run_alone.info.run_id)["val_loss"]]
    for epoch in range(len(kept), 4):
        gap = abs(single[epoch] - want[epoch])
        assert abs(got[epoch] - want[epoch]) <= 2 * gap + 1e-6 * want[epoch], (epoch + 1, got, want, single)
