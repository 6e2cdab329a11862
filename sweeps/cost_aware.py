"""Cost-aware proposals: a sampler that weighs what each point promises against what it costs.

A sweep pays for every trial, and its trials do not cost the same: a 64-step full fine-tune
costs several times a 4-step LoRA. Optuna's samplers see cost only as the third objective,
after it was paid. :class:`CostAwareSampler` predicts each candidate's dollars before it is
run and trades them against how promising the point is:

    score(x) = log l(x) - log g(x) - alpha * log(c(x) / median c)

- ``l / g`` is the TPE density ratio (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
  Optimization"): ``l`` a Parzen estimate over the good trials, ``g`` over the rest. For TPE
  it is proportional to expected improvement; for three objectives the good trials are the
  first fronts of a non-dominated sort (as Optuna's MOTPE splits, Ozaki et al. 2020). The
  kernel works on whole points, so a conditional space (rank only for adapters) needs no
  group decomposition.
- ``c(x)`` is the point's predicted dollars (:class:`CostModel`): the planner's dollars on the
  target GPU (the sweep gate's figure), or, where the planner cannot price a run (CPU runs),
  its training FLOPs; corrected by the trials that finished: the measured cost is fitted as
  ``a + b * predicted`` (least squares, both non-negative), which learns the fixed part the
  planner does not see (loading, scoring) as well as its scale.
- Dividing expected improvement by ``cost ** alpha`` is CArBO's cost-cooled EI (Lee et al.
  2020, "Cost-aware Bayesian Optimization"); ``alpha`` cools from 1 to 0 as the budget
  (trials or dollars) is spent, so early on a cheap point is tried before an expensive one
  that promises the same, and by the end an expensive point is taken when it is better.
  Guinet et al. 2020 ("Pareto-efficient Acquisition Functions for Cost-Aware Bayesian
  Optimization") pick among the cost-performance Pareto set of the acquisition; the score
  above is the scalarised point of that set that CArBO uses.
- Candidates are drawn half around the good trials (each parameter kept with probability
  0.65, else redrawn: the local search around the frontier that CARBS does, Fetterman et al.
  2023, Imbue, "Tune As You Scale") and half uniformly over the space.
- The first trials (fewer than ``n_startup`` finished) are a cost-effective initial design
  (CArBO): candidates are scored by their distance to every point tried so far, less the cost
  term, so the space is covered cheaply first.
- Warm start (``[search] warm_start``): trials of an earlier study on the same model and task
  join the good/other split and the cost fit from the first ask (:mod:`sweeps.warm_start`).

Whether this helps is measured, not assumed: ``benchmarks/sweep_efficiency.py`` runs it
against random search, TPE and NSGA-II on a grid of real demo trials and prints
hypervolume against dollars spent. Everything here is seeded by the spec's seed and the
trial number, so a sweep is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeps.spec import SweepSpec

if TYPE_CHECKING:
    import numpy as np
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["CostModel", "Observation", "make_cost_aware_sampler"]

_MISMATCH = 0.25
"""Kernel weight of two different categorical values (a match weighs 1)."""
_BANDWIDTH = 0.35
"""Gaussian kernel width on a numeric parameter scaled to [0, 1] (log scale where it is log)."""
_KEEP = 0.65
"""A local candidate keeps each parameter of its good trial with this probability."""
_CANDIDATES = 48
"""Candidates drawn around good trials, and as many drawn uniformly, per ask."""
_GOOD_FRACTION = 0.25
"""At least this fraction of the finished trials counts as good (whole fronts are taken)."""


@dataclass(frozen=True)
class Observation:
    """One trial the sampler learns from: its point, its objective values (None: it failed
    or was infeasible, so it counts among the bad), and its measured dollars."""

    params: dict[str, Any]
    values: tuple[float, ...] | None
    dollars: float | None


class CostModel:
    """Predicted dollars of a point: the planner's figure, corrected by finished trials.

    ``units(params)`` is the planner's figure for the point's trial: the gate's predicted
    dollars where the spec names a target GPU, else the planner's training FLOPs (CPU runs
    are not priced by the planner, but their FLOPs still rank them), else 1. ``fit`` takes
    (units, measured dollars) of finished trials; ``dollars(params)`` is then ``a + b * units``
    with a and b fitted by least squares (non-negative). With fewer than three trials, or units
    spread by less than a factor 1.5 among them (the fit would extrapolate), the measured /
    predicted ratio scales the units instead.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self._spec = spec
        self._gate: Any = None
        self._units: dict[str, float] = {}
        self.intercept, self.slope = 0.0, 1.0

    def units(self, params: dict[str, Any]) -> float:
        key = repr(sorted(params.items()))
        if key not in self._units:
            self._units[key] = self._planner_units(params)
        return self._units[key]

    def _planner_units(self, params: dict[str, Any]) -> float:
        from pydantic import ValidationError

        from sweeps.gate import Gate

        if self._gate is None:
            self._gate = Gate(self._spec)
        try:
            config = self._spec.trial_config(params)
        except (ValidationError, TypeError, ValueError):
            return 1.0
        predicted = self._gate.predict(config).dollars
        if predicted is None:
            predicted = self._gate.training_flops(config)
        return float(predicted) if predicted and predicted > 0 else 1.0

    def fit(self, pairs: Sequence[tuple[float, float]]) -> None:
        """Fit measured dollars against units, from (units, measured dollars) pairs."""
        pairs = [(u, d) for u, d in pairs if u > 0 and d is not None and d >= 0]
        if not pairs:
            self.intercept, self.slope = 0.0, 1.0
            return
        units = [u for u, _ in pairs]
        ratio = sorted(d / u for u, d in pairs)[len(pairs) // 2]
        self.intercept, self.slope = 0.0, ratio
        if len(pairs) < 3 or max(units) < 1.5 * min(units):
            return
        n = len(pairs)
        mean_u = sum(units) / n
        mean_d = sum(d for _, d in pairs) / n
        var_u = sum((u - mean_u) ** 2 for u in units)
        slope = sum((u - mean_u) * (d - mean_d) for u, d in pairs) / var_u
        intercept = mean_d - slope * mean_u
        if slope <= 0:  # cost does not grow with the planner's figure here: a flat cost
            self.intercept, self.slope = mean_d, 0.0
        elif intercept < 0:  # through the origin: the ratio of sums
            self.intercept = 0.0
            self.slope = sum(u * d for u, d in pairs) / sum(u * u for u in units)
        else:
            self.intercept, self.slope = intercept, slope

    def dollars(self, params: dict[str, Any]) -> float:
        return self.intercept + self.slope * self.units(params)


def _scaled(distribution: BaseDistribution, value: Any) -> float | Any:
    """A numeric value (or a choice among numbers) scaled to [0, 1]; another choice as is."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
            ordered = sorted(choices)  # a list of numbers is a grid: neighbours are near
            if value not in ordered:
                return value
            return ordered.index(value) / max(len(ordered) - 1, 1)
        return value
    low, high, log = distribution.low, distribution.high, distribution.log  # type: ignore[attr-defined]
    if high <= low:
        return 0.0
    if log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _similarity(space: dict[str, BaseDistribution], x: dict[str, Any], y: dict[str, Any]) -> float:
    """Product kernel of two points; a parameter only one of them has (rank of an adapter
    against a full fine-tune) adds nothing: their methods differ already."""
    weight = 1.0
    for name, distribution in space.items():
        if name not in x or name not in y:
            continue
        a, b = _scaled(distribution, x[name]), _scaled(distribution, y[name])
        if isinstance(a, float) and isinstance(b, float):
            weight *= math.exp(-0.5 * ((a - b) / _BANDWIDTH) ** 2)
        elif a != b:
            weight *= _MISMATCH
    return weight


def _fronts(values: np.ndarray) -> list[list[int]]:
    """Indices of ``values`` (rows to minimise) by non-dominated front, best front first."""
    import numpy as np

    left = list(range(len(values)))
    fronts = []
    while left:
        front = [
            i
            for i in left
            if not any(
                np.all(values[j] <= values[i]) and np.any(values[j] < values[i])
                for j in left
                if j != i
            )
        ]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def _good_and_bad(
    observations: Sequence[Observation], signs: Sequence[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The good trials (whole first fronts, at least a quarter of the finished ones) and the
    rest (failed and infeasible trials among them)."""
    import numpy as np

    finished = [o for o in observations if o.values is not None]
    bad = [o.params for o in observations if o.values is None]
    if not finished:
        return [], bad
    values = np.array(
        [[s * v for s, v in zip(signs, o.values or (), strict=True)] for o in finished]
    )
    wanted = max(1, math.ceil(_GOOD_FRACTION * len(finished)))
    good_index: list[int] = []
    for front in _fronts(values):
        if len(good_index) >= wanted:
            break
        good_index += front
    chosen = set(good_index)
    good = [finished[i].params for i in good_index]
    bad += [o.params for i, o in enumerate(finished) if i not in chosen]
    return good, bad


def _density(space: dict[str, BaseDistribution], x: dict[str, Any], points: list[dict]) -> float:
    """Parzen estimate at ``x`` with one prior point of weight 1 and kernel value 0.5 (a flat
    prior, as TPE's prior keeps every region possible)."""
    return (0.5 + sum(_similarity(space, x, p) for p in points)) / (1 + len(points))


def _budget_used(spec: SweepSpec, trials: int, dollars: float) -> float:
    """The fraction of the budget spent (0 when the spec sets no trial or dollar limit)."""
    used = 0.0
    if spec.budget.trials:
        used = max(used, trials / spec.budget.trials)
    if spec.budget.dollars:
        used = max(used, dollars / spec.budget.dollars)
    return min(used, 1.0)


def choose(
    candidates: list[dict[str, Any]],
    *,
    space: dict[str, BaseDistribution],
    observations: Sequence[Observation],
    tried: list[dict[str, Any]],
    signs: Sequence[float],
    cost: Callable[[dict[str, Any]], float],
    alpha: float,
    n_startup: int,
) -> dict[str, Any]:
    """The candidate with the best score (see the module's docstring)."""
    fresh = [c for c in candidates if c not in tried] or candidates
    costs = [max(cost(c), 1e-12) for c in fresh]
    typical = sorted(costs)[len(costs) // 2]
    penalty = [alpha * math.log(c / typical) for c in costs]
    finished = sum(o.values is not None for o in observations)
    if finished < n_startup:
        # A cost-effective initial design: far from every point tried, cheap first.
        scores = [
            math.log(1.0 + 1e-3 - max((_similarity(space, c, t) for t in tried), default=0.0)) - p
            for c, p in zip(fresh, penalty, strict=True)
        ]
    else:
        good, bad = _good_and_bad(observations, signs)
        scores = [
            math.log(_density(space, c, good)) - math.log(_density(space, c, bad)) - p
            for c, p in zip(fresh, penalty, strict=True)
        ]
    best = max(range(len(fresh)), key=lambda i: scores[i])
    return fresh[best]


def make_cost_aware_sampler(
    spec: SweepSpec,
    seed: int,
    *,
    draw: Callable[[Callable[[str, Any], Any]], dict[str, Any]],
    space: dict[str, BaseDistribution],
    warm: Callable[[optuna.Study], list[Observation]] | None = None,
    n_startup: int = 5,
) -> optuna.samplers.BaseSampler:
    """The sampler for ``spec``: ``draw(pick)`` draws one whole point of the spec's space
    (``pick(name, distribution)`` choosing each value, as :func:`sweeps.study.suggest` asks
    for them), ``space`` is every parameter's distribution, ``warm(study)`` the trials of an
    earlier study to learn from as well. Built on first use, so that importing this module
    does not import Optuna."""
    import numpy as np
    import optuna
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    class CostAwareSampler(optuna.samplers.BaseSampler):
        """Cost-cooled, TPE-like proposals on whole points; see :mod:`sweeps.cost_aware`."""

        def __init__(self) -> None:
            self._seed = seed
            self._random = optuna.samplers.RandomSampler(seed=seed)
            self.cost = CostModel(spec)
            self._warm: list[Observation] | None = None

        def reseed_rng(self) -> None:
            self._random.reseed_rng()

        def infer_relative_search_space(
            self, study: optuna.Study, trial: optuna.trial.FrozenTrial
        ) -> dict[str, BaseDistribution]:
            return dict(space)

        def sample_relative(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            search_space: dict[str, BaseDistribution],
        ) -> dict[str, Any]:
            if not search_space:
                return {}
            if self._warm is None:
                self._warm = warm(study) if warm is not None else []
            trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
            own = [_observation(t) for t in trials if _counts(t)]
            running = [
                Observation(t.params, None, None)
                for t in trials
                if t.state == TrialState.RUNNING and t.params
            ]
            observations = [*self._warm, *own]
            self.cost.fit(
                [(self.cost.units(o.params), o.dollars) for o in observations if o.dollars]
            )
            signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
            spent = sum(o.dollars or 0.0 for o in own)
            alpha = 1.0 - _budget_used(spec, len(own) + len(running), spent)
            rng = np.random.default_rng(np.random.SeedSequence([self._seed, trial.number]))
            good, _ = _good_and_bad(observations, signs)
            candidates = [self._draw_uniform(rng) for _ in range(_CANDIDATES)]
            if good:
                candidates += [
                    self._draw_near(rng, good[rng.integers(len(good))]) for _ in range(_CANDIDATES)
                ]
            # Constant liar: a running trial counts as a bad one, so workers spread out.
            return choose(
                candidates,
                space=space,
                observations=[*observations, *running],
                tried=[t.params for t in trials if t.params],
                signs=signs,
                cost=self.cost.dollars,
                alpha=alpha,
                n_startup=n_startup,
            )

        def sample_independent(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            param_name: str,
            param_distribution: BaseDistribution,
        ) -> Any:
            return self._random.sample_independent(study, trial, param_name, param_distribution)

        def _draw_uniform(self, rng: np.random.Generator) -> dict[str, Any]:
            return draw(lambda name, distribution: _uniform(rng, distribution))

        def _draw_near(self, rng: np.random.Generator, point: dict[str, Any]) -> dict[str, Any]:
            def pick(name: str, distribution: BaseDistribution) -> Any:
                if name in point and rng.random() < _KEEP:
                    return point[name]
                return _uniform(rng, distribution)

            return draw(pick)

    return CostAwareSampler()


def _uniform(rng: np.random.Generator, distribution: BaseDistribution) -> Any:
    """One value of ``distribution``, uniform (log-uniform on a log scale)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[int(rng.integers(len(distribution.choices)))]
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    low, high = distribution.low, distribution.high
    if distribution.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if distribution.step is not None:
        value = low + round((value - low) / distribution.step) * distribution.step
    if isinstance(distribution, IntDistribution):
        return int(min(max(round(value), low), high))
    return float(min(max(value, low), high))


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial has ended with something to learn from (values, or a failure)."""
    from optuna.trial import TrialState

    return bool(trial.params) and trial.state in (
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
    )


def _observation(trial: optuna.trial.FrozenTrial) -> Observation:
    """What a finished trial tells the sampler: its measured dollars are the result's (a sweep
    keeps it on the trial), else its third objective (the cost)."""
    from optuna.trial import TrialState

    values = tuple(trial.values) if trial.state == TrialState.COMPLETE and trial.values else None
    if values is not None and not all(math.isfinite(v) for v in values):
        values = None  # infeasible: told infinite values
    result = trial.user_attrs.get("result") or {}
    dollars = result.get("dollars")
    if dollars is None and values is not None and len(values) == 3:
        dollars = values[2]
    return Observation(dict(trial.params), values, dollars)
