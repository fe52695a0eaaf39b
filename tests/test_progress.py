"""The sweep-level progress line: how many jobs a multirun makes, and the line itself."""

from __future__ import annotations

from omegaconf import OmegaConf

from optbench.jobs import progress_line, sweep_size

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def multirun(params: dict, task: list[str], sweeper: str = BASIC):
    return OmegaConf.create(
        {"hydra": {"sweeper": {"_target_": sweeper, "params": params}, "overrides": {"task": task}}}
    )


def test_sweep_size_is_the_product_of_the_sweep_overrides():
    seed_table = {"optimizer": "sgd,sgd_momentum,adagrad,rmsprop,adadelta,adam"}
    assert sweep_size(multirun(seed_table, ["seed=1,2,3", "trainer.max_epochs=10"])) == 18
    assert sweep_size(multirun(seed_table, ["optimizer=adam,sgd", "seed=range(1,5)"])) == 8, "the command line wins"
    assert sweep_size(multirun({}, ["seed=7"])) == 1
    assert sweep_size(multirun({}, ["seed=1,2"], sweeper="hydra_plugins.hydra_optuna_sweeper.X")) is None


def test_progress_line():
    assert progress_line(4, 18, 600) == "[optbench] sweep: 4/18 jobs done, 10m00s elapsed, about 35m00s left"
    assert progress_line(0, 18, 5) == "[optbench] sweep: 0/18 jobs done, 0m05s elapsed"
    assert progress_line(3, None, 4000) == "[optbench] sweep: 3 jobs done, 1h06m elapsed"


def test_the_progress_callback_travels_to_launcher_workers():
    import pickle

    from optbench.jobs import SweepProgress

    callback = SweepProgress(every_s=5)
    config = multirun({}, ["seed=1,2"])
    config.hydra.sweep = {"dir": "/nonexistent"}
    callback.on_multirun_start(config)
    try:
        copy = pickle.loads(pickle.dumps(callback))  # what joblib does with Hydra's callbacks
        assert copy.every_s == 5 and copy._thread is None
    finally:
        callback._stop.set()
