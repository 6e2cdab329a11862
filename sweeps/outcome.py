"""How a trial ended, or where it stands: one set of values for the whole project.

An :class:`Outcome` is what a trial's process returns (``TrialResult.state``), what the sweep
records on the Optuna trial (the user attribute ``state``) and what the results file holds
(the ``state`` column of ``trials``). It is a ``str`` enum: stored values are these plain
strings, so results files and Optuna storages written before it read the same.

Nothing here imports anything beyond the standard library: the trial's child process, the
results store and the documentation all read it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BUDGET_OUTCOMES", "RERUN_OUTCOMES", "Outcome"]


class Outcome(StrEnum):
    """A trial's outcome; :attr:`description` says what it means to someone reading results."""

    COMPLETE = "complete"
    ARTIFACT_LOST = "artifact_lost"
    OOM = "oom"
    FAILED = "failed"
    TIMEOUT = "timeout"
    PRUNED = "pruned"
    INFEASIBLE = "infeasible"
    OVER_BUDGET = "over_budget"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    RUNNING = "running"
    WAITING = "waiting"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Outcome.COMPLETE: "ran to the end with every objective measured",
    Outcome.ARTIFACT_LOST: "ran to the end with every objective measured, but its artifact "
    "(adapter or weights) could not be saved, e.g. on a full disk; its metrics are kept, the "
    "sampler learns from them and it counts against the trial budget as a measured trial; it is "
    "not on the frontier (there is nothing to take away): rerun its command for the artifact",
    Outcome.OOM: "ran out of memory (the device's, or the trial's memory cap); counts against "
    "the trial budget",
    Outcome.FAILED: "ended on an error, or without every objective measured; counts against "
    "the trial budget",
    Outcome.TIMEOUT: "ran past its time limit and was killed; counts against the trial budget",
    Outcome.PRUNED: "stopped at a rung by the sweep's early stopping ([search.early_stopping]; "
    "Optuna's state PRUNED): its eval NLL at that step (stopped_at_step), its rung records and "
    "its cost so far are kept; it counts against the budget and is not on the frontier",
    Outcome.INFEASIBLE: "refused by the feasibility gate (predicted not to fit the target GPU); "
    "never ran",
    Outcome.OVER_BUDGET: "asked but not launched: it would pass the budget, so the sweep stopped",
    Outcome.INTERRUPTED: "stopped by Ctrl-C (or SIGTERM) while it ran; re-queued",
    Outcome.LOST: "its worker died while it ran; re-queued",
    Outcome.RUNNING: "running now; its steps so far are written as it trains",
    Outcome.WAITING: "queued, not started yet",
}

BUDGET_OUTCOMES = frozenset(
    {
        Outcome.COMPLETE,
        Outcome.ARTIFACT_LOST,
        Outcome.OOM,
        Outcome.FAILED,
        Outcome.TIMEOUT,
        Outcome.PRUNED,
        Outcome.RUNNING,
    }
)
"""Outcomes that use up a trial of the budget. Infeasible and over-budget trials never ran;
interrupted and lost ones are run again (their time and dollars still count as spent)."""

RERUN_OUTCOMES = frozenset({Outcome.INTERRUPTED, Outcome.LOST})
"""Outcomes whose parameters are queued again: they spent money, but not a trial."""
