"""The store as a cache: a sweep's job that the store already holds (same configuration, seed, code, user)
is reported, not trained; anything else trains."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from omegaconf import OmegaConf

from optbench import cache, pipeline, provenance
from optbench.compare.query import select_runs
from tests.helpers import runs_of, tiny_cfg

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def clean_code(monkeypatch):
    """This checkout as a clean tree at COMMIT (the suite also runs from a working tree with edits)."""
    state = {"git_commit": COMMIT, "git_dirty": "false"}
    monkeypatch.setattr(provenance, "git_state", lambda path=None: dict(state))
    return state


@pytest.fixture
def stored(data_root, tracking_uri, clean_code):
    """One finished run (subset 256, 1 epoch, seed 3) in a fresh store."""
    cfg = tiny_cfg(data_root, tracking_uri, "trainer.max_epochs=1", "seed=3", "sweep_id=first")
    result = pipeline.run(cfg)
    assert result.status == "FINISHED"
    return cfg, result


def test_a_finished_run_is_reported_not_trained(stored, tracking_uri, capsys):
    cfg, first = stored
    again = pipeline.run(cfg, reuse=True)
    assert again.cached and again.run_id == first.run_id and again.status == "FINISHED"
    assert again.metrics["val_acc"] == pytest.approx(first.metrics["val_acc"])
    assert "FINISHED (already in the store)" in capsys.readouterr().out
    assert len(runs_of(tracking_uri)[1]) == 1  # nothing new was logged


def test_a_reused_run_joins_the_new_sweep(stored, tracking_uri):
    cfg, first = stored
    cfg.sweep_id = "second"
    assert pipeline.run(cfg, reuse=True).cached
    client = mlflow.MlflowClient(tracking_uri)
    assert [r.info.run_id for r in select_runs(client, "optbench", "second", None)] == [first.run_id]
    assert [r.info.run_id for r in select_runs(client, "optbench", "first", None)] == [first.run_id]
    assert select_runs(client, "optbench", "secon", None) == []  # membership is exact, not LIKE's


def test_another_configuration_trains(stored):
    cfg, first = stored
    changes = ["seed=4", "data.subset=128", "optimizer.preset=torch", "optimizer.lr=0.01", "label=other",
               "trainer.max_epochs=2", "model.net.init=torch"]  # fmt: skip
    for change in changes:
        key, value = change.split("=")
        other = cfg.copy()
        OmegaConf.update(other, key, yaml.safe_load(value))
        assert cache.find(other) is None, change
    assert cache.find(cfg).info.run_id == first.run_id  # and the unchanged config still matches
    quotes = cfg.copy()
    quotes.label = 'it\'s "x"'
    assert cache.find(quotes) is None  # no filter can name it: trained, not a crash


def test_other_code_a_dirty_tree_and_an_installed_version_never_match(stored, clean_code, monkeypatch):
    cfg, first = stored
    assert cache.find(cfg).info.run_id == first.run_id
    clean_code["git_dirty"] = "true"
    assert cache.find(cfg) is None
    clean_code.update(git_commit="f" * 40, git_dirty="false")
    assert cache.find(cfg) is None
    monkeypatch.setattr(provenance, "git_state", lambda path=None: {})  # an installed wheel: its version
    assert cache.find(cfg) is None  # the stored run was made from a checkout


def test_killed_failed_reruns_and_other_users_runs_are_never_reused(stored, tracking_uri):
    cfg, first = stored
    client = mlflow.MlflowClient(tracking_uri)
    for status in ("KILLED", "FAILED"):
        client.set_terminated(first.run_id, status)
        assert cache.find(cfg) is None, status
    client.set_terminated(first.run_id, "FINISHED")
    user = client.get_run(first.run_id).data.tags["mlflow.user"]
    for tag, value in (("mlflow.user", "someone-else"), ("rerun_of", "x"), ("optbench.kind", "summary")):
        client.set_tag(first.run_id, tag, value)
        assert cache.find(cfg) is None, tag
        client.delete_tag(first.run_id, tag) if tag != "mlflow.user" else client.set_tag(first.run_id, tag, user)
    assert cache.find(cfg).info.run_id == first.run_id
    client.set_terminated(first.run_id, "KILLED")
    assert not pipeline.run(cfg, reuse=True).cached  # the killed one is resumable, never reused


def test_single_runs_always_train(stored, tracking_uri):
    cfg, first = stored
    again = pipeline.run(cfg)
    assert not again.cached and again.run_id != first.run_id
