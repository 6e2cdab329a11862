"""How long `paretune prices` takes from a cold interpreter, against bare Python.

    python benchmarks/bench_prices_startup.py [--runs 10]

The target is under 0.5 s per call. Each command runs in a fresh interpreter (as a user
would run it); the reference is `python -c pass`, the floor no command can beat, and
`paretune --help`, the cost of the command line itself. Prints the median of each and
the ratio to the reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (reference)": [sys.executable, "-c", "pass"],
    "paretune --help": [sys.executable, "-m", "tui.cli", "--help"],
    "paretune prices --format json": [
        sys.executable,
        "-m",
        "tui.cli",
        "prices",
        "--format",
        "json",
    ],
    "paretune prices (table)": [sys.executable, "-m", "tui.cli", "prices"],
    "paretune prices --gpu H100": [sys.executable, "-m", "tui.cli", "prices", "--gpu", "H100"],
}


def _median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    reference = None
    print(f"{'command':34} {'median s':>9} {'x python':>9}   ({runs} runs each)")
    for name, command in COMMANDS.items():
        seconds = _median_seconds(command, runs)
        reference = reference or seconds
        print(f"{name:34} {seconds:9.3f} {seconds / reference:9.1f}")


if __name__ == "__main__":
    main()
