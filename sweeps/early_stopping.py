"""Multi-objective early stopping (MO-ASHA): which trials go on at a rung, as pure functions.

A sweep's trial trains for ``max_steps`` optimizer steps. With early stopping it stops at
*rungs*, the steps ``r, ηr, η²r, ...`` below ``max_steps`` (``r`` is ``min_steps``, ``η`` is
``eta``; :func:`rung_steps`), and reports there its eval NLL, a cheap forgetting estimate (the
spec's forgetting measure on a fixed small subset of its retain source) and its cost so far.
The sweep then asks :func:`rung_decision` whether it goes on, given the points of every other
trial of the study that reached the same rung *on a like schedule* (a ``max_steps`` within a
factor ``sqrt(eta)`` of its own, :func:`same_schedule`; see "Why this rule" below). The trial
goes on when

1. it is in the top ``ceil(n / η)`` of the ``n`` trials at the rung, ranked by non-dominated
   sorting (the front a point is on: 0 for the Pareto-optimal ones, 1 for those optimal once
   front 0 is removed, ...) and, within a front, by crowding distance (larger first; the
   extreme points of a front have an infinite one); or
2. no trial on the current frontier of finished trials dominates it at that rung: it may still
   end on the frontier (with no finished trial at that rung yet, every trial goes on).

Otherwise it stops there, and the sweep records it as ``pruned``. Every trial that reached a
rung counts, whether it went on, stopped, or later finished: the decision is the asynchronous
successive-halving rule of ASHA, which never waits for a rung to fill and so suits workers that
start and finish trials at any time.

Why this rule:

- **ASHA** (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020)
  keeps the top ``1/η`` of the trials seen at each rung; the geometric rungs make the work spent
  on each rung about equal, and the asynchronous form loses little against synchronous
  successive halving while keeping every worker busy.
- **MO-ASHA** (Schmucker, Donini, Zafar, Salinas, Archambeau, "Multi-objective asynchronous
  successive halving", arXiv:2106.12639, 2021) replaces ASHA's one-metric ranking by
  non-dominated sorting, with a tie-break inside the last front kept (they compare an
  epsilon-net with NSGA-II's crowding distance; crowding is used here, as it needs no scale
  for epsilon); Syne Tune ships it as ``MOASHA``
  (``syne_tune.optimizer.schedulers.multiobjective``), whose default priority
  (``NonDominatedPriority``) is a non-dominated sort of the trials at the rung.
- Rule 2 is ours. With three objectives many trials are mutually non-dominated, and the top
  ``1/η`` alone would stop a trial that is, at that rung, as good as the frontier in some
  objective (a cheap configuration that learns a little slower, say). Keeping every trial the
  frontier does not dominate at the rung makes the rule conservative: a trial is stopped only
  when some finished, Pareto-optimal trial was better in every objective at the same step.
- **Only trials of one schedule are compared.** ASHA's fidelity is the training budget and
  every trial has the same largest one; a sweep also searches ``max_steps``, and the learning
  rate's warm-up and decay are laid over each trial's own ``max_steps``. At step 30 a 32-step
  trial has annealed and is all but finished, while a 128-step trial is still at its peak
  rate, forgetting fast and not yet converged: the first dominates the second there whatever
  their ends. On the benchmark's grid of real demo trials 13 of the 20 Pareto-optimal trials
  were dominated at one of their rungs by another Pareto-optimal trial of another length.
  Compared across lengths, a default sweep stopped so many of them that its hypervolume
  stalled below random search's (``benchmarks/sweep_efficiency.py`` before this rule: 0.955
  at 1.5 x random's dollars for 2N trials, against random's 0.985); compared per length it
  passes TPE without early stopping at every budget. Successive halving is kept within each
  length as Hyperband keeps it within each bracket (Li et al., JMLR 2018). "One length" is
  taken as lengths within half a rung of each other (a factor ``sqrt(eta)``), so that a sweep
  over a range of ``max_steps`` (90 to 300 by 30, say) still has several trials to compare at
  each rung; the benchmark's lengths (32, 64, 128) are each a rung apart.
- **Cost is compared as projected to the trial's last step** (the report's
  ``projected_dollars``: what it has cost, plus the steps left at its pace so far), not as
  spent: cost is known long before quality, and the trials at a rung have all paid for the
  same steps, so their spend cannot tell a cheap configuration from a dear one.
- Optuna's pruners refuse multi-objective studies (``Trial.report`` raises for them), so the
  rule lives here; the sweep stores each rung's points in the study (user attributes), so that
  every worker, on any machine, decides from the same records.

Every point is a tuple of floats, smaller is better in each coordinate (negate a maximised
objective before), all of the same length. Nothing here imports anything beyond the standard
library and numpy: the benchmark and the tests call these functions directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_MIN_STEPS_FLOOR",
    "RungDecision",
    "crowding_distances",
    "default_min_steps",
    "dominates",
    "non_dominated_fronts",
    "rung_decision",
    "rung_steps",
    "same_schedule",
]

Point = Sequence[float]

DEFAULT_ETA = 3
"""Keep the top third at each rung (ASHA's and Syne Tune's default reduction factor)."""

DEFAULT_MIN_STEPS_FLOOR = 10
"""The first rung is never earlier than this many optimizer steps unless the spec says so: an
eval NLL after a handful of steps (still in the learning-rate warm-up) ranks the learning rates,
not the configurations."""


def rung_steps(min_steps: int, eta: int, max_steps: int) -> list[int]:
    """The rungs below ``max_steps``: ``min_steps * eta**k`` for k = 0, 1, ... (the last step
    is not a rung: a trial that gets there finishes)."""
    if min_steps < 1 or eta < 2:
        raise ValueError(f"min_steps must be >= 1 and eta >= 2, got {min_steps} and {eta}")
    steps, step = [], min_steps
    while step < max_steps:
        steps.append(step)
        step *= eta
    return steps


def default_min_steps(max_steps: int, eta: int = DEFAULT_ETA) -> int:
    """The first rung when the spec does not name one: ``max_steps / eta**2`` (two rungs below
    ``max_steps``, as successive halving with three brackets of work), and no earlier than
    :data:`DEFAULT_MIN_STEPS_FLOOR`."""
    return max(DEFAULT_MIN_STEPS_FLOOR, max_steps // eta**2)


def same_schedule(a: int | None, b: int | None, eta: int = DEFAULT_ETA) -> bool:
    """Whether two trials' rung reports at one step are compared: their ``max_steps`` are
    within a factor ``sqrt(eta)`` of each other (half a rung apart, geometrically), so the
    step is at about the same point of both learning-rate schedules. An unknown ``max_steps``
    (a report of an older paretune) compares with any."""
    if a is None or b is None:
        return True
    return max(a, b) <= math.sqrt(eta) * min(a, b)


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere (minimising)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def non_dominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front: the Pareto-optimal ones first, then those optimal once the
    first front is removed, ... (NSGA-II's non-dominated sorting; equal points share a front)."""
    import numpy as np

    if not len(points):
        return []
    values = np.asarray(points, dtype=float)
    # dominated_by[j, i]: point j dominates point i; then fronts are peeled off by counting
    # each point's dominators left. The square of the points, in numpy: at a rung that 5,000
    # trials reached, 0.2 s where comparing the points pair by pair in Python took minutes.
    no_worse = np.ones((len(values), len(values)), dtype=bool)
    better = np.zeros_like(no_worse)
    for column in values.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    dominated_by = no_worse & better
    del no_worse, better
    dominators = dominated_by.sum(axis=0)
    remaining = np.ones(len(values), dtype=bool)
    fronts: list[list[int]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominators == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        dominators -= dominated_by[front].sum(axis=0)
    return fronts


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II's crowding distance of each point within ``points`` (one front): the sum over the
    objectives of the gap between its two neighbours, normalised by the objective's range; the
    lowest and highest point of each objective get ``inf`` (the front's ends are kept first)."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    distances = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distances[order[0]] = distances[order[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, n - 1):
            gap = points[order[k + 1]][m] - points[order[k - 1]][m]
            distances[order[k]] += gap / (high - low)
    return distances


@dataclass(frozen=True)
class RungDecision:
    """Whether a trial goes on at a rung, and why (for the sweep's log and the results file).

    ``position``: the trial's place (0 = best) among the ``reached`` trials at the rung by
    front, then crowding distance; ``kept``: how many of them the top ``1/eta`` keeps;
    ``dominated_by_frontier``: whether a trial on the frontier of finished trials dominates it
    at the rung."""

    continues: bool
    position: int
    reached: int
    kept: int
    dominated_by_frontier: bool

    @property
    def reason(self) -> str:
        place = f"place {self.position + 1} of {self.reached} at the rung (top {self.kept} go on)"
        if not self.continues:
            return f"{place}, and a frontier trial was better in every objective at that step"
        if self.position < self.kept:
            return place
        return f"{place}; not dominated by the frontier there, so it goes on"


def rung_decision(
    point: Point,
    others: Sequence[Point],
    *,
    eta: int = DEFAULT_ETA,
    frontier: Sequence[Point] = (),
) -> RungDecision:
    """Whether the trial at ``point`` goes on at this rung (see the module docstring).

    ``others``: the points of the other trials that reached this rung (any state: running,
    stopped there, finished later); ``frontier``: the points at this rung of the trials on
    the current frontier of finished trials (those that reached it). All minimised.
    """
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    everyone = [tuple(point), *(tuple(p) for p in others)]
    ranked: list[int] = []
    for front in non_dominated_fronts(everyone):
        crowding = crowding_distances([everyone[i] for i in front])
        # Larger crowding first; the trial itself last among equals (ties keep earlier trials).
        ranked += [
            i
            for _, i in sorted(zip(crowding, front, strict=True), key=lambda c: (-c[0], c[1] == 0))
        ]
    position = ranked.index(0)
    kept = math.ceil(len(everyone) / eta)
    dominated = any(dominates(tuple(f), everyone[0]) for f in frontier)
    return RungDecision(
        continues=position < kept or not dominated,
        position=position,
        reached=len(everyone),
        kept=kept,
        dominated_by_frontier=dominated,
    )
