"""The built wheel carries its configs and runs from any folder, without this checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .helpers import REPO, runs_of

pytestmark = pytest.mark.slow


def test_wheel_installs_and_trains_from_a_temporary_folder(tmp_path, data_root):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "conf", "src"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, source / part)
    dist = tmp_path / "dist"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        str(source),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("optbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "optbench/conf/config.yaml",
        "optbench/conf/optimizer/adam.yaml",
        "optbench/conf/callbacks/default.yaml",
    ):
        assert path in names, f"{path} missing from the wheel"
    assert "optbench/reference/seed_table.csv" in names

    # A clean environment: its own python and pip, the project's dependencies visible through a .pth
    # (so torch is not installed twice), and optbench only from the wheel.
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    where = subprocess.run(
        [env / "bin" / "python", "-c", "import optbench; print(optbench.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(env)), f"optbench was imported from {where}, not from the wheel"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    uri = f"sqlite:///{elsewhere / 'store.db'}"
    args = [f"data.root={data_root}", "data.subset=256", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(
        [env / "bin" / "optbench-train", *args, f"logger.tracking_uri={uri}"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = runs_of(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    table = subprocess.run(
        [env / "bin" / "optbench-compare", "--tracking-uri", uri, "--epochs", "1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0 and "adam" in table.stdout, table.stderr
    assert not (Path(elsewhere) / "conf").exists()
