"""Which tracked runs are seeds of one configuration: the query behind every comparison.

Two finished runs are seeds of one row only when everything that changes results except the seed is
equal: the optimizer and its effective hyperparameters, the preset, the data (subset and val_split
included), the model, the epochs and batch size. A label whose runs differ in any of these splits into
rows named by what differs. Reruns are not extra seeds (``include_reruns`` shows them as rows of their
own), and the same configuration and seed logged twice by one user counts once, the latest finished run;
by two users it is a conflict (a forged copy cannot be told from the real one) and neither is counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import Run, ViewType

from .. import heartbeat

SUMMARY_TAG = "optbench.kind"  # summary, tuning and trajectory runs: not training runs
DECISION = "decision"  # an adaptive sweep's decision run: its kind (SUMMARY_TAG) and the tag of its sentence
SWEEPS_TAG = "sweeps"  # ",id1,id2,": sweeps a run was reused by (optbench.cache), besides its sweep_id
# Params that never change results: where things are, how they are logged, speed switches.
NOT_IDENTITY = {
    "seed", "data.seed", "label", "run_name", "sweep_id", "resume", "threads", "malloc_tuning",
    "deterministic", "data.root", "data.download", "data.verify", "optimizer.foreach", "skip_finished",
}  # fmt: skip
NOT_IDENTITY_PREFIXES = ("logger.", "callbacks.", "optimizer.search_space.", "trainer.")
# Settings added after runs were logged without them → the value those runs ran with. A run's identity,
# its rerun and its resume read a missing key as this value, never as today's default.
BEFORE_ADDED = {"model.net.dropout_rng": "bernoulli", "optimizer.fused": False, "model.net.conv_pool": "torch"}


def added_to(target) -> bool:
    """Whether a section built by ``target`` can lack a ``BEFORE_ADDED`` key: optbench's own modules only
    (a user's net never had optbench's later settings)."""
    return target is None or str(target).startswith("optbench.")


TRAINER_IDENTITY = {
    "trainer.max_epochs",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.precision",
}


class CompareError(RuntimeError):
    """Nothing to compare (unknown experiment, empty selection)."""


@dataclass
class Group:
    """The runs of one configuration, one per seed."""

    label: str
    data: str
    identity: tuple[tuple[str, str], ...]
    runs: dict[int, Run] = field(default_factory=dict)  # seed → the latest finished run
    duplicates: list[Run] = field(default_factory=list)  # same configuration and seed, not counted
    conflicts: dict[int, list[Run]] = field(default_factory=dict)  # seed → runs of different users: none counted
    rerun: bool = False

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)


@dataclass
class Selection:
    groups: list[Group]
    excluded: list[dict]  # runs that did not finish
    reruns_hidden: int = 0


def select_runs(
    client: mlflow.MlflowClient, experiment: str, sweep: str | None, filter_string: str | None
) -> list[Run]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        raise CompareError(f"No experiment named {experiment!r} in this store; it has: {', '.join(names) or 'none'}.")
    extra = [filter_string] if filter_string else []  # MLflow's filter grammar joins clauses with AND only
    if not sweep:
        return _search(client, exp.experiment_id, extra)
    own = _search(client, exp.experiment_id, [f"tags.sweep_id = {quoted(sweep)}", *extra])
    # Runs the store-as-cache reused for this sweep (optbench.cache): LIKE's wildcards may over-match.
    joined = _search(client, exp.experiment_id, [f"tags.{SWEEPS_TAG} LIKE {quoted(f'%,{sweep},%')}", *extra])
    seen = {r.info.run_id for r in own}
    return own + [r for r in joined if r.info.run_id not in seen and sweep in r.data.tags[SWEEPS_TAG].split(",")]


def _search(client: mlflow.MlflowClient, experiment_id: str, clauses: list[str]) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], " and ".join(clauses), ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs.extend(r for r in page if SUMMARY_TAG not in r.data.tags)
        token = page.token
        if not token:
            return runs


def quoted(value: str) -> str:
    """A string literal of MLflow's filter grammar, which has no escapes: quoted with the quote it lacks."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise CompareError(f"A sweep id holding both kinds of quote cannot be selected by MLflow's filter: {value!r}.")


def identity(run: Run) -> tuple[tuple[str, str], ...]:
    """The params that decide a run's results, seed excepted."""
    return identity_of(run.data.params)


def identity_of(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    params = with_added(params)
    return tuple(
        sorted(
            (k, v)
            for k, v in params.items()
            if k not in NOT_IDENTITY and (k in TRAINER_IDENTITY or not k.startswith(NOT_IDENTITY_PREFIXES))
        )
    )


def with_added(params: Mapping[str, str]) -> dict[str, str]:
    """Flat params with each ``BEFORE_ADDED`` key a run logged its section of, but not the key, filled in."""
    out = dict(params)
    for key, value in BEFORE_ADDED.items():
        section = key.rpartition(".")[0] + "."
        if key not in out and any(k.startswith(section) for k in params) and added_to(params.get(section + "_target_")):
            out[key] = str(value)  # as MLflow logs it
    return out


def _seed(run: Run) -> int | None:
    """The run's seed, None when it is not a non-negative integer ("3.5", "abc", missing)."""
    value = str(run.data.params.get("seed", run.data.tags.get("seed", ""))).strip()
    return int(value) if value.isdigit() else None


def excluded_record(run: Run, label: str, reason: str | None = None) -> dict:
    """A run listed under the table instead of averaged in: why (its failure tags, or ``reason``)."""
    reason = run.data.tags.get("failure_reason", "") if reason is None else reason
    status = "DIVERGED" if reason == "diverged" else run.info.status
    beat = heartbeat.of(run)
    if status == "RUNNING" and beat is not None and not beat.alive:
        status = "STALE (killed?)"
        reason = f"no live trainer ({beat.describe()}); optbench-train resume={run.info.run_id} continues it"
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "label": label,
        "status": status,
        "reason": reason,
    }


def decision_of(client: mlflow.MlflowClient, experiment: str, sweep: str) -> str | None:
    """The sentence of the sweep's latest decision run (an adaptive sweep's, ``optbench.adaptive``)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"tags.`{SUMMARY_TAG}` = '{DECISION}' and tags.sweep_id = {quoted(sweep)}"
    runs = client.search_runs(
        [exp.experiment_id], query, ViewType.ACTIVE_ONLY, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0].data.tags.get(DECISION) if runs else None


def group_runs(runs: list[Run], include_reruns: bool = False) -> Selection:
    groups: dict[tuple, Group] = {}
    excluded, hidden = [], 0
    for run in sorted(runs, key=lambda r: r.info.end_time or r.info.start_time or 0):
        tags = run.data.tags
        label = tags.get("label") or tags.get("optimizer") or run.info.run_name
        rerun = "rerun_of" in tags
        if rerun and not include_reruns:
            hidden += 1
            continue
        if run.info.status != "FINISHED":
            excluded.append(excluded_record(run, label))
            continue
        seed = _seed(run)
        if seed is None:
            value = run.data.params.get("seed", run.data.tags.get("seed"))
            excluded.append(excluded_record(run, label, f"unreadable seed {value!r}"))
            continue
        key = (label, tags.get("data", "?"), identity(run), rerun)
        group = groups.setdefault(key, Group(label, key[1], key[2], rerun=rerun))
        if seed in group.conflicts:
            group.conflicts[seed].append(run)
        elif seed in group.runs and _user(group.runs[seed]) != _user(run):
            group.conflicts[seed] = [group.runs.pop(seed), run]  # whose is real cannot be told from the store
        elif seed in group.runs:
            group.duplicates.append(group.runs[seed])
            group.runs[seed] = run  # sorted by end time: the latest finished wins
        else:
            group.runs[seed] = run
    return Selection(name_groups([g for g in groups.values() if g.runs or g.conflicts]), excluded, hidden)


def _user(run: Run) -> str:
    return run.data.tags.get("mlflow.user", "")


def name_groups(groups: list[Group]) -> list[Group]:
    """Groups that share a label and data are named by the params in which they differ."""
    by_label: dict[tuple[str, str, bool], list[Group]] = defaultdict(list)
    for group in groups:
        by_label[(group.label, group.data, group.rerun)].append(group)
    for (label, _, rerun), members in by_label.items():
        suffix = " (reruns)" if rerun else ""
        if len(members) == 1:
            members[0].label = label + suffix
            continue
        params = [dict(g.identity) for g in members]
        differing = sorted({k for p in params for k in p if len({q.get(k) for q in params}) > 1})
        for group, p in zip(members, params, strict=True):
            group.label = f"{label} [{', '.join(f'{k}={p.get(k)}' for k in differing)}]{suffix}"
    return sorted(groups, key=lambda g: (g.data, g.label))
