"""Schedule-Free AdamW in training: every evaluation runs on the average x, as its authors require, and the
steps on y; a packed sweep switches its replicas the same way."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from optbench import config, pipeline

from .helpers import runs_of, tiny_cfg


def val_loss(module, images, labels) -> float:
    module.eval()
    with torch.no_grad():
        return F.cross_entropy(module(images), labels).item()


def test_validation_runs_on_the_average(data_root, tracking_uri):
    cfg = tiny_cfg(data_root, tracking_uri, "optimizer=schedule_free_adamw", "trainer.max_epochs=1", "data.subset=128")
    datamodule, module, _ = config.build(cfg)
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0
    )
    trainer.fit(module, datamodule=datamodule)
    images, labels = datamodule.splits["val"]
    (optimizer,) = trainer.optimizers
    assert optimizer.param_groups[0]["train_mode"], "back on y after validation"
    on_y = val_loss(module, images, labels)
    optimizer.eval()
    on_x = val_loss(module, images, labels)
    assert abs(on_x - on_y) > 1e-4, "x and y differ after an epoch"
    logged = module.epoch_metrics["val_loss"]
    assert abs(logged - on_x) < 1e-6 * on_x, f"validation logged {logged}; on x {on_x}, on y {on_y}"


def test_a_run_and_a_pack_of_schedule_free_agree(data_root, tracking_uri):
    """The same seed trained alone and in a pack of two: the same validation losses (to float tolerance),
    so both evaluate the same weights."""
    one_epoch = ["optimizer=schedule_free_adamw", "trainer.max_epochs=1", "data.subset=128"]
    alone = pipeline.run(tiny_cfg(data_root, tracking_uri, *one_epoch, "seed=3"))
    from optbench.packed import run_pack

    cfgs = [tiny_cfg(data_root, tracking_uri, *one_epoch, f"seed={s}") for s in (3, 4)]
    packed = run_pack(cfgs)
    assert alone.status == "FINISHED" and {r.status for r in packed} == {"FINISHED"}
    assert abs(packed[0].metrics["val_loss"] - alone.metrics["val_loss"]) < 1e-4 * alone.metrics["val_loss"]
    assert len(runs_of(tracking_uri)[1]) == 3
