"""Early stopping on real demo trials: the same sweep with and without it, side by side.

Runs one demo sweep twice through the same Sweep class as `paretune sweep run`: with
`early_stopping = false` (the reference) and with MO-ASHA at rungs min_steps, 3 x min_steps,
... (eta 3). Both draw the same points (random search, same seed; the points do not depend on
what earlier trials measured), so the difference is what stopping does. Prints, for each:
trials complete and pruned, hours and dollars spent, the hypervolume of the complete trials'
frontier (one reference point for both: the worst value of each objective over both runs,
times 1.1) over the three objectives and over quality and forgetting alone, and which trials
were on each frontier. The cost of a demo trial is its wall time, which moves with the load of
the machine: a trial can be on the three-objective frontier of one run only because it ran
while the machine was quieter; the two-objective column is free of that noise, and so is the
count of optimizer steps trained (the hours of two runs differ with the load as well).

    python benchmarks/early_stopping.py [--trials 9] [--steps 36] [--min-steps 4] [--json]

The demo's trials are short and mostly loading (model, data, cached base scores), so the
saving in time is smaller than on real fine-tunes, where training dominates.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.results.frontier import hypervolume, pareto_mask
from sweeps.results.store import ResultsStore
from sweeps.spec import SweepSpec
from sweeps.worker import Sweep

_OBJECTIVES = ("objective_quality", "objective_forgetting", "objective_cost")


def _run(folder: Path, name: str, args: argparse.Namespace, stopping: Any) -> list[dict]:
    spec = SweepSpec.model_validate(
        {
            "name": name,
            "model": "demo",
            "sampler": "random",
            "seed": args.seed,
            "hardware": {"device": "cpu", "usd_per_hour": 0.1},
            "search": {
                "methods": ["lora"],
                "rank": [2, 8],
                "lr": {"low": 1e-4, "high": 0.3, "log": True},
                "max_steps": args.steps,
                "early_stopping": stopping,
            },
            "trial": {"batch": 4, "eval_every": args.steps, "max_seq_len": 64},
            "budget": {"trials": args.trials},
            "run": {
                "dir": str(folder / "runs"),
                "results": str(folder / "results.duckdb"),
                "save": "none",
            },
        }
    )
    Sweep.open(spec).run()
    return ResultsStore(folder / "results.duckdb").trials(name)


def _front_volume(points: list[list[float]], reference: list[float]) -> float:
    if not points:
        return 0.0
    mask = pareto_mask(points)
    return hypervolume([p for p, m in zip(points, mask, strict=True) if m], reference)


def _summary(rows: list[dict], reference: list[float]) -> dict[str, Any]:
    complete = [r for r in rows if r["state"] == "complete"]
    points = [[r[c] for c in _OBJECTIVES] for r in complete]
    mask = pareto_mask(points) if points else []
    return {
        "complete": len(complete),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "stopped_at": [r["stopped_at_step"] for r in rows if r["state"] == "pruned"],
        "steps": sum((r["steps_done"] or 0) for r in rows),
        "hours": sum((r["wall_s"] or 0.0) for r in rows) / 3600,
        "dollars": sum((r["dollars"] or 0.0) for r in rows),
        "hypervolume": _front_volume(points, reference),
        "hypervolume_quality_forgetting": _front_volume([p[:2] for p in points], reference[:2]),
        "frontier": [r["number"] for r, m in zip(complete, mask, strict=True) if m],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--steps", type=int, default=36, help="max_steps of every trial")
    parser.add_argument("--min-steps", type=int, default=4, help="the first rung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="paretune-early-stopping-"))
    runs = {
        "no early stopping": _run(folder, "off", args, False),
        "mo-asha (eta 3)": _run(
            folder, "on", args, {"method": "mo-asha", "eta": 3, "min_steps": args.min_steps}
        ),
    }
    every = [
        [r[c] for c in _OBJECTIVES]
        for rows in runs.values()
        for r in rows
        if r["state"] == "complete"
    ]
    reference = [max(column) * 1.1 for column in zip(*every, strict=True)]
    table = {label: _summary(rows, reference) for label, rows in runs.items()}
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{args.trials} demo trials of {args.steps} steps, rungs from step {args.min_steps}")
    print(
        f"{'':20} {'complete':>8} {'pruned':>6} {'steps':>6} {'hours':>8} {'dollars':>9} "
        f"{'HV 3 obj.':>10} {'HV qual.+forg.':>15}  frontier"
    )
    for label, row in table.items():
        print(
            f"{label:20} {row['complete']:>8} {row['pruned']:>6} {row['steps']:>6} {row['hours']:>8.4f} "
            f"{row['dollars']:>9.6f} {row['hypervolume']:>10.4g} "
            f"{row['hypervolume_quality_forgetting']:>15.4g}  {row['frontier']}"
        )
    off, on = table["no early stopping"], table["mo-asha (eta 3)"]
    if off["hours"] and off["hypervolume"] and off["hypervolume_quality_forgetting"]:
        print(
            f"early stopping trained {on['steps'] / off['steps']:.0%} of the steps, spent "
            f"{on['hours'] / off['hours']:.0%} of the hours and reached "
            f"{on['hypervolume'] / off['hypervolume']:.0%} of the three-objective hypervolume, "
            f"{on['hypervolume_quality_forgetting'] / off['hypervolume_quality_forgetting']:.0%}"
            " of the quality-forgetting one"
        )


if __name__ == "__main__":
    main()
