"""The calibration profile: a small versioned TOML of fitted values, and applying it.

A profile lists every fitted group with its values, their sample sizes, the runs they came
from and the group's leave-one-out errors. :func:`apply` corrects one planner
:class:`~planner.estimation.estimate.Estimate` with it and says what it did.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.calibration.fit import (
    Correction,
    Fit,
    GroupError,
    Key,
    Run,
    fit,
    leave_one_out,
)
from planner.errors import InvalidSpecError

if TYPE_CHECKING:
    from planner.estimation.estimate import Estimate

__all__ = [
    "FRAMEWORK",
    "active_profile",
    "PROFILE_VERSION",
    "Calibrated",
    "Profile",
    "apply",
    "build_profile",
    "default_profile_path",
    "load_profile",
]

PROFILE_VERSION = 1
"""The profile format this paretune writes and reads."""

FRAMEWORK = "transformers"
"""The framework of paretune's own trials (transformers + peft), and the default of imports."""

EXTRAPOLATION_FACTOR = 4.0
"""A sequence length or micro-batch this many times outside a group's runs is an
extrapolation."""


def default_profile_path() -> Path:
    """Where ``paretune calibrate`` writes and ``paretune plan`` reads the active profile."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("paretune")) / "calibration.toml"


@dataclass(frozen=True)
class Profile:
    """A fit, its leave-one-out errors, and when it was made."""

    fit: Fit
    errors: tuple[GroupError, ...]
    created: str
    version: int = PROFILE_VERSION
    sha256: str = ""
    """SHA-256 of the file it was read from (empty: not read from a file)."""

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(sorted({c.device for c in self.fit.corrections}))

    def summary(self) -> str:
        """One line: what the profile was fitted from and how well it predicts, as a sweep's
        preflight says it (``calibrated from 14 runs on h100-sxm; leave-one-out error ...``)."""
        if not self.fit.corrections:
            return "no group fitted (every group had too few runs): the planner's defaults"
        devices = ", ".join(self.devices)
        text = f"calibrated from {self.fit.runs} runs on {devices}"
        memory = _pooled([(e.memory_after, e.runs) for e in self.errors if e.fitted])
        hours = _pooled([(e.hours_after, e.runs) for e in self.errors if e.fitted])
        parts = [f"memory {_percent(memory)}"] if memory is not None else []
        parts += [f"time {_percent(hours)}"] if hours is not None else []
        return text + (f"; leave-one-out error {', '.join(parts)}" if parts else "")

    def record(self, path: Path) -> dict[str, Any]:
        """What a study and its trials record of the profile their predictions used."""
        return {
            "path": str(path.resolve()),
            "sha256": self.sha256,
            "version": self.version,
            "created": self.created,
            "runs": self.fit.runs,
            "devices": list(self.devices),
        }

    def error(self, key: Key) -> GroupError | None:
        return next((e for e in self.errors if e.key == key), None)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_profile_document(self))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_toml(), encoding="utf-8")


def _pooled(errors: list[tuple[float | None, int]]) -> float | None:
    """Groups' errors weighted by their runs (None: no group has one)."""
    known = [(error, runs) for error, runs in errors if error is not None]
    if not known:
        return None
    return sum(error * runs for error, runs in known) / sum(runs for _, runs in known)


def build_profile(runs: list[Run], min_runs: int) -> Profile:
    """Fit ``runs`` and measure each group by leave-one-out."""
    return Profile(
        fit=fit(runs, min_runs),
        errors=tuple(leave_one_out(runs, min_runs)),
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
    )


# -- TOML --------------------------------------------------------------------------------


def _optional(table: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        table[name] = value


def _group_table(correction: Correction, error: GroupError | None) -> dict[str, Any]:
    table: dict[str, Any] = {
        "device": correction.device,
        "method": correction.method,
        "framework": correction.framework,
        "runs": correction.runs,
        "seq_len": list(correction.seq_len),
        "batch": list(correction.batch),
        "models": list(correction.models),
    }
    throughput: dict[str, Any] = {
        "unit": "flop_per_s" if correction.on_cpu else "mfu",
        "runs": correction.throughput_runs,
        "own_weight": correction.throughput_weight,
    }
    _optional(throughput, "value", correction.throughput)
    throughput["step_overhead_s"] = correction.step_overhead_s
    memory: dict[str, Any] = {
        "runs": correction.memory_runs,
        "own_weight": correction.memory_weight,
    }
    _optional(memory, "activation_scale", correction.activation_scale)
    _optional(memory, "overhead_bytes", correction.overhead_bytes)
    table["throughput"] = throughput
    table["memory"] = memory
    if error is not None:
        loo: dict[str, Any] = {}
        for name in ("memory_before", "memory_after", "hours_before", "hours_after"):
            _optional(loo, name, getattr(error, name))
        table["leave_one_out"] = loo
    table["sources"] = list(correction.sources)
    return table


def _profile_document(profile: Profile) -> dict[str, Any]:
    return {
        "version": profile.version,
        "created": profile.created,
        "min_runs": profile.fit.min_runs,
        "groups": [_group_table(c, profile.error(c.key)) for c in profile.fit.corrections],
        "unfitted": [
            {"device": k[0], "method": k[1], "framework": k[2], "runs": n}
            for k, n in sorted(profile.fit.unfitted.items())
        ],
    }


def _bad(path: Path, what: str) -> InvalidSpecError:
    return InvalidSpecError(
        f"calibration profile {path}: {what}",
        "Write a new one with `paretune calibrate`, or plan without it (--calibration none).",
    )


def _correction(group: dict[str, Any]) -> Correction:
    throughput = group.get("throughput", {})
    memory = group.get("memory", {})
    return Correction(
        device=str(group["device"]),
        method=str(group["method"]),
        framework=str(group["framework"]),
        runs=int(group["runs"]),
        sources=tuple(str(s) for s in group.get("sources", [])),
        throughput=throughput.get("value"),
        throughput_runs=int(throughput.get("runs", 0)),
        throughput_weight=float(throughput.get("own_weight", 1.0)),
        activation_scale=memory.get("activation_scale"),
        overhead_bytes=memory.get("overhead_bytes"),
        memory_runs=int(memory.get("runs", 0)),
        memory_weight=float(memory.get("own_weight", 1.0)),
        seq_len=(int(group["seq_len"][0]), int(group["seq_len"][1])),
        batch=(int(group["batch"][0]), int(group["batch"][1])),
        models=tuple(str(m) for m in group.get("models", [])),
        step_overhead_s=float(throughput.get("step_overhead_s", 0.0)),
    )


def _group_error(correction: Correction, group: dict[str, Any]) -> GroupError | None:
    loo = group.get("leave_one_out")
    if loo is None:
        return None
    return GroupError(key=correction.key, runs=correction.runs, fitted=True, **loo)


def load_profile(path: Path) -> Profile:
    """Read a profile; a missing, unreadable or other-version file raises InvalidSpecError."""
    try:
        data = path.read_bytes()
        document = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise _bad(path, f"not a readable TOML file ({error})") from None
    if document.get("version") != PROFILE_VERSION:
        raise _bad(
            path,
            f"format version {document.get('version')!r}; this paretune reads "
            f"version {PROFILE_VERSION}",
        )
    try:
        corrections = [_correction(group) for group in document.get("groups", [])]
        errors = [
            found
            for c, group in zip(corrections, document.get("groups", []), strict=True)
            if (found := _group_error(c, group)) is not None
        ]
        unfitted = {
            (str(u["device"]), str(u["method"]), str(u["framework"])): int(u["runs"])
            for u in document.get("unfitted", [])
        }
        min_runs = int(document["min_runs"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise _bad(path, f"a group lacks or garbles {error}") from None
    return Profile(
        fit=Fit(min_runs=min_runs, corrections=tuple(corrections), unfitted=unfitted),
        errors=tuple(errors),
        created=str(document.get("created", "")),
        sha256=hashlib.sha256(data).hexdigest(),
    )


# -- applying ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrated:
    """A corrected estimate (the original where nothing applied), what was done, and
    whether the request lies far outside the data the profile was fitted from."""

    estimate: Estimate
    calibrated: bool
    label: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"calibrated": self.calibrated, "label": self.label, "warnings": list(self.warnings)}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _label(correction: Correction, error: GroupError | None) -> str:
    text = f"calibrated from {correction.runs} runs on {correction.device}"
    if error is None:
        return text
    parts = []
    if error.memory_after is not None:
        parts.append(f"memory {_percent(error.memory_after)}")
    if error.hours_after is not None:
        parts.append(f"time {_percent(error.hours_after)}")
    return text + (f"; leave-one-out error {', '.join(parts)}" if parts else "")


def _outside(value: int, span: tuple[int, int]) -> bool:
    low, high = span
    return value < low / EXTRAPOLATION_FACTOR or value > high * EXTRAPOLATION_FACTOR


def _extrapolation(estimate: Estimate, correction: Correction) -> list[str]:
    warnings = []
    w = estimate.workload
    if _outside(w.seq_len, correction.seq_len):
        warnings.append(
            f"extrapolating: sequence length {w.seq_len} is far outside the calibration's "
            f"{correction.seq_len[0]}-{correction.seq_len[1]}"
        )
    if _outside(w.batch, correction.batch):
        warnings.append(
            f"extrapolating: micro-batch {w.batch} is far outside the calibration's "
            f"{correction.batch[0]}-{correction.batch[1]}"
        )
    return warnings


def _corrected_breakdown(estimate: Estimate, correction: Correction) -> dict[str, int]:
    if correction.activation_scale is None or correction.overhead_bytes is None:
        return dict(estimate.breakdown)
    scale, overhead = correction.activation_scale, correction.overhead_bytes
    breakdown = dict(estimate.breakdown)
    for term in ("activations", "logits_loss"):
        breakdown[term] = int(round(breakdown.get(term, 0) * scale))
    if overhead >= 0:
        breakdown["framework_overhead"] = int(round(overhead))
    else:  # less than the terms: taken off the short-lived memory, never the physical
        breakdown["framework_overhead"] = 0
        take = -overhead
        for term in ("activations", "logits_loss"):
            cut = min(breakdown[term], int(round(take)))
            breakdown[term] -= cut
            take -= cut
    return breakdown


def _steps(estimate: Estimate) -> int:
    """The optimizer steps of ``estimate``'s run (every GPU takes a micro-batch a step)."""
    w = estimate.workload
    per_step = w.seq_len * w.batch * w.grad_accum * max(1, estimate.gpus)
    return max(1, math.ceil(w.tokens / per_step))


def _corrected_time(estimate: Estimate, correction: Correction) -> dict[str, Any]:
    """Hours (and dollars, which scale with them) at the fitted throughput, plus the fitted
    fixed time of each optimizer step."""
    if correction.throughput is None:
        return {}
    fixed = correction.step_overhead_s * _steps(estimate) / 3600
    if correction.on_cpu:
        hours = estimate.flops / (correction.throughput * max(1, estimate.gpus)) / 3600
        return {"hours": hours + fixed}
    if estimate.hours is None:
        return {}
    hours = estimate.hours * estimate.mfu / correction.throughput + fixed
    changed: dict[str, Any] = {"hours": hours, "mfu": correction.throughput}
    if estimate.dollars is not None and estimate.hours > 0:
        ratio = Decimal(repr(hours / estimate.hours))
        changed["dollars"] = (estimate.dollars * ratio).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
    return changed


def active_profile(choice: str | None = None) -> tuple[Path, Profile] | None:
    """The profile a plan is corrected by: ``choice`` (a path, or ``"none"`` for no profile),
    else the user's active profile where one was written; None where there is none.
    A profile that cannot be read raises :class:`InvalidSpecError` saying what to fix."""
    if choice is not None and choice.strip().lower() == "none":
        return None
    path = Path(choice) if choice is not None else default_profile_path()
    if choice is None and not path.exists():
        return None
    return path, load_profile(path)


def apply(estimate: Estimate, profile: Profile, framework: str = FRAMEWORK) -> Calibrated:
    """``estimate`` corrected by the profile's group for its device (its GPU, or ``cpu``),
    method and framework; the estimate unchanged, and why, where the profile has none."""
    device = estimate.gpu or "cpu"
    key = (device, estimate.method.kind, framework)
    correction = profile.fit.correction(key)
    if correction is None:
        if device not in profile.devices:
            have = ", ".join(profile.devices) or "no device"
            why = f"not calibrated: the profile has no runs on {device} (it has {have})"
        elif key in profile.fit.unfitted:
            why = (
                f"not calibrated: {profile.fit.unfitted[key]} runs of {estimate.method.kind} "
                f"on {device}, fewer than the {profile.fit.min_runs} a fit needs"
            )
        else:
            why = f"not calibrated: the profile has no {estimate.method.kind} runs on {device}"
        return Calibrated(estimate, calibrated=False, label=why)
    breakdown = _corrected_breakdown(estimate, correction)
    changed: dict[str, Any] = {"breakdown": breakdown, **_corrected_time(estimate, correction)}
    if estimate.gpu_memory_bytes is not None:
        changed["fits"] = sum(breakdown.values()) <= estimate.gpu_memory_bytes
    corrected = replace(estimate, **changed)
    if corrected.hours is not None and not math.isfinite(corrected.hours):
        corrected = replace(corrected, hours=None)
    return Calibrated(
        corrected,
        calibrated=True,
        label=_label(correction, profile.error(key)),
        warnings=tuple(_extrapolation(estimate, correction)),
    )
