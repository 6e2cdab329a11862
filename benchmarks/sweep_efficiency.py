"""How fast each sampler finds the quality-forgetting-cost frontier of the demo problem.

Prints, for TPE (paretune's default), NSGA-II and random search, the hypervolume reached
after N and 2N trials, averaged over several seeds, side by side; the aim is that TPE reaches
in N trials what random search reaches in 2N.

Real demo trials take seconds each, too slow for many samplers x seeds x trials on a small
machine. So this script first runs every point of a grid of the demo search space ONCE, as
real isolated trials (cached in a JSON file; delete it to re-measure), and then lets each
sampler search that same grid, looking measured results up instead of re-running them. The
samplers see exactly what a real sweep would show them; only the cost of asking twice is
saved. All hypervolumes use one reference point, taken from the whole grid.

    python benchmarks/sweep_efficiency.py [--n 6 8 10 12] [--seeds 20] [--jobs 2] [--cache runs/bench/sweep_grid.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.results.frontier import hypervolume, reference_point
from sweeps.spec import SweepSpec
from sweeps.study import make_sampler, suggest
from sweeps.trial.types import TrialConfig

GRID = {
    "method": ["lora", "dora", "full", "freeze"],
    "rank": [2, 16],  # adapter methods only
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    "max_steps": [4, 12],
}


def grid_points() -> list[dict]:
    points = []
    for method, lr, steps in itertools.product(GRID["method"], GRID["lr"], GRID["max_steps"]):
        ranks = GRID["rank"] if method in ("lora", "dora") else [None]
        for rank in ranks:
            points.append({"method": method, "rank": rank, "lr": lr, "max_steps": steps})
    return points


def key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def measure_grid(cache: Path, jobs: int) -> dict[str, list[float] | None]:
    """Run every grid point once as a real demo trial (cached), ``jobs`` at a time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sweeps.trial.isolation import run_trial_isolated

    table: dict[str, list[float] | None] = json.loads(cache.read_text()) if cache.exists() else {}
    points = [p for p in grid_points() if key(p) not in table]
    if points:
        print(f"measuring {len(points)} real demo trials once (cached in {cache}) ...", flush=True)
    lock = threading.Lock()

    def measure(i: int, point: dict) -> None:
        config = TrialConfig(
            model="demo",
            method=point["method"],
            rank=point["rank"] or 8,
            alpha=2.0 * (point["rank"] or 8),
            lr=point["lr"],
            max_steps=point["max_steps"],
            batch=4,
            max_seq_len=64,
            eval_every=4,
            device="cpu",
            usd_per_hour=0.10,
            save="none",
            run_dir=str(cache.parent / "trials"),
        )
        started = time.perf_counter()
        # One thread per trial process, so `jobs` trials share the cores without oversubscribing.
        result = run_trial_isolated(config, timeout_s=900, env={"OMP_NUM_THREADS": "1"})
        values = None
        if result.state == "complete":
            values = [result.quality.eval_nll, result.forgetting.retain_delta_nll, result.dollars]
        with lock:
            table[key(point)] = values
            print(
                f"  {i + 1}/{len(points)} {point} -> {values} ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(table, indent=1))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda item: measure(*item), enumerate(points)))
    return table


def grid_spec(sampler: str, seed: int, trials: int) -> SweepSpec:
    """The grid as a sweep spec with a budget of ``trials``: the samplers are built by
    ``make_sampler`` and the points drawn by ``suggest``, exactly as a sweep of it would."""
    return SweepSpec(
        name="sweep-efficiency",
        sampler=sampler,
        seed=seed,
        budget={"trials": trials},
        search={
            "methods": GRID["method"],
            "rank": GRID["rank"],
            "lr": GRID["lr"],
            "max_steps": GRID["max_steps"],
        },
    )


def search(sampler_name: str, seed: int, n: int, table: dict) -> list[list[float]]:
    """Run a sampler on the grid for n trials; return the measured objective vectors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = grid_spec(sampler_name, seed, n)
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    found: list[list[float]] = []
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, spec)
        point = {
            "method": params["method"],
            "rank": params.get("rank"),
            "lr": params["lr"],
            "max_steps": params["max_steps"],
        }
        values = table[key(point)]
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values)
            found.append(values)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[12],
        help="trials N, one or more (each sampler also gets 2N)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="real trials measured at once")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/sweep_grid.json"))
    args = parser.parse_args()

    table = measure_grid(args.cache, args.jobs)
    measured = [v for v in table.values() if v is not None]
    reference = reference_point(measured)
    best = hypervolume(measured, reference)
    print(
        f"\ngrid: {len(table)} real demo trials, {len(measured)} complete; "
        f"hypervolume of the whole grid {best:.4g} (reference {reference.round(5).tolist()})"
    )
    print(f"mean hypervolume as a fraction of the whole grid's, over {args.seeds} seeds:\n")
    samplers = ("tpe", "nsga2", "random")
    print(
        f"{'N':>4}"
        + "".join(f"{name + '@N':>10}{name + '@2N':>11}" for name in samplers)
        + f"{'tpe@N / random@2N':>20}"
    )
    for n in args.n:
        results = {}
        for name in samplers:
            results[name] = [
                statistics.mean(
                    hypervolume(search(name, seed, trials, table), reference) / best
                    for seed in range(args.seeds)
                )
                for trials in (n, 2 * n)
            ]
        ratio = results["tpe"][0] / results["random"][1]
        print(
            f"{n:>4}"
            + "".join(f"{results[name][0]:>10.3f}{results[name][1]:>11.3f}" for name in samplers)
            + f"{ratio:>20.3f}"
        )
    print("\naim: TPE at N reaches random search at 2N (ratio >= 1)")


if __name__ == "__main__":
    main()
