"""``paretune calibrate``: fit the planner's corrections from measured runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from planner.calibration import GroupError, Profile

__all__ = ["COMMANDS"]

_DEFAULT_DB = Path("runs") / "results.duckdb"


@click.command("calibrate")
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Results file whose complete trials (any study) are fitted "
    "(default: runs/results.duckdb if it exists).",
)
@click.option(
    "--gpu-check",
    "gpu_check",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="JSON lines written by benchmarks/gpu_check.py --out (repeatable).",
)
@click.option(
    "--import",
    "imports",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="CSV or JSON table of runs measured elsewhere (repeatable; columns in the guide).",
)
@click.option(
    "--mlflow",
    "mlflow",
    metavar="URI",
    multiple=True,
    help="Local MLflow store whose runs are read: file:./mlruns (or the folder) or "
    "sqlite:///mlflow.db (repeatable; a sweep's [run] mlflow store gives its trials back).",
)
@click.option(
    "--wandb",
    "wandb",
    type=click.Path(path_type=Path),
    multiple=True,
    help="W&B runs as files: offline run folders (the wandb folder, or one run's), or a "
    "CSV/JSON export of runs with config and summary (repeatable).",
)
@click.option(
    "--min-runs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Fewest runs a (device, method, framework) group is fitted from; smaller groups "
    "keep the planner's defaults.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where the profile is written (default: the active profile in the user config "
    "directory, which `paretune plan` and sweeps read).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def calibrate_command(
    db: Path | None,
    gpu_check: tuple[Path, ...],
    imports: tuple[Path, ...],
    mlflow: tuple[str, ...],
    wandb: tuple[Path, ...],
    min_runs: int,
    out: Path | None,
    output_format: str,
) -> None:
    """Fit the planner's throughput and memory corrections from measured runs.

    Reads the complete trials of a results file, benchmarks/gpu_check.py output, imported
    CSV/JSON runs, and runs from an MLflow store or W&B files; fits per (device, method, framework) group, pooled toward the
    device's estimate where a group has few runs; writes a versioned TOML profile and
    prints each group's leave-one-out error before and after.
    """
    from planner.calibration import build_profile, default_profile_path

    runs, notes = _collect(db, gpu_check, imports, mlflow, wandb)
    profile = build_profile(runs, min_runs)
    target = out or default_profile_path()
    profile.write(target)
    if output_format == "json":
        click.echo(json.dumps(_profile_json(profile, target, notes), indent=2))
        return
    for note in notes:
        click.echo(note)
    _print_table(profile)
    click.echo(f"\nprofile written to {target}")


def _collect(
    db: Path | None,
    gpu_check: tuple[Path, ...],
    imports: tuple[Path, ...],
    mlflow: tuple[str, ...] = (),
    wandb: tuple[Path, ...] = (),
) -> tuple[list[Any], list[str]]:
    from sweeps.calibration import (
        CalibrationInputError,
        runs_from_gpu_check,
        runs_from_import,
        runs_from_results,
    )

    runs: list[Any] = []
    notes: list[str] = []
    if db is None and _DEFAULT_DB.exists():
        db = _DEFAULT_DB
    if db is not None:
        found, skipped = runs_from_results(db)
        runs += found
        notes.append(f"{db}: {len(found)} complete trials")
        if skipped:
            notes.append(
                f"  ({skipped} complete trials left out: run before predictions were "
                "recorded, or predicted for another framework than paretune's trainer)"
            )
    for path in gpu_check:
        found = runs_from_gpu_check(path)
        runs += found
        notes.append(f"{path}: {len(found)} measured rows")
    for path in imports:
        found = runs_from_import(path)
        runs += found
        notes.append(f"{path}: {len(found)} imported runs")
    if mlflow or wandb:
        from sweeps.calibration_trackers import runs_from_mlflow, runs_from_wandb

        for uri in mlflow:
            imported = runs_from_mlflow(uri)
            runs += imported.runs
            notes.append(f"{uri}: {imported.note('MLflow runs')}")
        for folder in wandb:
            imported = runs_from_wandb(folder)
            runs += imported.runs
            notes.append(f"{folder}: {imported.note('W&B runs')}")
    if not runs:
        raise CalibrationInputError(
            "no measured runs to calibrate from"
            + (f" ({'; '.join(notes)})" if notes else " (no results file, no other input)"),
            "Run a sweep or trials first, or give --db, --gpu-check, --import, --mlflow or "
            "--wandb.",
        )
    return runs, notes


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _error_cells(error: GroupError) -> list[str]:
    return [
        _percent(error.memory_before),
        _percent(error.memory_after),
        _percent(error.hours_before),
        _percent(error.hours_after),
    ]


def _print_table(profile: Profile) -> None:
    from tui.cli.plan import _echo_grid

    headers = [
        "device",
        "method",
        "framework",
        "runs",
        "memory before",
        "after",
        "time before",
        "after",
        "throughput",
        "act. scale",
        "overhead GB",
    ]
    rows = []
    for error in profile.errors:
        correction = profile.fit.correction(error.key)
        fitted = ["(defaults: too few runs)", "", ""]
        if correction is not None:
            fitted = [
                _throughput(correction.throughput, correction.on_cpu),
                "-"
                if correction.activation_scale is None
                else f"{correction.activation_scale:.3f}",
                "-"
                if correction.overhead_bytes is None
                else f"{correction.overhead_bytes / 1e9:.3f}",
            ]
        rows.append([*error.key, str(error.runs), *_error_cells(error), *fitted])
    click.echo(
        f"leave-one-out relative error per group, exp(mean |ln(predicted/measured)|) - 1 (min runs {profile.fit.min_runs}); "
        "time is training seconds"
    )
    _echo_grid(headers, rows)


def _throughput(value: float | None, on_cpu: bool) -> str:
    if value is None:
        return "-"
    return f"{value / 1e9:.2f} GFLOP/s" if on_cpu else f"MFU {value:.3f}"


def _profile_json(profile: Profile, target: Path, notes: list[str]) -> dict[str, Any]:
    return {
        "profile": str(target),
        "inputs": notes,
        "min_runs": profile.fit.min_runs,
        "groups": [
            {
                "device": e.key[0],
                "method": e.key[1],
                "framework": e.key[2],
                "runs": e.runs,
                "fitted": e.fitted,
                "memory_error_before": e.memory_before,
                "memory_error_after": e.memory_after,
                "time_error_before": e.hours_before,
                "time_error_after": e.hours_after,
            }
            for e in profile.errors
        ],
    }


COMMANDS = [calibrate_command]


# -- calibrated plans (`paretune plan --calibration`) -----------------------------------


def calibration_option(function: Any) -> Any:
    """The ``--calibration FILE|none`` option of ``paretune plan``."""
    return click.option(
        "--calibration",
        default=None,
        metavar="FILE|none",
        help="Calibration profile applied to the plan (default: the active one written by "
        "`paretune calibrate`, if any); none plans with the defaults.",
    )(function)


def calibrate_plan(
    result: Any, choice: str | None, framework: str = "hf"
) -> tuple[Any, dict[str, Any] | None]:
    """``result`` (a planner Plan) with each row corrected by the chosen profile for
    ``framework``'s runs, and what was done (None: no profile in use)."""
    from dataclasses import replace

    from planner.calibration import active_profile, apply

    active = active_profile(choice)
    if active is None:
        return result, None
    path, profile = active
    rows, methods = [], []
    for row in result.rows:
        calibrated = apply(row.estimate, profile, framework)
        rows.append(replace(row, estimate=calibrated.estimate))
        methods.append({"method": row.estimate.method.kind, **calibrated.to_json()})
    return replace(result, rows=tuple(rows)), {"profile": str(path), "methods": methods}


def print_calibration(notes: dict[str, Any] | None) -> None:
    """The plan table's calibration lines (none without a profile)."""
    if notes is None:
        return
    click.echo(f"\ncalibration profile {notes['profile']}")
    for method in notes["methods"]:
        click.echo(f"  {method['method']}: {method['label']}")
        for warning in method["warnings"]:
            click.echo(f"    ! {warning}")
