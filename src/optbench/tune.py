"""Tuned comparison: the same Optuna budget for every optimizer, then seeds of the best setting.

For each optimizer, ``trials`` Optuna trials over the search space kept in its ``conf/optimizer`` file
(the strings Hydra's Optuna sweeper reads), each a complete optbench run scored on held-out *training*
data (``experiment=tuned``: ``data.val_split=10000``, never the test set). The best parameters go on a
``tuning-<optimizer>`` run; then the best setting (label ``<optimizer>-tuned``) and the defaults are
trained with the same seeds and validated on the test set.

The trials of one optimizer can be shared by N workers, processes on one or many machines, through one
Optuna study in an RDB storage (SQLite, PostgreSQL). Worker k of N runs exactly its share of the budget
(``trials // N``, one more for ``k < trials % N``), so the budget is exact whatever the timing; each worker
samples with its own seed, and TPE sees every finished trial of the study. Storages: Optuna's RDB
(SQLite, PostgreSQL) or its journal file (``journal:PATH``, for a shared file system).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mlflow
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.entities import Metric, Param, RunTag
from optuna.trial import TrialState

from . import config, pipeline, store, tuning_axes
from .compare.query import SUMMARY_TAG

DEFAULT_OPTIMIZERS = ("sgd", "sgd_momentum", "adagrad", "rmsprop", "adadelta", "adam")
DONE = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass
class Plan:
    sweep: str
    uri: str
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    trials: int = 10
    seeds: int = 3
    epochs: int = 10
    subset: int | None = None
    experiment: str = "optbench"
    storage: str | None = None  # an Optuna RDB URL or journal:PATH shared by the workers; None: in memory
    workers: int = 1
    budgets: tuple[int, ...] = ()  # the tuning-budget axis (``tuning_axes``); empty: the best and the default
    lr_grid: tuple[float, ...] = ()  # the learning-rate sensitivity axis; empty: none
    seed: int = 42
    extra: list[str] = field(default_factory=list)  # further overrides of every run
    studies: dict[str, optuna.Study] = field(default_factory=dict, repr=False)  # in-memory ones, by optimizer

    def share(self, worker: int) -> int:
        """Trials worker ``worker`` of ``workers`` runs: together exactly ``trials``."""
        return self.trials // self.workers + (worker < self.trials % self.workers)

    def overrides(self) -> list[str]:
        return [
            f"trainer.max_epochs={self.epochs}",
            f"logger.tracking_uri={self.uri}",
            f"logger.experiment_name={self.experiment}",
            "trainer.enable_progress_bar=false",
            *([f"data.subset={self.subset}"] if self.subset else []),
            *self.extra,
        ]


def distribution(override) -> optuna.distributions.BaseDistribution:
    """One search-space entry in Hydra's sweep syntax (``tag(log, interval(1e-5, 1e-2))``, ``choice(a, b)``,
    ``range(1, 5)``) as an Optuna distribution (Hydra has the parser; the mapping is ours)."""
    value = override.value()
    if override.is_interval_sweep():
        ints = isinstance(value.start, int) and isinstance(value.end, int)
        kind = optuna.distributions.IntDistribution if ints else optuna.distributions.FloatDistribution
        return kind(value.start, value.end, log="log" in value.tags)
    if override.is_choice_sweep():
        return optuna.distributions.CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():
        return optuna.distributions.IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step or 1))
    raise config.ConfigError(f"search_space entry {override.input_line!r} is not an interval, choice or range.")


def search_space(optimizer: str) -> dict[str, optuna.distributions.BaseDistribution]:
    """The optimizer's ``search_space`` as Optuna distributions."""
    space = config.compose(f"optimizer={optimizer}").optimizer.get("search_space") or {}
    if not space:
        raise config.ConfigError(f"conf/optimizer/{optimizer}.yaml has no search_space to tune.")
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in space.items()])
    return {o.key_or_group: distribution(o) for o in parsed}


def storage(url: str | None):
    """An Optuna storage from a URL: ``journal:PATH`` (a journal file), an RDB URL, or None (in memory)."""
    if url is None:
        return None
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if url.startswith("sqlite"):  # concurrent workers wait for SQLite's lock instead of failing
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def study(plan: Plan, optimizer: str, worker: int = 0) -> optuna.Study:
    if plan.storage is None and optimizer in plan.studies:
        return plan.studies[optimizer]
    created = optuna.create_study(
        study_name=f"{plan.sweep}-{optimizer}",
        storage=storage(plan.storage),
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=plan.seed + 1000 * worker),
    )
    if plan.storage is None:
        plan.studies[optimizer] = created
    return created


def search(plan: Plan, optimizer: str, worker: int = 0) -> None:
    """Run worker ``worker``'s share of ``optimizer``'s trials; each trial is a tracked run."""
    space, shared = search_space(optimizer), study(plan, optimizer, worker)
    for _ in range(plan.share(worker)):
        trial = shared.ask(space)
        params = [f"{k}={v}" for k, v in trial.params.items()]
        cfg = config.compose(
            "experiment=tuned", f"optimizer={optimizer}", f"sweep_id={plan.sweep}-search", *plan.overrides(), *params
        )
        result = pipeline.run(cfg, tags={"optuna_trial": str(trial.number), "optuna_worker": str(worker)})
        value = float(result)
        if result.status == "FINISHED" and value == value:
            shared.tell(trial, value)
        else:
            shared.tell(trial, state=TrialState.FAIL)


def wait_for_budget(plan: Plan, optimizer: str, timeout_s: float = 7 * 24 * 3600) -> optuna.Study:
    """The study once all ``plan.trials`` trials have ended (other workers may still be running theirs)."""
    shared = study(plan, optimizer)
    deadline = time.time() + timeout_s
    while len(shared.get_trials(deepcopy=False, states=DONE)) < plan.trials:
        if time.time() > deadline:
            raise TimeoutError(
                f"study {plan.sweep}-{optimizer}: the workers did not finish {plan.trials} trials in time"
            )
        time.sleep(5)
    return shared


def log_best(plan: Plan, optimizer: str, shared: optuna.Study) -> dict:
    client = mlflow.MlflowClient(plan.uri)
    best = shared.best_trial
    done = shared.get_trials(deepcopy=False, states=DONE)
    run = client.create_run(
        store.get_or_create_experiment(client, plan.experiment),
        run_name=f"tuning-{optimizer}",
        tags={SUMMARY_TAG: "summary", "sweep_id": plan.sweep, "optimizer": optimizer, "tuning_trials": str(len(done))},
    )
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("best_val_acc", best.value, int(time.time() * 1000), 0)],
        params=[Param(k, str(v)) for k, v in best.params.items()],
        tags=[RunTag("best_params", str(best.params)), RunTag("optuna_workers", str(plan.workers))],
    )
    client.set_terminated(run.info.run_id)
    return best.params


def retrain(plan: Plan, optimizer: str, best: dict) -> None:
    """The best setting and the defaults, with the same seeds, validated on the test set."""
    common = [f"optimizer={optimizer}", f"sweep_id={plan.sweep}", *plan.overrides()]
    for seed in range(1, plan.seeds + 1):
        tuned = [*(f"{k}={v}" for k, v in best.items()), f"label={optimizer}-tuned"]
        pipeline.run(config.compose(*common, *tuned, f"seed={seed}"))
        pipeline.run(config.compose(*common, f"seed={seed}"))


def retrain_budgets(plan: Plan, optimizer: str, shared: optuna.Study) -> None:
    """Each budget's setting (the best of its first trials; the defaults for 1) with the same seeds, validated
    on the test set, labelled ``<optimizer>@budget=<b>``."""
    for budget in plan.budgets:
        setting = [f"{k}={v}" for k, v in tuning_axes.best_within(shared, budget).items()]
        _seeds(plan, optimizer, *setting, f"label='{tuning_axes.BUDGET.label(optimizer, budget)}'")


def sweep_lr(plan: Plan, optimizer: str) -> None:
    """The learning-rate grid, all else at the preset's defaults, with the same seeds, on the test set."""
    for lr in plan.lr_grid:
        _seeds(plan, optimizer, f"optimizer.lr={lr!r}", f"label='{tuning_axes.LR.label(optimizer, lr)}'")


def _seeds(plan: Plan, optimizer: str, *overrides: str) -> None:
    common = [f"optimizer={optimizer}", f"sweep_id={plan.sweep}", *plan.overrides()]
    for seed in range(1, plan.seeds + 1):
        pipeline.run(config.compose(*common, *overrides, f"seed={seed}"))
