"""How much each sampler spends to find the quality-forgetting-cost frontier of a grid of trials.

The judge of paretune's search: for random search, TPE, NSGA-II and the cost-aware sampler
(:mod:`sweeps.cost_aware`) without early stopping, for TPE and the cost-aware sampler with the
default early stopping (:mod:`sweeps.early_stopping`), the default sweep among them, and for
Syne Tune's MO-ASHA where it is installed, it prints, averaged over ``--seeds`` seeds:

- hypervolume after N and 2N trials, and the dollars those trials cost;
- hypervolume against cumulative dollars spent: at fractions of what random search spends on
  2N trials (the curve; every row but random's runs past 4N trials, up to the grid's size,
  until it has spent the curve's largest budget, so a cheap row is not cut short by a count);
- the dollars each needs to reach random search's final hypervolume at 2N trials, as a
  fraction of random's dollars, and how many seeds reach it in their run. The aim is
  <= 50% for the default.

``--json`` prints the same table as JSON, to compare across changes.

Real demo trials take seconds each, too slow for many samplers x seeds x trials on a small
machine. So this script first runs every point of a grid of the demo search space ONCE, as
real isolated trials (cached in a JSON file; delete it to re-measure), and then lets each
sampler search that same grid, looking measured results up instead of re-running them. The
samplers see exactly what a real sweep would show them; only the cost of asking twice is
saved. All hypervolumes use one reference point, taken from the whole grid.

The cache keeps, per trial, its objectives, its measured dollars and its rungs. Every trial
is measured with the rungs a default sweep of the grid gives it (``[search.early_stopping]``
not set: eta 3, first rung at 10 steps, so steps 10 and 30, and 90 for the longer trials) and
reports at each what a sweep's trial reports (``RungReport``): its eval NLL, the forgetting
estimate on the first 32 rows of the retain source (retain_delta_nll), the dollars spent
since it started and those projected to its last step; it is always told to go on. So early
stopping is simulated on the same grid exactly as a default sweep applies it: at each rung
``sweeps.early_stopping.rung_decision`` on the reports of the earlier trials of the same
max_steps that reached it and of the frontier's complete trials there; a trial it stops is
told to the sampler as pruned and costs its rung's real dollars. Rows ``SAMPLER+es``
(``--early-stopping``, by default tpe and cost-aware) are those sweeps; the default
sampler's is the default sweep. The rows without it pay for the rung scoring too (32 retain
rows at 2-3 rungs; not measured apart).

``--model own`` measures a second grid (its own cache) on a user's own checkpoint instead of
the demo: a tiny Qwen2 with random weights and a tokenizer trained here, on a small
arithmetic task (:func:`own_model`), to check the result is not specific to the demo.

Syne Tune's MO-ASHA joins the table with ``--moasha-python VENV/bin/python``: syne-tune
(0.16.0 installs) is not a dependency of paretune, so ``sweep_efficiency_moasha.py`` runs in a
virtual environment of its own, drives ``MOASHA`` over this cache's rung records (its fidelity
the step of the grid's longest trials) and prints its trials back as JSON.

    python benchmarks/sweep_efficiency.py [--n 12] [--seeds 20] [--jobs 2] [--json]
        [--samplers random tpe nsga2 cost-aware] [--early-stopping tpe cost-aware]
        [--first-seed 0] [--model demo|own] [--moasha-python VENV/bin/python] [--cost-alpha A]
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
    # Long enough that a default sweep of the grid stops trials early: the spec's default rungs
    # (eta 3, the first at max(10, shortest / 9) steps) are 10 and 30 for every trial, and 90
    # for the longest; and a spread of costs.
    "max_steps": [32, 64, 128],
}
OWN_GRID = {
    "method": ["lora", "dora", "full", "freeze"],
    "rank": [8],
    "lr": [1e-4, 1e-3, 3e-3, 1e-2, 3e-2],  # random weights learn at higher rates
    "max_steps": [32, 64, 128],
}
"""``--model own``: a small local checkpoint of a real architecture (see :func:`own_model`)."""
EVAL_EVERY = 32
"""Eval NLL every 32 steps besides the rungs' (every trial scores at its rungs anyway)."""
USD_PER_HOUR = 0.10
CACHE_FORMAT = 4
"""4: the rung reports carry the trial's projected cost at its last step; 3: each trial's rungs are its real rung reports (eval NLL, the retain-subset forgetting
estimate, the dollars so far) at the default early stopping's rungs; 2 had its logged evals
and no forgetting estimate; 1 was a list of 3 floats."""


def grid_of(model: str) -> dict[str, list]:
    return OWN_GRID if model == "own" else GRID


def grid_points(grid: dict[str, list] = GRID) -> list[dict]:
    points = []
    for method, lr, steps in itertools.product(grid["method"], grid["lr"], grid["max_steps"]):
        ranks = grid["rank"] if method in ("lora", "dora") else [None]
        for rank in ranks:
            points.append({"method": method, "rank": rank, "lr": lr, "max_steps": steps})
    return points


def key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def trial_record(result: Any, rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the cache keeps of one real trial: its objectives, dollars and the rung reports it
    made on its way (``RungReport`` as JSON: step, eval NLL, the forgetting estimate on the
    retain subset, wall seconds and dollars so far)."""
    values = None
    if result.state == "complete":
        values = [result.quality.eval_nll, result.forgetting.retain_delta_nll, result.dollars]
    return {
        "state": str(result.state),
        "values": values,
        "dollars": result.dollars,
        "rungs": rungs if values is not None else [],
        "seconds": {
            "wall": result.measured.wall_s,
            "load": result.measured.load_s,
            "train": result.measured.train_s,
            "final_eval": result.measured.eval_s,
        },
    }


def own_model(root: Path) -> dict[str, str]:
    """The test suite's own checkpoint (``tests/own_checkpoint.py``), built once under
    ``root``; the TrialConfig's model/train/eval paths."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from own_checkpoint import build_own_checkpoint

    return build_own_checkpoint(root)


def load_cache(cache: Path, model: str) -> dict[str, dict[str, Any]]:
    """The cached trials by point; a cache of another format, model or grid is measured anew."""
    if not cache.exists():
        return {}
    raw = json.loads(cache.read_text())
    if (
        not isinstance(raw, dict)
        or raw.get("format") != CACHE_FORMAT
        or raw.get("grid") != grid_of(model)
        or raw.get("model", "demo") != model
    ):
        print(f"{cache} holds another grid, model or format: measuring anew", flush=True)
        return {}
    return dict(raw["trials"])


def measure_grid(cache: Path, jobs: int, model: str = "demo") -> dict[str, dict[str, Any]]:
    """Run every grid point once as a real trial (cached), ``jobs`` at a time, with the rungs
    of a default sweep of the grid: at each one the trial reports as in a sweep (eval NLL, the
    forgetting estimate on the retain subset, dollars so far) and is told to go on."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sweeps.trial.isolation import run_trial_isolated

    grid = grid_of(model)
    stopping = grid_spec("random", 0, 1, model).early_stopping()
    assert stopping is not None and stopping.min_steps is not None
    if model == "own":
        data = own_model(cache.parent / "own-model")
    else:
        from sweeps.trial.demo import ensure_demo

        # Built once, before the first trial: its build is not the first point's cost.
        ensure_demo()
        data = {"model": "demo"}
    table = load_cache(cache, model)
    points = [p for p in grid_points(grid) if key(p) not in table]
    if points:
        print(
            f"measuring {len(points)} real {model} trials once (cached in {cache}) ...", flush=True
        )
    lock = threading.Lock()

    def measure(i: int, point: dict) -> None:
        config = TrialConfig(
            **data,
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
            rung_min_steps=stopping.min_steps,
            rung_eta=stopping.eta,
            rung_retain_rows=stopping.retain_rows,
        )
        reports: list[dict[str, Any]] = []

        def at_rung(report: Any) -> bool:
            reports.append(report.model_dump(mode="json"))
            return True

        started = time.perf_counter()
        # One thread per trial process, so `jobs` trials share the cores without oversubscribing.
        result = run_trial_isolated(
            config, timeout_s=900, env={"OMP_NUM_THREADS": "1"}, on_rung=at_rung
        )
        record = trial_record(result, reports)
        with lock:
            table[key(point)] = record
            print(
                f"  {i + 1}/{len(points)} {point} -> {record['values']} "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(
                json.dumps(
                    {
                        "format": CACHE_FORMAT,
                        "model": model,
                        "grid": grid,
                        "early_stopping": stopping.model_dump(),
                        "trials": table,
                    },
                    indent=1,
                )
            )

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda item: measure(*item), enumerate(points)))
    return table


def grid_spec(sampler: str, seed: int, trials: int, model: str = "demo") -> SweepSpec:
    """The grid as a sweep spec with a budget of ``trials``: the samplers are built by
    ``make_sampler`` and the points drawn by ``suggest``, exactly as a sweep of it would, and
    its ``early_stopping()`` is the default sweep's (no ``[search.early_stopping]`` given)."""
    grid = grid_of(model)
    return SweepSpec(
        name="sweep-efficiency",
        sampler=sampler,
        seed=seed,
        budget={"trials": trials},
        hardware={"device": "cpu", "usd_per_hour": USD_PER_HOUR},
        trial={"batch": 4, "max_seq_len": 64, "eval_every": EVAL_EVERY},
        search={
            "methods": grid["method"],
            "rank": grid["rank"],
            "lr": grid["lr"],
            "max_steps": grid["max_steps"],
        },
    )


def rung_point(rung: dict[str, Any]) -> list[float | None]:
    """A rung report as the default objectives, minimised, as the sweep's worker reads it:
    eval NLL, the forgetting estimate (retain_delta_nll, else retain_kl) and the dollars at
    the last step at the trial's pace so far."""
    forgetting = rung.get("retain_delta_nll")
    if forgetting is None:
        forgetting = rung.get("retain_kl")
    return [rung["eval_nll"], forgetting, rung.get("projected_dollars") or rung["dollars"]]


def _decide(point: list, others: list[list], frontier: list[list], eta: int) -> bool:
    """``sweeps.early_stopping.rung_decision`` on the objectives every point has (the worker
    leaves out one that some trial has no rung value for)."""
    from sweeps.early_stopping import rung_decision

    everyone = [point, *others, *frontier]
    kept = [m for m in range(3) if all(p[m] is not None for p in everyone)]

    def vector(p: list) -> list[float]:
        return [float(p[m]) for m in kept]

    return rung_decision(
        vector(point), [vector(p) for p in others], eta=eta, frontier=[vector(p) for p in frontier]
    ).continues


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
    sampler_name: str,
    seed: int,
    n: int,
    table: dict,
    *,
    early_stopping: bool = False,
    model: str = "demo",
    spend: float = 0.0,
) -> Run:
    """Run a sampler on the grid for n trials; with ``early_stopping``, as a default sweep of
    the grid stops trials: at each rung, ``sweeps.early_stopping.rung_decision`` on the rung
    reports of every earlier trial that reached it, with the frontier of the complete trials,
    and the default spec's eta. A stopped trial is told to the sampler as pruned and costs its
    rung's dollars. After the n trials it goes on (up to the grid's size) until it has spent
    ``spend`` dollars: every row is compared at every dollar budget of the curve."""
    import optuna

    from sweeps.early_stopping import same_schedule
    from sweeps.results.frontier import pareto_mask

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = grid_spec(sampler_name, seed, n, model)
    stopping = spec.early_stopping() if early_stopping else None
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    run = Run([], [])
    # step -> (max_steps, rung point) of the trials there: as the sweep's worker, a rung
    # compares the trials of like schedules (sweeps.early_stopping.same_schedule).
    at_rung: dict[int, list[tuple[int | None, list[float | None]]]] = {}
    complete: list[tuple[list[float], dict[int, tuple[int | None, list[float | None]]]]] = []
    adapter_rank = grid_of(model)["rank"][0]  # a rank of one value is not a parameter
    while len(run.values) < n or (sum(run.dollars) < spend and len(run.values) < len(table)):
        trial = study.ask()
        params = suggest(trial, spec)
        adapter = params["method"] in ("lora", "dora")
        point = {
            "method": params["method"],
            "rank": params.get("rank", adapter_rank) if adapter else None,
            "lr": params["lr"],
            "max_steps": params["max_steps"],
        }
        record = table[key(point)]
        values, dollars = record["values"], record["dollars"] or 0.0
        if values is not None and stopping is not None:
            on_front = pareto_mask([v for v, _ in complete]) if complete else []
            for rung in record["rungs"]:
                step, length, this = rung["step"], rung.get("max_steps"), rung_point(rung)
                frontier = [
                    rungs[step][1]
                    for (_, rungs), front in zip(complete, on_front, strict=True)
                    if front
                    and step in rungs
                    and same_schedule(length, rungs[step][0], stopping.eta)
                ]
                others = [
                    p for m, p in at_rung.get(step, []) if same_schedule(length, m, stopping.eta)
                ]
                go_on = _decide(this, others, frontier, stopping.eta)
                at_rung.setdefault(step, []).append((length, this))
                if not go_on:
                    values, dollars = None, rung["dollars"]
                    break
        if values is not None:
            study.tell(trial, values)
            complete.append(
                (values, {r["step"]: (r.get("max_steps"), rung_point(r)) for r in record["rungs"]})
            )
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
            # Share of the first 2N trials without values: stopped at a rung (the grid's
            # trials all complete when run to the end).
            "stop@2N": statistics.mean(
                sum(v is None for v in run.values[: 2 * n]) / (2 * n) for run in runs[name]
            ),
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
    parser.add_argument(
        "--n", type=int, default=12, help="trials N (each sampler runs at least 4N)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="real trials measured at once")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed, ... (another set: held out)"
    )
    parser.add_argument("--samplers", nargs="+", default=["random", "tpe", "nsga2", "cost-aware"])
    parser.add_argument(
        "--early-stopping",
        nargs="*",
        default=["tpe", "cost-aware"],
        metavar="SAMPLER",
        help="samplers also run with the default early stopping, as rows SAMPLER+es (the "
        "default sampler's is the default sweep); none: --early-stopping with no name",
    )
    parser.add_argument(
        "--model",
        choices=["demo", "own"],
        default="demo",
        help="demo: the bundled demo; own: a small local checkpoint of a real architecture "
        "(random weights, its own tokenizer), built under the cache's folder",
    )
    parser.add_argument(
        "--moasha-python",
        type=Path,
        default=None,
        help="a Python with syne-tune installed: adds Syne Tune's MO-ASHA "
        "(benchmarks/sweep_efficiency_moasha.py) on the same grid and seeds",
    )
    parser.add_argument(
        "--cost-alpha",
        type=float,
        default=None,
        help="the cost-aware sampler's starting cost exponent (sweeps.cost_aware._ALPHA), for "
        "an ablation; 0 is TPE with the cost-aware sampler's random startup",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="the grid's trials (default runs/bench/sweep_grid.json, sweep_grid_own.json)",
    )
    args = parser.parse_args()
    samplers = list(dict.fromkeys(["random", *args.samplers]))
    cache = args.cache or Path(
        "runs/bench/sweep_grid.json" if args.model == "demo" else "runs/bench/sweep_grid_own.json"
    )

    if args.cost_alpha is not None:
        import sweeps.cost_aware

        sweeps.cost_aware._ALPHA = args.cost_alpha
    table = measure_grid(cache, args.jobs, args.model)
    measured = [r["values"] for r in table.values() if r["values"] is not None]
    reference = reference_point(measured)
    best = hypervolume(measured, reference)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    n = 4 * args.n
    runs = {"random": [search("random", seed, n, table, model=args.model) for seed in seeds]}
    # Every other row runs on until it has spent the curve's largest budget.
    spend = max(CURVE_FRACTIONS) * statistics.mean(
        sum(r.dollars[: 2 * args.n]) for r in runs["random"]
    )
    for name in samplers[1:]:
        runs[name] = [search(name, seed, n, table, model=args.model, spend=spend) for seed in seeds]
    for name in args.early_stopping:
        runs[f"{name}+es"] = [
            search(name, seed, n, table, early_stopping=True, model=args.model, spend=spend)
            for seed in seeds
        ]
    if args.moasha_python is not None:
        runs["moasha"] = moasha_runs(args.moasha_python, cache, 12 * args.n, seeds)
    default = f"{SweepSpec.model_fields['sampler'].default}+es"
    result = summarise(runs, args.n, reference, best)
    if args.json:
        print(
            json.dumps(
                {
                    "n": args.n,
                    "seeds": args.seeds,
                    "first_seed": args.first_seed,
                    "model": args.model,
                    "grid": len(table),
                    "default": default,
                    "table": result,
                },
                indent=1,
            )
        )
        return
    costs = [r["dollars"] for r in table.values() if r["dollars"]]
    print(
        f"\ngrid: {len(table)} real {args.model} trials, {len(measured)} complete, ${min(costs):.6f} to "
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
        "stop@2N",
        *[f"hv@{f:g}$" for f in CURVE_FRACTIONS],
        "reached",
        "$ to reach / random $@2N",
    ]
    print(f"{'sampler':<24}" + "".join(f"{c:>10}" for c in columns[:-1]) + f"{columns[-1]:>26}")
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
        label = f"{name} (default)" if name == default else name
        print(f"{label:<24}" + "".join(cells))
    print(
        "\nstop@2N: share of the first 2N trials stopped at a rung.\n"
        "hv@f$: hypervolume of the trials paid for within f x random's dollars at 2N trials.\n"
        "reached: seeds reaching random's mean hypervolume at 2N in their run (4N trials, or\n"
        "more until 1.5x random's dollars at 2N are spent, at most the grid); the last\n"
        "column is the median dollars that took, over random's dollars at 2N (inf: most seeds\n"
        "never did). Aim: <= 0.50 for the default."
    )


if __name__ == "__main__":
    main()
