"""Worker liveness: finding trials left RUNNING by a worker that died, so they run again.

Each trial records its worker's host, pid and process start time. Before every ask, the
sweep marks a RUNNING trial whose worker on this host is gone (kill -9, a crash) as ``lost``
and queues its parameters again, up to ``run.max_retries`` times; with PostgreSQL, Optuna's
heartbeats do the same for workers on other machines.

A worker that reaches the budget while other workers' trials run cannot conclude yet: one of
them may belong to a worker that died, and then be run again. :func:`trials_of_other_workers`
lists the ones it waits for, each with how it would learn of its worker's death (the age of
its last heartbeat, or the pid of its worker on this host).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OtherWorkersTrial",
    "heartbeat_ages",
    "heartbeats_of",
    "requeue",
    "this_worker",
    "trials_of_dead_workers",
    "trials_of_other_workers",
]


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


@dataclass(frozen=True)
class OtherWorkersTrial:
    """A trial another worker runs, and what would tell that its worker died."""

    number: int
    host: str | None
    pid: int | None
    heartbeat_age_s: float | None
    """Seconds since its last heartbeat (PostgreSQL), by the database server's clock."""

    def describe(self) -> str:
        """``#3 on host gpu-2, heartbeat 12 s ago``, or ``#3 on host gpu-2, pid 4242``."""
        where = f"#{self.number} on host {self.host or '?'}"
        if self.heartbeat_age_s is not None:
            return f"{where}, heartbeat {self.heartbeat_age_s:.0f} s ago"
        return f"{where}, pid {self.pid}"


def heartbeat_ages(engine: Any, study_name: str) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial of ``study_name`` that has one,
    by trial number, in an Optuna PostgreSQL storage (``engine``: its SQLAlchemy engine).

    Measured by the database server's clock, as Optuna's own stale check does, so the
    workers' clocks do not matter. Optuna writes heartbeats as the server's local time.
    """
    from sqlalchemy import text

    query = text(
        "SELECT t.number, EXTRACT(EPOCH FROM (LOCALTIMESTAMP - h.heartbeat)) "
        "FROM trials t "
        "JOIN studies s ON s.study_id = t.study_id "
        "JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE s.study_name = :study AND t.state = 'RUNNING'"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"study": study_name}).all()
    return {int(number): max(float(age), 0.0) for number, age in rows}


def heartbeats_of(storage_url: str, study_name: str) -> tuple[dict[int, float], int]:
    """Seconds since the last heartbeat of each running trial of a PostgreSQL study (by trial
    number), and the grace period (seconds) after which a worker without one counts as dead.

    Raises :class:`~sweeps.study.SweepError` when the database cannot be opened.
    """
    from sweeps.study import open_storage

    storage: Any = open_storage(storage_url)
    try:
        grace = storage.grace_period or 2 * storage.heartbeat_interval
        return heartbeat_ages(storage.engine, study_name), int(grace)
    finally:
        storage.engine.dispose()


def trials_of_other_workers(
    study: optuna.Study, worker: dict[str, Any], *, heartbeats_from: Any = None
) -> list[OtherWorkersTrial]:
    """RUNNING trials of workers other than ``worker`` (:func:`this_worker`) whose death would
    be found, so that waiting for them ends.

    With ``heartbeats_from`` (a PostgreSQL storage's SQLAlchemy engine): any host's trial with
    a heartbeat recorded; without (a journal file): trials of this host, whose worker is
    checked by its pid. A trial asked but not yet gated (no ``config``) does not count against
    the budget, so it is not waited for.
    """
    from optuna.trial import TrialState

    heartbeats = heartbeats_from is not None
    ages = heartbeat_ages(heartbeats_from, study.study_name) if heartbeats else {}
    me = (worker["worker_host"], worker["worker_pid"])
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        host, pid = attrs.get("worker_host"), attrs.get("worker_pid")
        if "config" not in attrs or (host, pid) == me:
            continue
        if heartbeats and trial.number not in ages:
            continue  # no heartbeat: nothing would ever show its worker dead
        if not heartbeats and (host != worker["worker_host"] or pid is None):
            continue  # another machine's, in a journal: its worker cannot be checked
        found.append(OtherWorkersTrial(trial.number, host, pid, ages.get(trial.number)))
    return found
