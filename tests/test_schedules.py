"""Learning-rate schedules: torch.optim.lr_scheduler's, step for step, logged per epoch, part of a run's
identity (the default adds nothing), restored exactly on resume, refused where a step cannot follow them."""

from __future__ import annotations

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from optbench import config, pipeline
from optbench.compare.query import identity_of
from optbench.config import ConfigError
from optbench.packed import run_pack
from optbench.resume import resume

from .helpers import InterruptAt, compose_cfg, runs_of, tiny_cfg

STEPS = 8  # tiny_cfg: 256 samples, batch 64, 2 epochs
LR = 0.05


class LearningRates(pl.Callback):
    """The learning rate each optimizer step runs with."""

    def __init__(self):
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def torchs(make, steps: int = STEPS) -> list[float]:
    """The rates torch's scheduler gives a lone parameter's first ``steps`` steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler, out = make(opt), []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


REFERENCE = {
    "cosine": (["scheduler.min_lr_ratio=0.1"], lambda o: CosineAnnealingLR(o, T_max=STEPS, eta_min=0.1 * LR)),
    "warmup_cosine": (
        ["scheduler.warmup_steps=3", "scheduler.start_factor=0.2"],
        lambda o: SequentialLR(
            o, [LinearLR(o, start_factor=0.2, total_iters=3), CosineAnnealingLR(o, T_max=STEPS - 3)], milestones=[3]
        ),
    ),
    "linear": (
        ["scheduler.end_factor=0.25"],
        lambda o: LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=STEPS),
    ),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_each_schedule_is_torchs_step_for_step(name, data_root, tracking_uri):
    extra, make = REFERENCE[name]
    seen = LearningRates()
    cfg = tiny_cfg(data_root, tracking_uri, "optimizer=sgd", f"optimizer.lr={LR}", f"scheduler={name}", *extra)
    result = pipeline.run(cfg, callbacks=[seen])
    want = torchs(make)
    assert result.status == "FINISHED" and seen.seen == want and len(set(want)) > 2
    logged = mlflow.MlflowClient(tracking_uri).get_metric_history(result.run_id, "lr")
    after = torchs(make, STEPS + 1)  # the rate after each epoch's last step is the next step's
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == [after[STEPS // 2], after[STEPS]]


def test_the_schedule_is_part_of_a_runs_identity_and_the_default_adds_nothing(data_root, tracking_uri):
    plain = pipeline.run(tiny_cfg(data_root, tracking_uri, "trainer.max_epochs=1"))
    cosine = pipeline.run(tiny_cfg(data_root, tracking_uri, "trainer.max_epochs=1", "scheduler=cosine"))
    client = mlflow.MlflowClient(tracking_uri)
    plain_params, cosine_params = (client.get_run(r.run_id).data.params for r in (plain, cosine))
    assert not [k for k in plain_params if k.startswith("scheduler")], "runs logged before schedules match"
    assert cosine_params["scheduler._target_"] == "optbench.schedules.cosine"
    assert identity_of(plain_params) != identity_of(cosine_params)
    assert "lr" not in client.get_run(plain.run_id).data.metrics


def test_resume_restores_the_schedule(data_root, tracking_uri):
    args = ["scheduler=warmup_cosine", "scheduler.warmup_steps=5", "trainer.max_epochs=3", "optimizer=sgd"]
    straight = pipeline.run(tiny_cfg(data_root, tracking_uri, *args))
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        pipeline.run(tiny_cfg(data_root, tracking_uri, *args), callbacks=[InterruptAt(1)])
    client, runs = runs_of(tracking_uri)
    (killed,) = [r for r in runs if r.info.status == "KILLED"]
    command = [f"data.root={data_root}", f"logger.tracking_uri={tracking_uri}", f"resume={killed.info.run_id}"]
    assert resume(compose_cfg(*command), command).status == "FINISHED"
    for metric in ("lr", "val_loss", "train_loss"):
        want, got = (
            sorted((m.step, m.value) for m in client.get_metric_history(r, metric))
            for r in (straight.run_id, killed.info.run_id)
        )
        assert got == want and len(want) == 3, metric


def test_where_a_schedule_cannot_be_followed_it_is_refused(data_root, tracking_uri):
    with pytest.raises(ConfigError, match="cuda_graph=true with a scheduler"):
        config.validate(compose_cfg("trainer=gpu", "trainer.cuda_graph=true", "scheduler=cosine"))
    cfgs = [tiny_cfg(data_root, tracking_uri, "scheduler=cosine", f"seed={s}") for s in (1, 2)]
    with pytest.raises(ConfigError, match="packed .* no learning-rate schedules"):
        run_pack(cfgs)
    assert runs_of(tracking_uri)[1] == []
