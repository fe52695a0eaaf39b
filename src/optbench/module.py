"""The LightningModule: one optimizer step per batch, metrics summed on the device.

Manual optimisation keeps the step explicit: a batch larger than ``micro_batch_size`` (full-batch
GD over 60k samples) is split into chunks whose gradients are accumulated with weight
``len(chunk)/len(batch)``, so the step is the exact full-batch gradient while only one chunk's
activations are alive at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"Training diverged: loss became {loss} at epoch {epoch}, step {step}. "
            "Lower optimizer.lr (or pick another optimizer) and run again."
        )


class ClassifierModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        micro_batch_size: int | None = 4096,
    ):
        super().__init__()
        if micro_batch_size is not None and (not isinstance(micro_batch_size, int) or micro_batch_size <= 0):
            raise ValueError(f"Invalid model.micro_batch_size={micro_batch_size}; give a positive integer or null.")
        self.automatic_optimization = False
        self.net = net
        self.optimizer_factory = optimizer
        self.micro_batch_size = micro_batch_size
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.epoch_metrics: dict[str, float] = {}
        self._summarized_epoch = -1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.net.prepare(images))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout draws from the global generator; resuming must continue its stream exactly.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    # -- per-epoch sums of loss·n, correct and n: on the device, reduced across ranks once per epoch --
    def _reset(self, split: str) -> None:
        self._sums[split] = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss·n, correct
        self._counts[split] = 0

    def _accumulate(self, split: str, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        sums = self._sums[split]
        sums[0] += loss_sum.detach()
        sums[1] += (logits.argmax(1) == y).sum()
        self._counts[split] += len(y)

    def reduce(self, split: str) -> dict[str, float]:
        """Exact loss and accuracy over every sample all ranks saw (call on every rank)."""
        sums = torch.cat([self._sums[split], self._sums[split].new_tensor([self._counts[split]])])
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss, correct, n = sums.tolist()
        return {f"{split}_loss": loss / n, f"{split}_acc": correct / n} if n else {}

    def on_train_epoch_start(self) -> None:
        self._reset("train")

    def training_step(self, batch, batch_idx):
        images, labels = batch
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        n = len(labels)
        chunk = self.micro_batch_size or n
        loss_total = 0.0
        for x, y in zip(images.split(chunk), labels.split(chunk), strict=True):
            logits = self(x)
            loss_sum = F.cross_entropy(logits, y, reduction="sum")
            self.manual_backward(loss_sum / n)
            self._accumulate("train", loss_sum, logits, y)
            loss_total += loss_sum.item()  # a host read per chunk: free on CPU, one sync per step on GPU
        loss = loss_total / n
        if not math.isfinite(loss):
            raise DivergenceError(self.current_epoch + 1, self.global_step + 1, loss)
        opt.step()

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def on_test_epoch_start(self) -> None:
        self._reset("test")

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _eval_step(self, split: str, batch) -> None:
        images, labels = batch
        logits = self(images)
        self._accumulate(split, F.cross_entropy(logits, labels, reduction="sum"), logits, labels)

    def _publish(self, split: str) -> None:
        """Reduce a split's sums, keep them for tracking, and show them on the progress bar."""
        metrics = self.reduce(split)
        self.epoch_metrics.update(metrics)
        self.log_dict(metrics, prog_bar=True, logger=False, rank_zero_only=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._publish("val")

    def on_test_epoch_end(self) -> None:
        self._publish("test")

    def epoch_summary(self) -> dict[str, float]:
        """This epoch's train and val metrics; reduces the train sums once (collective: all ranks call it)."""
        if self._summarized_epoch != self.current_epoch:
            self._publish("train")
            self._summarized_epoch = self.current_epoch
        return dict(self.epoch_metrics)

    def on_train_epoch_end(self) -> None:
        self.epoch_summary()
