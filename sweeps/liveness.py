"""Worker liveness: a trial left RUNNING by a worker that died is failed and run again.

Each trial records its worker's host, pid and process start time. Before every ask, a
RUNNING trial whose worker on this host is gone (kill -9, a crash) is told as ``lost`` and
its parameters are queued again, up to ``run.max_retries`` times; with PostgreSQL, Optuna's
heartbeats do the same for workers on other machines.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["recover_dead_workers", "requeue", "this_worker"]


def this_worker() -> dict[str, Any]:
    import psutil

    return {
        "worker_host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "worker_started": psutil.Process().create_time(),
    }


def _alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 1.0:
            return False  # the pid was reused by another process
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _retry_count(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs.get("retries", 0))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retries: int) -> bool:
    """Queue ``trial``'s parameters again (so a resumed sweep runs them first)."""
    retries = _retry_count(trial)
    if retries >= max_retries or not trial.params:
        return False
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={
            "retry_of": trial.user_attrs.get("retry_of", trial.number),
            "retries": retries + 1,
        },
    )
    return True


def recover_dead_workers(study: optuna.Study, *, max_retries: int) -> list[int]:
    """Fail (as ``lost``) and re-queue RUNNING trials whose worker on this host is dead.

    With PostgreSQL, Optuna's heartbeats do the same across machines
    (:func:`optuna.storages.fail_stale_trials`); this handles the journal file, where the
    worker's host and pid are on each trial.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    with contextlib.suppress(Exception):
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("worker_host") != host or "worker_pid" not in attrs:
            continue
        if _alive(int(attrs["worker_pid"]), attrs.get("worker_started")):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "state", "lost")
            study._storage.set_trial_user_attr(
                trial._trial_id,
                "error",
                f"worker pid {attrs['worker_pid']} on {host} died while the trial ran",
            )
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, UpdateFinishedTrialError):
            continue  # another worker recovered it first
        requeue(study, trial, max_retries)
        recovered.append(trial.number)
    return recovered
