"""The circuit breaker: a sweep whose trials keep failing the same way stops.

A setup that cannot train (a target module the model does not have, a data file that breaks
after the preflight, a driver that is gone) fails every trial with the same error; without a
breaker the sweep would spend its whole budget finding that out. :class:`CircuitBreaker`
watches the trials as they finish and trips when ``k`` in a row ended ``failed`` with the
same :func:`error_class`.

What counts: only trials that ran. ``complete``, ``oom``, ``timeout`` and ``pruned`` trials
are results (an out-of-memory point is a fact about the search space, not a broken setup)
and start the count again; gate refusals (``infeasible``, ``over_budget``) never ran and
interrupted or lost trials were stopped from outside, so they leave the count as it is.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from sweeps.outcome import Outcome

__all__ = ["BreakerTrip", "CircuitBreaker", "error_class"]

_RESETS = frozenset(
    {Outcome.COMPLETE, Outcome.ARTIFACT_LOST, Outcome.OOM, Outcome.TIMEOUT, Outcome.PRUNED}
)
"""Outcomes of trials that ran and measured something: they end a run of failures."""

_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)):\s?")
_MASKS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "<hex>"),
    # A path: something with a slash in it (absolute, relative or a Windows drive).
    (re.compile(r"(?:[A-Za-z]:)?[\w.~-]*(?:[/\\][\w.@+-]+)+[/\\]?"), "<path>"),
    (re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"), "<n>"),
)


def _key_line(error: str) -> str:
    """The line that says what went wrong: a traceback's exception line, else the first line."""
    lines = [line.rstrip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        for line in reversed(lines):
            if not line.startswith((" ", "\t")) and _EXCEPTION_LINE.match(line):
                return line
        return lines[-1]
    return lines[0]


def error_class(outcome: Outcome | str, error: str | None) -> str:
    """What two failures must share to count as the same: the outcome, the exception type (when
    the error names one) and the message of its key line with numbers, paths and addresses
    masked, so that the same fault in trials with other ranks, rates or folders matches.

    ``error_class("failed", "Traceback ...\\nValueError: rank 8 > 4")`` is
    ``"failed ValueError: rank <n> > <n>"``.
    """
    line = _key_line(error or "")
    for pattern, mask in _MASKS:
        line = pattern.sub(mask, line)
    return f"{Outcome(outcome).value} {line[:300]}".rstrip()


@dataclass(frozen=True)
class BreakerTrip:
    """Why a breaker tripped: the trials, the error they share, and the message to show."""

    trials: tuple[int, ...]
    error_class: str
    error: str
    message: str


class CircuitBreaker:
    """Trips after ``k`` consecutive finished trials fail with the same error class.

    ``k = 0`` disables it. Thread safe: a sweep's worker threads call :meth:`observe` as
    their trials finish; the order of those calls is the order that counts.
    """

    def __init__(self, k: int, *, results: str | None = None) -> None:
        if k < 0:
            raise ValueError(f"`breaker` must be >= 0 (0 disables it), got {k}")
        self.k = k
        self.results = results
        """The results file the message points to (``paretune sql --db``)."""
        self.tripped: BreakerTrip | None = None
        self._run: list[tuple[int, str, str]] = []  # (trial, error class, error) in a row
        self._lock = threading.Lock()

    def observe(self, number: int, outcome: Outcome | str, error: str | None) -> BreakerTrip | None:
        """Count one trial that ended; the trip when this trial makes ``k`` in a row."""
        if self.k == 0:
            return None
        outcome = Outcome(outcome)
        with self._lock:
            if outcome in _RESETS:
                self._run.clear()
                return None
            if outcome != Outcome.FAILED:
                return None
            kind = error_class(outcome, error)
            if self._run and self._run[-1][1] != kind:
                self._run.clear()
            self._run.append((number, kind, error or ""))
            if len(self._run) < self.k or self.tripped is not None:
                return None
            trials = tuple(n for n, _, _ in self._run[-self.k :])
            self.tripped = BreakerTrip(
                trials, kind, error or "", _message(trials, error or "", self.results)
            )
            return self.tripped


def _message(trials: tuple[int, ...], error: str, results: str | None) -> str:
    line = _key_line(error) or "(no error message)"
    listed = ", ".join(f"#{n}" for n in trials)
    db = f" --db {results}" if results else ""
    return (
        f"circuit breaker: {len(trials)} trials in a row ({listed}) failed with the same error, "
        f"so the sweep stopped instead of spending the rest of its budget: {line}. "
        "The setup is likely broken rather than the points: check the model, the data files, "
        "the [trial] settings (target modules, sequence length, batch) and the device; "
        f"`paretune sql{db} \"SELECT number, error FROM trials WHERE state = 'failed'\"` shows each "
        "trial's error in full and `paretune trial --spec SPEC` reruns the first point alone. "
        "Raise [run] breaker, or set it to 0, to let a sweep go on through such failures."
    )
