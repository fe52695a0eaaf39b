"""Shared fixtures: the real MNIST root, throwaway tracking stores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from optbench.data import DATA_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]
# The example package (examples/optbench-example) is a user's code outside src/: importable in-process here,
# and in the commands the tests start through ``example_env``.
EXAMPLE = REPO / "examples" / "optbench-example"
sys.path.insert(0, str(EXAMPLE))


@pytest.fixture
def example_env() -> dict[str, str]:
    """The environment of a command that imports the example package, as after ``pip install -e`` of it."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(EXAMPLE), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real MNIST files (``OPTBENCH_DATA_ROOT``; CI points it at ../shared/data).

    Without them the tests that need real data are skipped on a developer's machine, but under CI
    (``CI`` set) that is a failure: a suite that skips its end-to-end tests must not go green.
    """
    root = os.environ.get(DATA_ROOT_ENV)
    candidates = [Path(root)] if root else [REPO.parent / "shared" / "data"]
    for path in candidates:
        if (path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return path.resolve()
    message = f"real MNIST not found under {candidates[0]}; set {DATA_ROOT_ENV} to a folder holding MNIST/raw/"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
