"""Bad input, divergence, interruption and concurrency end in clear messages and an intact store."""

from __future__ import annotations

import subprocess

import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from optbench.cli import compare
from optbench.config import ConfigError, build, check_overrides
from optbench.data import DataError

from .helpers import compose_cfg, free_port, quick_args, run_cli, runs_of, start_server, stop_server
from .idx import write_fake_dataset


# -- config errors, before training -------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "lr=-0.1"),
        ("optimizer.lr=1e300", "lr=1e\\+300; it must be a finite number"),
        ("optimizer.lr=nan", "lr=nan"),
        ("optimizer.eps=inf", "eps=inf"),
        ("optimizer.betas=[1.2,0.999]", "beta1=1.2"),
        ("optimizer=sgd_momentum optimizer.momentum=-0.9", "momentum=-0.9"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.batch_size=-64", "data.batch_size=-64"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1"),
        ("optimizer.eps=0", "eps=0"),
        ("model.net.init=he", "model.net.init='he'"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[") if "\\" not in message else message):
        build(compose_cfg(*override.split()))


@pytest.mark.slow
def test_config_error_from_cli_leaves_no_run(data_root, tracking_uri, tmp_path):
    proc = run_cli(*quick_args(data_root, tracking_uri, tmp_path, "optimizer.lr=-1"), check=False)
    assert proc.returncode == 2
    assert "Invalid optimizer config: Invalid learning rate: lr=-1;" in proc.stderr
    assert "Traceback" not in proc.stderr
    _, runs = runs_of(tracking_uri)
    assert runs == []


@pytest.mark.slow
def test_unknown_optimizer_lists_choices(tracking_uri, tmp_path):
    proc = run_cli("optimizer=lamb", f"logger.tracking_uri={tracking_uri}", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "Could not find 'optimizer/lamb'" in proc.stderr and "adam" in proc.stderr and "sgd_momentum" in proc.stderr


@pytest.mark.slow
def test_corrupt_and_unreadable_files_from_cli(tmp_path, tracking_uri):
    raw = write_fake_dataset(tmp_path / "data")
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    base = [
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "data.verify=false",
        f"logger.tracking_uri={tracking_uri}",
    ]
    proc = run_cli(*base, f"hydra.run.dir={tmp_path}/o1", check=False)
    assert proc.returncode == 2 and "train-labels-idx1-ubyte is truncated or corrupt" in proc.stderr
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte").mkdir()  # present but unreadable as a file
    with pytest.raises(DataError, match="Cannot read data file .*train-labels-idx1-ubyte"):
        build(compose_cfg(*base[:3]))[0].setup()
    assert runs_of(tracking_uri)[1] == []


# -- divergence ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_fails_the_run_and_the_sweep_goes_on(data_root, tracking_uri, tmp_path, capsys):
    proc = run_cli(
        "-m",
        *quick_args(data_root, tracking_uri, tmp_path, "optimizer=sgd", "optimizer.lr=1e12,0.01", "sweep_id=div"),
        check=False,
    )
    assert proc.returncode == 1, "a sweep with a failed job exits non-zero"
    assert "Training diverged: the training loss became" in proc.stderr
    client, runs = runs_of(tracking_uri)
    by_lr = {r.data.params["optimizer.lr"]: r for r in runs}
    bad, good = by_lr["1000000000000.0"], by_lr["0.01"]
    assert bad.info.status == "FAILED" and bad.data.tags["failure_reason"] == "diverged"
    assert int(bad.data.tags["diverged_epoch"]) == 1 and int(bad.data.tags["diverged_step"]) >= 1
    assert good.info.status == "FINISHED", "the sweep continued with the next job"
    compare.main(["--tracking-uri", tracking_uri, "--sweep", "div", "--format", "markdown", "--no-log"])
    out = capsys.readouterr().out
    assert "DIVERGED — diverged" in out and out.count("| sgd |") == 1


# -- concurrency -------------------------------------------------------------------------------------------
def complete(uri: str, n_runs: int, epochs: int = 2) -> None:
    client, runs = runs_of(uri)
    assert len(runs) == n_runs
    for run in runs:
        assert run.info.status == "FINISHED"
        for metric in ("train_loss", "val_acc", "epoch_time_s"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, metric)) == list(
                range(1, epochs + 1)
            )


@pytest.mark.slow
def test_parallel_jobs_share_sqlite_store(data_root, tracking_uri, tmp_path):
    run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *quick_args(data_root, tracking_uri, tmp_path, "optimizer=adam,sgd,rmsprop,adagrad"),
    )
    complete(tracking_uri, 4)


@pytest.mark.slow
def test_parallel_jobs_through_tracking_server(data_root, tmp_path):
    server, uri = start_server(["--port", str(free_port())], {"OPTBENCH_SQLITE": str(tmp_path / "server.db")}, tmp_path)
    try:
        run_cli(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *quick_args(data_root, uri, tmp_path, "optimizer=adam,sgd"),
        )
        complete(uri, 2)
        assert list((tmp_path / "artifacts").rglob("config.yaml")), "artifacts went through the server"
    finally:
        stop_server(server)


# -- fuzz -----------------------------------------------------------------------------------------------------
KEYS = [
    "optimizer.lr",
    "optimizer.eps",
    "optimizer.betas",
    "optimizer.momentum",
    "optimizer.preset",
    "optimizer.weight_decay",
    "data.batch_size",
    "data.subset",
    "data.val_split",
    "data.eval_batch_size",
    "trainer.max_epochs",
    "seed",
    "model.micro_batch_size",
    "model.net.init",
    "optimizer",
    "data",
    "nonexistent.key",
    "optimizer.rho",
]
VALUES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=12),
    st.sampled_from(["null", "true", "[1,2]", "[0.9,0.999]", "{a:1}", "-0.0", "1e-3", "${seed}", "${oops}", "'x'"]),
)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, ValueError)  # Hydra's one-line messages
BUILD_ERRORS = (ConfigError, DataError)  # ours, naming the key


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_garbage_overrides_end_cleanly(pairs):
    """Every override either composes into buildable objects or fails with a clean, one-paragraph error."""
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        check_overrides(overrides)
    except ConfigError as err:
        assert "takes a config name" in str(err)
        return
    try:
        cfg = compose_cfg("data.root=/nonexistent-optbench", *overrides)
    except COMPOSE_ERRORS as err:
        assert str(err).strip()
        return
    try:
        build(cfg)
    except BUILD_ERRORS as err:
        text = str(err)
        assert text.startswith("Invalid ") and "\n" not in text.strip(), text


CLI_VALUES = {
    "optimizer.lr": ["0.001", "0.1", "-1", "abc", "1e300", "nan", "null", "[1,2]"],
    "optimizer.eps": ["1e-7", "0", "inf", "'x'"],
    "optimizer": ["adam", "sgd", "rprop", "lamb", "0"],
    "optimizer.preset": ["keras", "torch", "jax"],
    "seed": ["0", "7", "-1", "4294967296", "x", "1.5"],
    "data.batch_size": ["64", "1", "0", "-3", "6.5"],
    "data.subset": ["64", "0", "null", "big"],
    "data.val_split": ["null", "32", "60000", "0.5"],
    "trainer.max_epochs": ["1", "0", "two"],
    "model.net.dropout_conv": ["0", "0.25", "1", "-0.5"],
    "model.micro_batch_size": ["16", "0", "null"],
    "threads": ["1", "0", "null"],
    "nonexistent.key": ["1"],
}


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([(k, v) for k, vs in CLI_VALUES.items() for v in vs]), min_size=1, max_size=3))
def test_the_cli_ends_cleanly_whatever_it_is_given(data_root, tmp_path_factory, pairs):
    """Through the real command: a run, or one clear message with exit 2 and no run; never a run left RUNNING."""
    tmp = tmp_path_factory.mktemp("fuzz")
    uri = f"sqlite:///{tmp / 'm.db'}"
    base = quick_args(data_root, uri, tmp, "data.subset=64", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                      "callbacks.tracking.system_metrics=false")  # fmt: skip
    proc = run_cli(*base, *(f"{k}={v}" for k, v in pairs), check=False, timeout=300)
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    _, runs = runs_of(uri) if (tmp / "m.db").exists() else (None, [])
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    if proc.returncode == 2:
        assert runs == [], "a config error creates no run"
        message = [line for line in proc.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
        assert message, "a config error says why"
    else:
        assert len(runs) == 1 and runs[0].info.status in ("FINISHED", "FAILED"), proc.stderr[-2000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 2.5 MB tmpfs (a full disk after the first checkpoint); skipped where this user cannot mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_the_run_failed_in_one_paragraph(data_root, small_disk, tmp_path):
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    proc = run_cli(*quick_args(data_root, uri, tmp_path, "data.subset=2048", "trainer.max_epochs=3"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "The run failed: OSError: No space left on device" in proc.stderr
    assert ": FAILED val_acc=" in proc.stdout, "the run's last line"
    (run,) = runs_of(uri)[1]
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["failure_reason"]
