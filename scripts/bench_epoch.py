"""Training speed: optbench's tracked pipeline vs a minimal hand-written PyTorch loop and the step's floor.

    python scripts/bench_epoch.py [--steps 300] [--repeats 3] [--data-root ../shared/data] [--device cpu] [--profile]

For the same number of steps on the real MNIST (batch 64), alternating, repeated:
  reference        the seed CNN as a plain nn.Sequential in the Keras order, data in memory as float
                   tensors, torch.optim.Adam's default implementation, the loss summed on the device;
  pipeline (on)    optbench as `optbench-train` runs it: Lightning, our Adam, MLflow tracking to a
                   temporary store (checkpoint and system metrics included), default config;
  pipeline (off)   the same without the logger, for the tracking overhead (CPU);
  reference+malloc the reference with optbench's allocator setting, to show what that setting alone buys (CPU);
  reference (graph) the reference with its whole step captured in a CUDA graph, capturable Adam (CUDA);
  pipeline (graph) the pipeline with trainer.cuda_graph=true (CUDA);
  floor            the step's dense-layer matrix products alone (scripts/bench_floor.py), what the
                   hardware needs at least, in a process of its own.
Each measurement runs in a fresh worker process, so process-wide settings (threads, the C allocator) of
one never leak into the next. ``ratio pipeline/floor`` is measured side by side: in each pipeline worker,
blocks of BLOCK timed steps alternate with blocks of the floor (``bench_floor.Paired``); the median over
those pairs, then over repeats. The machine's speed drifts up to 2x within a minute (docs/benchmarks.md),
so a floor timed in another process seconds apart moves the ratio more than the code does (printed too).
Prints ms/step (median over repeats), samples/s, tracking overhead, the time to evaluate the 10k test set,
peak RSS, and last `ratio pipeline/reference = X.XX` and `ratio pipeline/floor = X.XX` (on CUDA also the
CUDA-graph ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_floor import Floor, Paired, floor_loop, sync  # scripts/: this file's folder is on sys.path

WARMUP = 20
BLOCK = 30  # pipeline steps per timed block; a block of the floor runs in the same process before each
STEPS_PER_EPOCH = -(-60_000 // 64)


def reference_loop(data_root: str, steps: int, device: torch.device, malloc: bool, graph: bool = False) -> dict:
    """Seconds per step of the plain loop (after WARMUP steps); ``graph``: each step a CUDA-graph replay."""
    from torch import nn

    from optbench import runtime
    from optbench.data import MNISTDataModule

    if malloc:
        runtime.keep_freed_memory()
    dm = MNISTDataModule(root=data_root, download=False)
    dm.setup()
    images, labels = dm.splits["train"]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(5408, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10),
    ).to(device)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), capturable=graph)
    x_all = (images.unsqueeze(1).float() / 255.0).to(device)
    y_all = labels.to(device)
    order = torch.randperm(len(y_all), device=device)
    static_x, static_y = x_all[:64].clone(), y_all[:64].clone()
    running = torch.zeros((), device=device)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(static_x), static_y)
        loss.backward()
        opt.step()
        running.add_(loss.detach())

    replay = None
    for i in range(steps + WARMUP):
        if i == WARMUP:
            sync(device)
            start = time.perf_counter()
        idx = order[(i * 64) % (len(order) - 64) :][:64]
        static_x.copy_(x_all[idx])
        static_y.copy_(y_all[idx])
        if replay is not None:
            replay()
        elif graph and i == 3:  # after 3 warm-up steps on a side stream, as CUDA graph capture wants
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                step()
            replay = cuda_graph.replay
            replay()
        elif graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            step()
    sync(device)
    return {"step_s": (time.perf_counter() - start) / steps, "loss": running.item() / (steps + WARMUP)}


def timed(obj, name: str, spent: dict[str, float]) -> None:
    """Wrap ``obj.name`` (a class's method too) to add its wall time to ``spent[name]``."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

    setattr(obj, name, wrapper)


def pipeline(
    data_root: str, store: str, steps: int, device: torch.device, tracking: bool, extra: list[str], profile: bool
) -> dict:
    """optbench's training path: ``pipeline.run`` on the default config, as optbench-train runs it."""
    import pytorch_lightning as pl

    from optbench import config
    from optbench import pipeline as optbench_pipeline
    from optbench.tracking import RunTracking

    class StepTimer(pl.Callback):
        """The steps after WARMUP in blocks of BLOCK, each after a block of the floor (``bench_floor.Paired``)."""

        def __init__(self, with_floor: bool):
            self.paired = Paired(Floor(device) if with_floor else None, BLOCK, device)
            self.val_start = self.val_s = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx >= WARMUP:
                self.paired.tick(batch_idx - WARMUP)

        def on_validation_epoch_start(self, trainer, pl_module):
            sync(pl_module.device)
            self.val_start = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            sync(pl_module.device)
            self.val_s = time.perf_counter() - self.val_start

    blocks = -(-steps // BLOCK)
    spent: dict[str, float] = {}
    for hook in ("on_fit_start", "on_train_epoch_end", "on_fit_end", "finish"):
        timed(RunTracking, hook, spent)
    cfg = config.compose(
        f"data.root={data_root}",
        *(["trainer=gpu"] if device.type == "cuda" else []),
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={WARMUP + BLOCK * blocks + 1}",  # the last batch closes the last block
        "trainer.enable_progress_bar=false",
        "seed=0",
        *([f"logger.tracking_uri=sqlite:///{store}/mlflow.db"] if tracking else ["~logger", "~callbacks.checkpoint"]),
        *extra,
    )
    timer = StepTimer(with_floor=not profile)  # a profile shows the pipeline's operations only
    wall = time.perf_counter()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            optbench_pipeline.run(cfg, callbacks=[timer])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
    else:
        optbench_pipeline.run(cfg, callbacks=[timer])
    wall = time.perf_counter() - wall
    per_epoch = spent.get("on_train_epoch_end", 0.0)  # metrics, time-to-target
    per_run = sum(spent.values()) - per_epoch  # run creation, params, config, dataset, end
    paired = timer.paired
    return {"step_s": statistics.fmean(paired.blocks), "floor_s": statistics.fmean(paired.floors or [float("nan")]),
            "floor_ratio": paired.ratio(), "wall_s": wall, "val_s": timer.val_s,
            "tracking_epoch_s": per_epoch, "tracking_run_s": per_run}  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.worker == "floor":
        result = floor_loop(args.steps, device)
    elif args.worker.startswith("reference"):
        malloc, graph = args.worker == "reference+malloc", args.worker == "reference-graph"
        result = reference_loop(args.data_root, args.steps, device, malloc, graph)
    else:
        on, extra = args.worker in ("pipeline-on", "pipeline-graph"), [*args.overrides]
        extra += ["trainer.cuda_graph=true"] if args.worker == "pipeline-graph" else []
        result = pipeline(args.data_root, args.store, args.steps, device, on, extra, args.profile)
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, args: argparse.Namespace, profile: bool = False, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--data-root", args.data_root]
    cmd += ["--store", args.store, "--device", args.device, *(["--profile"] if profile else []), *args.overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    if profile:
        print(out.split("RESULT")[0])
    return json.loads(out.rsplit("RESULT ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA_ROOT", "../shared/data"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--profile", action="store_true", help="also print the top ops of the pipeline's steps")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for the pipeline, e.g. model.net.conv_pool=torch"
    )
    args = parser.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as store:
        args.store = store
        from optbench import store as tracking_store

        tracking_store.prepare(f"sqlite:///{store}/mlflow.db", "optbench")  # tables created once, outside the timings
        run(args)


def run(args: argparse.Namespace) -> None:
    labels = {
        "reference": "reference (plain loop)",
        "pipeline-on": "pipeline, tracking on",
        "pipeline-off": "pipeline, tracking off",
        "reference+malloc": "reference + malloc setting",
        "reference-graph": "reference, CUDA graph",
        "pipeline-graph": "pipeline, cuda_graph=true",
        "floor": "floor (3 dense matmuls), alone",
    }
    cpu = args.device == "cpu"
    kinds = (
        ("floor", "reference", "pipeline-on", "pipeline-off", "reference+malloc")
        if cpu
        else ("floor", "reference", "pipeline-on", "reference-graph", "pipeline-graph")
    )
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            results[kind].append(measure(kind, args))
        ms = {k: f"{v[-1]['step_s'] * 1e3:.2f}" for k, v in results.items()}
        print(f"repeat {r + 1}: ms/step {ms}", file=sys.stderr, flush=True)
    med = statistics.median

    def step(kind):
        return med(x["step_s"] for x in results[kind])

    def ratio(kind, reference):
        return med(p["step_s"] / r["step_s"] for p, r in zip(results[kind], results[reference], strict=True))

    val_s = med(x["val_s"] for x in results["pipeline-on"])
    epoch_s = step("pipeline-on") * STEPS_PER_EPOCH + val_s
    per_step_overhead = step("pipeline-on") - step("pipeline-off") if cpu else 0.0
    per_epoch_s = med(x["tracking_epoch_s"] for x in results["pipeline-on"])
    per_run_s = med(x["tracking_run_s"] for x in results["pipeline-on"])
    print(
        f"device: {args.device}, torch {torch.__version__}, {results['pipeline-on'][0]['threads']} threads, {os.cpu_count()} cores"
    )
    print(f"{'':<34}{'ms/step':>10}{'samples/s':>12}{'peak RSS MiB':>14}")
    for kind in kinds:
        rss = med(x["rss_mib"] for x in results[kind])
        print(f"{labels[kind]:<34}{step(kind) * 1e3:>10.2f}{64 / step(kind):>12.0f}{rss:>14.0f}")
    print(
        f"full epoch estimate (938 steps + eval): pipeline {epoch_s:.1f} s, reference {step('reference') * STEPS_PER_EPOCH:.1f} s + eval"
    )
    epoch_overhead = per_step_overhead * STEPS_PER_EPOCH + per_epoch_s
    print(
        f"tracking overhead per epoch: {per_step_overhead * 1e3:+.2f} ms/step in the loop{'' if cpu else ' (not measured)'} "
        f"+ {per_epoch_s:.3f} s at epoch end (metrics, checkpoint) = {100 * epoch_overhead / epoch_s:+.2f}% of an epoch; "
        f"once per run: {per_run_s:.2f} s (run, params, config, dataset) = {100 * per_run_s / (10 * epoch_s):.2f}% of a 10-epoch run"
    )
    print(f"evaluation of the 10,000-sample test set: {val_s:.3f} s")
    if args.profile:
        measure("pipeline-off", args, profile=True)
    if not cpu:
        print(f"ratio pipeline(cuda_graph)/reference(CUDA graph) = {ratio('pipeline-graph', 'reference-graph'):.2f}")
    side, floor_ms = (
        [x["floor_ratio"] for x in results["pipeline-on"]],
        med(x["floor_s"] for x in results["pipeline-on"]),
    )
    print(f"floor between the pipeline's blocks: {floor_ms * 1e3:.2f} ms/step; pipeline/floor per repeat "
          f"{', '.join(f'{r:.2f}' for r in side)}; with the floor alone in its own process: {ratio('pipeline-on', 'floor'):.2f}")  # fmt: skip
    print(f"ratio pipeline/reference = {ratio('pipeline-on', 'reference'):.2f}")
    print(f"ratio pipeline/floor = {med(side):.2f}")


if __name__ == "__main__":
    main()
