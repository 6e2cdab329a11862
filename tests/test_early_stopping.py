"""Early stopping at rungs (MO-ASHA): the decision on hand-made points, the spec keys, and real
demo sweeps that stop trials at a rung: in one process, resumed, across two journal workers and
on PostgreSQL.

The sweeps enqueue their points so that what is stopped does not depend on the sampler: a
learning rate that learns (3e-3) and one that wrecks the model (0.3: worse eval NLL and far
more forgetting at the rung). At $0 an hour (a local CPU) the cost so far ties, so the wrecking
trial is dominated at the rung by the finished good one and stopped there.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import paretune, start

from sweeps.early_stopping import (
    crowding_distances,
    default_min_steps,
    dominates,
    non_dominated_fronts,
    rung_decision,
    rung_steps,
    same_schedule,
)
from sweeps.results.store import ResultsStore
from sweeps.spec import SpecError, load_spec, spec_from_text
from sweeps.study import open_storage, open_study

# --- the decision, on hand-made points (all minimised) -------------------------------------------


def test_rungs_are_geometric_and_below_the_last_step() -> None:
    assert rung_steps(10, 3, 200) == [10, 30, 90]
    assert rung_steps(10, 3, 90) == [10, 30]  # the last step is the trial's end, not a rung
    assert rung_steps(2, 2, 4) == [2]
    assert rung_steps(5, 3, 5) == []
    assert default_min_steps(900) == 100 and default_min_steps(50) == 10
    with pytest.raises(ValueError):
        rung_steps(0, 3, 10)


def test_non_dominated_sorting_and_crowding_on_hand_made_points() -> None:
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (2, 2)]
    assert dominates((2, 2), (3, 3)) and not dominates((2, 2), (2, 2))
    assert non_dominated_fronts(points) == [[0, 1, 2, 5], [3], [4]]
    # The ends of a front are kept first; the middle by how far apart its neighbours are.
    assert crowding_distances([(1, 5), (2, 2), (5, 1)]) == [math.inf, 2.0, math.inf]
    distances = crowding_distances([(0, 10), (1, 4), (2, 3), (10, 0)])
    assert distances[0] == distances[3] == math.inf
    assert distances[1:3] == pytest.approx([0.2 + 0.7, 0.9 + 0.4])


def test_non_dominated_sorting_is_peeling_the_pairwise_fronts() -> None:
    """The fronts, each in index order, as repeatedly removing the points no remaining point
    dominates gives them (ties, equal points, infinities and NaN included)."""
    import random

    rng = random.Random(3)
    for n, dims in [(0, 3), (1, 3), (7, 2), (50, 3), (120, 3), (60, 1), (5, 0)]:
        choices = [0.0, 1.0, 2.0, 3.0, math.inf, math.nan]
        points = [
            tuple(
                rng.choice(choices) if rng.random() < 0.1 else float(rng.randint(0, 6))
                for _ in range(dims)
            )
            for _ in range(n)
        ]
        remaining, peeled = list(range(n)), []
        while remaining:
            front = [
                i
                for i in remaining
                if not any(dominates(points[j], points[i]) for j in remaining if j != i)
            ]
            peeled.append(front)
            remaining = [i for i in remaining if i not in front]
        assert non_dominated_fronts(points) == peeled


def test_a_dominated_trial_outside_the_top_third_stops_only_if_the_frontier_dominates_it() -> None:
    others = [(1.0, 1.0), (1.5, 0.5), (0.5, 1.5), (2.0, 2.0), (3.0, 3.0)]
    worse = (2.5, 2.5)  # front 2 of 6: place 5; the top ceil(6/3) = 2 go on
    stopped = rung_decision(worse, others, eta=3, frontier=[(1.0, 1.0)])
    assert not stopped.continues and stopped.position == 4 and stopped.kept == 2
    assert stopped.reached == 6 and stopped.dominated_by_frontier
    # No finished trial there to beat it (or one that does not dominate it): it goes on.
    assert rung_decision(worse, others, eta=3).continues
    assert rung_decision(worse, others, eta=3, frontier=[(0.1, 9.0)]).continues
    # Third of six: eta 3 keeps the top 2 (it stops), eta 2 the top 3 (it goes on).
    third = [(1.0, 1.0), (0.5, 1.5), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
    assert not rung_decision((1.2, 1.2), third, eta=3, frontier=[(1.0, 1.0)]).continues
    assert rung_decision((1.2, 1.2), third, eta=2, frontier=[(1.0, 1.0)]).continues


def test_a_point_on_the_first_front_always_goes_on() -> None:
    others = [(float(i), float(10 - i)) for i in range(10)]  # ten mutually non-dominated
    cheap_but_worse = (20.0, -1.0)  # the best in one objective: on the first front
    decision = rung_decision(cheap_but_worse, others, eta=3, frontier=others)
    assert decision.continues and not decision.dominated_by_frontier
    assert rung_decision((1.0, 1.0), [], eta=3).continues  # the first trial at a rung


def test_crowding_breaks_ties_within_the_front_that_is_cut() -> None:
    # Front 1: (0, 0). Front 2: five points, cut by the top ceil(7/2) = 4. Front 3: (6, 6).
    second = [(1.0, 5.0), (1.5, 4.5), (3.0, 3.0), (4.5, 1.5), (5.0, 1.0)]

    def at(point: tuple[float, float]):
        others = [(0.0, 0.0), *(p for p in second if p != point), (6.0, 6.0)]
        return rung_decision(point, others, eta=2, frontier=[(0.0, 0.0)])

    # After (0, 0), the ends of the front (infinite crowding), then the middle point, whose
    # neighbours are furthest apart (0.75 + 0.75 against 0.5 + 0.5): it goes on, the others stop.
    assert (at((3.0, 3.0)).position, at((3.0, 3.0)).continues) == (3, True)
    assert (at((1.5, 4.5)).position, at((1.5, 4.5)).continues) == (5, False)
    assert at((1.0, 5.0)).position == 2  # an end: among equals, the earlier trials come first


def test_a_rung_compares_trials_of_one_schedule_on_their_projected_cost() -> None:
    """At step 30 a 32-step trial has all but finished its schedule and a 128-step one is at its
    peak rate: the worker compares a rung's report only with reports of the same max_steps (an
    older record without max_steps matches any), and compares cost as projected to the last
    step, where the cost so far ties."""
    from sweeps.worker import _rung_point, _rung_record

    def trial(number: int, *records: dict) -> optuna.trial.FrozenTrial:
        made = optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            values=[1.0, 0.0, 1.0],
            user_attrs={"rungs": list(records)},
        )
        made.number = number
        return made

    report = {"eval_nll": 1.2, "retain_delta_nll": 0.01, "wall_s": 36.0, "dollars": 0.01}
    short = {**report, "step": 30, "max_steps": 32, "projected_dollars": 0.0107}
    long = {**report, "step": 30, "max_steps": 128, "projected_dollars": 0.0427}
    older = {**report, "step": 30}
    assert _rung_record(trial(0, short), 30, 32) == short
    assert _rung_record(trial(0, short), 30, 128) is None
    assert _rung_record(trial(1, short, long), 30, 128) == long
    assert _rung_record(trial(2, older), 30, 128) == older
    assert _rung_record(trial(0, short), 10, 32) is None
    # Like schedules: lengths within half a rung (a factor sqrt(eta)) of each other.
    assert _rung_record(trial(0, short), 30, 48) == short
    assert same_schedule(90, 150) and not same_schedule(90, 180) and same_schedule(None, 5)
    assert same_schedule(90, 180, eta=4)
    spec = spec_from_text(_spec("max_steps = { low = 32, high = 128, step = 32 }"))
    assert _rung_point(spec, short) == [1.2, 0.01, 0.0107]
    assert _rung_point(spec, long) == [1.2, 0.01, 0.0427]
    assert _rung_point(spec, older) == [1.2, 0.01, 0.01]  # spent, where nothing was projected


# --- the spec ------------------------------------------------------------------------------------


def _spec(search: str, trial: str = "") -> str:
    return f'name = "s"\n[search]\n{search}\n[trial]\n{trial}\n'


def test_early_stopping_is_on_by_default_where_trials_have_two_rungs() -> None:
    on = spec_from_text(_spec("max_steps = { low = 90, high = 300, step = 30 }"))
    stopping = on.early_stopping()
    assert stopping is not None and (stopping.min_steps, stopping.eta) == (10, 3)
    config = on.trial_config({"method": "lora", "max_steps": 120})
    assert (config.rung_min_steps, config.rung_eta, config.rung_retain_rows) == (10, 3, 32)
    # Too short for two rungs, by epochs, repeated, or turned off: off, and no rung settings.
    for text in (
        _spec("max_steps = 30"),
        _spec(""),
        _spec("max_steps = 300", "repeats = 2"),
        _spec("max_steps = 300\nearly_stopping = false"),
    ):
        spec = spec_from_text(text)
        assert spec.early_stopping() is None, text
        assert spec.trial_config({"method": "lora"}).rung_min_steps is None
    explicit = spec_from_text(_spec("max_steps = 8\nearly_stopping = { min_steps = 2, eta = 2 }"))
    assert explicit.early_stopping().min_steps == 2  # type: ignore[union-attr]
    assert spec_from_text(_spec("[search.early_stopping]\nmin_steps = 5")).early_stopping()
    # What the spec says round-trips (the study records it).
    assert explicit.to_raw()["search"]["early_stopping"]["eta"] == 2


@pytest.mark.parametrize(
    "search",
    [
        "max_steps = 8\nearly_stopping = { min_steps = 2, eta = 2, retain_rows = 4 }",
        "max_steps = 300\nearly_stopping = false",
        "max_steps = 300",
    ],
)
def test_a_written_spec_keeps_its_early_stopping(search: str, tmp_path: Path) -> None:
    from sweeps.spec import write_spec

    spec = spec_from_text(_spec(search))
    back = load_spec(write_spec(spec, tmp_path / "s.toml"))
    assert back == spec and back.early_stopping() == spec.early_stopping()


@pytest.mark.parametrize(
    ("search", "trial", "says"),
    [
        ("early_stopping = 3", "", "early_stopping must be false (off) or a table"),
        ("early_stopping = { eta = 1 }", "", "search.early_stopping.eta"),
        ('early_stopping = { method = "asha" }', "", "search.early_stopping.method"),
        ("early_stopping = { patience = 2 }", "", "search.early_stopping.patience is not a key"),
        ("max_steps = 8\nearly_stopping = { min_steps = 8 }", "", "leaves no rung"),
        ("early_stopping = {}", "", "min_steps is needed: the trials run by epochs"),
        ("max_steps = 90\nearly_stopping = {}", "repeats = 3", "needs trial.repeats = 1"),
        ("", "rung_eta = 4", "rung_eta is set by [search.early_stopping] eta"),
    ],
)
def test_bad_early_stopping_settings_are_named(search: str, trial: str, says: str) -> None:
    with pytest.raises(SpecError) as error:
        spec_from_text(_spec(search, trial))
    assert says in error.value.message


def test_a_bad_early_stopping_setting_exits_2_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(_spec("max_steps = 8\nearly_stopping = { eta = 0 }"))
    result = paretune("sweep", "check", str(spec))
    assert result.returncode == 2
    assert "search.early_stopping.eta" in result.stderr and "Traceback" not in result.stderr


# --- real demo sweeps ----------------------------------------------------------------------------

GOOD, WRECKING = 3e-3, 0.3


def _stopping_spec(folder: Path, name: str, *, trials: int, storage: str | None = None) -> Path:
    """A demo sweep of 4-step LoRA trials with one rung, at step 2, priced at $0 an hour."""
    spec = folder / f"{name}.toml"
    storage_line = f'storage = "{storage}"' if storage else ""
    spec.write_text(f"""
name = "{name}"
model = "demo"
sampler = "random"
[hardware]
device = "cpu"
usd_per_hour = 0.0
[search]
methods = ["lora"]
rank = 4
lr = [{GOOD}, {WRECKING}]
max_steps = 4
early_stopping = {{ method = "mo-asha", eta = 3, min_steps = 2, retain_rows = 8 }}
[trial]
batch = 4
eval_every = 4
max_seq_len = 64
[budget]
trials = {trials}
[run]
dir = "{folder / "runs"}"
results = "{folder / "results.duckdb"}"
save = "none"
timeout_s = 600
{storage_line}
""")
    return spec


def _enqueue(spec_path: Path, storage: optuna.storages.BaseStorage, *lrs: float) -> None:
    spec = load_spec(spec_path)
    study = open_study(spec, storage)
    for lr in lrs:
        study.enqueue_trial({"lr": lr}, skip_if_exists=False)


@pytest.mark.slow
def test_a_demo_sweep_stops_a_trial_at_a_rung_and_a_resumed_sweep_keeps_the_records(
    demo, tmp_path: Path
) -> None:
    from sweeps.worker import Sweep

    path = _stopping_spec(tmp_path, "rungs", trials=2)
    spec = load_spec(path)
    _enqueue(path, open_storage(spec.storage_url), GOOD, WRECKING)
    state = Sweep.open(spec).run()
    assert (state.done, state.pruned) == (1, 1)

    store = ResultsStore(spec.run.results)
    rows = {row["number"]: row for row in store.trials("rungs")}
    good, wrecked = rows[0], rows[1]
    good_rung, wrecked_rungs = json.loads(good["rungs"])[0], json.loads(wrecked["rungs"])
    assert good["state"] == "complete" and good["stopped_at_step"] is None
    assert good["steps_done"] == 4 and good["retain_delta_nll"] is not None
    assert wrecked["state"] == "pruned" and wrecked["stopped_at_step"] == 2
    assert wrecked["steps_done"] == 2 and wrecked["retain_delta_nll"] is None  # not evaluated
    assert wrecked["eval_nll"] > good_rung["eval_nll"]  # its eval NLL at the rung
    assert "stopped at step 2 by early stopping" in wrecked["error"]
    (rung,) = wrecked_rungs
    assert (rung["step"], rung["continues"], rung["reached"]) == (2, False, 2)
    assert rung["retain_rows"] == 8 and rung["retain_delta_nll"] > good_rung["retain_delta_nll"]
    # Counted in spend (its hours), not on the frontier, which still holds the good trial.
    assert state.hours == pytest.approx((good["wall_s"] + wrecked["wall_s"]) / 3600, rel=1e-6)
    assert [row["number"] for row in store.frontier("rungs")] == [0]
    assert store.studies()[0]["pruned"] == 1
    status = paretune("sweep", "status", "rungs", "--db", str(spec.run.results))
    assert "pruned (stopped early at a rung; not on the frontier): 1: #1 at step 2" in status.stdout

    # Resumed with a larger budget: the rung records of the first run decide the new trial.
    resumed = load_spec(_stopping_spec(tmp_path, "rungs", trials=3))
    _enqueue(path, open_storage(spec.storage_url), WRECKING)
    again = Sweep.open(resumed).run()
    assert (again.done, again.pruned) == (1, 2)  # the study's, as the summary says them
    study = optuna.load_study(study_name="rungs", storage=open_storage(spec.storage_url))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.PRUNED,
    ]
    assert trials[1].user_attrs["rungs"] == [rung]  # kept as the first run wrote it
    assert trials[2].user_attrs["rungs"][0]["reached"] == 3  # saw both earlier trials' records
    rows = {row["number"]: row for row in ResultsStore(spec.run.results).trials("rungs")}
    assert json.loads(rows[1]["rungs"]) == [rung] and rows[2]["stopped_at_step"] == 2


@pytest.mark.slow
def test_a_fresh_trial_process_reports_its_rungs_and_stops_when_told(demo, tmp_path: Path) -> None:
    """The child's side of a rung, in a fresh interpreter (how GPU trials start): each rung's
    report reaches the parent, and the answer "stop" ends the trial there, pruned."""
    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.types import TrialConfig

    config = TrialConfig(
        max_steps=5,
        eval_every=5,
        batch=4,
        max_seq_len=64,
        device="cpu",
        save="none",
        run_dir=str(tmp_path),
        rung_min_steps=1,
        rung_eta=2,
        rung_retain_rows=4,
        usd_per_hour=3.6,
    )
    reports = []

    def two_rungs_then_stop(report) -> bool:
        reports.append(report)
        return len(reports) < 2

    result = run_trial_isolated(config, on_rung=two_rungs_then_stop, start="fresh")
    assert result.state == "pruned", result.error
    assert [r.step for r in reports] == [1, 2] and result.stopped_at_step == 2
    assert [s.step for s in result.steps] == [1, 2] and result.artifact is None
    assert result.quality.eval_nll == reports[-1].eval_nll
    assert all(r.retain_rows == 4 and r.retain_kl is not None for r in reports)
    assert result.measured.wall_s >= reports[-1].wall_s
    # Each report projects the trial's cost to its last step at its pace so far.
    assert all(r.max_steps == 5 for r in reports)
    assert all(r.projected_wall_s > r.wall_s for r in reports)
    assert all(math.isclose(r.projected_dollars, r.projected_wall_s / 1000) for r in reports)
    assert "rung" not in (result.command or "")  # rerun alone, it runs to its last step


def _two_workers_stop_the_wrecking_trial(spec: Path, storage_url: str, name: str) -> None:
    """Two `paretune sweep worker` processes on the study of ``spec``: the two good trials run
    side by side, the wrecking one after them, stopped at the rung from both workers' records."""
    storage = open_storage(storage_url)
    try:
        _enqueue(spec, storage, GOOD, GOOD, WRECKING)
        workers = [
            start("sweep", "worker", str(spec), "--storage", storage_url, "--no-check")
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=900)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert [t.user_attrs["state"] for t in trials] == ["complete", "complete", "pruned"]
        assert trials[2].state == optuna.trial.TrialState.PRUNED
        assert {t.user_attrs["worker_pid"] for t in trials[:2]} == {w.pid for w in workers}
        (rung,) = trials[2].user_attrs["rungs"]
        # Both good trials' rung records, each written by its own worker, were in the decision.
        assert (rung["step"], rung["continues"], rung["reached"], rung["position"]) == (
            2,
            False,
            3,
            2,
        )
        assert all(t.user_attrs["rungs"][0]["continues"] for t in trials[:2])
    finally:
        engine = getattr(storage, "engine", None)
        if engine is not None:  # PostgreSQL: the test database keeps no study of ours
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)
            engine.dispose()


@pytest.mark.slow
def test_two_journal_workers_stop_a_trial_from_each_others_rung_records(
    demo, tmp_path: Path
) -> None:
    journal = str(tmp_path / "runs" / "pair.journal")
    spec = _stopping_spec(tmp_path, "pair", trials=3, storage=journal)
    _two_workers_stop_the_wrecking_trial(spec, journal, "pair")


@pytest.mark.postgres
@pytest.mark.slow
def test_two_postgres_workers_stop_a_trial_at_a_rung(
    demo, postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url
    name = f"es-{uuid.uuid4().hex[:10]}"
    spec = _stopping_spec(tmp_path, name, trials=3, storage=url)
    _two_workers_stop_the_wrecking_trial(spec, url, name)
