"""Where a run came from: code version, packages, environment, device and the Hydra command, as MLflow tags."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "mlflow", "optbench")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(path: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the checkout holding this package (empty outside a git checkout)."""
    cwd = path or Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["version.python"] = platform.python_version()
    return found


def environment() -> dict[str, str]:
    return {"platform": platform.platform(), "python_executable": sys.executable}


def cpu_model() -> str:
    """The CPU's model name (what decides its float kernels), e.g. "AMD EPYC 9654 96-Core Processor"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device(root: torch.device, world_size: int = 1) -> dict[str, str]:
    """What the run trains on: device type and name, CPU, processes, CPU threads."""
    cuda = root.type == "cuda" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(root) if cuda else platform.machine()
    return {
        "device": f"{root.type} ({name})",
        "cpu_model": cpu_model(),
        "world_size": str(world_size),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_count": str(os.cpu_count()),
    }


def concurrent_jobs(launcher: DictConfig | None) -> str:
    """How many jobs of this sweep may train at once on this machine (its wall times are like-for-like
    only at 1): the basic launcher runs one, joblib ``n_jobs``, a packed launcher shares one model."""
    target = str((launcher or {}).get("_target_", ""))
    if not target or target.endswith("BasicLauncher"):
        return "1"
    if target.endswith("JoblibLauncher"):
        n = int(launcher.get("n_jobs", -1) or -1)
        return str(n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n))
    return "packed" if "packed" in target else "unknown"


def default_sweep_id(sweep_dir: str | Path) -> str:
    """A multirun's sweep id when none is given: its folder's date and time (``2026-12-01_12-39-50``)."""
    return Path(sweep_dir).parent.name + "_" + Path(sweep_dir).name


def hydra_context(cfg: DictConfig, hydra: DictConfig | None = None) -> dict[str, str]:
    """Sweep id, overrides and concurrency of the Hydra job (``hydra``: its config; default: the job now)."""
    info = {"sweep_id": cfg.sweep_id} if cfg.get("sweep_id") else {}
    if hydra is None and not HydraConfig.initialized():
        return {**info, "concurrent_jobs": "1"}
    hc = hydra.hydra if hydra is not None else HydraConfig.get()
    info["hydra_overrides"] = " ".join(hc.overrides.task)
    info["concurrent_jobs"] = "1"
    if hc.mode == RunMode.MULTIRUN:
        info.setdefault("sweep_id", default_sweep_id(hc.sweep.dir))
        info["sweep_job"] = str(hc.job.num)
        info["concurrent_jobs"] = concurrent_jobs(hc.get("launcher"))
    return info


def run_tags(cfg: DictConfig, hydra: DictConfig | None = None) -> dict[str, str]:
    """The tags a run is created with: what it is (optimizer, label, data, seed) and where it came from."""
    tags = {
        "optimizer": cfg.optimizer.name,
        "preset": cfg.optimizer.get("preset"),
        "label": cfg.label,
        "data": cfg.data.name,
        "seed": cfg.seed,
        **hydra_context(cfg, hydra),
        **git_state(),
        **versions(),
        **environment(),
    }
    if "git_commit" in tags:
        tags["mlflow.source.git.commit"] = tags["git_commit"]
    return {k: str(v) for k, v in tags.items() if v is not None}
