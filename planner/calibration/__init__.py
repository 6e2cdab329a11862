"""Calibration: corrections of the planner fitted from measured runs, and applying them.

    from planner.calibration import Run, build_profile, apply, load_profile
    profile = build_profile(runs, min_runs=3)       # fit + leave-one-out errors
    profile.write(path)
    calibrated = apply(estimate, load_profile(path))
    calibrated.estimate, calibrated.label, calibrated.warnings

Pure: nothing here imports torch. The model and its sources are in
:mod:`planner.calibration.fit`.
"""

from planner.calibration.fit import (
    CPU_NOMINAL_FLOPS,
    MIN_RUNS,
    PHYSICAL_TERMS,
    SHORT_LIVED_TERMS,
    Correction,
    Fit,
    GroupError,
    Run,
    default_throughput,
    errors_against,
    fit,
    leave_one_out,
    predicted_seconds,
)
from planner.calibration.profile import (
    FRAMEWORK,
    PROFILE_VERSION,
    Calibrated,
    Profile,
    active_profile,
    apply,
    build_profile,
    default_profile_path,
    load_profile,
)

__all__ = [
    "CPU_NOMINAL_FLOPS",
    "FRAMEWORK",
    "MIN_RUNS",
    "PHYSICAL_TERMS",
    "PROFILE_VERSION",
    "SHORT_LIVED_TERMS",
    "Calibrated",
    "Correction",
    "Fit",
    "GroupError",
    "Profile",
    "Run",
    "active_profile",
    "apply",
    "build_profile",
    "default_profile_path",
    "default_throughput",
    "errors_against",
    "fit",
    "leave_one_out",
    "load_profile",
    "predicted_seconds",
]
