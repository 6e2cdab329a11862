"""Cost-aware proposals: a sampler that weighs what each point promises against what it costs.

A sweep pays for every trial, and its trials do not cost the same: a 64-step full fine-tune
costs several times a 4-step LoRA. Optuna's samplers see cost only as the third objective,
after it was paid. :class:`CostAwareSampler` (``sampler = "cost-aware"``) predicts each
candidate's dollars before it is run and trades them against how promising the point is.

**The acquisition.** Multi-objective TPE (Bergstra et al. 2011; Ozaki et al. 2020, Optuna's
MOTPE, with the settings of ``sampler = "tpe"``) draws candidates from ``l(x)``, the density
of the good trials, and keeps the one with the largest ``log l(x) - log g(x)``, which is
proportional to expected improvement. Here each candidate's score is lowered by the cost term

    log l(x) - log g(x) - alpha * log(c(x) / median c)

i.e. expected improvement divided by ``cost ** alpha``: CArBO's cost-cooled EI (Lee et al.
2020, "Cost-aware Bayesian Optimization"). With equal promise the cheaper point wins; an
expensive point must promise ``cost ratio ** alpha`` times more. ``alpha`` cools from
``_ALPHA`` to 0 as the budget (trials or dollars) is spent, so late in a sweep an expensive
point is taken on its promise alone. Guinet et al. 2020 ("Pareto-efficient Acquisition
Functions for Cost-Aware Bayesian Optimization") pick among the cost-promise Pareto set of the
candidates; the score above is one point of that set, the one CArBO takes.

**The cost.** ``c(x)`` is the point's predicted dollars (:class:`CostModel`): the planner's
dollars on the target GPU (the sweep gate's figure), or where the planner cannot price a run
(CPU runs) its training FLOPs, corrected by the trials that finished: measured dollars are
fitted as ``a + b * predicted``, which learns the fixed part the planner does not see
(loading, scoring) as well as its scale (with few trials, the measured/predicted ratio).

**The first trials** (fewer than ``_STARTUP`` finished) are random, as TPE's. CArBO's
cost-effective initial design (of 64 random candidates, the one farthest from every point
tried, less the cost term) was measured worse: it starts at the corners of the space, the
extreme learning rates, which find little; with early stopping on the demo grid it needed 0.76
of random search's dollars to reach random's hypervolume at 2N, random startup trials 0.45.

**Warm start** (``[search] warm_start``, :mod:`sweeps.warm_start`): the trials of an earlier
study on the same model and task are shown to TPE as finished trials of this one and enter
the cost fit, so a second sweep starts where the first left off.

CARBS (Fetterman et al. 2023, Imbue, "Tune As You Scale") searches locally around the
cost-performance Pareto front; that was tried too, as a fixed-kernel density ratio over
candidates drawn around the good trials with the same cost term, and measured worse than TPE
with the cost term on the benchmark's grid (dollars to reach random search's hypervolume at
2N trials: 0.80 of random's against 0.60), so it is not kept.

Measured, not assumed: ``benchmarks/sweep_efficiency.py`` runs this sampler against random
search, TPE and NSGA-II on a grid of real demo trials and prints hypervolume against dollars
spent. Everything is seeded by the spec's seed and the trial number: a sweep is reproducible.
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

_ALPHA = 0.5
"""The cost exponent at the start of the budget, cooling to 0 as it is spent. Measured on the
grids of ``benchmarks/sweep_efficiency.py`` with the default early stopping (``--cost-alpha``;
dollars to reach random search's hypervolume at 2N trials over random's dollars, median of
seeds 0-19), demo / own-model grid: alpha 0 0.50 / 0.81, 0.25 0.50 / 0.87, 0.5 0.45 / 0.86,
1 0.48 / 0.87. The differences are within the seeds' noise; 0.5 is CArBO's middle ground."""
_STARTUP = 5
"""Finished trials (warm-start ones included) before TPE proposes; until then, random points."""


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
        # A spec of one method does not sample it (sweeps.study.suggest): not in the params.
        params = {"method": self._spec.search.methods[0], **params}
        try:
            config = self._spec.trial_config(params)
        except (ValidationError, TypeError, ValueError):
            return 1.0
        # Without a target GPU, FLOPs for every point: a calibration profile prices only the
        # CPU methods it has a throughput for, and dollars and FLOPs are not one unit.
        on_gpu = self._spec.hardware.gpu is not None
        predicted = self._gate.predict(config).dollars if on_gpu else None
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


def _budget_used(spec: SweepSpec, trials: int, dollars: float) -> float:
    """The fraction of the budget spent (0 when the spec sets no trial or dollar limit)."""
    used = 0.0
    if spec.budget.trials:
        used = max(used, trials / spec.budget.trials)
    if spec.budget.dollars:
        used = max(used, dollars / spec.budget.dollars)
    return min(used, 1.0)


def make_cost_aware_sampler(
    spec: SweepSpec,
    seed: int,
    *,
    draw: Callable[[Callable[[str, Any], Any]], dict[str, Any]],
    space: dict[str, BaseDistribution],
    warm: Callable[[optuna.Study], list[Observation]] | None = None,
    n_startup: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler for ``spec``: ``draw(pick)`` draws one whole point of the spec's space
    (``pick(name, distribution)`` choosing each value, as :func:`sweeps.study.suggest` asks
    for them), ``space`` is every parameter's distribution, ``warm(study)`` the trials of an
    earlier study to learn from as well. Built on first use, so that importing this module
    does not import Optuna."""
    import numpy as np
    import optuna
    from optuna.trial import TrialState

    class CostAwareSampler(optuna.samplers.BaseSampler):
        """Cost-cooled multi-objective TPE; see :mod:`sweeps.cost_aware`."""

        def __init__(self) -> None:
            self._seed = seed
            self._random = optuna.samplers.RandomSampler(seed=seed)
            self.cost = CostModel(spec)
            self._warm: list[Observation] | None = None
            self._alpha = _ALPHA
            self._tpe = _cost_cooled_tpe(seed, self._complete_cost, lambda: self._alpha)
            self._startup = True

        def reseed_rng(self) -> None:
            self._random.reseed_rng()
            self._tpe.reseed_rng()

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
            observations = [*self._warm, *own]
            self.cost.fit(
                [(self.cost.units(o.params), o.dollars) for o in observations if o.dollars]
            )
            running = sum(t.state == TrialState.RUNNING for t in trials)
            spent = sum(o.dollars or 0.0 for o in own)
            self._alpha = _ALPHA * (1.0 - _budget_used(spec, len(own) + running, spent))
            finished = sum(o.values is not None for o in observations)
            self._startup = finished < (_STARTUP if n_startup is None else n_startup)
            if not self._startup:
                seeded = self._seeded(study)
                tpe_space = self._tpe.infer_relative_search_space(seeded, trial)
                return self._tpe.sample_relative(seeded, trial, tpe_space)
            rng = np.random.default_rng(np.random.SeedSequence([self._seed, trial.number]))
            return draw(lambda name, distribution: _uniform(rng, distribution))

        def sample_independent(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            param_name: str,
            param_distribution: BaseDistribution,
        ) -> Any:
            if self._startup:
                return self._random.sample_independent(study, trial, param_name, param_distribution)
            return self._tpe.sample_independent(
                self._seeded(study), trial, param_name, param_distribution
            )

        def _seeded(self, study: optuna.Study) -> optuna.Study:
            """The study as TPE sees it: with the warm-start study's trials."""
            if not self._warm:
                return study
            return _WithWarmTrials(study, self._warm, space)  # type: ignore[return-value]

        def _complete_cost(self, partial: dict[str, Any]) -> float:
            """The predicted dollars of a point TPE drew in part (one group of parameters):
            the rest at their first values."""

            def pick(name: str, distribution: BaseDistribution) -> Any:
                return partial[name] if name in partial else _first(distribution)

            return self.cost.dollars(draw(pick))

    return CostAwareSampler()


def _first(distribution: BaseDistribution) -> Any:
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low  # type: ignore[attr-defined]


def _cost_cooled_tpe(
    seed: int, cost_of: Callable[[dict[str, Any]], float], alpha: Callable[[], float]
) -> optuna.samplers.TPESampler:
    """Optuna's multi-objective TPE (the settings of ``sampler = "tpe"``) whose acquisition,
    log l(x) - log g(x) over its candidates, is lowered by ``alpha() * log(cost / median)``.

    TPE draws a conditional space one group of parameters at a time (method, lr and steps;
    rank); a candidate's cost is that of its group's values with the rest at their first
    values. This overrides two of TPESampler's private methods (``_sample``,
    ``_compute_acquisition_func``), present in Optuna 4 and 5."""
    import numpy as np
    import optuna

    class CostCooledTPE(optuna.samplers.TPESampler):
        def _sample(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            self._space_now = search_space
            return super()._sample(study, trial, search_space)

        def _compute_acquisition_func(self, samples: Any, mpe_below: Any, mpe_above: Any) -> Any:
            values = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
            weight = alpha()
            if weight <= 0 or not samples:
                return values
            space_now = self._space_now
            count = len(values)
            costs = np.array(
                [
                    max(
                        cost_of(
                            {
                                name: space_now[name].to_external_repr(samples[name][i])
                                for name in samples
                            }
                        ),
                        1e-12,
                    )
                    for i in range(count)
                ]
            )
            return values - weight * np.log(costs / np.median(costs))

    return CostCooledTPE(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=0
    )


class _WithWarmTrials:
    """A study as TPE reads it, with the warm-start study's trials among its finished ones."""

    def __init__(self, study: Any, warm: list[Observation], space: dict[str, Any]) -> None:
        self._study = study
        self._warm = _frozen(warm, space)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Any = None, use_cache: bool = False
    ) -> Any:
        own = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if states is None:
            return [*self._warm, *own]
        return [*[t for t in self._warm if t.state in states], *own]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> Any:
        return self._get_trials(deepcopy=deepcopy, states=states)


def _frozen(warm: list[Observation], space: dict[str, Any]) -> list[Any]:
    """The warm-start trials as Optuna's finished trials (numbered below 0)."""
    from optuna.trial import TrialState, create_trial

    trials = []
    for i, observation in enumerate(warm):
        names = [
            n for n in observation.params if n in space and _holds(space[n], observation.params[n])
        ]
        trial = create_trial(
            params={n: observation.params[n] for n in names},
            distributions={n: space[n] for n in names},
            values=list(observation.values) if observation.values is not None else None,
            state=TrialState.COMPLETE if observation.values is not None else TrialState.FAIL,
        )
        trial.number = -1 - i
        trials.append(trial)
    return trials


def _holds(distribution: Any, value: Any) -> bool:
    """Whether ``value`` is one of ``distribution``'s (an earlier study's space may differ)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


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
    keeps it on the trial), else its third objective (the cost). Only a complete trial's
    dollars enter the cost fit: a failed or stopped one paid for part of its run."""
    from optuna.trial import TrialState

    values = tuple(trial.values) if trial.state == TrialState.COMPLETE and trial.values else None
    if values is not None and not all(math.isfinite(v) for v in values):
        values = None  # infeasible: told infinite values
    if values is None:
        return Observation(dict(trial.params), None, None)
    dollars = (trial.user_attrs.get("result") or {}).get("dollars")
    if dollars is None and len(values) == 3:
        dollars = values[2]
    return Observation(dict(trial.params), values, dollars)
