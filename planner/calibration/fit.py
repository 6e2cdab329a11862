"""Corrections of the planner fitted from measured runs, with pooling where data are thin.

A measured run says how far the planner was off for one (device, method, framework)
group. Three numbers per group are fitted; the physical memory terms (weights, adapter
weights, gradients, optimizer states) stay as computed, since they are exact counts:

- **throughput**: achieved training FLOP/s per device over the device's dense 16-bit peak
  (model FLOPs utilisation, MFU; PaLM, Chowdhery et al. 2022, appendix B). A CPU has no
  catalogue peak, so on a CPU the fitted throughput is the achieved FLOP/s itself;
- **activation scale**: a multiplier on the short-lived terms (activations and the loss's
  logits), which carry every approximation of the activation model;
- **overhead**: the bytes the run holds beyond its terms (CUDA context, workspaces, the
  caching allocator's reserve; on a CPU the resident set's own overhead): one constant.

Time is ``seconds = steps * step_overhead + flops / throughput``: besides the FLOPs, each
optimizer step costs a fixed time (the optimizer's update, kernel launches, the Python
around them), which dominates small models and micro-batches. The step overhead is one
value per device, fitted by least squares on the runs' relative time together with each
group's inverse throughput, where the runs' FLOPs per step differ enough to tell the two
apart (and the fit gives both positive); else it is 0, and throughput alone carries time.
Runs without a step count (imported tokens/s) are timed by throughput alone.

Memory is the line ``measured - physical = scale * short_lived + overhead``, fitted by
least squares where the runs' short-lived terms differ enough to tell slope from intercept,
else with the device's pooled scale and only the overhead fitted.

**Pooling.** A group with few runs is pulled toward the pooled estimate of all runs on the
same device, by how much its own mean can be trusted: the normal-normal model of empirical
Bayes (Efron & Morris 1975, "Data analysis using Stein's estimator and its
generalizations", JASA 70). For each group ``j`` with ``n_j`` runs, of log values ``y``
(log throughput; log measured/pooled-prediction of memory) with within-group variance
``s²`` and between-group variance ``τ²`` (method of moments, DerSimonian & Laird 1986),
the group's own estimate gets the weight ``w_j = τ² / (τ² + s²/n_j)`` and the pooled one
``1 - w_j``. With one group on a device there is nothing to pool with (``w = 1``).

A group with fewer runs than ``min_runs`` is not fitted: it keeps the planner's defaults.
Every group's before/after error is measured by **leave-one-out**: each run is predicted
from a fit of all the other runs (Stone 1974), so a group cannot look better by fitting
its own points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from planner.estimation.memory import constants

__all__ = [
    "CPU_NOMINAL_FLOPS",
    "MIN_RUNS",
    "PHYSICAL_TERMS",
    "SHORT_LIVED_TERMS",
    "Correction",
    "Fit",
    "GroupError",
    "Run",
    "default_throughput",
    "errors_against",
    "fit",
    "leave_one_out",
    "predicted_seconds",
]

PHYSICAL_TERMS = ("weights", "adapter_weights", "gradients", "optimizer_states")
"""Exact counts: never corrected."""

SHORT_LIVED_TERMS = ("activations", "logits_loss")
"""Scaled by the fitted activation scale."""

MIN_RUNS = 3
"""Fewest runs a group is fitted from (the default of ``paretune calibrate --min-runs``)."""

CPU_NOMINAL_FLOPS = 5e10
"""The planner has no CPU throughput. Before a calibration, a CPU run is timed at a nominal
50 GFLOP/s (fp32 training on a few cores of a recent x86 CPU reaches tens of GFLOP/s):
what a CPU profile is compared with."""

_SPREAD = 1.25  # largest / smallest short-lived term a slope is fitted from


Key = tuple[str, str, str]
"""(device, method, framework)."""


@dataclass(frozen=True)
class Run:
    """One measured run and the planner's prediction of it on the same device.

    ``breakdown`` is the planner's bytes per term (``planner.estimation.memory.TERMS``);
    ``flops`` over ``seconds`` is the achieved training FLOP/s of all ``devices`` (for an
    imported throughput, the FLOPs of one token over the seconds of one token).
    ``peak_flops`` is one device's dense 16-bit peak (None on a CPU).
    """

    source: str
    device: str
    method: str
    framework: str
    model: str
    seq_len: int
    batch: int
    breakdown: Mapping[str, int]
    measured_peak_bytes: float | None = None
    flops: float | None = None
    seconds: float | None = None
    peak_flops: float | None = None
    devices: int = 1
    steps: int | None = None
    """Optimizer steps the ``seconds`` cover (None: not known, e.g. an imported tokens/s)."""

    @property
    def key(self) -> Key:
        return (self.device, self.method, self.framework)

    @property
    def physical(self) -> float:
        return float(sum(self.breakdown.get(term, 0) for term in PHYSICAL_TERMS))

    @property
    def short_lived(self) -> float:
        return float(sum(self.breakdown.get(term, 0) for term in SHORT_LIVED_TERMS))

    @property
    def predicted_peak_bytes(self) -> float:
        return float(sum(self.breakdown.values()))

    @property
    def throughput(self) -> float | None:
        """MFU on a GPU, FLOP/s per device on a CPU; None without a timing."""
        return self.throughput_after(0.0)

    def throughput_after(self, step_overhead: float) -> float | None:
        """The throughput of the time left after ``step_overhead`` seconds per step (None
        without a timing, or where the overhead leaves no time)."""
        if not self.flops or not self.seconds or self.seconds <= 0:
            return None
        seconds = self.seconds - step_overhead * (self.steps or 0)
        if seconds <= 0:
            return None
        per_device = self.flops / seconds / max(1, self.devices)
        return per_device / self.peak_flops if self.peak_flops else per_device


@dataclass(frozen=True)
class Correction:
    """The fitted values of one group, each with what it came from."""

    device: str
    method: str
    framework: str
    runs: int
    sources: tuple[str, ...]
    throughput: float | None
    throughput_runs: int
    throughput_weight: float
    activation_scale: float | None
    overhead_bytes: float | None
    memory_runs: int
    memory_weight: float
    seq_len: tuple[int, int]
    batch: tuple[int, int]
    models: tuple[str, ...]
    step_overhead_s: float = 0.0
    """Fixed seconds per optimizer step (the device's; 0: not fitted)."""

    @property
    def key(self) -> Key:
        return (self.device, self.method, self.framework)

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def peak_bytes(self, physical: float, short_lived: float, default: float) -> float:
        """The corrected peak of a run with these terms (``default`` without a memory fit)."""
        if self.activation_scale is None or self.overhead_bytes is None:
            return default
        return max(physical, physical + self.activation_scale * short_lived + self.overhead_bytes)


@dataclass(frozen=True)
class GroupError:
    """Relative errors of one group's predictions, ``exp(mean |ln(predicted/measured)|) - 1``
    (None: nothing to compare): before (defaults) and after (calibrated)."""

    key: Key
    runs: int
    fitted: bool
    memory_before: float | None = None
    memory_after: float | None = None
    hours_before: float | None = None
    hours_after: float | None = None


@dataclass(frozen=True)
class Fit:
    """Every fitted group, and the groups kept at the defaults (key -> their run count)."""

    min_runs: int
    corrections: tuple[Correction, ...]
    unfitted: Mapping[Key, int] = field(default_factory=dict)

    def correction(self, key: Key) -> Correction | None:
        return next((c for c in self.corrections if c.key == key), None)

    @property
    def runs(self) -> int:
        return sum(c.runs for c in self.corrections)


def default_throughput(run: Run) -> float | None:
    """The planner's uncalibrated throughput for ``run``: its MFU on a GPU, the nominal
    CPU FLOP/s on a CPU."""
    if run.peak_flops is None:
        return CPU_NOMINAL_FLOPS
    found = constants()["mfu"].get(run.method)
    return None if found is None else float(found)


# -- pooling -----------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _shrinkage_weights(groups: Mapping[Key, Sequence[float]]) -> dict[Key, float]:
    """Normal-normal empirical Bayes: the weight of each group's own mean against the
    pooled mean, ``τ² / (τ² + s²/n)`` (see the module's docstring)."""
    filled = {key: values for key, values in groups.items() if values}
    if len(filled) < 2:
        return {key: 1.0 for key in filled}
    total = sum(len(values) for values in filled.values())
    squares = sum(sum((v - _mean(values)) ** 2 for v in values) for values in filled.values())
    within = squares / (total - len(filled)) if total > len(filled) else 0.0
    means = [_mean(values) for values in filled.values()]
    spread = sum((m - _mean(means)) ** 2 for m in means) / (len(means) - 1)
    between = max(0.0, spread - _mean([within / len(values) for values in filled.values()]))
    weights = {}
    for key, values in filled.items():
        noise = within / len(values)
        weights[key] = 1.0 if noise == 0 else between / (between + noise)
    return weights


def _line(xs: Sequence[float], ys: Sequence[float], slope: float) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys on xs; with too little spread in xs (or a
    slope that is not positive), ``slope`` is kept and only the intercept is fitted."""
    if len(xs) >= 2 and min(xs) > 0 and max(xs) / min(xs) >= _SPREAD:
        mx, my = _mean(xs), _mean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        fitted = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        if fitted > 0:
            return fitted, my - fitted * mx
    return slope, _mean([y - slope * x for x, y in zip(xs, ys, strict=True)])


# -- the fit -----------------------------------------------------------------------------


def _by_key(runs: Sequence[Run]) -> dict[Key, list[Run]]:
    groups: dict[Key, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return groups


def _memory_runs(runs: Sequence[Run]) -> list[Run]:
    return [run for run in runs if run.measured_peak_bytes and run.measured_peak_bytes > 0]


def _memory_line(runs: Sequence[Run], slope: float) -> tuple[float, float]:
    return _line(
        [run.short_lived for run in runs],
        [float(run.measured_peak_bytes or 0) - run.physical for run in runs],
        slope,
    )


def _step_overhead(groups: Mapping[Key, Sequence[Run]]) -> float:
    """The device's fixed seconds per optimizer step: least squares of ``1 = overhead *
    steps / seconds + k_group * flops / seconds`` over the timed runs with a step count
    (each run weighs the same, whatever its length), ``k`` the group's inverse throughput.
    0 where no group's runs differ enough in FLOPs per step to tell overhead from
    throughput, or where the fit is not positive in every value."""
    timed: dict[Key, list[Run]] = {}
    for key, runs in groups.items():
        found = [r for r in runs if r.flops and r.seconds and r.seconds > 0 and r.steps]
        if found:
            timed[key] = found

    def spread(runs: Sequence[Run]) -> bool:  # timed runs: FLOPs and steps are positive
        per_step = [float(r.flops or 0) / (r.steps or 1) for r in runs]
        return len(runs) >= 2 and max(per_step) / min(per_step) >= _SPREAD

    if not any(spread(runs) for runs in timed.values()):
        return 0.0
    keys = sorted(timed)
    rows = [
        [float(r.steps or 0) / float(r.seconds or 1)]
        + [float(r.flops or 0) / float(r.seconds or 1) if key == k else 0.0 for k in keys]
        for key in keys
        for r in timed[key]
    ]
    solution = _least_squares(rows, [1.0] * len(rows))
    if solution is None or any(value <= 0 for value in solution):
        return 0.0
    return solution[0]


def _least_squares(rows: Sequence[Sequence[float]], targets: Sequence[float]) -> list[float] | None:
    """The least-squares solution of ``rows x = targets`` by its normal equations
    (Gaussian elimination with partial pivoting); None when they are singular."""
    n = len(rows[0])
    a = [
        [sum(row[i] * row[j] for row in rows) for j in range(n)]
        + [sum(row[i] * t for row, t in zip(rows, targets, strict=True))]
        for i in range(n)
    ]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        scale = max(abs(v) for row in a for v in row[:n]) or 1.0
        if abs(a[pivot][col]) <= 1e-12 * scale:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _device_fit(groups: dict[Key, list[Run]], min_runs: int) -> list[Correction]:
    """The corrections of every group on one device, pooled with each other."""
    everything = [run for runs in groups.values() for run in runs]
    fitted = {key: runs for key, runs in groups.items() if len(runs) >= min_runs}

    # Time: the device's fixed seconds per step, then each run's throughput of the rest.
    overhead_s = _step_overhead(groups)
    # Throughput: shrink each group's mean log throughput toward the device's.
    logs = {
        key: [
            math.log(t)
            for run in runs
            if (t := run.throughput_after(overhead_s)) is not None and t > 0
        ]
        for key, runs in groups.items()
    }
    pooled_log = _mean(sum(logs.values(), [])) if any(logs.values()) else None
    throughput_weights = _shrinkage_weights(logs)

    # Memory: the device's line, each group's line, and the weight between them from how
    # far each group's runs are from the device's line (log measured/predicted).
    pooled_runs = _memory_runs(everything)
    pooled_line = _memory_line(pooled_runs, 1.0) if pooled_runs else None
    misses: dict[Key, list[float]] = {}
    if pooled_line is not None:
        for key, runs in groups.items():
            misses[key] = [
                math.log(float(run.measured_peak_bytes or 1) / predicted)
                for run in _memory_runs(runs)
                if (predicted := run.physical + pooled_line[0] * run.short_lived + pooled_line[1])
                > 0
            ]
    memory_weights = _shrinkage_weights(misses)

    corrections = []
    for key, runs in sorted(fitted.items()):
        throughput = None
        t_weight = throughput_weights.get(key, 0.0)
        if logs[key] and pooled_log is not None:
            throughput = math.exp(t_weight * _mean(logs[key]) + (1 - t_weight) * pooled_log)
        scale = overhead = None
        m_weight = memory_weights.get(key, 0.0)
        memory = _memory_runs(runs)
        if memory and pooled_line is not None:
            own = _memory_line(memory, pooled_line[0])
            scale = m_weight * own[0] + (1 - m_weight) * pooled_line[0]
            overhead = m_weight * own[1] + (1 - m_weight) * pooled_line[1]
        corrections.append(
            Correction(
                device=key[0],
                method=key[1],
                framework=key[2],
                runs=len(runs),
                sources=tuple(run.source for run in runs),
                throughput=throughput,
                throughput_runs=len(logs[key]),
                throughput_weight=round(t_weight, 4),
                activation_scale=scale,
                overhead_bytes=overhead,
                memory_runs=len(memory),
                memory_weight=round(m_weight, 4),
                seq_len=(min(r.seq_len for r in runs), max(r.seq_len for r in runs)),
                batch=(min(r.batch for r in runs), max(r.batch for r in runs)),
                models=tuple(sorted({r.model for r in runs})),
                step_overhead_s=overhead_s,
            )
        )
    return corrections


def fit(runs: Sequence[Run], min_runs: int = MIN_RUNS) -> Fit:
    """Fit every (device, method, framework) group with at least ``min_runs`` runs."""
    if min_runs < 1:
        raise ValueError("min_runs must be at least 1")
    groups = _by_key(runs)
    devices = sorted({key[0] for key in groups})
    corrections: list[Correction] = []
    for device in devices:
        on_device = {key: found for key, found in groups.items() if key[0] == device}
        corrections += _device_fit(on_device, min_runs)
    unfitted = {key: len(found) for key, found in groups.items() if len(found) < min_runs}
    return Fit(min_runs=min_runs, corrections=tuple(corrections), unfitted=unfitted)


# -- leave-one-out -----------------------------------------------------------------------


def predicted_seconds(
    run: Run, throughput: float | None, step_overhead_s: float = 0.0
) -> float | None:
    """Seconds of ``run`` at ``throughput`` (MFU on a GPU, FLOP/s on a CPU), plus
    ``step_overhead_s`` for each of its steps (where it has a step count)."""
    if not run.flops or not throughput:
        return None
    rate = throughput * run.peak_flops if run.peak_flops else throughput
    return run.flops / (rate * max(1, run.devices)) + step_overhead_s * (run.steps or 0)


def _log_miss(predicted: float | None, measured: float | None) -> float | None:
    if not predicted or not measured or predicted <= 0 or measured <= 0:
        return None
    return abs(math.log(predicted / measured))


def _relative_error(misses: Sequence[float | None]) -> float | None:
    """The symmetric relative error ``exp(mean |ln(predicted / measured)|) - 1``: 0.1 is
    10% off on average either way; a prediction 3x too high and one 3x too low both
    count 200% (a plain ``|predicted / measured - 1|`` caps the second at 100%)."""
    kept = [m for m in misses if m is not None]
    return math.exp(_mean(kept)) - 1 if kept else None


def leave_one_out(runs: Sequence[Run], min_runs: int = MIN_RUNS) -> list[GroupError]:
    """Per group: the relative error of peak memory and of time, with the planner's
    defaults (before) and with a fit of all the other runs (after)."""
    return errors_against(runs, lambda i: fit([*runs[:i], *runs[i + 1 :]], min_runs), min_runs)


def errors_against(
    runs: Sequence[Run], fit_for: Callable[[int], Fit], min_runs: int = MIN_RUNS
) -> list[GroupError]:
    """Per group: relative errors of ``runs`` before (defaults) and after (the fit that
    ``fit_for(i)`` returns for run ``i``; leave-one-out, or one fit on other runs)."""
    errors: dict[Key, list[tuple[float | None, ...]]] = {}
    for i, run in enumerate(runs):
        correction = fit_for(i).correction(run.key)
        default_peak = run.predicted_peak_bytes
        peak_after = (
            correction.peak_bytes(run.physical, run.short_lived, default_peak)
            if correction is not None
            else default_peak
        )
        seconds_before = predicted_seconds(run, default_throughput(run))
        after_throughput = correction.throughput if correction is not None else None
        seconds_after = predicted_seconds(
            run,
            after_throughput or default_throughput(run),
            correction.step_overhead_s if after_throughput and correction is not None else 0.0,
        )
        errors.setdefault(run.key, []).append(
            (
                _log_miss(default_peak, run.measured_peak_bytes),
                _log_miss(peak_after, run.measured_peak_bytes),
                _log_miss(seconds_before, run.seconds),
                _log_miss(seconds_after, run.seconds),
            )
        )
    counts = {key: len(found) for key, found in _by_key(runs).items()}
    return [
        GroupError(
            key=key,
            runs=counts[key],
            fitted=counts[key] >= min_runs,
            memory_before=_relative_error([row[0] for row in rows]),
            memory_after=_relative_error([row[1] for row in rows]),
            hours_before=_relative_error([row[2] for row in rows]),
            hours_after=_relative_error([row[3] for row in rows]),
        )
        for key, rows in sorted(errors.items())
    ]
