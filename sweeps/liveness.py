"""Worker liveness: finding trials left RUNNING by a worker that died, so they run again.

Each trial records its worker's host, pid and process start time. Before every ask, the
sweep marks a RUNNING trial whose worker on this host is gone (kill -9, a crash) as ``lost``
and queues its parameters again, up to ``run.max_retries`` times; with PostgreSQL, Optuna's
heartbeats do the same for workers on other machines.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["requeue", "this_worker", "trials_of_dead_workers"]


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


def trials_of_dead_workers(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose worker on this host is dead (kill -9, a crash).

    With PostgreSQL, Optuna's heartbeats find dead workers on any machine: their stale
    trials are failed (and re-queued by the storage's retry callback) here first
    (:func:`optuna.storages.fail_stale_trials`). This finds the rest, for the journal file,
    where each trial records its worker's host, pid and start time. The caller marks them
    ``lost`` and re-queues them (:func:`requeue`).
    """
    import optuna
    from optuna.trial import TrialState

    with contextlib.suppress(Exception):
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    return [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if trial.user_attrs.get("worker_host") == host
        and "worker_pid" in trial.user_attrs
        and not _alive(int(trial.user_attrs["worker_pid"]), trial.user_attrs.get("worker_started"))
    ]
