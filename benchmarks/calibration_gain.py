"""Does calibrating from one sweep predict another sweep better? Before vs after, one table.

    python benchmarks/calibration_gain.py [--workdir DIR] [--trials 8] [--steps 30] [--min-runs 2]

Runs two short demo sweeps on the CPU with different seeds and search points (LoRA and
freeze; ranks, micro-batches and sequence lengths differ), fits a calibration profile on
the first sweep's trials, and predicts the second sweep's: the relative error of the
predicted training time and peak memory, with the planner's defaults (before) and with the
profile (after), per (device, method, framework) group and over all runs. The same runs are
compared in both columns. Before a calibration the planner has no CPU throughput, so
"before" times a CPU run at the nominal ``planner.calibration.CPU_NOMINAL_FLOPS``.

A sweep already complete in ``--workdir`` is reused (the sweep resumes, nothing reruns),
so the figures can be reprinted (use another ``--workdir`` for other ``--steps``). ``--steps``
sets each trial's optimizer steps: at 4 a trial's seconds are mostly its first step's one-off
costs, which no per-step model predicts. No GPU rows are involved.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.calibration import errors_against, fit  # noqa: E402
from sweeps.calibration import runs_from_results  # noqa: E402

SWEEPS = {
    # name: (seed, batches, ranks, max_seq_len)
    "calibrate-from": (0, [2, 8], [2, 8], 64),
    "predict": (1, [4, 16], [4, 16], 48),
}


def _spec(folder: Path, name: str, trials: int, steps: int) -> Path:
    seed, batches, ranks, seq = SWEEPS[name]
    spec = folder / f"{name}.toml"
    spec.write_text(f"""
name = "{name}"
model = "demo"
seed = {seed}
[hardware]
device = "cpu"
usd_per_hour = 0.10
[search]
methods = ["lora", "freeze"]
rank = {ranks}
batch = {batches}
lr = {{ low = 1e-4, high = 1e-2, log = true }}
max_steps = {steps}
[trial]
eval_every = {steps}
max_seq_len = {seq}
[budget]
trials = {trials}
[run]
dir = "{folder / "runs"}"
results = "{folder / f"{name}.duckdb"}"
save = "none"
timeout_s = 600
calibration = "none"  # the sweeps themselves predict with the defaults, whatever is active
""")
    return spec


def _sweep(folder: Path, name: str, trials: int, steps: int) -> Path:
    spec = _spec(folder, name, trials, steps)
    print(f"sweep {name}: {trials} demo trials on the CPU ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "sweep", "run", str(spec)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"sweep {name} failed:\n{done.stdout}\n{done.stderr}")
    return folder / f"{name}.duckdb"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs") / "calibration_gain")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each trial")
    parser.add_argument("--min-runs", type=int, default=2)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)

    first, _ = runs_from_results(_sweep(args.workdir, "calibrate-from", args.trials, args.steps))
    second, _ = runs_from_results(_sweep(args.workdir, "predict", args.trials, args.steps))
    profile = fit(first, args.min_runs)
    groups = errors_against(second, lambda _: profile, args.min_runs)
    overall = errors_against(
        [r for r in second if r.key in {c.key for c in profile.corrections}],
        lambda _: profile,
        1,
    )

    print(
        f"\nfitted on {len(first)} trials of 'calibrate-from', predicting {len(second)} trials "
        "of 'predict' (relative error exp(mean |ln(predicted/measured)|) - 1; time = training seconds)\n"
    )
    header = f"{'group':28s} {'runs':>4s} {'time before':>11s} {'after':>7s} "
    header += f"{'peak before':>11s} {'after':>7s}"
    print(header)
    print("-" * len(header))
    for error in groups:
        name = "/".join(error.key)
        print(
            f"{name:28s} {error.runs:4d} {_cell(error.hours_before):>11s} "
            f"{_cell(error.hours_after):>7s} {_cell(error.memory_before):>11s} "
            f"{_cell(error.memory_after):>7s}"
        )
    runs = sum(e.runs for e in overall)
    time_before = _weighted(overall, "hours_before")
    time_after = _weighted(overall, "hours_after")
    peak_before = _weighted(overall, "memory_before")
    peak_after = _weighted(overall, "memory_after")
    print(
        f"{'all fitted groups':28s} {runs:4d} {_cell(time_before):>11s} {_cell(time_after):>7s} "
        f"{_cell(peak_before):>11s} {_cell(peak_after):>7s}"
    )
    for correction in profile.corrections:
        print(
            f"  {'/'.join(correction.key)}: {correction.throughput / 1e9:.2f} GFLOP/s "
            f"+ {correction.step_overhead_s * 1e3:.2f} ms a step, "
            f"activation scale {correction.activation_scale:.3f}, "
            f"overhead {correction.overhead_bytes / 1e9:.3f} GB "
            f"(from {correction.runs} runs, own weight {correction.memory_weight:.2f})"
            if correction.throughput
            and correction.activation_scale is not None
            and correction.overhead_bytes is not None
            else f"  {'/'.join(correction.key)}: partial fit"
        )
    return 0


def _weighted(errors, name: str) -> float | None:
    pairs = [(getattr(e, name), e.runs) for e in errors if getattr(e, name) is not None]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


if __name__ == "__main__":
    sys.exit(main())
