"""What the sweeps screen shows, read from the results database (blocking: use a worker).

Study summaries are computed from the ``trials`` table, so they are right for a study
that is still running; budgets come from the ``studies`` table. A trial's detail is its
whole row (every column the store keeps) plus its logged steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StudySummary", "TrialDetail", "load_studies", "load_trial", "load_trials"]


@dataclass(frozen=True)
class StudySummary:
    name: str
    trials: int
    complete: int
    failed: int  # failed, oom and timeout together
    running: int
    spent: float
    budget_dollars: float | None
    budget_trials: int | None
    created: Any = None
    pruned: int = 0  # stopped early at a rung: they use up trials of the budget too

    @property
    def progress(self) -> str:
        used = self.complete + self.failed + self.pruned
        if self.budget_trials:
            return f"{used}/{self.budget_trials}"
        return str(used)

    @property
    def spend(self) -> str:
        from pricing.display import format_dollars

        budget = f" of {format_dollars(self.budget_dollars)}" if self.budget_dollars else ""
        return f"{format_dollars(self.spent)}{budget}"


@dataclass(frozen=True)
class TrialDetail:
    row: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)


def load_studies(db: Path) -> list[StudySummary]:
    """Every study with its progress and spend, newest first; [] without a database."""
    from sweeps.results.store import ResultsStore

    if not Path(db).exists():
        return []
    store = ResultsStore(db, lock_timeout_s=_READ_WAIT_S)
    running = {
        row["study"]: row["running"]
        for row in _dicts(
            store,
            "SELECT study, count(*) FILTER (WHERE state = 'running') "
            "AS running FROM trials GROUP BY study",
        )
    }
    return [
        StudySummary(
            name=row["study"],
            trials=int(row["trials"] or 0),
            complete=int(row["complete"] or 0),
            failed=int(row["failed"] or 0),
            running=int(running.get(row["study"], 0) or 0),
            spent=float(row["dollars"] or 0.0),
            budget_dollars=row.get("budget_dollars"),
            budget_trials=row.get("budget_trials"),
            created=row.get("created_at"),
            pruned=int(row.get("pruned") or 0),
        )
        for row in store.studies()
    ]


def load_trials(db: Path, study: str) -> list[dict[str, Any]]:
    """The trials of ``study``, in trial order (every column)."""
    from sweeps.results.store import ResultsStore

    return ResultsStore(db, lock_timeout_s=_READ_WAIT_S).trials(study)


def load_trial(db: Path, study: str, number: int) -> TrialDetail | None:
    """One trial's whole row and its logged steps; None if it is not in the database."""
    from sweeps.results.store import ResultsStore

    store = ResultsStore(db, lock_timeout_s=_READ_WAIT_S)
    rows = _dicts(store, "SELECT * FROM trials WHERE study = ? AND number = ?", [study, number])
    if not rows:
        return None
    return TrialDetail(rows[0], store.steps(study, number))


# A sweep holds the write lock only for a moment between trials; a poll waits that long.
_READ_WAIT_S = 5.0


def _dicts(store, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    columns, rows = store.query(sql, params)
    return [dict(zip(columns, row, strict=False)) for row in rows]
