"""The LightningModule: one optimizer step per batch, exact per-epoch metrics, divergence caught early.

Manual optimisation keeps the step explicit: a batch larger than ``micro_batch_size`` (full-batch
GD over 60k samples) is split into chunks whose gradients are accumulated with weight
``len(chunk)/len(batch)``, so the step is the exact full-batch gradient while only one chunk's
activations are alive at a time.

Loss·n, correct predictions and n are summed in float64 on the device, in place (so a recorded CUDA
graph keeps adding to the same sums), and reduced across DDP ranks once per epoch, so ``val_acc`` is
exactly correct/n over every sample, whatever the world size.

``cuda_graph=True`` records the step once (``graphs.GraphedStep``) and replays it: the optimizer is built
``capturable`` and gradients keep their tensors between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from . import graphs, optim
from .in_memory import as_float_images


class DivergenceError(RuntimeError):
    """The training loss, the validation loss or a parameter became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float, what: str = "training loss"):
        self.epoch, self.step, self.value, self.what = epoch, step, value, what
        super().__init__(
            f"Training diverged: the {what} became {value} at epoch {epoch}, step {step}. "
            "Lower optimizer.lr (or pick another optimizer) and run again."
        )


def check_finite_every(configured: int | None, device: torch.device) -> int:
    """Steps between reads of the on-device divergence record: 1 on CPU, where reads are free, else 100."""
    return configured or (1 if device.type == "cpu" else 100)


class ClassifierModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        micro_batch_size: int | None = 4096,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        check_finite_every_n_steps: int | None = None,
        cuda_graph: bool = False,
    ):
        super().__init__()
        for key, value in (
            ("micro_batch_size", micro_batch_size),
            ("check_finite_every_n_steps", check_finite_every_n_steps),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"Invalid model.{key}={value!r}; give a positive integer or null.")
        self.automatic_optimization = False
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.micro_batch_size = micro_batch_size
        self.check_finite_every_n_steps = check_finite_every_n_steps
        self.cuda_graph = cuda_graph
        self._graphed: graphs.GraphedStep | None = None
        self._running: dict[str, torch.Tensor] = {}  # split → (loss·n, correct, n) of this epoch, on the device
        self.epoch_metrics: dict[str, float] = {}
        self._first_nonfinite: torch.Tensor | None = None  # (step, loss) of the first bad step, on the device
        self._summarized_epoch = -1
        self._step_offset = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(as_float_images(images))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout draws from the global generator; resuming must continue its stream exactly.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters(), **({"capturable": True} if self.cuda_graph else {}))
        if self.scheduler_factory is None or self._trainer is None:
            return optimizer
        # Stepped once per optimizer step (training_step); Lightning keeps its state in the checkpoint.
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- metrics -----------------------------------------------------------------------------
    def _accumulate(self, split: str, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        running = self._running.get(split)
        if running is None:  # a plain attribute, not a buffer: DDP would broadcast rank 0's buffers
            running = self._running[split] = torch.zeros(3, dtype=torch.float64, device=y.device)
        running[0] += loss_sum.detach()
        running[1] += (logits.argmax(1) == y).sum()
        running[2] += len(y)

    def _publish(self, split: str) -> None:
        """Reduce a split's sums over all ranks (collective), keep them for tracking, show them on the bar."""
        running = self._running.get(split)
        if running is None:
            return
        loss, correct, n = self.trainer.strategy.reduce(running.clone(), reduce_op="sum").tolist()
        running.zero_()
        metrics = {f"{split}_loss": loss / n, f"{split}_acc": correct / n}
        self.epoch_metrics.update(metrics)
        self.log_dict(metrics, prog_bar=True, logger=False, rank_zero_only=True)

    # -- divergence: the loss recorded on the device, read every N steps (1 on CPU, where reads are free) --
    def _watch(self, step_loss: torch.Tensor) -> None:
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((2,), math.nan, dtype=torch.float64, device=step_loss.device)
            self._step = torch.zeros((), dtype=torch.float64, device=step_loss.device)
        self._step += 1
        first = self._first_nonfinite
        take = ~torch.isfinite(step_loss) & torch.isnan(first[0])
        first.copy_(torch.where(take, torch.stack([self._step, step_loss.double()]), first))

    def _raise_if_loss_diverged(self) -> None:
        if self._first_nonfinite is not None:
            step, loss = self._first_nonfinite.tolist()
            if not math.isnan(step):
                raise DivergenceError(self.current_epoch + 1, self._step_offset + int(step), loss)

    def raise_if_diverged(self) -> None:
        """The per-step loss check plus the epoch-end ones: every parameter (a pass over all weights, too
        dear per step) and the validation loss."""
        self._raise_if_loss_diverged()
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise DivergenceError(self.current_epoch + 1, self.global_step, math.inf, "value of a parameter")
        val_loss = self.epoch_metrics.get("val_loss")
        if val_loss is not None and not math.isfinite(val_loss):
            raise DivergenceError(self.current_epoch + 1, self.global_step, val_loss, "validation loss")

    def on_train_start(self) -> None:
        self._step_offset = self.global_step  # steps done before a resume
        self._first_nonfinite = None

    # -- loops ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        if not (self.cuda_graph and self._graphed_step(opt, *batch)):
            opt.zero_grad(set_to_none=not self.cuda_graph)  # a recorded step keeps the gradients' tensors
            self._forward_backward(*batch)
            opt.step()
        if (scheduler := self.lr_schedulers()) is not None:
            scheduler.step()
        if self.global_step % check_finite_every(self.check_finite_every_n_steps, self.device) == 0:
            self._raise_if_loss_diverged()

    def _graphed_step(self, opt, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """The step through ``GraphedStep``; False for a batch it does not take (then it runs eagerly)."""
        if self._graphed is None:

            def step(x: torch.Tensor, y: torch.Tensor) -> None:
                opt.optimizer.zero_grad(set_to_none=False)
                self._forward_backward(x, y)
                opt.optimizer.step()

            self._graphed = graphs.GraphedStep(step, (images, labels), graphs.recorder(images.device))
        if not self._graphed(images, labels):
            return False
        # Lightning counts manual steps inside LightningOptimizer.step, which a recorded step bypasses.
        opt._on_before_step()
        opt._on_after_step()
        return True

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        n = len(labels)
        chunk = self.micro_batch_size or n
        step_loss = 0.0
        for x, y in zip(images.split(chunk), labels.split(chunk), strict=True):
            logits = self(x)
            loss_sum = F.cross_entropy(logits, y, reduction="sum")
            self.manual_backward(loss_sum / n)
            self._accumulate("train", loss_sum, logits, y)
            step_loss = loss_sum.detach() + step_loss
        self._watch(step_loss / n)

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _eval_step(self, split: str, batch) -> None:
        images, labels = batch
        logits = self(images)
        self._accumulate(split, F.cross_entropy(logits, labels, reduction="sum"), logits, labels)

    # Schedule-Free trains one sequence and evaluates its average: the weights switch for every evaluation
    # (checkpoints saved at validation end hold the average; the next epoch switches back before its steps).
    def _optimizer_mode(self, train: bool) -> None:
        if self._trainer is not None:
            optim.set_mode(self.trainer.optimizers, train)

    def on_train_epoch_start(self) -> None:
        self._optimizer_mode(train=True)

    def on_validation_start(self) -> None:
        self._optimizer_mode(train=False)

    def on_validation_end(self) -> None:
        self._optimizer_mode(train=True)

    def on_test_start(self) -> None:
        self._optimizer_mode(train=False)

    def on_test_end(self) -> None:
        self._optimizer_mode(train=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._publish("val")

    def on_test_epoch_end(self) -> None:
        self._publish("test")

    def epoch_summary(self) -> dict[str, float]:
        """This epoch's train and val metrics, checked for divergence (collective: every rank calls it).

        The tracking callback calls it before this module's own ``on_train_epoch_end`` (Lightning runs
        callbacks first); the train sums are reduced once per epoch either way.
        """
        if self._summarized_epoch != self.current_epoch:
            self._summarized_epoch = self.current_epoch
            self._publish("train")
            self.raise_if_diverged()
        return dict(self.epoch_metrics)

    def on_train_epoch_end(self) -> None:
        self.epoch_summary()
