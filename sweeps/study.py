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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.journal import recover_journal
from sweeps.spec import ADAPTER_METHODS, Choice, Fixed, Range, SweepSpec, lr_param_name

if TYPE_CHECKING:
    import optuna

__all__ = [
    "HEARTBEAT_GRACE_S",
    "HEARTBEAT_INTERVAL_S",
    "SweepError",
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
                engine_kwargs={"pool_pre_ping": True},
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
    """The spec's sampler; each worker gets its own seed so workers do not repeat each other.

    TPE (the default) is Optuna's, except that a proposal repeating a trial of the study becomes
    an untried neighbour of it (see :func:`_tpe_without_repeats`).
    """
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = spec.seed + seed_offset
    if spec.sampler == "tpe":
        # group=True: the space is conditional (rank only for adapters, lr per method).
        return _tpe_without_repeats()(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
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
def _tpe_without_repeats() -> type[optuna.samplers.TPESampler]:
    """Optuna's ``TPESampler``, except that a point it proposes does not repeat a trial.

    With few trials, multi-objective TPE models the good region by one trial (``gamma(n) =
    ceil(0.1 n)`` trials), and where the space is made of choices its best candidate is often
    that very trial: on the grid of ``benchmarks/sweep_efficiency.py`` the first proposal after
    the 5 random startup trials repeated an earlier trial for 71% of the seeds. Every trial is
    seeded by the spec's seed, so a repeat costs a whole trial and measures nothing new (an
    infeasible or out-of-memory point fails again). Such a proposal becomes a neighbour of the
    trial it repeats that no trial of the study holds (trials other workers are running
    included): one of that trial's parameters drawn again at random, then two, and so on. A
    neighbour keeps TPE's aim; a random point instead helped up to 12 trials and hurt from 20.

    The draws are seeded by the sampler's seed and the trial number, so a sweep stays
    reproducible and workers (each with its own seed offset) draw differently. The startup
    trials are Optuna's; a point with a value from a continuous range practically never
    repeats, so there nothing changes. The class is built on first use, so that importing this
    module does not import Optuna.
    """
    import numpy as np
    import optuna

    class TPEWithoutRepeats(optuna.samplers.TPESampler):
        def __init__(self, *, seed: int, **options: Any) -> None:
            super().__init__(seed=seed, **options)
            self._neighbour_seed = seed

        def sample_relative(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            search_space: dict[str, optuna.distributions.BaseDistribution],
        ) -> dict[str, Any]:
            proposal = super().sample_relative(study, trial, search_space)
            if not proposal:
                return proposal  # a startup trial: Optuna draws it at random
            fixed = trial.system_attrs.get("fixed_params", {})  # a queued trial's own values
            tried = [
                other.params
                for other in study.get_trials(deepcopy=False)
                if other.number != trial.number and other.params
            ]
            repeated = _repeated(tried, {**proposal, **fixed})
            if repeated is None:
                return proposal
            names = sorted(name for name in repeated if name in search_space and name not in fixed)
            seed = np.random.SeedSequence([self._neighbour_seed, trial.number]).generate_state(1)[0]
            rng = np.random.default_rng(seed)
            redraw = optuna.samplers.RandomSampler(seed=int(seed))
            for attempt in range(_NEIGHBOUR_DRAWS if names else 0):
                point = dict(proposal)
                changed = min(len(names), 1 + attempt // 8)  # 8 draws one away, then two, ...
                for i in rng.choice(len(names), size=changed, replace=False):
                    point[names[i]] = redraw.sample_independent(
                        study, trial, names[i], search_space[names[i]]
                    )
                if _repeated(tried, {**point, **fixed}) is None:
                    return point
            return proposal  # every neighbour drawn has been tried: keep TPE's choice

    return TPEWithoutRepeats


def _repeated(tried: list[dict[str, Any]], point: dict[str, Any]) -> dict[str, Any] | None:
    """The first of ``tried`` (trials' parameters) that ``point`` holds value for value."""
    return next(
        (
            params
            for params in tried
            if all(name in point and point[name] == value for name, value in params.items())
        ),
        None,
    )


def open_study(
    spec: SweepSpec, storage: Any, *, sampler: Any = None, storage_url: str | None = None
) -> optuna.Study:
    """Create the spec's study, or load it if it exists (same objectives required)."""
    import optuna

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
