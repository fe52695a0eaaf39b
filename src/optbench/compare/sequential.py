"""Anytime-valid tests for an adaptive sweep: seeds are added until the ranking is resolved, and the error
guarantee holds however often one looks and whenever one stops.

Each pair of rows gets an **e-process** on its paired differences (the safe t-test): the Bayes factor of the
one-sample t-test with a normal prior on the standardised effect, δ ~ N(0, g), and the right-Haar prior on
the spread (Rouder et al. 2009, the fixed-g form of their eq. 1), which Pérez-Ortiz, Lardy, de Heide and
Grünwald (2024, "E-statistics, group invariance and anytime-valid testing", Ann. Statist.) show is a
nonnegative martingale under the null for the t-statistics' filtration. It is mixed over a grid of prior
scales (a mixture of e-processes is one). Ville's inequality bounds the chance that it *ever* reaches
1/alpha under the null by alpha, so p = 1 / (its maximum over all seeds so far) is a p-value at any stopping
time, and Holm over all pairs of a dataset's rows keeps the family-wise error at alpha.

No Python library ships this test (safestats is R's), hence this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from . import stats

PRIOR_SCALES = (1.0, 4.0, 16.0, 64.0)  # g: the variance of the standardised effect under the alternative
PROCEDURE = (
    "safe paired t-test (e-process: right-Haar Bayes factor mixed over effect scales g = 1, 4, 16, 64), "
    "anytime-valid p = 1 / max e, Holm over all pairs of a dataset's rows"
)
MAX_SEEDS_ESTIMATE = 1000


def log_e(t: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log e of the mixture at t-statistics ``t`` from ``n`` pairs (n >= 2; t may be ±inf)."""
    t, n = np.broadcast_arrays(np.asarray(t, float), np.asarray(n, float))
    nu = n - 1
    scales = np.asarray(PRIOR_SCALES, float).reshape((-1,) + (1,) * t.ndim)
    grow = np.log1p(n * scales)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = t**2 / nu
        ratio = np.where(np.isinf(r), grow, np.log1p(r) - np.log1p(r / (1 + n * scales)))
    terms = -0.5 * grow + n / 2 * ratio
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).mean(axis=0))


def e_process(diffs: Sequence[float]) -> np.ndarray:
    """The e-value after each prefix of the paired differences, in the order given (1 below two pairs,
    and while every difference so far is exactly zero: identical results carry no evidence)."""
    x = np.asarray(diffs, float)
    n = np.arange(1, len(x) + 1)
    out = np.ones(len(x))
    if len(x) < 2:
        return out
    mean = np.cumsum(x) / n
    var = np.maximum(np.cumsum(x**2) / n - mean**2, 0) * n / np.maximum(n - 1, 1)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / np.sqrt(n)), np.where(mean != 0, np.inf, 0.0))
    # The running moments lose the last bits: a spread below float rounding of the mean is no spread.
    t = np.where((sd > 0) & (sd < 1e-12 * np.abs(mean)), np.inf, t)
    ok = n >= 2
    out[ok] = np.exp(log_e(t[ok], n[ok]))
    out[ok & (np.abs(mean) == 0) & (sd == 0)] = 1.0
    return out


def anytime_p(diffs: Sequence[float]) -> float:
    """p = 1 / max e over every prefix: valid at any stopping time (Ville's inequality)."""
    return float(min(1.0, 1.0 / max(1.0, float(e_process(diffs).max(initial=1.0)))))


def seeds_to_resolve(diffs: Sequence[float], alpha: float) -> int | None:
    """Pairs the e-process would need to reach 1/alpha if the observed standardised effect were the true
    one (a plug-in estimate, not a promise); None for identical results or no spread estimate."""
    x = np.asarray(diffs, float)
    if len(x) < 2 or not np.any(x):
        return None
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        return len(x)
    d = abs(float(np.mean(x))) / sd
    n = np.arange(max(2, len(x)), MAX_SEEDS_ESTIMATE + 1)
    reached = np.nonzero(log_e(d * np.sqrt(n), n) >= math.log(1 / alpha))[0]
    return int(n[reached[0]]) if len(reached) else MAX_SEEDS_ESTIMATE + 1


@dataclass
class PairResult:
    a: str  # the better-ranked row
    b: str
    diff: float  # mean of b - a over shared seeds
    pairs: int
    p: float  # anytime-valid, unadjusted
    p_holm: float = 1.0
    seeds: int | None = None  # plug-in estimate of the pairs needed, for unresolved pairs
    alpha: float = stats.ALPHA

    @property
    def resolved(self) -> bool:
        return self.p_holm < self.alpha


@dataclass
class DatasetDecision:
    data: str
    ranking: list[str]  # best first, by mean on the primary endpoint
    adjacent: list[PairResult] = field(default_factory=list)
    family: int = 0  # pairs in the Holm family

    @property
    def resolved(self) -> bool:
        """Every adjacent pair resolved (a single row has nothing left to resolve)."""
        return all(p.resolved for p in self.adjacent)


def decide(
    data: str,
    values: Mapping[str, Mapping[int, float]],
    higher_is_better: bool,
    alpha: float = stats.ALPHA,
    estimate: bool = True,
) -> DatasetDecision:
    """Rank the rows (label → seed → primary value) and test every pair; the ranking is resolved when each
    adjacent pair is significant after Holm over all pairs. ``estimate``: the seeds an unresolved pair needs."""
    sign = 1 if higher_is_better else -1
    means = {label: float(np.mean(list(v.values()))) for label, v in values.items() if v}
    ranking = sorted(means, key=lambda label: (-sign * means[label], label))
    results: dict[tuple[str, str], PairResult] = {}
    for a, b in combinations(ranking, 2):
        shared = sorted(values[a].keys() & values[b].keys())
        diffs = [values[b][s] - values[a][s] for s in shared]
        mean = float(np.mean(diffs)) if diffs else math.nan
        results[(a, b)] = PairResult(a, b, mean, len(diffs), anytime_p(diffs), alpha=alpha)
    for pair, adjusted in zip(results.values(), stats.holm([r.p for r in results.values()]), strict=True):
        pair.p_holm = adjusted
    decision = DatasetDecision(data, ranking, family=len(results))
    for a, b in zip(ranking, ranking[1:], strict=False):
        pair = results[(a, b)]
        if estimate and not pair.resolved:
            shared = sorted(values[a].keys() & values[b].keys())
            diffs = [values[b][s] - values[a][s] for s in shared]
            pair.seeds = seeds_to_resolve(diffs, alpha / max(1, len(results)))
        decision.adjacent.append(pair)
    return decision
