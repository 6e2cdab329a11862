"""A month of sweeps: how the sweep's and the app's operations grow with a study's trials.

Builds one study per storage (an Optuna journal file, and PostgreSQL when it answers) with
the results file beside it, and grows it to each size in turn (100, 1,000, 5,000 trials by
default). The trials are synthetic, no model is trained, but they go through the sweep's own
code: :class:`sweeps.worker.Sweep` asks, gates, runs a stand-in trial runner, tells, records
its rows in the DuckDB results file and decides at each early-stopping rung, so the study's
user attributes, the objectives, the loss curves (one logged step per optimizer step, 50 to
200 a trial) and the rung records have the shape a real sweep gives them. While building, the
points are drawn at random (TPE's ask at each of thousands of trials would take most of the
build); the timed asks use the spec's own TPE sampler.

At each size it times, the median of ``--repeats`` calls (commands run in this process,
after one warm-up call; a new ``paretune`` process adds its start-up, printed once):

- ``ask (TPE) + gate``: a worker's ask under the study lock with the sweep's multi-objective
  TPE sampler (dead-worker check, budget, ``study.ask``, the point, the feasibility gate);
- ``rung decision``: early stopping's decision for a trial at the first rung (every trial of
  the study reached it), reading the other trials' rung records from the storage;
- ``sweep status``, ``frontier`` (terminal chart) and ``frontier --out PNG``;
- ``frontier query``: the results file's ``frontier`` view for the study;
- ``results sync``: the study rebuilt from its storage into the results file;
- ``app: Sweeps screen``: the terminal app (headless) switching to its Sweeps screen, until
  the trials table holds the study's trials.

Then one table: operation by size in seconds, and the growth from one size to the next
(1.0 per 10x is flat; 10 per 10x is linear). Aim: under 1 s at 1,000 trials, no worse than
linear.

    python benchmarks/scale.py                                  # journal + PostgreSQL
    python benchmarks/scale.py --sizes 100,1000 --storages journal --repeats 1

PostgreSQL is ``$PARETUNE_SCALE_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the study there gets a name of its own and
is deleted at the end. Without a server that answers, that storage is skipped with a line
saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POSTGRES_URL = os.environ.get(
    "PARETUNE_SCALE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
USD_PER_HOUR = 2.0
"""The price the synthetic trials are costed at (a mid-range cloud GPU)."""

OPERATIONS = (
    "ask (TPE) + gate",
    "rung decision",
    "sweep status",
    "frontier query",
    "frontier (terminal)",
    "frontier --out PNG",
    "results sync",
    "app: Sweeps screen",
)


def make_spec(name: str, folder: Path, storage: str) -> Any:
    """The demo-like spec of the study: four methods, ranks, learning rates, 50 to 200 steps,
    early stopping at its default rungs (10, 30, 90), costed at :data:`USD_PER_HOUR`."""
    from sweeps.spec import SweepSpec

    return SweepSpec.model_validate(
        {
            "name": name,
            "model": "demo",
            "sampler": "tpe",
            "seed": 0,
            "hardware": {"device": "cpu", "usd_per_hour": USD_PER_HOUR},
            "search": {
                "methods": ["lora", "dora", "full", "freeze"],
                "rank": {"low": 2, "high": 64, "log": True},
                "alpha_ratio": [1.0, 2.0],
                "targets": ["attn", "mlp", "all"],
                "max_steps": {"low": 50, "high": 200, "step": 50},
                "lr": {
                    "lora": {"low": 3e-5, "high": 1e-2, "log": True},
                    "dora": {"low": 3e-5, "high": 1e-2, "log": True},
                    "full": {"low": 3e-6, "high": 1e-3, "log": True},
                    "freeze": {"low": 1e-5, "high": 1e-3, "log": True},
                },
            },
            "trial": {"batch": 8, "eval_every": 25},
            "budget": {"trials": 1_000_000},
            "run": {
                "dir": str(folder / "runs"),
                "results": str(folder / "results.duckdb"),
                "save": "none",
                "storage": storage,
            },
        }
    )


# ---------------------------------------------------------------- synthetic trials


class SyntheticRunner:
    """Stands in for :func:`sweeps.trial.isolation.run_trial_isolated`: a plausible result
    for the config (a loss curve falling with the learning rate, forgetting rising with it
    and the method's reach, cost by steps), every optimizer step logged, each rung reported
    to the sweep (which may stop the trial there). ``rung_times`` gets the seconds of each
    decision at the first rung while ``time_rungs`` is set."""

    def __init__(self) -> None:
        self.time_rungs = False
        self.rung_times: list[float] = []

    def __call__(self, config: Any, *, on_step: Any = None, on_rung: Any = None, **_: Any) -> Any:
        from sweeps.early_stopping import rung_steps
        from sweeps.outcome import Outcome
        from sweeps.trial.types import (
            Forgetting,
            Hardware,
            Measured,
            Quality,
            RungReport,
            StepLog,
            TrialResult,
        )

        rng = random.Random(hash((config.trial_number, config.lr, config.method)))
        reach = {"full": 1.6, "dora": 1.1, "lora": 1.0, "freeze": 0.5}[config.method]
        capacity = (
            reach * (1 + 0.15 * math.log2(config.rank))
            if config.method
            in (
                "lora",
                "dora",
            )
            else reach
        )
        speed = min(config.lr * 2e3 * capacity, 8.0)  # steps to learn ~ 1/lr
        per_step_s = {"full": 1.2, "dora": 0.8, "lora": 0.7, "freeze": 0.4}[config.method]
        max_steps = config.max_steps or 100
        rungs = (
            rung_steps(config.rung_min_steps, config.rung_eta, max_steps)
            if config.rung_min_steps and on_rung is not None
            else []
        )

        def eval_nll(step: int) -> float:
            return 0.6 + 2.4 * math.exp(-speed * step / 60) + rng.gauss(0, 0.02)

        def forgetting(step: int) -> float:
            return max(0.0, reach * config.lr * 40 * step / 100 + rng.gauss(0, 0.005))

        steps, stopped = [], None
        for step in range(1, max_steps + 1):
            scored = step % config.eval_every == 0 or step == max_steps or step in rungs
            log = StepLog(
                step=step,
                epoch=step / 400,
                loss=eval_nll(step) - 0.1 + rng.gauss(0, 0.05),
                lr=config.lr * min(1.0, step / 5),
                tokens_per_s=2000 / per_step_s,
                peak_gb=8 * reach,
                eval_nll=eval_nll(step) if scored else None,
            )
            steps.append(log)
            if on_step is not None:
                on_step(log)
            if step in rungs:
                wall = step * per_step_s
                report = RungReport(
                    step=step,
                    eval_nll=log.eval_nll or eval_nll(step),
                    retain_delta_nll=forgetting(step),
                    retain_rows=32,
                    wall_s=wall,
                    dollars=wall / 3600 * USD_PER_HOUR,
                )
                started = time.perf_counter()
                goes_on = on_rung(report)
                if self.time_rungs and step == rungs[0]:
                    self.rung_times.append(time.perf_counter() - started)
                if not goes_on:
                    stopped = step
                    break
        done = len(steps)
        wall = done * per_step_s + 20.0
        last_eval = next(s.eval_nll for s in reversed(steps) if s.eval_nll is not None)
        return TrialResult(
            state=Outcome.PRUNED if stopped else Outcome.COMPLETE,
            method=config.method,
            params={"lr": config.lr, "rank": config.rank, "max_steps": max_steps},
            quality=Quality(eval_nll=last_eval, base_eval_nll=3.0, best_step=done),
            forgetting=Forgetting(
                retain_delta_nll=None if stopped else forgetting(done), retain_source="demo"
            ),
            measured=Measured(
                peak_gb=8 * reach, wall_s=wall, train_s=done * per_step_s, steps=done
            ),
            dollars=wall / 3600 * USD_PER_HOUR,
            hardware=Hardware(device="cuda", devices=1, usd_per_hour=USD_PER_HOUR),
            steps=steps,
            config=config,
            command=f"paretune trial --method {config.method} --lr {config.lr:.3g}",
            stopped_at_step=stopped,
        )


# ---------------------------------------------------------------- timing helpers


def median_time(call: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli(*args: str) -> None:
    """``paretune ARGS`` in this process; its output swallowed, its failure raised."""
    from click.testing import CliRunner

    from tui.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"paretune {' '.join(args)} exited {result.exit_code}: {result.output}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ---------------------------------------------------------------- one storage


@contextlib.contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name`` is ``value`` inside the block (the build's shortcuts)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


class _NoProgress:
    """The build writes no running rows: the sweep's final sync writes every trial."""

    def __init__(self, *args: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def add(self, step: Any) -> None:
        pass

    def stop(self) -> None:
        pass


class Bench:
    """One study in one storage, grown size by size, its operations timed at each."""

    def __init__(self, kind: str, url: str, name: str, folder: Path, repeats: int) -> None:
        self.kind, self.url, self.name, self.folder, self.repeats = kind, url, name, folder, repeats
        self.spec = make_spec(name, folder, url)
        self.db = Path(self.spec.run.results)
        self.runner = SyntheticRunner()

    def grow(self, size: int) -> float:
        """Run the sweep (random points, synthetic trials) until the study has ``size``
        trials; seconds taken."""
        import optuna

        import sweeps.worker as worker
        from sweeps.study import make_sampler

        storage = worker.open_storage(self.url)
        try:
            have = len(optuna.load_study(study_name=self.name, storage=storage).trials)
        except KeyError:
            have = 0
        if have >= size:
            return 0.0
        random_spec = self.spec.model_copy(update={"sampler": "random"})
        started = time.perf_counter()
        with (
            _replaced(
                worker, "make_sampler", lambda spec, offset=0: make_sampler(random_spec, offset)
            ),
            _replaced(worker.Sweep, "_record", lambda *args, **kwargs: None),
            _replaced(worker, "_ProgressWriter", _NoProgress),
            _replaced(os, "fsync", lambda fd: None),
            quiet(),
        ):
            worker.Sweep.open(self.spec, max_trials=size - have, run_trial=self.runner).run()
        return time.perf_counter() - started

    def time_ask_and_rung(self) -> tuple[float, float]:
        """A worker's ask under the lock with the spec's TPE sampler, then the trial run
        (its first rung's decision timed) and told, as the sweep does; medians."""
        import optuna

        from sweeps.study import make_sampler
        from sweeps.worker import Sweep

        sweep = Sweep.open(self.spec, run_trial=self.runner)
        study = optuna.load_study(
            study_name=self.name, storage=sweep.storage, sampler=make_sampler(self.spec)
        )
        asks: list[float] = []
        self.runner.time_rungs, self.runner.rung_times = True, []
        try:
            for _ in range(self.repeats + 1):  # the first one warms up
                started = time.perf_counter()
                with sweep._ask_lock():
                    picked = sweep._ask_and_gate(study, None)
                asks.append(time.perf_counter() - started)
                assert isinstance(picked, tuple) and picked[1] is not None, picked
                trial, config = picked
                with quiet():
                    sweep._run_and_tell(study, trial, config, None)
        finally:
            self.runner.time_rungs = False
        return statistics.median(asks[1:]), statistics.median(self.runner.rung_times[1:])

    def time_operations(self, size: int) -> dict[str, float]:
        from sweeps.results.store import ResultsStore

        db, name, repeats = str(self.db), self.name, self.repeats
        times: dict[str, float] = {}
        times["ask (TPE) + gate"], times["rung decision"] = self.time_ask_and_rung()
        times["sweep status"] = median_time(
            lambda: cli("sweep", "status", name, "--db", db), repeats
        )
        times["frontier query"] = median_time(lambda: ResultsStore(db).frontier(name), repeats)
        times["frontier (terminal)"] = median_time(
            lambda: cli("frontier", name, "--db", db), repeats
        )
        png = str(self.folder / "frontier.png")
        times["frontier --out PNG"] = median_time(
            lambda: cli("frontier", name, "--db", db, "--out", png), repeats
        )
        times["results sync"] = median_time(
            lambda: cli("results", "sync", "--storage", self.url, "--study", name, "--db", db),
            repeats,
        )
        times["app: Sweeps screen"] = median_time(
            lambda: asyncio.run(sweeps_screen(Path(db), size)), repeats
        )
        return times

    def delete(self) -> None:
        import optuna

        from sweeps.study import open_storage

        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=self.name, storage=open_storage(self.url))


async def sweeps_screen(db: Path, trials: int) -> float:
    """Seconds from switching the app to its Sweeps screen to its trials table holding at
    least ``trials`` rows (headless, Textual's pilot)."""
    from textual.widgets import DataTable

    from tui.app import ParetuneApp

    app = ParetuneApp(db=db, run_dir=db.parent, start="plan")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        started = time.perf_counter()
        await app.switch_mode("sweeps")
        deadline = started + 120
        while time.perf_counter() < deadline:
            tables = app.screen.query("#trials")
            if tables and tables.first(DataTable).row_count >= trials:
                break
            await asyncio.sleep(0.005)
        else:
            raise RuntimeError(f"the Sweeps screen did not show {trials} trials in 120 s")
        return time.perf_counter() - started


def postgres_reachable(url: str) -> str | None:
    """None when PostgreSQL at ``url`` answers, else why not (one line)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # noqa: BLE001 - no driver, no server, refused: all the same here
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


# ---------------------------------------------------------------- the table


def growth(times: dict[int, float], small: int, large: int) -> str:
    if small not in times or large not in times or times[small] <= 0:
        return ""
    return f"{times[large] / times[small]:.1f}x"


def print_table(kind: str, sizes: list[int], results: dict[str, dict[int, float]]) -> None:
    pairs = list(zip(sizes, sizes[1:], strict=False))
    header = f"{kind:<22}" + "".join(f"{size:>10,}" for size in sizes)
    header += "".join(f"{f'{b}/{a}':>12}" for a, b in pairs)
    print(header)
    print("-" * len(header))
    for operation in OPERATIONS:
        row = results.get(operation, {})
        line = f"{operation:<22}" + "".join(
            f"{row[size]:>10.3f}" if size in row else f"{'':>10}" for size in sizes
        )
        line += "".join(f"{growth(row, a, b):>12}" for a, b in pairs)
        print(line)
    print()


def startup_seconds() -> float:
    """Seconds ``paretune --help`` takes as a new process (added to each command a user runs)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tui.cli", "--help"], env=env, capture_output=True, check=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,1000,5000", help="trials, comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--storages",
        default="journal,postgres",
        help="journal and/or postgres, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per operation")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build in this folder and keep it (and the PostgreSQL study); a later run with "
        "the same folder times the same studies, grown where a size is larger",
    )
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    storages = [s.strip() for s in args.storages.split(",") if s.strip()]
    unknown = set(storages) - {"journal", "postgres"}
    if unknown or not sizes or sizes[0] < 10:
        parser.error(f"--storages takes journal,postgres; --sizes at least 10 ({unknown or ''})")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="paretune-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{int(time.time())}"
    print(f"paretune start-up (`paretune --help`, a new process): {startup_seconds():.2f} s")
    for kind in storages:
        if kind == "postgres":
            why = postgres_reachable(POSTGRES_URL)
            if why is not None:
                print(
                    f"postgres: skipped, {POSTGRES_URL} does not answer ({why}); set "
                    "PARETUNE_SCALE_POSTGRES_URL to a database you may write to"
                )
                continue
            url = POSTGRES_URL
        else:
            url = str(folder / kind / "study.journal")
        # Kept: a stable name, so that a later run (of another version, say) times the same
        # study; else one of this run's own, deleted at the end.
        name = f"paretune-scale-{kind}" if args.keep else f"scale-{kind}-{tag}"
        bench = Bench(kind, url, name, folder / kind, args.repeats)
        results: dict[str, dict[int, float]] = {}
        try:
            for size in sizes:
                built = bench.grow(size)
                print(f"{kind}: {size:,} trials built in {built:.0f} s; timing ...", flush=True)
                timed = bench.time_operations(size)
                for operation, seconds in timed.items():
                    results.setdefault(operation, {})[size] = seconds
                print(
                    f"{kind}: {size:,} trials: "
                    + ", ".join(f"{op} {seconds:.3f} s" for op, seconds in timed.items()),
                    flush=True,
                )
        finally:
            if kind == "postgres" and not args.keep:
                bench.delete()
        print()
        print_table(f"{kind} (seconds)", sizes, results)
    print(
        "Aim: under 1 s at 1,000 trials, growing no worse than linearly "
        "(10x per 10x trials; 5x from 1,000 to 5,000)."
    )


if __name__ == "__main__":
    main()
