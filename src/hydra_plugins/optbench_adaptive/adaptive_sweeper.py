"""``hydra/sweeper=adaptive``: an ordinary sweep (``experiment=seed_table``, ``optimizer=a,b,c``) run in
rounds of seeds until every adjacent pair of the ranking is resolved, or ``max_seeds`` (``optbench.adaptive``).

Each round is one launch through the chosen launcher (basic, joblib, packed, submitit); every job is an
ordinary tracked run with the sweep's ``sweep_id``, and jobs the store already holds are reported, not
trained (``optbench.cache``), so a stopped sweep continues and a larger ``max_seeds`` trains only new seeds.
"""

# No `from __future__ import annotations` here: Hydra executes plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
# ruff: noqa: UP006, UP035, UP045 (OmegaConf's structured configs take typing's Optional and Dict)
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class AdaptiveSweeperConf:
    _target_: str = "hydra_plugins.optbench_adaptive.adaptive_sweeper.AdaptiveSweeper"
    initial_seeds: int = 3  # seeds per row in the first round
    seeds_per_round: int = 1  # seeds per row added by each further round
    max_seeds: int = 20  # seeds per row at most
    first_seed: int = 1
    alpha: float = 0.05  # family-wise error of the whole adaptive procedure
    primary: Optional[str] = None  # METRIC@EPOCH; default val_acc at the last epoch
    params: Optional[Dict[str, str]] = None  # the sweep, as the basic sweeper's (experiment configs set it)


ConfigStore.instance().store(group="hydra/sweeper", name="adaptive", node=AdaptiveSweeperConf, provider="optbench")


class AdaptiveSweeper(Sweeper):
    def __init__(
        self,
        initial_seeds: int = 3,
        seeds_per_round: int = 1,
        max_seeds: int = 20,
        first_seed: int = 1,
        alpha: float = 0.05,
        primary: Optional[str] = None,
        params: Optional[Dict[str, str]] = None,
    ) -> None:
        from optbench.adaptive import Plan

        try:
            self.plan = Plan(initial_seeds, seeds_per_round, max_seeds, first_seed)
        except ValueError as err:
            raise HydraException(f"hydra.sweeper: {err}") from None
        if not 0 < alpha < 1:
            raise HydraException(f"hydra.sweeper.alpha={alpha}; it must be in (0, 1)")
        self.alpha, self.primary, self.params = alpha, primary, dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _points(self, arguments: List[str]) -> tuple:
        """The sweep's points (override lists, seed excluded) and its sweep id (given, or the folder's)."""
        from optbench.provenance import default_sweep_id

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        keys = {o.get_key_element() for o in overrides}
        if "seed" in keys:
            raise HydraException(
                "hydra/sweeper=adaptive chooses the seeds itself (first_seed, first_seed+1, ...): remove seed=... "
                "from the command line (hydra.sweeper.first_seed sets the first one)."
            )
        points = BasicSweeper.split_arguments(overrides, None)[0]
        given = [o.get_value_element_as_str() for o in overrides if o.get_key_element() == "sweep_id"]
        sweep_id = given[0] if given else default_sweep_id(self.config.hydra.sweep.dir)
        return ([p if given else [*p, f"sweep_id={sweep_id}"] for p in points], sweep_id)

    @staticmethod
    def _row(config: DictConfig) -> tuple:
        """The comparison row a job's runs fall in: (dataset, label)."""
        return (str(config.data.name), str(config.label))

    def sweep(self, arguments: List[str]) -> Any:
        from optbench import adaptive, store

        points, sweep_id = self._points(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        loader = self.hydra_context.config_loader
        configs = [loader.load_sweep_config(self.config, [*p, "seed=1"]) for p in points]
        first = configs[0]
        primary = self.primary or f"val_acc@{first.trainer.max_epochs}"
        epochs = [int(primary.rpartition("@")[2])] if primary.rpartition("@")[2].isdigit() else []
        uri, experiment = first.logger.tracking_uri, first.logger.experiment_name
        decision = adaptive.Decision(sweep_id, primary, self.alpha, self.plan)
        rows = [self._row(c) for c in configs]
        launched: dict = {}  # (data, label) → the last seed launched for it
        active, returns, index = set(rows), [], 0
        for number, seeds in enumerate(self.plan.rounds(), 1):
            # Rows whose neighbours are resolved get no more seeds; a row that becomes open again gets
            # every seed it skipped.
            batch = [
                [*point, f"seed={seed}"]
                for seed in range(self.plan.first_seed, seeds[-1] + 1)
                for point, row in zip(points, rows, strict=True)
                if row in active and seed > launched.get(row, self.plan.first_seed - 1)
            ]
            self.validate_batch_is_legal(batch)
            log.info(f"Adaptive sweep {sweep_id}: round {number}, seeds up to {seeds[-1]}, {len(batch)} jobs")
            start = time.time()
            results = self.launcher.launch(batch, initial_job_idx=index)
            index += len(batch)
            returns.append(results)
            launched.update(dict.fromkeys(active, seeds[-1]))
            outcomes = [r.return_value if r.status.name == "COMPLETED" else None for r in results]
            decision.rounds.append(
                adaptive.Round(
                    number, seeds,
                    trained=sum(1 for o in outcomes if o is not None and o.status == "FINISHED" and not o.cached),
                    reused=sum(1 for o in outcomes if o is not None and o.cached),
                    not_finished=sum(1 for o in outcomes if o is None or o.status != "FINISHED"),
                    elapsed_s=time.time() - start,
                    rows=len(active),
                )
            )  # fmt: skip
            if all(o is None or o.status == "INVALID" for o in outcomes):
                decision.stopped = "no job of the round could run (see the errors above)"
                break
            adaptive.look(decision, store.open_existing(uri), experiment, epochs, launched)
            print(adaptive.round_line(decision), file=sys.stderr, flush=True)
            if decision.resolved:
                decision.stopped = "resolved"
                break
            active = adaptive.open_rows(decision) & set(rows)
        else:
            decision.stopped = "max_seeds"
        client = store.open_existing(uri)
        run_id = adaptive.log_decision(client, experiment, decision)
        from optbench.compare.terminal import width_for

        lines = decision.lines(width_for(sys.stdout), wrap_sentence=sys.stdout.isatty())
        print("\n".join([f"[optbench] adaptive sweep {sweep_id}:", *lines]), flush=True)
        print(f"decision run: {run_id} (decision.json)", file=sys.stderr, flush=True)
        return returns
