"""Coordinator overhead per trial on the demo: ask + gate, spawn, tell + write, vs trial time.

Runs a real demo sweep (one worker, tiny trials) through the same Sweep class as
`paretune sweep run`, and prints per trial: seconds in ask + gate (under the study lock),
the isolated run as the parent sees it, the trial's own wall time measured inside the child,
the difference (spawning the child and returning its result), and tell + artifact policy +
results write; then the coordinator's share of the total. Aim: under 5%.

    python benchmarks/sweep_overhead.py [--trials 6] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.spec import SweepSpec
from sweeps.worker import Sweep


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per trial")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="paretune-overhead-"))
    spec = SweepSpec.model_validate(
        {
            "name": "overhead",
            "model": "demo",
            "hardware": {"device": "cpu", "usd_per_hour": 0.1},
            "search": {
                "methods": ["lora", "freeze"],
                "rank": [4, 8],
                "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                "max_steps": args.steps,
            },
            "trial": {"batch": 4, "max_seq_len": 64, "eval_every": args.steps},
            "budget": {"trials": args.trials},
            "run": {
                "dir": str(folder / "runs"),
                "results": str(folder / "results.duckdb"),
                "save": "frontier",
            },
        }
    )
    sweep = Sweep.open(spec)
    sweep.run()
    rows = sweep.timings
    print(
        f"{'trial':>5} {'ask+gate':>9} {'run':>8} {'in-trial':>9} {'spawn+ret':>10} {'tell+write':>11}"
    )
    for i, t in enumerate(rows):
        print(
            f"{i:>5} {t['ask_gate']:>9.3f} {t['run']:>8.2f} {t['trial_wall']:>9.2f} "
            f"{t['run'] - t['trial_wall']:>10.2f} {t['tell_write']:>11.3f}"
        )
    ask = sum(t["ask_gate"] for t in rows)
    tell = sum(t["tell_write"] for t in rows)
    run = sum(t["run"] for t in rows)
    inside = sum(t["trial_wall"] for t in rows)
    spawn = run - inside
    total = ask + tell + run
    print(
        f"\nper trial (mean): ask+gate {ask / len(rows):.3f} s, spawn+return {spawn / len(rows):.2f} s, "
        f"tell+write {tell / len(rows):.3f} s, trial {inside / len(rows):.2f} s"
    )
    print(f"coordinator (ask, gate, tell, write) / total: {(ask + tell) / total:.2%}   (aim < 5%)")
    print(f"coordinator incl. spawn+return / total:       {(ask + tell + spawn) / total:.2%}")
    print(
        f"median trial wall inside the child: {statistics.median(t['trial_wall'] for t in rows):.2f} s"
    )


if __name__ == "__main__":
    main()
