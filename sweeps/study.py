"""The Optuna side of a sweep: storages, samplers, the study and the search space.

A study lives in a journal file (one machine, any number of processes) or in PostgreSQL
(many machines; ``RDBStorage`` with heartbeats, so a dead worker's trial is failed and
re-queued). :func:`suggest` samples the spec's conditional space: rank, alpha, rsLoRA and
targets only for adapter methods, and the learning rate per method when the spec gives
one range per method.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
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
                    "PARETUNE_HEARTBEAT_INTERVAL_S", HEARTBEAT_INTERVAL_S),
                grace_period=_seconds_from_env("PARETUNE_HEARTBEAT_GRACE_S", HEARTBEAT_GRACE_S),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries),
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
        return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as error:
        raise SweepError(f"cannot open the journal file {path}: {error}") from None


def _redact(url: str) -> str:
    from sweeps.store import redact_url

    return redact_url(url) or url


def make_sampler(spec: SweepSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; each worker gets its own seed so workers do not repeat each other."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = spec.seed + seed_offset
    if spec.sampler == "tpe":
        # group=True: the space is conditional (rank only for adapters, lr per method).
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=5)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if spec.sampler == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler's optimiser)
        except ImportError:
            raise SweepError("sampler 'gp' needs scipy", "pip install scipy, or use sampler = \"tpe\"") from None
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(spec: SweepSpec, storage: Any, *, sampler: Any = None, storage_url: str | None = None) -> optuna.Study:
    """Create the spec's study, or load it if it exists (same objectives required)."""
    import optuna

    objectives = list(spec.objectives.names())
    study = optuna.create_study(
        study_name=spec.name, storage=storage, directions=spec.objectives.directions(),
        sampler=sampler or make_sampler(spec), load_if_exists=True,
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
        if name in ("rank", "alpha_ratio", "targets", "use_rslora") and method not in ADAPTER_METHODS:
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
        return trial.suggest_int(name, int(param.low), int(param.high), log=param.log,
                                 step=int(param.step) if param.step else 1)
    return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)


def is_postgres(url: str) -> bool:
    """Whether a storage URL names a PostgreSQL database (else it is a journal file)."""
    return url.startswith(("postgresql", "postgres://"))
