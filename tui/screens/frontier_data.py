"""What the frontier screen draws, read from the results database (blocking: use a worker).

A point is one complete trial. ``pareto`` comes from the store's ``frontier`` view, so the
chart marks exactly the trials ``paretune frontier`` and SQL users see as Pareto-optimal
(over the study's three objectives, not just the two axes on screen). ``data_warning`` is
the warning ``paretune frontier`` and the report print when the study's complete trials
trained or were scored on different data (:func:`sweeps.results.frontier.mixed_data_warning`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AXES",
    "VIEWS",
    "Axis",
    "Frontier",
    "FrontierPoint",
    "load_frontier",
    "load_points",
    "load_study_names",
]


@dataclass(frozen=True)
class FrontierPoint:
    study: str
    number: int
    method: str
    rank: int | None
    lr: float | None
    quality: float | None  # eval NLL on the held-out task (lower is better)
    forgetting: float | None  # retain-set ΔNLL (lower is better)
    dollars: float | None
    pareto: bool
    within_noise: tuple[int, ...] = ()
    """Frontier trials this one cannot be told apart from (repeated trials: every objective
    differs by less than the larger standard deviation of the two)."""


@dataclass(frozen=True)
class Axis:
    label: str
    of: Callable[[FrontierPoint], float | None]


AXES = {
    "quality": Axis("quality: eval NLL", lambda p: p.quality),
    "forgetting": Axis("forgetting: retain ΔNLL", lambda p: p.forgetting),
    "cost": Axis("cost: $", lambda p: p.dollars),
}
# (x, y) pairs the M key cycles through.
VIEWS = [("forgetting", "quality"), ("cost", "quality"), ("cost", "forgetting")]


def load_study_names(db: Path) -> list[str]:
    """Study names, most recently created first; [] when there is no database yet."""
    from sweeps.results.store import ResultsStore

    if not Path(db).exists():
        return []
    return [row["study"] for row in ResultsStore(db, lock_timeout_s=5.0).studies()]


@dataclass(frozen=True)
class Frontier:
    points: list[FrontierPoint]
    data_warning: str | None = None
    """Set when the complete trials ran on several data fingerprints (not comparable)."""


def load_points(db: Path, study: str) -> list[FrontierPoint]:
    """The complete trials of ``study`` with their objectives, in trial order."""
    return load_frontier(db, study).points


def load_frontier(db: Path, study: str) -> Frontier:
    """The complete trials of ``study`` with their objectives, in trial order, and the
    warning when they trained or were scored on different data."""
    from sweeps.results.frontier import indistinguishable_pairs, mixed_data_warning
    from sweeps.results.store import ResultsStore

    store = ResultsStore(db, lock_timeout_s=5.0)
    pareto = {row["number"] for row in store.frontier(study)}
    rows = store.trials(study)
    twins: dict[int, list[int]] = {}
    for a, b in indistinguishable_pairs(rows):
        twins.setdefault(a, []).append(b)
        twins.setdefault(b, []).append(a)
    points = [
        FrontierPoint(
            study=row["study"],
            number=int(row["number"]),
            method=row["method"],
            rank=row["rank"],
            lr=row["lr"],
            quality=row["eval_nll"],
            forgetting=row["retain_delta_nll"],
            dollars=row["dollars"],
            pareto=row["number"] in pareto,
            within_noise=tuple(sorted(twins.get(int(row["number"]), ()))),
        )
        for row in rows
        if row["state"] == "complete"
    ]
    return Frontier(points, mixed_data_warning(rows))
