"""Each speed lever of the CPU step measured alone: the default pipeline against the same with one lever undone.

    python scripts/bench_levers.py [--steps 300] [--repeats 3] [--data-root ../shared/data] [--only NAME]

Per repeat, in fresh worker processes (``bench_epoch.py``'s), alternating: the floor (the step's dense
matrix products, ``bench_floor.py``), the default pipeline (tracking off), and the pipeline with each
config lever undone in turn. Prints ms/step (median over repeats), what the lever saves, and each
variant's ``ratio/floor`` (the median of the per-repeat ratios).

Levers that are code, not config (``SWITCHES``: the pooled gradient's copy back to channels_last,
deterministic mode's NaN fill of every new tensor, on by default, no gain measured from turning it off,
docs/benchmarks.md; the update's thread count; the first dropout inside the fused kernels or after
them), and levers that are config but can be flipped in a running model (``fused_step``: the optimizer's
``fused``; ``conv_pool_fused``: the net's ``conv_pool``) are flipped inside one pipeline run every
``BLOCK`` steps instead, so that both states share the process, its memory and the machine's moment: in
one process a lever is not swamped by the minutes-long swings of the machine that separate fresh
processes see.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_epoch import measure  # scripts/: this file's folder is on sys.path

from optbench import dropout
from optbench import model as seed_model
from optbench.optim import fused as fused_update

BLOCK = 30

# lever → (what it is, the overrides that undo it)
LEVERS = {
    "conv_pool": ("conv, pool, ReLU, dropout as one pair of CPU kernels", "model.net.conv_pool=torch"),
    "dropout_rng": ("dropout masks from bulk random bytes", "model.net.dropout_rng=bernoulli"),
    # PyTorch's layers only (conv_pool=torch): the fused kernels have a layout of their own
    "channels_last": ("conv and pool in channels_last", "model.net.conv_pool=torch model.net.channels_last=false"),
    "foreach": ("multi-tensor optimizer update", "optimizer.fused=false optimizer.foreach=false"),
    "fused": ("one pass per tensor for the optimizer update", "optimizer.fused=false"),
}


def _set_fills(on: bool, pl_module) -> None:
    import torch

    torch.utils.deterministic.fill_uninitialized_memory = on


def _set_grad_relayout(on: bool, pl_module) -> None:
    seed_model._grad_channels_last = GRAD_RELAYOUT if on else (lambda grad: grad)


GRAD_RELAYOUT = seed_model._grad_channels_last  # the model's hook, kept while the switch replaces it


def _set_fused(on: bool, pl_module) -> None:
    if pl_module is not None:
        for group in pl_module.optimizers().optimizer.param_groups:
            group["fused"] = on


def _set_conv_pool(on: bool, pl_module) -> None:
    if pl_module is not None:
        pl_module.net.conv_pool = "fused" if on else "torch"


def _set_dropout_inside(on: bool, pl_module) -> None:
    seed_model.one_byte = dropout.one_byte if on else (lambda p, rng: False)  # off: Dropout after the kernels


def _set_one_thread_update(on: bool, pl_module) -> None:
    fused_update.PARALLEL_FROM = ONE_THREAD_FROM if on else 1 << 16  # off: the threshold before 2026-12-07


ONE_THREAD_FROM = fused_update.PARALLEL_FROM

# switch → (what it is, what turns it on or off)
SWITCHES = {
    "fills": ("NaN fill of new tensors", _set_fills),
    "grad_relayout": ("pooled gradient back to channels_last", _set_grad_relayout),
    "fused_step": ("one pass per tensor for the optimizer update", _set_fused),
    "conv_pool_fused": ("conv, pool, ReLU, dropout as one pair of CPU kernels", _set_conv_pool),
    "dropout_inside": ("the first dropout's mask applied in those kernels", _set_dropout_inside),
    "one_thread_update": ("the fused update on one thread, not Numba's two", _set_one_thread_update),
}


def switch_in_process(name: str, data_root: str, blocks: int) -> dict[str, list[float]]:
    """ms/step of alternating blocks with the switch off and on, in one pipeline run (it is left on)."""
    import time

    import pytorch_lightning as pl

    from optbench import config, pipeline

    times: dict[str, list[float]] = {"off": [], "on": []}
    setter = SWITCHES[name][1]

    class Alternate(pl.Callback):
        state, start = "off", None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx % BLOCK:
                return
            if self.start is not None and batch_idx >= 2 * BLOCK:  # the first two blocks warm up
                times[self.state].append((time.perf_counter() - self.start) / BLOCK * 1e3)
            self.state = "on" if (batch_idx // BLOCK) % 2 else "off"
            setter(self.state == "on", pl_module)
            self.start = time.perf_counter()

    cfg = config.compose(
        f"data.root={data_root}", "trainer.max_epochs=1", f"trainer.limit_train_batches={(blocks + 2) * BLOCK + 1}",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "~logger", "~callbacks.checkpoint",
    )  # fmt: skip
    pipeline.run(cfg, callbacks=[Alternate()])
    setter(True, None)
    return times


def report_switch(name: str, times: dict[str, list[float]]) -> None:
    med = statistics.median
    pairs = list(zip(times["off"], times["on"], strict=False))
    saved = [off - on for off, on in pairs]
    print(
        f"{name} ({SWITCHES[name][0]}; in one process, {len(pairs)} pairs of {BLOCK}-step blocks): off "
        f"{med(times['off']):.2f}, on {med(times['on']):.2f} ms/step; on saves {med(saved):+.2f} ms/step "
        f"(median of pairs), faster in {sum(s > 0 for s in saved)}/{len(pairs)} pairs"
    )


def config_levers(base: argparse.Namespace, levers: list[str], repeats: int) -> None:
    """The floor, the default pipeline and each config lever undone, in fresh processes, alternating."""
    variants = {"floor": ("floor", []), "default": ("pipeline-off", [])}
    variants |= {name: ("pipeline-off", LEVERS[name][1].split()) for name in levers}
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as store:
        for r in range(repeats):
            for name, (kind, overrides) in variants.items():
                run_args = argparse.Namespace(**vars(base) | {"overrides": overrides, "store": store})
                results[name].append(measure(kind, run_args)["step_s"] * 1e3)
            shown = {k: f"{v[-1]:.2f}" for k, v in results.items()}
            print(f"repeat {r + 1}: ms/step {shown}", file=sys.stderr, flush=True)
    med = statistics.median
    default = med(results["default"])
    print(f"{'':<44}{'ms/step':>9}{'saves':>9}{'ratio/floor':>13}")
    for name, times in results.items():
        ratio = med(t / f for t, f in zip(times, results["floor"], strict=True))
        lever = name in LEVERS
        what = f"without {name} ({LEVERS[name][0]})" if lever else name
        saves = f"{med(times) - default:+.2f}" if lever else ""
        print(f"{what[:43]:<44}{med(times):>9.2f}{saves:>9}{ratio:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", "../shared/data"))
    parser.add_argument("--only", action="append", choices=[*LEVERS, *SWITCHES], help="only these levers")
    parser.add_argument("--blocks", type=int, default=24, help="blocks of each in-process measurement")
    args = parser.parse_args()
    levers = [name for name in args.only or LEVERS if name in LEVERS]
    base = argparse.Namespace(
        steps=args.steps, data_root=str(Path(args.data_root).resolve()), device="cpu", overrides=[], store=""
    )
    if levers:
        config_levers(base, levers, args.repeats)
    for name in (name for name in args.only or SWITCHES if name in SWITCHES):
        report_switch(name, switch_in_process(name, base.data_root, args.blocks))


if __name__ == "__main__":
    main()
