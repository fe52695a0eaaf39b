"""Train a pack: runs that share one batched model and one process, each still its own MLflow run.

Packing pays on a GPU, where one small model leaves the device idle: K replicas of the seed CNN train as
one model (``PackedSeedCNN``), each with its own seed (initial weights, data order ``f(seed, epoch)``,
dropout stream), its own optimizer (the project's update rule on its slice of the packed parameters)
and its own MLflow run with the params, tags, metrics and statuses an unpacked run has, plus the tag
``pack``. A replica that diverges ends FAILED alone; Ctrl-C or SIGTERM ends every unfinished one KILLED.
Checkpoints are per replica (``last/last.ckpt``, tagged ``checkpoint_format=packed``), so a run resumes
alone: a pack of one. Lightning trains one model per Trainer, so this loop is our own.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from .. import config, graphs, optim, runtime, tracking
from ..in_memory import InMemoryBatches, InMemoryDataModule
from ..model import SeedCNN
from ..module import check_finite_every
from ..pipeline import RunResult, flatten
from .model import PackedSeedCNN
from .records import PackedRun, checkpoint_payload, load_checkpoint

# Keys that must be equal for runs to share a process: all but the optimizer, the seed and the labels.
NOT_SHARED = ("optimizer", "seed", "label", "run_name", "sweep_id", "resume")


def pack_key(cfg: DictConfig) -> str:
    shared = {k: v for k, v in config.resolved(cfg).items() if k not in NOT_SHARED}
    shared["data"] = {k: v for k, v in shared["data"].items() if k != "seed"}
    return repr(sorted(flatten(shared).items()))


@dataclass
class Replica:
    cfg: DictConfig
    run: PackedRun
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    seed: int
    status: str = "RUNNING"
    metrics: dict[str, float] = field(default_factory=dict)


def refuse_unpackable(cfg: DictConfig, net, datamodule) -> None:
    """The pack is the seed CNN's layers batched over replicas, fed from in-memory uint8 splits."""
    if not isinstance(net, SeedCNN):
        raise config.ConfigError(
            f"hydra/launcher=packed trains the seed CNN only (model=seed_cnn), batching its layers over the jobs; "
            f"model.net._target_={cfg.model.net.get('_target_')} cannot be packed. Run this sweep with "
            "hydra/launcher=joblib (or the default launcher) instead."
        )
    if cfg.get("scheduler"):
        raise config.ConfigError(
            "hydra/launcher=packed steps its replicas' optimizers itself and has no learning-rate schedules yet; "
            "run this sweep with hydra/launcher=joblib (or the default launcher), or with scheduler=constant."
        )
    if not isinstance(datamodule, InMemoryDataModule):
        raise config.ConfigError(
            f"hydra/launcher=packed reads optbench's in-memory datasets (data=mnist, fashion_mnist, torchvision); "
            f"data._target_={cfg.data.get('_target_')} cannot be packed. Run this sweep with hydra/launcher=joblib "
            "(or the default launcher) instead."
        )


def build(
    cfgs: list[DictConfig], device: torch.device, capturable: bool = False
) -> tuple[PackedSeedCNN, list[Replica], object]:
    """Each replica seeded as a single run is: the same initial weights and the same dropout stream."""
    nets, generators, datamodule = [], [], None
    for cfg in cfgs:
        config.validate(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        built_data, module, _ = config.build(cfg)
        refuse_unpackable(cfg, module.net, built_data)
        datamodule = datamodule or built_data
        nets.append(module.net)
        if device.type == "cuda":  # a single run draws its masks from the CUDA generator, seeded by seed_everything
            generators.append(torch.Generator(device).manual_seed(cfg.seed))
        else:
            generators.append(torch.Generator().set_state(torch.get_rng_state()))
    model = PackedSeedCNN(nets, generators).to(device)
    replicas = [
        Replica(cfg, None, g, instantiate(cfg.optimizer)(model.replica(k), capturable=capturable), cfg.seed)
        for k, (cfg, g) in enumerate(zip(cfgs, generators, strict=True))
    ]
    return model, replicas, datamodule


def _sums(
    model: PackedSeedCNN, images: torch.Tensor, labels: torch.Tensor, micro: int | None, train: bool
) -> torch.Tensor:
    """(K, 3) float64: loss·n, correct, n of each replica on its batch; backward for training."""
    k, n = labels.shape
    out = torch.zeros(k, 3, dtype=torch.float64, device=labels.device)
    chunk = micro or n
    for x, y in zip(images.split(chunk, dim=1), labels.split(chunk, dim=1), strict=True):
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).sum(1)
        if train:
            (loss.sum() / n).backward()
        out[:, 0] += loss.detach()
        out[:, 1] += (logits.argmax(2) == y).sum(1)
        out[:, 2] += y.shape[1]
    return out


def evaluate(model: PackedSeedCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    total = torch.zeros(model.k, 3, dtype=torch.float64, device=labels.device)
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].expand(model.k, -1, -1, -1)
            y = labels[start : start + batch_size].expand(model.k, -1)
            total += _sums(model, x, y, None, train=False)
    model.train()
    return total


def run_pack(
    cfgs: list[DictConfig], resume: dict[int, str] | None = None, hydra_configs: list[DictConfig] | None = None
) -> list[RunResult]:
    """Train ``cfgs`` (one pack: equal ``pack_key``) together; ``resume`` maps replica → run id to continue;
    ``hydra_configs`` are the jobs' Hydra configs (for their sweep tags) when a launcher packs them."""
    runtime.quiet_libraries()
    first = cfgs[0]
    if first.get("logger") is None or not config.one_process(first):
        raise config.ConfigError(
            "hydra/launcher=packed trains every job of a pack on one device and records each as an MLflow run: "
            "it needs the logger, trainer.devices=1, trainer.num_nodes=1 and no DDP strategy."
        )
    device = config.device_of(first)
    threads, _ = runtime.configure(
        first.get("threads"), bool(first.get("deterministic")), first.get("malloc_tuning", True)
    )
    cuda_graph = bool(first.trainer.get("cuda_graph"))
    model, replicas, datamodule = build(cfgs, device, capturable=cuda_graph)
    datamodule.prepare_data()
    datamodule.setup()
    if datamodule.splits["train"][0].shape[1:] != (28, 28):
        raise config.ConfigError(
            f"hydra/launcher=packed packs the seed CNN's 28×28 one-channel input; {datamodule.name}'s images are "
            f"{tuple(datamodule.splits['train'][0].shape[1:])}. Run this sweep with hydra/launcher=joblib instead."
        )
    pack = uuid.uuid4().hex[:12]
    start_epoch, steps_done = 0, 0
    for k, replica in enumerate(replicas):
        record = config.effective(replica.cfg, replica.optimizer, threads)
        tags = {"pack": pack, "pack_size": str(len(replicas)), "pack_index": str(k), "checkpoint_format": "packed"}
        hydra = hydra_configs[k] if hydra_configs else None
        replica.run = PackedRun.open(replica.cfg, record, tags, datamodule, device, (resume or {}).get(k), hydra)
        if replica.run.checkpoint is not None:
            start_epoch, steps_done = load_checkpoint(replica.run.checkpoint, model, k, replica)
    train_x, train_y = (t.to(device) for t in datamodule.splits["train"])
    val_x, val_y = (t.to(device) for t in datamodule.splits["val"])
    batch, micro = first.data.batch_size, first.model.get("micro_batch_size")
    epochs = first.trainer.max_epochs
    limit = first.trainer.get("limit_train_batches")
    check_every = check_finite_every(first.model.get("check_finite_every_n_steps"), device)
    sums = torch.zeros(len(replicas), 3, dtype=torch.float64, device=device)  # this epoch's, updated in place
    bad = torch.zeros(len(replicas), dtype=torch.bool, device=device)

    def train_step(images: torch.Tensor, labels: torch.Tensor) -> None:
        model.zero_grad(set_to_none=not cuda_graph)  # a recorded step keeps the gradients' tensors
        step_sums = _sums(model, images, labels, micro, train=True)
        sums.add_(step_sums)
        bad.logical_or_(~torch.isfinite(step_sums[:, 0]))
        for k, replica in enumerate(replicas):
            if replica.status == "RUNNING":
                for view, grad in zip(replica.optimizer.param_groups[0]["params"], model.replica_grads(k), strict=True):
                    view.grad = grad
                replica.optimizer.step()

    graphed: graphs.GraphedStep | None = None
    generators = [r.generator for r in replicas] if device.type == "cuda" else []
    hold = tracking.SignalHold()
    clock = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            hold.release()
            epoch_start = time.perf_counter()
            orders = [
                iter(InMemoryBatches(train_x, train_y, batch, True, seed=r.seed, epoch=lambda e=epoch: e))
                for r in replicas
            ]
            sums.zero_()
            bad.zero_()
            for step, batches in enumerate(zip(*orders, strict=True)):
                if limit is not None and step >= limit:
                    break
                images, labels = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
                if cuda_graph and graphed is None:
                    graphed = graphs.GraphedStep(train_step, (images, labels), graphs.recorder(device), generators)
                if not (graphed and graphed(images, labels)):
                    train_step(images, labels)
                ended = (steps_done + step + 1) % check_every == 0 and diverged(
                    replicas, bad, epoch, steps_done + step + 1
                )
                if ended and graphed:
                    graphed.reset()  # the recorded step still holds the ended runs' optimizer steps
            steps_done += step + 1 if limit is None else min(step + 1, limit)
            if diverged(replicas, bad, epoch, steps_done) and graphed:
                graphed.reset()
            optim.set_mode([r.optimizer for r in replicas], train=False)  # Schedule-Free: evaluate the average
            val = evaluate(model, val_x, val_y, first.data.eval_batch_size)
            optim.set_mode([r.optimizer for r in replicas], train=True)
            seconds = time.perf_counter() - epoch_start
            hold.hold()  # an epoch's metrics and checkpoints are written together or not at all
            for k, replica in enumerate(replicas):
                if replica.status != "RUNNING":
                    continue
                metrics = {"train_loss": sums[k, 0].item() / sums[k, 2].item(), "train_acc": sums[k, 1].item() / sums[k, 2].item(),
                           "val_loss": val[k, 0].item() / val[k, 2].item(), "val_acc": val[k, 1].item() / val[k, 2].item()}  # fmt: skip
                params_finite = all(torch.isfinite(p).all() for p in model.replica(k))
                if not (math.isfinite(metrics["val_loss"]) and params_finite):
                    what = "validation loss" if params_finite else "value of a parameter"
                    replica.run.fail_diverged(epoch + 1, steps_done, metrics["val_loss"], what)
                    replica.status = "FAILED"
                    if graphed:
                        graphed.reset()
                    continue
                replica.metrics = metrics
                replica.run.log_epoch(epoch + 1, steps_done, metrics, seconds)
                replica.run.save(checkpoint_payload(model, k, replica, epoch + 1, steps_done))
        hold.release()
    except KeyboardInterrupt:
        hold.release(raise_pending=False)
        for replica in replicas:
            if replica.status == "RUNNING":
                replica.run.end("KILLED", failure_reason="interrupted")
                replica.status = "KILLED"
                print(
                    f"[optbench] {replica.cfg.run_name} (pack {pack}): KILLED run_id={replica.run.run_id}", flush=True
                )
        raise
    total = time.perf_counter() - clock
    results = []
    for replica in replicas:
        if replica.status == "RUNNING":
            replica.run.finish(total, epochs)
            replica.status = "FINISHED"
        results.append(
            RunResult(replica.run.run_id, replica.status, {**replica.metrics, "total_time_s": replica.run.total_time_s})
        )
        m = replica.metrics
        print(f"[optbench] {replica.cfg.run_name} (pack {pack}): {replica.status} val_acc={m.get('val_acc', math.nan):.4f} "
              f"val_loss={m.get('val_loss', math.nan):.4f} run_id={replica.run.run_id}", flush=True)  # fmt: skip
    return results


def diverged(replicas: list[Replica], bad: torch.Tensor, epoch: int, step: int) -> bool:
    """End the runs whose training loss became non-finite (read from the device every N steps); any ended?"""
    ended = False
    for k in torch.nonzero(bad).flatten().tolist():
        if replicas[k].status == "RUNNING":
            replicas[k].run.fail_diverged(epoch + 1, step, math.nan, "training loss")
            replicas[k].status = "FAILED"
            ended = True
    return ended
