"""Training speed: optbench's tracked pipeline vs a minimal hand-written PyTorch loop, side by side.

    python scripts/bench_epoch.py [--steps 300] [--repeats 3] [--data-root ../shared/data] [--device cpu]

In one process and alternating, for the same number of steps on the real MNIST (batch 64):
  (a) reference: the seed CNN, data in memory as float tensors, torch.optim.Adam's default
      implementation, loss.item() per step as hand-written loops do;
  (b) optbench: Lightning + our Adam + MLflow tracking to a temporary store, as `optbench-train` runs it.
Prints ms/step (median of the repeats), samples/s, the tracking overhead (MLflow on vs off),
the time to evaluate the 10k test set, and peak RSS. The last line reads
`ratio pipeline/reference = X.XX`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from optbench.data import MNISTDataModule
from optbench.model import SeedCNN
from optbench.train import CONFIG_DIR, build, quiet_libraries

WARMUP = 20


def reference_loop(images: torch.Tensor, labels: torch.Tensor, steps: int, device: torch.device) -> float:
    """Seconds per step of the plain loop (after WARMUP steps)."""
    torch.manual_seed(0)
    model = SeedCNN().to(device)
    opt = torch.optim.Adam(model.parameters())
    x_all = images.to(device).unsqueeze(1).float() / 255.0
    y_all = labels.to(device)
    order = torch.randperm(len(y_all), device=device)
    running = 0.0
    for i in range(steps + WARMUP):
        if i == WARMUP:
            sync(device)
            start = time.perf_counter()
        idx = order[(i * 64) % (len(order) - 64) :][:64]
        opt.zero_grad()
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
        running += loss.item()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Times training steps after the warm-up, and the validation epoch."""

    def __init__(self):
        self.start = self.end = self.val_start = 0.0
        self.val_times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module):
        sync(pl_module.device)
        self.val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.val_times.append(time.perf_counter() - self.val_start)


def pipeline(overrides: list[str], steps: int, tracking: bool, tmp: str) -> tuple[float, float, float]:
    """(seconds per step, whole fit wall time, validation time) of optbench's training path."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *overrides,
                "trainer.max_epochs=1",
                f"+trainer.limit_train_batches={steps + WARMUP}",
                "trainer.enable_progress_bar=false",
                f"logger.tracking_uri=sqlite:///{tmp}/mlflow.db",
                *([] if tracking else ["~logger"]),
            ],
        )
    pl.seed_everything(0, verbose=False)
    datamodule, model = build(cfg)
    timer = StepTimer()
    callbacks = [timer]
    if tracking:
        callbacks.append(instantiate(cfg.logger, run_name="bench", tags={}, run_config=cfg, _recursive_=False))
    trainer = instantiate(cfg.trainer, callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    wall = time.perf_counter() - start
    if tracking:
        callbacks[-1].end()
    return (timer.end - timer.start) / (steps - 1), wall, timer.val_times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", "../shared/data"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "overrides", nargs="*", help="extra config overrides for the pipeline, e.g. model.channels_last=true"
    )
    args = parser.parse_args()
    quiet_libraries()
    device = torch.device(args.device)
    dm = MNISTDataModule(root=args.data_root, download=False)
    dm.setup()
    images, labels = dm.splits["train"]
    overrides = [f"data.root={Path(args.data_root).resolve()}", *args.overrides]
    if device.type == "cuda":
        overrides.append("trainer=gpu")
    ref, on, off, wall_on, wall_off, val = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            ref.append(reference_loop(images, labels, args.steps, device))
            s, w, v = pipeline(overrides, args.steps, tracking=True, tmp=tmp)
            on.append(s), wall_on.append(w), val.append(v)
            s, w, _ = pipeline(overrides, args.steps, tracking=False, tmp=tmp)
            off.append(s), wall_off.append(w)
            print(
                f"repeat {r + 1}: reference {ref[-1] * 1e3:.2f} ms/step, pipeline {on[-1] * 1e3:.2f} ms/step",
                file=sys.stderr,
            )
    med = statistics.median
    steps_per_epoch = -(-60_000 // 64)
    epoch_s = med(on) * steps_per_epoch + med(val)
    overhead_s = med(wall_on) - med(wall_off)
    ratio = med([b / a for a, b in zip(ref, on, strict=True)])
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{'':<28}{'ms/step':>10}{'samples/s':>12}")
    print(f"{'reference (plain loop)':<28}{med(ref) * 1e3:>10.2f}{64 / med(ref):>12.0f}")
    print(f"{'pipeline, tracking on':<28}{med(on) * 1e3:>10.2f}{64 / med(on):>12.0f}")
    print(f"{'pipeline, tracking off':<28}{med(off) * 1e3:>10.2f}{64 / med(off):>12.0f}")
    print(
        f"estimated full epoch (938 steps + eval): {epoch_s:.1f} s; reference {med(ref) * steps_per_epoch:.1f} s + eval"
    )
    print(f"tracking overhead per epoch: {overhead_s:+.3f} s = {100 * overhead_s / epoch_s:+.2f}% of an epoch")
    print(f"evaluation of the {len(dm.splits['val'][1])}-sample test set: {med(val):.3f} s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"ratio pipeline/reference = {ratio:.2f}")


if __name__ == "__main__":
    main()
