"""Reruns from a run id or a Hydra folder reproduce the numbers bit for bit on CPU, and say when not."""

from __future__ import annotations

import shutil

import pytest

from optbench.cli import rerun

from .helpers import histories, quick_args, run_cli, runs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def original(data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerun")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_cli(*quick_args(data_root, uri, tmp, "optimizer=rmsprop", "seed=3"))
    _, runs = runs_of(uri)
    assert len(runs) == 1
    return uri, runs[0].info.run_id, tmp


def find_rerun(uri, original_id):
    client, runs = runs_of(uri)
    reruns = [r for r in runs if r.data.tags.get("rerun_of") == original_id]
    return client, max(reruns, key=lambda r: r.info.start_time)


def test_rerun_gives_identical_metrics(original, capsys):
    uri, run_id, _ = original
    assert rerun.main([run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "optbench-rerun: identical: 8 per-epoch values compared" in out
    client, new = find_rerun(uri, run_id)
    assert new.info.run_id != run_id and new.data.tags["rerun_match"] == "true"
    want, got = histories(client, run_id), histories(client, new.info.run_id)
    assert got == want and len(got["val_loss"]) == 2  # equal to the last bit, epochs 1 and 2


def test_changed_override_differs_and_says_so(original, capsys):
    uri, run_id, _ = original
    assert rerun.main([run_id, "optimizer.lr=0.01", "--tracking-uri", uri]) == 3
    out = capsys.readouterr().out
    assert "differs" in out and "optbench-rerun: differs (expected: overrides optimizer.lr=0.01)" in out
    client, new = find_rerun(uri, run_id)
    assert new.data.tags["rerun_match"] == "false" and new.data.params["optimizer.lr"] == "0.01"


def test_unknown_run_id_is_a_clear_error(original, capsys):
    uri, _, _ = original
    assert rerun.main(["0123456789abcdef0123456789abcdef", "--tracking-uri", uri]) == 2
    assert "No run with id '0123456789abcdef0123456789abcdef'" in capsys.readouterr().err


def test_group_switch_is_refused(original, capsys):
    uri, run_id, _ = original
    assert rerun.main([run_id, "optimizer=sgd", "--tracking-uri", uri]) == 2
    assert "switches a whole config group" in capsys.readouterr().err


def test_rerun_from_hydra_output_folder(original, capsys):
    uri, run_id, tmp = original
    folder = tmp / "outputs"
    assert (folder / ".hydra" / "config.yaml").exists() and (folder / "optbench_run.json").exists()
    assert rerun.main([str(folder), "--tracking-uri", uri]) == 0
    assert "optbench-rerun: identical" in capsys.readouterr().out


def test_tampered_dataset_changes_digest_and_warns(data_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_cli(*quick_args(root, uri, tmp_path, "trainer.max_epochs=1", "data.verify=false"))
    client, runs = runs_of(uri)
    before = runs[0]
    assert len(before.data.tags["dataset_digest"]) == 32
    inputs = client.get_run(before.info.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == before.data.tags["dataset_digest"]

    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[8] = (blob[8] + 1) % 10  # relabel the first test digit
    labels.write_bytes(bytes(blob))
    code = rerun.main([before.info.run_id, f"data.root={root}", "--tracking-uri", uri])  # where data is: ours to say
    err = capsys.readouterr().err
    assert "WARNING: dataset digest differs" in err and before.data.tags["dataset_digest"] in err
    assert code in (0, 3)
    _, new = find_rerun(uri, before.info.run_id)
    assert new.data.tags["dataset_digest"] != before.data.tags["dataset_digest"]
    assert "dataset digest differs" in new.data.tags["rerun_warnings"]
