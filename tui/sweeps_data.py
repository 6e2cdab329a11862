"""What the sweeps screen shows, read from the results database (blocking: use a worker).

Study summaries are computed from the ``trials`` table, so they are right for a study
that is still running; budgets come from the ``studies`` table. A trial's detail is its
whole row (every column the store keeps) plus its logged steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.db import query_rows

__all__ = ["StudySummary", "TrialDetail", "load_studies", "load_trials", "load_trial"]


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

    @property
    def progress(self) -> str:
        if self.budget_trials:
            return f"{self.complete + self.failed}/{self.budget_trials}"
        return str(self.complete + self.failed)

    @property
    def spend(self) -> str:
        budget = f" of ${self.budget_dollars:,.2f}" if self.budget_dollars else ""
        return f"${self.spent:,.4f}{budget}"


@dataclass(frozen=True)
class TrialDetail:
    row: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)


def load_studies(db: Path) -> list[StudySummary]:
    """Every study with its progress and spend, newest first; [] without a database."""
    if not Path(db).exists():
        return []
    return [
        StudySummary(
            name=row["name"],
            trials=int(row["trials"] or 0),
            complete=int(row["complete"] or 0),
            failed=int(row["failed"] or 0),
            running=int(row["running"] or 0),
            spent=float(row["spent"] or 0.0),
            budget_dollars=row.get("budget_dollars"),
            budget_trials=row.get("budget_trials"),
            created=row.get("created"),
        )
        for row in query_rows(db, _STUDIES_SQL)
    ]


def load_trials(db: Path, study: str) -> list[dict[str, Any]]:
    """The trials of ``study``, in trial order (the columns the trial table shows)."""
    return query_rows(db, _TRIALS_SQL, [study])


def load_trial(db: Path, study: str, number: int) -> TrialDetail | None:
    """One trial's whole row and its logged steps; None if it is not in the database."""
    rows = query_rows(db, "SELECT * FROM trials WHERE study = ? AND number = ?", [study, number])
    if not rows:
        return None
    steps = query_rows(
        db,
        "SELECT step, loss, eval_nll FROM steps WHERE study = ? AND number = ? ORDER BY step",
        [study, number],
    )
    return TrialDetail(rows[0], steps)


_STUDIES_SQL = """
SELECT s.name, s.created, s.budget_dollars, s.budget_trials,
       count(t.number) AS trials,
       count(*) FILTER (WHERE t.state = 'complete') AS complete,
       count(*) FILTER (WHERE t.state IN ('failed', 'oom', 'timeout')) AS failed,
       count(*) FILTER (WHERE t.state = 'running') AS running,
       coalesce(sum(t.dollars), 0) AS spent
FROM studies s LEFT JOIN trials t ON t.study = s.name
GROUP BY ALL
ORDER BY s.created DESC, s.name
"""

_TRIALS_SQL = """
SELECT number, state, method, rank, lr, eval_nll, retain_delta_nll, dollars,
       predicted_peak_gb, measured_peak_gb
FROM trials WHERE study = ? ORDER BY number
"""
