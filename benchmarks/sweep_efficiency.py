"""How much each sampler spends to find the quality-forgetting-cost frontier of the demo problem.

The judge of paretune's search: for random search, TPE (the default), NSGA-II and the
cost-aware sampler (``sampler = "cost-aware"``, :mod:`sweeps.cost_aware`) it prints, averaged
over ``--seeds`` seeds:

- hypervolume after N and 2N trials, and the dollars those trials cost;
- hypervolume against cumulative dollars spent: at fractions of what random search spends on
  2N trials (the curve);
- the dollars each needs to reach random search's final hypervolume at 2N trials, as a
  fraction of random's dollars, and how many seeds reach it within 4N trials. The aim is
  <= 50% for the default.

``--json`` prints the same table as JSON, to compare across changes.

Real demo trials take seconds each, too slow for many samplers x seeds x trials on a small
machine. So this script first runs every point of a grid of the demo search space ONCE, as
real isolated trials (cached in a JSON file; delete it to re-measure), and then lets each
sampler search that same grid, looking measured results up instead of re-running them. The
samplers see exactly what a real sweep would show them; only the cost of asking twice is
saved. All hypervolumes use one reference point, taken from the whole grid.

The cache keeps, per trial, its objectives, its measured dollars and its rungs: at every
logged eval (every 4 steps) the eval NLL, a forgetting estimate where the trial's step log has
one, and the dollars spent up to that step. So early stopping can be simulated on the same
grid: ``search(..., stopping=policy)`` asks ``policy(step, at_rung, this)`` at each rung a
trial reaches (``at_rung``: the rung records of the trials before it that reached that step,
``this``: its own), and a trial the policy stops is told to the sampler as pruned and costs
its rung's dollars. ``--early-stopping asha`` runs a simple placeholder (successive halving
on eval NLL, eta = 4); a multi-objective policy plugs in the same way.

Syne Tune's MO-ASHA joins the table with ``--moasha-python VENV/bin/python``: syne-tune
(0.16.0 installs) is not a dependency of paretune, so ``sweep_efficiency_moasha.py`` runs in a
virtual environment of its own, drives ``MOASHA`` over this cache's rung records (its fidelity
the step of the grid's longest trials) and prints its trials back as JSON.

    python benchmarks/sweep_efficiency.py [--n 12] [--seeds 20] [--jobs 2] [--json]
        [--samplers random tpe nsga2 cost-aware] [--early-stopping asha] [--first-seed 0]
        [--moasha-python VENV/bin/python]
        [--cache runs/bench/sweep_grid.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.results.frontier import hypervolume, reference_point
from sweeps.spec import SweepSpec
from sweeps.study import make_sampler, suggest
from sweeps.trial.types import TrialConfig

GRID = {
    "method": ["lora", "dora", "full", "freeze"],
    "rank": [2, 16],  # adapter methods only
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    # Lengths a factor 4 apart: the rungs of successive halving with eta = 4, and a spread of
    # costs (the shortest trial is mostly loading and scoring, the longest mostly training).
    "max_steps": [4, 16, 64],
}
EVAL_EVERY = 4
"""Eval NLL is logged every 4 steps: every rung (4, 16, 64) has one."""
USD_PER_HOUR = 0.10
CACHE_FORMAT = 2
"""2: one record per trial with its objectives and its rungs (a list of 3 floats was 1)."""


def grid_points() -> list[dict]:
    points = []
    for method, lr, steps in itertools.product(GRID["method"], GRID["lr"], GRID["max_steps"]):
        ranks = GRID["rank"] if method in ("lora", "dora") else [None]
        for rank in ranks:
            points.append({"method": method, "rank": rank, "lr": lr, "max_steps": steps})
    return points


def key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def rung_records(result: Any) -> list[dict[str, Any]]:
    """Per logged eval step of a finished trial: the step, its eval NLL, a forgetting estimate
    where the step log has one, and the dollars spent up to it.

    The dollars so far are the trial's price per second times its loading time plus the share
    of its training time (intermediate evals included) up to that step; each step's share is
    taken from its logged throughput (steps process equal tokens, so a step takes 1/tokens_per_s
    of them). The final scoring (forgetting, exact match) is not in a rung's cost: a trial
    stopped at a rung skips it. Step logs do not carry a forgetting estimate yet, so
    ``retain_delta_nll`` is None until trials score one at their rungs."""
    measured = result.measured
    wall, load, final = measured.wall_s or 0.0, measured.load_s or 0.0, measured.eval_s or 0.0
    per_s = (result.dollars or 0.0) / wall if wall else 0.0
    training = max(wall - load - final, 0.0)
    weights = [1.0 / s.tokens_per_s if s.tokens_per_s > 0 else 0.0 for s in result.steps]
    total = sum(weights) or 1.0
    records, done = [], 0.0
    for step, weight in zip(result.steps, weights, strict=True):
        done += weight
        if step.eval_nll is None:
            continue
        records.append(
            {
                "step": step.step,
                "eval_nll": step.eval_nll,
                "retain_delta_nll": getattr(step, "retain_delta_nll", None),
                "dollars": per_s * (load + training * done / total),
            }
        )
    return records


def trial_record(result: Any) -> dict[str, Any]:
    """What the cache keeps of one real trial."""
    values = None
    if result.state == "complete":
        values = [result.quality.eval_nll, result.forgetting.retain_delta_nll, result.dollars]
    return {
        "state": str(result.state),
        "values": values,
        "dollars": result.dollars,
        "rungs": rung_records(result) if values is not None else [],
        "seconds": {
            "wall": result.measured.wall_s,
            "load": result.measured.load_s,
            "train": result.measured.train_s,
            "final_eval": result.measured.eval_s,
        },
    }


def load_cache(cache: Path) -> dict[str, dict[str, Any]]:
    """The cached trials by point; a cache of another format or grid is measured anew."""
    if not cache.exists():
        return {}
    raw = json.loads(cache.read_text())
    if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or raw.get("grid") != GRID:
        print(f"{cache} holds another grid or format: measuring anew", flush=True)
        return {}
    return dict(raw["trials"])


def measure_grid(cache: Path, jobs: int) -> dict[str, dict[str, Any]]:
    """Run every grid point once as a real demo trial (cached), ``jobs`` at a time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sweeps.trial.isolation import run_trial_isolated

    table = load_cache(cache)
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
            eval_every=EVAL_EVERY,
            device="cpu",
            usd_per_hour=USD_PER_HOUR,
            save="none",
            run_dir=str(cache.parent / "trials"),
        )
        started = time.perf_counter()
        # One thread per trial process, so `jobs` trials share the cores without oversubscribing.
        result = run_trial_isolated(config, timeout_s=900, env={"OMP_NUM_THREADS": "1"})
        record = trial_record(result)
        with lock:
            table[key(point)] = record
            print(
                f"  {i + 1}/{len(points)} {point} -> {record['values']} "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(
                json.dumps({"format": CACHE_FORMAT, "grid": GRID, "trials": table}, indent=1)
            )

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
        hardware={"device": "cpu", "usd_per_hour": USD_PER_HOUR},
        trial={"batch": 4, "max_seq_len": 64, "eval_every": EVAL_EVERY},
        search={
            "methods": GRID["method"],
            "rank": GRID["rank"],
            "lr": GRID["lr"],
            "max_steps": GRID["max_steps"],
        },
    )


Stopping = Callable[[int, list[dict[str, Any]], dict[str, Any]], bool]
"""An early-stopping policy: ``policy(step, at_rung, this)`` -> continue the trial?"""


def asha_eval_nll(eta: int = 4) -> Stopping:
    """A placeholder policy: successive halving on eval NLL alone (rungs 4, 16, ... steps). A
    trial continues past a rung while it is in the best 1/eta of the trials that reached it
    (the first eta - 1 to reach a rung all continue)."""

    def policy(step: int, at_rung: list[dict[str, Any]], this: dict[str, Any]) -> bool:
        if step not in RUNGS or len(at_rung) < eta - 1:
            return True
        better = sum(other["eval_nll"] < this["eval_nll"] for other in at_rung)
        return better < max(1, (len(at_rung) + 1) // eta)

    return policy


RUNGS = (4, 16)
"""The steps at which a longer trial may be stopped (eta = 4 below the longest, 64)."""


@dataclass
class Run:
    """One sampler's search of the grid: per trial asked, its values (None: failed or
    stopped) and its dollars."""

    values: list[list[float] | None]
    dollars: list[float]

    def hypervolume_curve(self, reference: Any) -> list[float]:
        """The hypervolume after each trial."""
        curve, found = [], []
        for values in self.values:
            if values is not None:
                found.append(values)
            curve.append(hypervolume(found, reference) if found else 0.0)
        return curve


def search(
    sampler_name: str, seed: int, n: int, table: dict, stopping: Stopping | None = None
) -> Run:
    """Run a sampler on the grid for n trials, with an early-stopping policy if given."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = grid_spec(sampler_name, seed, n)
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    run = Run([], [])
    rungs_seen: dict[int, list[dict[str, Any]]] = {}
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, spec)
        point = {
            "method": params["method"],
            "rank": params.get("rank"),
            "lr": params["lr"],
            "max_steps": params["max_steps"],
        }
        record = table[key(point)]
        values, dollars = record["values"], record["dollars"] or 0.0
        if values is not None and stopping is not None:
            for rung in record["rungs"]:
                if rung["step"] >= point["max_steps"] or rung["step"] not in RUNGS:
                    continue
                go_on = stopping(rung["step"], rungs_seen.get(rung["step"], []), rung)
                rungs_seen.setdefault(rung["step"], []).append(rung)
                if not go_on:
                    values, dollars = None, rung["dollars"]
                    break
        if values is not None:
            study.tell(trial, values)
        elif record["values"] is not None:  # stopped at a rung
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        run.values.append(values)
        run.dollars.append(dollars)
    return run


def summarise(
    runs: dict[str, list[Run]], n: int, reference: Any, best: float
) -> dict[str, dict[str, Any]]:
    """Per sampler: hypervolume and dollars at N and 2N trials, hypervolume at fractions of
    random's 2N dollars, and the dollars to reach random's hypervolume at 2N."""
    curves = {
        name: [[h / best for h in run.hypervolume_curve(reference)] for run in rs]
        for name, rs in runs.items()
    }
    spent = {
        name: [list(itertools.accumulate(run.dollars)) for run in rs] for name, rs in runs.items()
    }
    random_2n_dollars = statistics.mean(d[2 * n - 1] for d in spent["random"])
    target = statistics.mean(c[2 * n - 1] for c in curves["random"])
    table: dict[str, dict[str, Any]] = {}
    for name in runs:
        row: dict[str, Any] = {
            "hv@N": statistics.mean(c[n - 1] for c in curves[name]),
            "hv@2N": statistics.mean(c[2 * n - 1] for c in curves[name]),
            "$@N": statistics.mean(d[n - 1] for d in spent[name]),
            "$@2N": statistics.mean(d[2 * n - 1] for d in spent[name]),
        }
        for fraction in CURVE_FRACTIONS:
            budget = fraction * random_2n_dollars
            row[f"hv@{fraction:g}$"] = statistics.mean(
                _at_budget(c, d, budget) for c, d in zip(curves[name], spent[name], strict=True)
            )
        reach = [
            _dollars_to_reach(c, d, target) for c, d in zip(curves[name], spent[name], strict=True)
        ]
        reached = [r for r in reach if r is not None]
        row["reached"] = f"{len(reached)}/{len(reach)}"
        # Seeds that never reach it count as infinitely expensive: the median is honest.
        ordered = sorted(r if r is not None else math.inf for r in reach)
        row["$ to reach / random $@2N"] = ordered[len(ordered) // 2] / random_2n_dollars
        table[name] = row
    return table


def moasha_runs(python: Path, cache: Path, trials: int, seeds: range) -> list[Run]:
    """Syne Tune's MO-ASHA on the grid, run by ``python`` (a virtual environment of its own)."""
    import subprocess

    script = Path(__file__).with_name("sweep_efficiency_moasha.py")
    done = subprocess.run(
        [str(python), str(script), str(cache), str(trials), *map(str, seeds)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"MO-ASHA did not run with {python}:\n{done.stderr[-2000:]}")
    found = json.loads(done.stdout)
    return [Run([v for v, _ in found[str(s)]], [d or 0.0 for _, d in found[str(s)]]) for s in seeds]


CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.5)
"""Dollar budgets of the curve, as fractions of random search's mean spend on 2N trials."""


def _at_budget(curve: list[float], spent: list[float], budget: float) -> float:
    """The hypervolume of the trials paid for within ``budget``."""
    reached = 0.0
    for hv, dollars in zip(curve, spent, strict=True):
        if dollars > budget:
            break
        reached = hv
    return reached


def _dollars_to_reach(curve: list[float], spent: list[float], target: float) -> float | None:
    for hv, dollars in zip(curve, spent, strict=True):
        if hv >= target - 1e-12:
            return dollars
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=12, help="trials N (each sampler runs 4N)")
    parser.add_argument("--jobs", type=int, default=2, help="real trials measured at once")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed, ... (another set: held out)"
    )
    parser.add_argument("--samplers", nargs="+", default=["random", "tpe", "nsga2", "cost-aware"])
    parser.add_argument("--early-stopping", choices=["asha"], default=None)
    parser.add_argument(
        "--moasha-python",
        type=Path,
        default=None,
        help="a Python with syne-tune installed: adds Syne Tune's MO-ASHA "
        "(benchmarks/sweep_efficiency_moasha.py) on the same grid and seeds",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/sweep_grid.json"))
    args = parser.parse_args()
    samplers = list(dict.fromkeys(["random", *args.samplers]))

    table = measure_grid(args.cache, args.jobs)
    measured = [r["values"] for r in table.values() if r["values"] is not None]
    reference = reference_point(measured)
    best = hypervolume(measured, reference)
    runs: dict[str, list[Run]] = {}
    for name in samplers:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        runs[name] = [search(name, seed, 4 * args.n, table) for seed in seeds]
        if args.early_stopping and name != "random":
            runs[f"{name}+asha"] = [
                search(name, seed, 4 * args.n, table, asha_eval_nll()) for seed in range(args.seeds)
            ]
    if args.moasha_python is not None:
        runs["moasha"] = moasha_runs(args.moasha_python, args.cache, 4 * args.n, seeds)
    result = summarise(runs, args.n, reference, best)
    if args.json:
        print(
            json.dumps(
                {
                    "n": args.n,
                    "seeds": args.seeds,
                    "first_seed": args.first_seed,
                    "grid": len(table),
                    "table": result,
                },
                indent=1,
            )
        )
        return
    costs = [r["dollars"] for r in table.values() if r["dollars"]]
    print(
        f"\ngrid: {len(table)} real demo trials, {len(measured)} complete, ${min(costs):.6f} to "
        f"${max(costs):.6f} each; hypervolume of the whole grid {best:.4g}"
    )
    print(
        f"means over {args.seeds} seeds, N = {args.n}; hypervolume as a fraction of the whole "
        "grid's; $ in dollars (x 1e-3)\n"
    )
    columns = [
        "hv@N",
        "hv@2N",
        "$@N",
        "$@2N",
        *[f"hv@{f:g}$" for f in CURVE_FRACTIONS],
        "reached",
        "$ to reach / random $@2N",
    ]
    print(f"{'sampler':<16}" + "".join(f"{c:>10}" for c in columns[:-1]) + f"{columns[-1]:>26}")
    for name, row in result.items():
        cells = []
        for c in columns:
            value = row[c]
            if c.startswith("$@"):
                cells.append(f"{value * 1e3:>10.3f}")
            elif isinstance(value, str):
                cells.append(f"{value:>10}")
            elif c == columns[-1]:
                cells.append(f"{value:>26.2f}")
            else:
                cells.append(f"{value:>10.3f}")
        print(f"{name:<16}" + "".join(cells))
    print(
        "\nhv@f$: hypervolume of the trials paid for within f x random's dollars at 2N trials.\n"
        "reached: seeds reaching random's mean hypervolume at 2N within 4N trials; the last\n"
        "column is the median dollars that took, over random's dollars at 2N (inf: most seeds\n"
        "never did). Aim: <= 0.50 for the default."
    )


if __name__ == "__main__":
    main()
