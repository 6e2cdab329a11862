"""Every sampler a spec can name searches the conditional space (rank only for adapters, lr per
method); TPE, the default, does not propose a point a trial of the study already holds."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import optuna
import pytest

from sweeps.spec import SweepSpec, load_spec
from sweeps.study import make_sampler, open_storage, suggest

DEMO = Path(__file__).parent.parent / "examples" / "demo.toml"


@pytest.mark.parametrize("sampler", ["cost-aware", "tpe", "nsga2", "gp", "random"])
def test_sampler_searches_the_conditional_space(sampler: str) -> None:
    spec = load_spec(DEMO).model_copy(update={"sampler": sampler})
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    seen = set()
    for i in range(12):
        trial = study.ask()
        params = suggest(trial, spec)
        config = spec.trial_config(params, trial_number=trial.number)
        seen.add(config.method)
        assert set(trial.params) == set(params)
        if config.method in ("lora", "dora"):
            assert 2 <= config.rank <= 32 and config.alpha == config.rank * params["alpha_ratio"]
            assert 1e-4 <= params[f"lr_{config.method}"] <= 1e-2
        else:
            assert "rank" not in params and 1e-5 <= params[f"lr_{config.method}"] <= 1e-3
        assert config.max_steps in (50, 100, 150, 200)
        study.tell(trial, [1.0 / (i + 1), 0.1 * i, 0.01])
    assert len(seen) >= 2


# A space made of choices (4 methods x lr x steps, rank for adapters: 36 points), where TPE's
# best candidate after a few trials is often a trial it already ran.
CHOICES = {
    "methods": ["lora", "dora", "full", "freeze"],
    "rank": [4, 16],
    "lr": [1e-4, 1e-3, 1e-2],
    "max_steps": [50, 200],
}


def _choices_spec(seed: int = 0, sampler: str = "cost-aware") -> SweepSpec:
    return SweepSpec(
        name="choices", seed=seed, sampler=sampler, search=CHOICES, budget={"trials": 16}
    )


def _point(trial: optuna.trial.FrozenTrial | optuna.Trial) -> tuple:
    return tuple(sorted(trial.params.items()))


def _values(params: dict) -> list[float]:
    """Deterministic objectives with a clear trade-off: quality wants lr 1e-3 and full, long
    runs forget more (full most), cost grows with steps."""
    forgets = {"full": 1.0, "dora": 0.3, "lora": 0.2, "freeze": 0.1}[params["method"]]
    quality = abs(math.log10(params["lr"]) + 3) + (0.0 if params["method"] == "full" else 0.5)
    return [
        quality - params["max_steps"] / 400,
        forgets * params["max_steps"] / 100,
        params["max_steps"] * 0.01,
    ]


def _sweep(sampler: optuna.samplers.BaseSampler, spec: SweepSpec, trials: int = 16) -> list[tuple]:
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=sampler)
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, _values(suggest(trial, spec)))
    return [_point(t) for t in study.trials]


def _repeats_after_startup(points: list[tuple], startup: int = 5) -> list[int]:
    return [i for i in range(startup, len(points)) if points[i] in points[:i]]


@pytest.mark.parametrize("sampler", ["cost-aware", "tpe"])
def test_proposals_never_repeat_a_trial(sampler: str) -> None:
    for seed in range(4):
        spec = _choices_spec(seed, sampler)
        points = _sweep(make_sampler(spec), spec)
        assert _repeats_after_startup(points) == [], f"seed {seed}: {points}"
        assert points == _sweep(make_sampler(spec), spec), "the same seed draws the same points"
    # Why make_sampler does this: Optuna's TPE with the same settings repeats trials here.
    stock = [
        _repeats_after_startup(
            _sweep(
                optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
                ),
                _choices_spec(seed),
            )
        )
        for seed in range(4)
    ]
    assert sum(map(len, stock)) >= 4, stock


@pytest.mark.parametrize("sampler", ["cost-aware", "tpe"])
def test_without_repeats_keeps_infeasible_trials_and_queued_points(sampler: str) -> None:
    """Infeasible trials are told inf values with a positive constraint (as the worker does):
    they count as tried; a queued trial (a re-queued lost one, say) runs its own point."""
    spec = _choices_spec(sampler=sampler)
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    for _ in range(12):
        trial = study.ask()
        params = suggest(trial, spec)
        if params["method"] == "full":  # does not fit the GPU
            trial.set_constraint("peak_gb_over_gpu_memory", 3.0)
            study.tell(trial, [math.inf, math.inf, 0.01])
        else:
            trial.set_constraint("peak_gb_over_gpu_memory", 0.0)
            study.tell(trial, _values(params))
    points = [_point(t) for t in study.trials]
    assert _repeats_after_startup(points) == []
    assert any(dict(p)["method"] == "full" for p in points)
    study.enqueue_trial(study.trials[0].params)
    trial = study.ask()
    suggest(trial, spec)
    assert _point(trial) == points[0]


def test_workers_sharing_a_study_do_not_repeat_each_other(tmp_path: Path) -> None:
    """Two workers (seed offsets 0 and 1) on one journal file, each asking while the other's
    trial runs: a point running in the other worker counts as tried."""
    spec = _choices_spec()
    storage = open_storage(str(tmp_path / "study.journal"))
    workers = [
        optuna.create_study(
            study_name="choices",
            storage=storage,
            load_if_exists=True,
            directions=spec.objectives.directions(),
            sampler=make_sampler(spec, offset),
        )
        for offset in (0, 1)
    ]
    for _ in range(8):
        running = [(study, study.ask()) for study in workers]
        params = [suggest(trial, spec) for _, trial in running]
        for (study, trial), p in zip(running, params, strict=False):
            study.tell(trial, _values(p))
    points = [_point(t) for t in workers[0].trials]
    assert len(points) == 16
    assert _repeats_after_startup(points, startup=6) == [], points


def test_workers_seeded_alike_do_not_repeat_each_other_from_the_first_trial(
    tmp_path: Path,
) -> None:
    """Two workers with the same seed on one journal file, each asking while the other's trial
    runs: from the random startup trials on, a point running in the other worker counts as
    tried (before, the second worker proposed the first one's startup points again)."""
    spec = _choices_spec()
    storage = open_storage(str(tmp_path / "study.journal"))
    workers = [
        optuna.create_study(
            study_name="choices",
            storage=storage,
            load_if_exists=True,
            directions=spec.objectives.directions(),
            sampler=make_sampler(spec),
        )
        for _ in range(2)
    ]
    for _ in range(6):
        running = []
        for study in workers:
            trial = study.ask()
            running.append((study, trial, suggest(trial, spec)))
        for study, trial, params in running:
            study.tell(trial, _values(params))
    points = [_point(t) for t in workers[0].trials]
    assert len(points) == 12 and len(set(points)) == 12, points


def _demo_lrs(storage: optuna.storages.BaseStorage, spec: SweepSpec, trials: int) -> list[float]:
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec))
    lrs = []
    for i in range(trials):
        trial = study.ask()
        params = suggest(trial, spec)
        lrs.append(params[f"lr_{params['method']}"])
        study.tell(trial, [1.0 / (i + 1), 0.1 * i, 0.01])
    return lrs


def test_a_worker_joining_a_busy_study_draws_its_own_points(tmp_path: Path) -> None:
    """A sampler whose first ask finds another process's trial running seeds itself by its own
    identity as well: its points share nothing with those a lone worker draws (seeded alike,
    it would draw a neighbour of the running point, then the lone worker's points again). A
    trial of its own process changes nothing: one process alone is seeded by `seed` alone."""
    import psutil

    spec = load_spec(DEMO)
    lrs = {}
    for owner in ("nobody", "this process", "another process"):
        storage = open_storage(str(tmp_path / f"{owner}.journal"))
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            directions=spec.objectives.directions(),
            sampler=make_sampler(spec, 99),
        )
        running = study.ask()  # a trial running in the owner's process
        suggest(running, spec)
        if owner != "nobody":
            process = psutil.Process() if owner == "this process" else psutil.Process().parent()
            running.set_user_attr("worker_host", socket.gethostname())
            running.set_user_attr("worker_pid", process.pid)
            running.set_user_attr("worker_started", process.create_time())
        lrs[owner] = _demo_lrs(storage, spec, 5)
    assert lrs["this process"] == lrs["nobody"]
    assert not set(lrs["another process"]) & set(lrs["nobody"]), lrs


@pytest.mark.slow
def test_two_sweeps_started_together_run_distinct_points(demo, tmp_path: Path) -> None:
    """The reported case: two `sweep run --max-trials 2` started at once on an empty study ran
    the same 2 points twice each (identical parameters and results)."""
    from conftest import load_spec_study, start, write_demo_spec

    spec = write_demo_spec(tmp_path, "together", trials=10, save="none")
    sweeps = [start("sweep", "run", str(spec), "--max-trials", "2", "--no-check") for _ in range(2)]
    outputs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert all(s.returncode == 0 for s in sweeps), outputs
    trials = load_spec_study(spec).trials
    assert [t.user_attrs["state"] for t in trials] == ["complete"] * 4
    assert {t.user_attrs["worker_pid"] for t in trials} == {s.pid for s in sweeps}
    points = {_point(t) for t in trials}
    assert len(points) == 4, [t.params for t in trials]
