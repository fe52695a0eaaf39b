"""A shared store is not a way in: forged runs are refused by rerun and resume, and run no code.

Each forged run is a copy of an honest run whose ``config.yaml`` (or checkpoint) was rewritten by someone
who can log runs. A control step shows each payload is live: Hydra's ``instantiate`` on the forged config
does write the marker file. optbench must refuse before anything is instantiated or resolved.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from optbench import pipeline, stored
from optbench.cli import rerun

from .helpers import REPO, free_port, quick_args, run_cli, runs_of, start_server, stop_server, tiny_cfg

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-token-do-not-leak"


@pytest.fixture(scope="module")
def honest(data_root, tmp_path_factory):
    """An honest finished run and its files: config.yaml and last/last.ckpt."""
    tmp = tmp_path_factory.mktemp("untrusted")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_cfg(data_root, uri, "trainer.max_epochs=1")
    result = pipeline.run(cfg)
    client = mlflow.MlflowClient(uri)
    config = yaml.safe_load(open(client.download_artifacts(result.run_id, "config.yaml", str(tmp))))
    checkpoint = Path(client.download_artifacts(result.run_id, stored.CHECKPOINT, str(tmp)))
    return uri, result.run_id, config, checkpoint, tmp


def forge(uri: str, honest_id: str, config: dict | str, checkpoint: Path, tmp: Path, name: str) -> str:
    """A KILLED run (so that resume would try it) holding the given config (or YAML text) and checkpoint."""
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.get_run(honest_id).info.experiment_id, run_name=name, tags={"label": "adam"})
    folder = tmp / name
    folder.mkdir()
    (folder / "config.yaml").write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    client.log_artifact(run.info.run_id, str(folder / "config.yaml"))
    client.log_artifact(run.info.run_id, str(checkpoint), "last")
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=1)
    client.set_terminated(run.info.run_id, "KILLED")
    return run.info.run_id


def nested_chain(marker: Path) -> dict:
    return {
        "_target_": "pathlib.Path.write_text",
        "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]},
        "data": "pwned",
    }


def forged_configs(config: dict, marker: Path) -> dict[str, dict]:
    chain = {
        **config,
        "optimizer": {
            **config["optimizer"],
            "search_space": {**config["optimizer"]["search_space"], "x": nested_chain(marker)},
        },
    }
    unexpected = {**config, "trainer": {**config["trainer"], "max_epochs": nested_chain(marker)}}
    changed = {**config, "logger": {**config["logger"], "_target_": "pathlib.Path.touch"}}
    env = {**config, "label": "${oc.env:OPTBENCH_TEST_SECRET}"}
    return {"nested-chain": chain, "unexpected-key": unexpected, "changed-target": changed, "oc-env": env}


def leaked(uri: str) -> list[str]:
    _, runs = runs_of(uri)
    return [r.info.run_id for r in runs if SECRET in str(r.data.tags) + str(r.data.params)]


@pytest.mark.parametrize("case", ["nested-chain", "unexpected-key", "changed-target", "oc-env"])
def test_forged_config_is_refused_by_rerun_and_resume(honest, case, tmp_path, monkeypatch, capsys, data_root):
    uri, honest_id, config, checkpoint, tmp = honest
    marker = tmp_path / "pwned"
    forged = forged_configs(config, marker)[case]
    monkeypatch.setenv("OPTBENCH_TEST_SECRET", SECRET)
    if case in ("nested-chain", "unexpected-key"):  # control: the payload is live under plain instantiate
        node = forged["optimizer"]["search_space"]["x"] if case == "nested-chain" else forged["trainer"]["max_epochs"]
        instantiate(OmegaConf.create(node))
        assert marker.exists()
        marker.unlink()
    run_id = forge(uri, honest_id, forged, checkpoint, tmp_path, case)
    before = len(runs_of(uri)[1])

    assert rerun.main([run_id, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optbench-rerun: Refusing run") and "\n" not in err.strip(), err
    expected = {
        "nested-chain": "unknown key optimizer.search_space.x",
        "unexpected-key": "trainer.max_epochs is a mapping where this checkout has the value",
        "changed-target": "logger._target_ is 'pathlib.Path.touch' where this checkout has 'pytorch_lightning.loggers.MLFlowLogger'",
        "oc-env": "label holds an interpolation '${oc.env:OPTBENCH_TEST_SECRET}'",
    }[case]
    assert expected in err

    proc = run_cli(f"data.root={data_root}", f"logger.tracking_uri={uri}", f"resume={run_id}", f"hydra.run.dir={tmp_path}/o",
                   check=False, env={"OPTBENCH_TEST_SECRET": SECRET})  # fmt: skip
    assert proc.returncode == 2 and "Refusing run" in proc.stderr and "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert not marker.exists(), "the payload ran"
    assert len(runs_of(uri)[1]) == before, "no run was created"
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "KILLED", "the forged run was not touched"
    assert leaked(uri) == [], "the secret reached the store"


def test_stored_places_and_identities_are_never_used(honest, tmp_path, capsys):
    """A forged checkpoint filename once made a rerun overwrite a file outside its folder, and a forged
    experiment name sent the rerun's record where the forger chose: both now come from this checkout."""
    uri, honest_id, config, checkpoint, _ = honest
    victim = tmp_path / "x" / "victim.ckpt"
    victim.parent.mkdir()
    victim.write_text("precious")
    forged = copy.deepcopy(config)
    sibling = Path(tempfile.gettempdir()) / "optbench-ckpt-anything"  # where the rerun's checkpoints go
    forged["callbacks"]["checkpoint"]["filename"] = os.path.relpath(victim.with_suffix(""), sibling)
    forged["logger"]["experiment_name"] = "forger"
    run_id = forge(uri, honest_id, forged, checkpoint, tmp_path, "forged-places")
    assert rerun.main([run_id, "--tracking-uri", uri]) == 3, "it trains the honest config (the forged 0.5 differs)"
    assert victim.read_text() == "precious", "nothing was written outside the checkpoint folder"
    client = mlflow.MlflowClient(uri)
    assert client.get_experiment_by_name("forger") is None
    (new,) = [r for r in runs_of(uri)[1] if r.data.tags.get("rerun_of") == run_id]
    assert client.get_experiment(new.info.experiment_id).name == "optbench"


@pytest.mark.parametrize(
    "case",
    ["alias-bomb", "wrong-type", "bool-for-int", "huge"],
)
def test_stored_values_must_be_plain_and_of_our_types(honest, tmp_path, capsys, case):
    uri, honest_id, config, checkpoint, _ = honest
    if case == "alias-bomb":  # 600 bytes that expand to 9^9 strings under a plain YAML load
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"{b}: &{b} [{','.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
        text, expected = "\n".join(lines) + "\n", "uses YAML anchors or aliases"
    elif case == "huge":
        text, expected = yaml.safe_dump({**config, "label": "x" * 2_000_000}), "more than a config's 1,000,000"
    else:
        forged = copy.deepcopy(config)
        if case == "wrong-type":
            forged["data"]["batch_size"] = "64; rm -rf /"
            expected = "data.batch_size is '64; rm -rf /' where this checkout has a int"
        else:
            forged["trainer"]["max_epochs"] = True
            expected = "trainer.max_epochs is True where this checkout has a int"
        text = yaml.safe_dump(forged)
    run_id = forge(uri, honest_id, text, checkpoint, tmp_path, case)
    started = time.time()
    assert rerun.main([run_id, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    refusal = [line for line in err.strip().splitlines() if not line.startswith("WARNING:")]  # a dirty tree warns
    assert expected in err and len(refusal) == 1, err
    assert time.time() - started < 30


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_checkpoint_is_refused(honest, tmp_path, data_root, capsys):
    uri, honest_id, config, _, _ = honest
    marker = tmp_path / "pwned-by-pickle"
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": {}, "x": Payload(str(marker))}))
    with open(bad, "rb") as f:  # control: an unrestricted unpickling runs it
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    run_id = forge(uri, honest_id, config, bad, tmp_path, "bad-ckpt")
    proc = run_cli(
        f"data.root={data_root}",
        f"logger.tracking_uri={uri}",
        f"resume={run_id}",
        f"hydra.run.dir={tmp_path}/o",
        check=False,
    )
    assert (
        proc.returncode == 2 and "Refusing the checkpoint of run" in proc.stderr and "weights_only=True" in proc.stderr
    )
    assert not marker.exists()
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "KILLED"
    # A rerun never loads checkpoints: it retrains the (honest) config and is identical to the honest run.
    assert rerun.main([run_id, "--tracking-uri", uri]) == 3  # the forged run's "0.5" is not what training gives
    assert not marker.exists()


def test_forged_hydra_folder_is_refused(data_root, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_cli(*quick_args(data_root, uri, tmp_path, "trainer.max_epochs=1"))
    folder = tmp_path / "outputs"
    stored = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    marker = tmp_path / "pwned"
    stored["optimizer"]["search_space"]["x"] = nested_chain(marker)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(stored))
    assert rerun.main([str(folder), "--tracking-uri", uri]) == 2
    assert "unknown key optimizer.search_space.x" in capsys.readouterr().err
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, "label=${oc.env:HOME}"]))
    assert rerun.main([str(folder), "--tracking-uri", uri]) == 2
    assert "is not a plain value" in capsys.readouterr().err
    assert not marker.exists() and len(runs_of(uri)[1]) == 1


def test_authenticated_server_rejects_anonymous_writes(data_root, tmp_path):
    port = free_port()
    admin = {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-" + SECRET, "OPTBENCH_SQLITE": str(tmp_path / "server.db")}
    proc, uri = start_server(["--port", str(port), "--auth"], admin, tmp_path)
    try:
        request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/create", data=b'{"name": "anon"}', method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 401
        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-" + SECRET}
        added = subprocess.run(["bash", str(REPO / "scripts" / "tracking_server.sh"), "add-user", "alice", "--port", str(port)],
                               env={**os.environ, **creds, "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
                                    "OPTBENCH_NEW_USER_PASSWORD": "alice-pw-123"}, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert added.returncode == 0 and "created user alice" in added.stdout, added.stderr
        alice = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "alice-pw-123"}
        run_cli(*quick_args(data_root, uri, tmp_path, "trainer.max_epochs=1"), env=alice)
        anonymous = subprocess.run([sys.executable, "-m", "optbench", *quick_args(data_root, uri, tmp_path / "anon", "trainer.max_epochs=1")],
                                   cwd=REPO, capture_output=True, text=True, timeout=600,
                                   env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})  # fmt: skip
        assert anonymous.returncode != 0
        for key, value in alice.items():
            os.environ[key] = value
        try:
            client, runs = runs_of(uri)
            assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        finally:
            for key in alice:
                os.environ.pop(key)
        cmdlines = [
            Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in os.listdir("/proc")
            if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists()
        ]
        assert not [c for c in cmdlines if SECRET.encode() in c], "a secret is visible in ps"
        assert (tmp_path / "basic_auth.db").stat().st_mode & 0o777 == 0o600, (
            "password hashes readable by the owner only"
        )

        def admin_cmd(*args, password="bob-pw-123456"):
            return subprocess.run(["bash", str(REPO / "scripts" / "tracking_server.sh"), *args, "--port", str(port)],
                                  env={**os.environ, **creds, "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
                                       "OPTBENCH_NEW_USER_PASSWORD": password}, capture_output=True, text=True, timeout=120)  # fmt: skip

        short = admin_cmd("add-user", "carol", password="short")
        assert short.returncode == 2 and "at least 12 characters" in short.stderr and "Traceback" not in short.stderr
        assert admin_cmd("add-user", "bob").returncode == 0
        bob = mlflow.MlflowClient(uri)
        alice_run = runs[0].info.run_id
        os.environ.update(MLFLOW_TRACKING_USERNAME="bob", MLFLOW_TRACKING_PASSWORD="bob-pw-123456")
        try:
            assert bob.get_run(alice_run).info.status == "FINISHED", "everyone may read"
            for write in (lambda: bob.log_metric(alice_run, "val_acc", 0.0, step=99),
                          lambda: bob.set_tag(alice_run, "label", "bob was here"),
                          lambda: bob.set_terminated(alice_run, "KILLED")):  # fmt: skip
                with pytest.raises(mlflow.exceptions.MlflowException, match="(?i)permission"):
                    write()
        finally:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(key)
        granted = admin_cmd("grant", "bob", "optbench", "EDIT")
        assert granted.returncode == 0 and "granted EDIT on experiment optbench to bob" in granted.stdout, (
            granted.stderr
        )
        assert admin_cmd("grant", "bob", "nope", "EDIT").returncode == 2
    finally:
        stop_server(proc)
    time.sleep(0.5)
