"""One configuration run with several seeds: the mean of each metric and its noise.

Two fine-tunes that differ only in their seed differ in every metric; a frontier that ranks
trials by one run each ranks part noise. :func:`run_repeats` runs the same
:class:`TrialConfig` with seeds ``seed, seed + 1, ...`` (each in its own process, through
the given runner) and :func:`combine` makes one :class:`TrialResult` of the runs:

- quality, forgetting, throughput and MFU: the mean over the runs (what Optuna is told);
- wall, load, train and eval seconds, tokens and dollars: the sum (every run is paid for);
  the planner's predicted hours and dollars are multiplied by the runs, to compare;
- peak memory: the largest (the trial needs that much);
- the loss curve, artifact, hardware and command: the first run's (later runs save nothing);
- ``sd``: each metric's sample standard deviation over the runs;
- ``repeats``: each run's own figures.

A run that does not complete ends the trial there (the rest would be paid for nothing): the
trial takes that run's state and error, and the runs made so far.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from sweeps.outcome import Outcome
from sweeps.trial.types import (
    Forgetting,
    Measured,
    Predicted,
    Quality,
    RepeatResult,
    StepLog,
    TrialConfig,
    TrialResult,
)

__all__ = ["combine", "run_repeats"]

_SUMMED = frozenset({"wall_s", "load_s", "train_s", "eval_s", "tokens"})
_LARGEST = frozenset({"peak_gb", "peak_reserved_gb", "process_peak_gb"})


def run_repeats(
    runner: Callable[..., TrialResult],
    config: TrialConfig,
    repeats: int = 1,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    on_repeat: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> TrialResult:
    """Run ``config`` ``repeats`` times with seeds ``config.seed + k`` through ``runner`` (e.g.
    :func:`sweeps.trial.isolation.run_trial_isolated`, given ``on_step`` and ``kwargs``);
    one run returns the runner's result unchanged. ``on_repeat(k)`` is called before run k."""
    if repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats}")
    if repeats == 1:
        if on_repeat is not None:
            on_repeat(0)
        return runner(config, on_step=on_step, **kwargs)
    runs: list[TrialResult] = []
    for k in range(repeats):
        if on_repeat is not None:
            on_repeat(k)
        update: dict[str, Any] = {"seed": config.seed + k}
        if k:
            update["save"] = "none"  # one artifact per trial: the first run's
        runs.append(runner(config.model_copy(update=update), on_step=on_step, **kwargs))
        if runs[-1].state not in _MEASURED:
            break
    return combine(config, runs, repeats)


_MEASURED = (Outcome.COMPLETE, Outcome.ARTIFACT_LOST)
"""Run outcomes with every figure measured (an artifact that could not be saved loses no figure)."""


def combine(
    config: TrialConfig, runs: list[TrialResult], repeats: int | None = None
) -> TrialResult:
    """One result of ``runs`` of ``config`` (seeds ``config.seed``, ``+ 1``, ...); see the module
    docstring for how each figure is combined. ``repeats``: the runs asked for (the command
    that reproduces the trial says it)."""
    if not runs:
        raise ValueError("combine needs at least one run")
    first = runs[0]
    ended = next((run for run in runs if run.state not in _MEASURED), None)
    lost = next((run for run in runs if run.state == Outcome.ARTIFACT_LOST), None)
    error = None
    if ended is not None or lost is not None:
        run = ended or lost
        k = runs.index(run)
        error = f"repeat {k} (seed {config.seed + k}): {run.error or run.state}"
    sd: dict[str, float] = {}
    quality = _combined(Quality, [r.quality for r in runs], "quality", sd)
    forgetting = _combined(Forgetting, [r.forgetting for r in runs], "forgetting", sd)
    measured = _combined(Measured, [r.measured for r in runs], "measured", sd)
    dollars = _sum([r.dollars for r in runs])
    if (spread := _sd([r.dollars for r in runs])) is not None:
        sd["dollars"] = spread
    command = first.command
    if command and command.startswith("paretune trial"):
        command += f" --repeats {repeats or len(runs)}"
    return TrialResult(
        state=ended.state if ended else lost.state if lost else Outcome.COMPLETE,
        method=first.method,
        params=first.params,
        quality=quality,
        forgetting=forgetting,
        measured=measured,
        predicted=_times(first.predicted, len(runs)),
        dollars=dollars,
        hardware=first.hardware,
        artifact=first.artifact,
        error=error,
        steps=first.steps,
        command=command,
        config=config,
        data=first.data,  # every run reads the same data
        repeats=[
            RepeatResult(
                repeat=k,
                seed=config.seed + k,
                state=run.state,
                error=run.error,
                quality=run.quality,
                forgetting=run.forgetting,
                measured=run.measured,
                dollars=run.dollars,
            )
            for k, run in enumerate(runs)
        ],
        sd=sd,
    )


def _combined(
    model: type[BaseModel], parts: list[BaseModel], prefix: str, sd: dict[str, float]
) -> Any:
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        column = [getattr(part, name) for part in parts]
        numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers or field.annotation not in (float | None, int | None):
            values[name] = column[0]  # a label (retain_source) or nothing measured
            continue
        if name in _SUMMED:
            value: float = sum(numbers)
        elif name in _LARGEST:
            value = max(numbers)
        else:
            value = statistics.fmean(numbers)
        values[name] = round(value) if field.annotation == int | None else value
        if (spread := _sd(column)) is not None:
            sd[f"{prefix}.{name}"] = spread
    return model(**values)


def _sd(column: list[Any]) -> float | None:
    numbers = [float(v) for v in column if v is not None]
    return statistics.stdev(numbers) if len(numbers) >= 2 else None


def _sum(column: list[float | None]) -> float | None:
    numbers = [v for v in column if v is not None]
    return sum(numbers) if numbers else None


def _times(predicted: Predicted, runs: int) -> Predicted:
    """The planner's figures for ``runs`` runs of one configuration (memory: one run's)."""
    return Predicted(
        peak_gb=predicted.peak_gb,
        hours=None if predicted.hours is None else predicted.hours * runs,
        dollars=None if predicted.dollars is None else predicted.dollars * runs,
    )
