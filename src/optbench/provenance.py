"""Where a run came from: code version, environment and the exact config, as MLflow tags."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

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


def device(root: torch.device, world_size: int = 1) -> dict[str, str]:
    """What the run trained on: device type and name, processes, CPU threads."""
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": f"{root.type} ({name})",
        "world_size": str(world_size),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_count": str(os.cpu_count()),
    }
