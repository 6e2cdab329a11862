"""The Optuna side of a sweep: storages, samplers, the study and the search space.

A study lives in a journal file (one machine, any number of processes) or in PostgreSQL
(many machines; ``RDBStorage`` with heartbeats, so a dead worker's trial is failed and
re-queued). :func:`suggest` samples the spec's conditional space: rank, alpha, rsLoRA and
targets only for adapter methods, and the learning rate per method when the spec gives
one range per method.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.journal import recover_journal
from sweeps.outcome import Outcome
from sweeps.spec import ADAPTER_METHODS, Choice, Fixed, Range, SweepSpec, lr_param_name

if TYPE_CHECKING:
    import optuna

__all__ = [
    "HEARTBEAT_GRACE_S",
    "HEARTBEAT_INTERVAL_S",
    "SweepError",
    "frontier_trials",
    "is_postgres",
    "make_sampler",
    "open_storage",
    "open_study",
    "suggest",
]

HEARTBEAT_INTERVAL_S = 20
HEARTBEAT_GRACE_S = 60


def _seconds_from_env(name: str, default: int) -> int:
    """A positive whole number of seconds from ``name``, else ``default``."""
    import os

    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SweepError(f"{name} must be a positive whole number of seconds, got {raw!r}")
    return value


class SweepError(UserError):
    """A sweep that cannot start (bad storage, a study with other objectives, ...)."""

    title = "Sweep"


def open_storage(url: str, *, max_retries: int = 2) -> optuna.storages.BaseStorage:
    """A journal file (any path) or a PostgreSQL URL (``RDBStorage`` with heartbeats)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # multivariate TPE, heartbeats and fail_stale_trials are marked experimental; we rely on them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if is_postgres(url):
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        try:
            return RDBStorage(
                url,
                # A worker on another machine counts as dead once its trial's heartbeat is
                # older than the grace period; both are tunable for slow networks (and tests).
                heartbeat_interval=_seconds_from_env(
                    "PARETUNE_HEARTBEAT_INTERVAL_S", HEARTBEAT_INTERVAL_S
                ),
                grace_period=_seconds_from_env("PARETUNE_HEARTBEAT_GRACE_S", HEARTBEAT_GRACE_S),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retries
                ),
                # A worker needs a few connections at once (its loop, the heartbeat, the
                # liveness checks); SQLAlchemy's default of 5 + 10 per process lets a few
                # dozen workers exhaust a server's 100.
                engine_kwargs={"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4},
            )
        except Exception as error:  # sqlalchemy raises many kinds; all mean "cannot connect"
            raise SweepError(
                f"cannot open the study database {_redact(url)}: {str(error).splitlines()[0]}",
                "Check that PostgreSQL runs and the URL (user, host, database) is right; "
                "`pip install 'paretune[distributed]'` provides the driver.",
            ) from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _warn(recover_journal(path))  # a torn last record, before anything is appended to it
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except ValueError:  # a line inside does not parse: a run appended onto a torn record
            recovered = recover_journal(path, scan_all=True)
            if recovered is None:
                raise
            _warn(recovered)
            return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as error:
        raise SweepError(f"cannot open the journal file {path}: {error}") from None


def _warn(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr)


def _redact(url: str) -> str:
    from sweeps.results.store import redact_url

    return redact_url(url) or url


def make_sampler(spec: SweepSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded by ``spec.seed + seed_offset``; it never proposes a point a
    trial of the study holds.

    Each process (and each worker thread, by its offset) draws its own points: a sampler whose
    first ask finds another worker busy in the study (a trial of another process running, or
    started since this one began) is seeded by its own worker identity (host and pid) and the
    study as well, so two sweeps started together on one study do not draw the same points. A
    study run by one process is seeded exactly by ``spec.seed + seed_offset``. See
    :func:`_distinct_points` for how a repeated point is replaced.
    """
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return _distinct_points()(spec, (spec.seed + seed_offset) % 2**32)


def _optuna_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler the spec names, seeded by ``seed``."""
    import optuna

    if spec.sampler == "tpe":
        # group=True: the space is conditional (rank only for adapters, lr per method).
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
        )
    if spec.sampler == "cost-aware":
        from sweeps.cost_aware import make_cost_aware_sampler
        from sweeps.warm_start import warm_observations

        return make_cost_aware_sampler(
            spec,
            seed,
            draw=lambda pick: _draw_point(spec, pick),
            space=_spec_space(spec),
            # the study's own storage: where the warm-start study is looked for first
            warm=lambda study: warm_observations(spec, study._storage),
        )
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if spec.sampler == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler's optimiser)
        except ImportError:
            raise SweepError(
                "sampler 'gp' needs scipy", 'pip install scipy, or use sampler = "tpe"'
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


_NEIGHBOUR_DRAWS = 32
"""Draws tried for an untried neighbour of a repeated point before keeping the repeat."""


@functools.cache
def _distinct_points() -> type[optuna.samplers.BaseSampler]:
    """A sampler around Optuna's that draws each point whole and never repeats a trial.

    Optuna samples a point one parameter at a time, as the trial suggests them, so nothing sees
    the point until it is in the study. Here the sampler's relative step draws the whole point
    at once (running :func:`suggest` against a stand-in trial, so the conditional space is the
    spec's): the values the wrapped sampler proposes, the rest drawn by its own independent
    sampling in the order the trial would ask for them. Until a point repeats, the points are
    exactly the wrapped sampler's.

    A point that equals one a trial of the study holds, whichever its state (running in any
    worker, complete, failed, infeasible) becomes a neighbour of it that no trial holds: one of
    its parameters drawn again at random, then two, and so on. It happens in TPE's random
    startup trials (two draws of a small grid), with workers seeded alike, and after startup,
    where with few trials multi-objective TPE models the good region by one trial (``gamma(n)
    = ceil(0.1 n)``) and, on a space of choices, often proposes that very trial: on the grid
    of ``benchmarks/sweep_efficiency.py`` the first proposal after startup repeated a trial for
    71% of the seeds. Every trial is seeded by the spec's seed, so a repeat costs a whole trial
    and measures nothing new (an infeasible or out-of-memory point fails again). A neighbour
    keeps the sampler's aim; a random point instead helped TPE up to 12 trials and hurt from 20.
    The draws are seeded by the sampler's seed and the trial number, so a sweep stays
    reproducible. A queued trial keeps its own values. The class is built on first use, so
    that importing this module does not import Optuna.
    """
    import numpy as np
    import optuna
    from optuna.distributions import BaseDistribution

    class DistinctPoints(optuna.samplers.BaseSampler):
        def __init__(self, spec: SweepSpec, seed: int) -> None:
            self._spec, self._seed = spec, seed
            self._sampler = _optuna_sampler(spec, seed)
            self._space = _spec_space(spec)
            self._own_space: dict[str, BaseDistribution] = {}
            self._first_ask = True

        def reseed_rng(self) -> None:
            self._sampler.reseed_rng()

        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if self._first_ask:  # under the sweep's ask lock, so other workers' trials show
                self._first_ask = False
                if _other_worker_busy(study, trial):
                    self._seed = _worker_seed(self._seed, study.study_name)
                    self._sampler = _optuna_sampler(self._spec, self._seed)
            self._sampler.before_trial(study, trial)

        def after_trial(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            state: optuna.trial.TrialState,
            values: Any,
        ) -> None:
            self._sampler.after_trial(study, trial, state, values)

        def infer_relative_search_space(
            self, study: optuna.Study, trial: optuna.trial.FrozenTrial
        ) -> dict[str, BaseDistribution]:
            self._own_space = self._sampler.infer_relative_search_space(study, trial)
            return {**self._space, **self._own_space}

        def sample_relative(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            search_space: dict[str, BaseDistribution],
        ) -> dict[str, Any]:
            proposal = self._sampler.sample_relative(study, trial, self._own_space)
            fixed = trial.system_attrs.get("fixed_params", {})  # a queued trial's own values

            def proposed(name: str, distribution: BaseDistribution) -> Any:
                if name in proposal and _holds(distribution, proposal[name]):
                    return proposal[name]
                return self._sampler.sample_independent(study, trial, name, distribution)

            point = self._draw(fixed, proposed)
            tried = [
                other.params
                for other in study.get_trials(deepcopy=False)
                if other.number != trial.number and other.params
            ]
            if point not in tried:
                return point
            seed = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
            redraw = optuna.samplers.RandomSampler(seed=int(seed))
            for again in _neighbour_draws(sorted(set(point) - set(fixed)), seed):

                def near(name: str, distribution: BaseDistribution, again: set = again) -> Any:
                    if name in point and name not in again:  # kept; a parameter of another
                        return point[name]  # method (the method drawn again) is drawn too
                    return redraw.sample_independent(study, trial, name, distribution)

                candidate = self._draw(fixed, near)
                if candidate not in tried:
                    return candidate
            return point  # every neighbour drawn has been tried: keep the sampler's choice

        def sample_independent(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            param_name: str,
            param_distribution: BaseDistribution,
        ) -> Any:
            # Only for a parameter outside the spec's space (the point covers all of it).
            return self._sampler.sample_independent(study, trial, param_name, param_distribution)

        def _draw(self, fixed: dict[str, Any], pick: Any) -> dict[str, Any]:
            """One whole point, as :func:`suggest` asks for it: fixed values first, as Optuna's
            trial takes them, then ``pick(name, distribution)``."""
            draw = _PointDraw(lambda name, d: fixed[name] if name in fixed else pick(name, d))
            suggest(draw, self._spec)  # type: ignore[arg-type]  # a stand-in for the trial
            return draw.params

    return DistinctPoints


def _draw_point(spec: SweepSpec, pick: Any) -> dict[str, Any]:
    """One whole point of the spec's space, ``pick(name, distribution)`` choosing each value
    in the order :func:`suggest` asks for them."""
    draw = _PointDraw(pick)
    suggest(draw, spec)  # type: ignore[arg-type]  # a stand-in for the trial
    return draw.params


def _neighbour_draws(names: list[str], seed: int) -> Iterator[set[str]]:
    """Which of ``names`` to draw again for each neighbour tried: one, 8 times, then two, ..."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for attempt in range(_NEIGHBOUR_DRAWS if names else 0):
        changed = min(len(names), 1 + attempt // 8)
        yield {names[i] for i in rng.choice(len(names), size=changed, replace=False)}


class _PointDraw:
    """Stands in for an ``optuna.Trial`` in :func:`suggest`: records the point ``pick`` draws,
    one value per parameter, with the distribution the real trial would give it."""

    def __init__(self, pick: Any) -> None:
        self.pick = pick
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        from optuna.distributions import CategoricalDistribution

        return self._take(name, CategoricalDistribution(choices))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        from optuna.distributions import IntDistribution

        return int(self._take(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        from optuna.distributions import FloatDistribution

        return float(self._take(name, FloatDistribution(low, high, log=log, step=step)))

    def _take(self, name: str, distribution: Any) -> Any:
        if name not in self.params:
            # A distribution of one value is not sampled (as Optuna's trial does).
            single = distribution.single()
            self.params[name] = (
                _first_value(distribution) if single else self.pick(name, distribution)
            )
            self.distributions[name] = distribution
        return self.params[name]


def _holds(distribution: Any, value: Any) -> bool:
    """Whether ``value`` is one of ``distribution``'s (a study's older space may differ)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _first_value(distribution: Any) -> Any:
    """The lowest value of a range, or the first choice."""
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low


def _spec_space(spec: SweepSpec) -> dict[str, Any]:
    """Every parameter any method of the spec may suggest, with its distribution."""
    space: dict[str, Any] = {}
    for method in spec.search.methods:

        def first(name: str, distribution: Any, method: str = method) -> Any:
            return method if name == "method" else _first_value(distribution)

        draw = _PointDraw(first)
        suggest(draw, spec)  # type: ignore[arg-type]
        space.update({n: d for n, d in draw.distributions.items() if not d.single()})
    return space


def _other_worker_busy(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether another worker process runs a trial of the study, or started one since this
    process began: then the two are working on it together."""
    from optuna.trial import TrialState

    from sweeps.liveness import this_worker

    me = this_worker()
    for other in study.get_trials(deepcopy=False):
        attrs = other.user_attrs
        host, pid = attrs.get("worker_host"), attrs.get("worker_pid")
        if other.number == trial.number or host is None or pid is None:
            continue
        if (host, pid) == (me["worker_host"], me["worker_pid"]):
            continue
        started = other.datetime_start.timestamp() if other.datetime_start else 0.0
        if other.state == TrialState.RUNNING or started >= me["worker_started"]:
            return True
    return False


def _worker_seed(seed: int, study_name: str) -> int:
    """A seed of this worker process on this study, drawn from ``seed``."""
    import os
    import socket
    import zlib

    import numpy as np

    identity = [seed, zlib.crc32(study_name.encode()), zlib.crc32(socket.gethostname().encode())]
    return int(np.random.SeedSequence([*identity, os.getpid()]).generate_state(1)[0])


def open_study(
    spec: SweepSpec, storage: Any, *, sampler: Any = None, storage_url: str | None = None
) -> optuna.Study:
    """Create the spec's study, or load it if it exists (same objectives required).

    A spec with ``[search] warm_start`` has that study checked here (it exists, same model,
    data and objectives), before any trial is asked for."""
    import optuna

    if spec.search.warm_start is not None:
        from sweeps.warm_start import warm_observations

        warm_observations(spec, storage)

    objectives = list(spec.objectives.names())
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        directions=spec.objectives.directions(),
        sampler=sampler or make_sampler(spec),
        load_if_exists=True,
    )
    existing = study.user_attrs.get("objectives")
    if existing is None:
        study.set_user_attr("objectives", objectives)
        study.set_user_attr("spec", spec.to_raw())
        study.set_user_attr("created_at", datetime.now().isoformat(timespec="seconds"))
        study.set_user_attr("storage", _redact(storage_url or spec.storage_url))
    elif list(existing) != objectives:
        raise SweepError(
            f"study {spec.name!r} already exists with objectives {existing}, "
            f"but the spec asks for {objectives}",
            "Give the spec a new `name` to start another study.",
        )
    elif study.user_attrs.get("spec") != spec.to_raw():
        # Rerun with a changed spec (a larger budget, say): the study records the spec it
        # runs under now, so its budget in the results file is the one being enforced.
        study.set_user_attr("spec", spec.to_raw())
    return study


def frontier_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto-optimal completed trials, in the study's directions.

    The trials Optuna's ``study.best_trials`` gives for a sweep's study (complete, within the
    gate's constraint, non-dominated; tests hold the two equal), without the deep copy of
    every trial that ``best_trials`` makes: each trial carries its whole result, loss curve
    included, and the sweep asks after every trial (200 trials of 1,000 logged steps: 1.6 s
    a call against 8 ms).
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from sweeps.results.frontier import pareto_mask

    done = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial.user_attrs.get("state") == Outcome.COMPLETE and trial.values
    ]
    if not done:
        return []
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    mask = pareto_mask([[s * v for s, v in zip(signs, t.values, strict=False)] for t in done])
    return [trial for trial, on_front in zip(done, mask, strict=False) if on_front]


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample one point of the spec's search space on ``trial`` (conditional on method)."""
    methods = spec.search.methods
    method = methods[0] if len(methods) == 1 else trial.suggest_categorical("method", list(methods))
    params: dict[str, Any] = {"method": method}
    for name, param in spec.search.params.items():
        if (
            name in ("rank", "alpha_ratio", "targets", "use_rslora")
            and method not in ADAPTER_METHODS
        ):
            continue
        if name == "freeze_trainable_layers" and method != "freeze":
            continue
        value = _suggest_one(trial, name, param)
        if value is not None:
            params[name] = value
    if spec.search.lr_by_method:
        value = _suggest_one(trial, lr_param_name(spec, method), spec.search.lr_by_method[method])
        if value is not None:
            params[lr_param_name(spec, method)] = value
    return params


def _suggest_one(trial: optuna.Trial, name: str, param: Any) -> Any:
    if isinstance(param, Fixed):
        return None  # fixed values come from the spec, not from Optuna
    if isinstance(param, Choice):
        return trial.suggest_categorical(name, list(param.values))
    assert isinstance(param, Range)
    if param.integer:
        return trial.suggest_int(
            name,
            int(param.low),
            int(param.high),
            log=param.log,
            step=int(param.step) if param.step else 1,
        )
    return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)


def is_postgres(url: str) -> bool:
    """Whether a storage URL names a PostgreSQL database (else it is a journal file)."""
    return url.startswith(("postgresql", "postgres://"))
