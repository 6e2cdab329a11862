"""The feasibility gate and the budget stop, with the real planner and a real journal study.

Every trial here is stopped before launch, so no model is loaded: if one were launched it
would try to fetch a Hub model and fail, and the assertions on states would catch it.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna

from sweeps.gate import Gate, Prediction, Spend, budget_refusal
from sweeps.results.store import ResultsStore
from sweeps.spec import SweepSpec
from sweeps.study import open_storage
from sweeps.worker import Sweep


def _spec(tmp_path: Path, **overrides) -> SweepSpec:
    raw = {
        "name": "gate",
        "model": "meta-llama/Llama-3.1-8B",
        "hardware": {"device": "cuda", "gpu": "h100-sxm", "provider": "runpod-secure"},
        "search": {"methods": ["full", "qlora"], "rank": [8, 16], "lr": 1e-4},
        "trial": {"max_seq_len": 2048, "batch": 4, "grad_checkpointing": True},
        "budget": {"trials": 3},
        "run": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "r.duckdb")},
    }
    raw.update(overrides)
    return SweepSpec.model_validate(raw)


def test_gate_predicts_on_the_target_gpu(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    gate = Gate(spec)
    full = gate.predict(spec.trial_config({"method": "full"}))
    qlora = gate.predict(spec.trial_config({"method": "qlora", "rank": 8}))
    assert full.gpu_memory_gb == 80.0
    assert full.peak_gb > 80 and not full.fits  # 8B full fine-tune: weights+grads+Adam > 80 GB
    assert qlora.peak_gb < 80 and qlora.fits
    assert qlora.dollars is not None and qlora.dollars > 0 and qlora.hours > 0


def test_infeasible_trials_are_recorded_with_predictions_and_never_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path, search={"methods": ["full"], "lr": 1e-5})
    sweep = Sweep.open(spec)
    state = sweep.run()
    assert "infeasible trials in a row" in state.stop_reason
    study = optuna.load_study(study_name="gate", storage=sweep.storage)
    assert len(study.trials) == 20
    for trial in study.trials:
        assert trial.user_attrs["state"] == "infeasible"
        assert trial.constraints["peak_gb_over_gpu_memory"] > 0
        assert "predicted peak" in trial.user_attrs["error"]
        assert "result" not in trial.user_attrs  # never launched
        assert math.isinf(trial.values[0])
    rows = ResultsStore(spec.run.results).trials("gate")
    assert {r["state"] for r in rows} == {"infeasible"}
    assert all(r["predicted_peak_gb"] > r["gpu_memory_gb"] == 80.0 for r in rows)
    assert ResultsStore(spec.run.results).frontier("gate") == []


def test_budget_stop_before_a_trial_that_cannot_be_paid(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        search={"methods": ["qlora"], "rank": 8, "lr": 1e-4},
        budget={"dollars": 0.01, "trials": 5},
    )
    sweep = Sweep.open(spec)
    state = sweep.run()
    assert state.stop_reason.startswith("dollar budget")
    study = optuna.load_study(study_name="gate", storage=sweep.storage)
    assert [t.user_attrs["state"] for t in study.trials] == ["over_budget"]
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert "left" in study.trials[0].user_attrs["error"]


def test_budget_refusal_rules() -> None:
    spec = SweepSpec(name="b", budget={"dollars": 1.0, "hours": 2.0, "trials": 10})
    assert budget_refusal(spec, Spend(trials=10), Prediction()).startswith("trial budget")
    assert budget_refusal(spec, Spend(trials=1, dollars=0.5), Prediction(dollars=0.4)) is None
    assert budget_refusal(spec, Spend(trials=1, dollars=0.7), Prediction(dollars=0.4)).startswith(
        "dollar"
    )
    # Without a planner price, the mean measured cost stands in.
    assert budget_refusal(
        spec, Spend(trials=2, dollars=0.8, mean_dollars=0.4), Prediction()
    ).startswith("dollar")
    assert budget_refusal(
        spec, Spend(trials=2, hours=1.9, mean_hours=0.2), Prediction()
    ).startswith("hour")


def test_a_corrupt_results_file_loses_nothing(tmp_path: Path) -> None:
    corrupt = tmp_path / "r.duckdb"
    corrupt.write_bytes(b"not a database" * 500)
    spec = _spec(tmp_path, search={"methods": ["full"], "lr": 1e-5})
    sweep = Sweep.open(spec)
    state = sweep.run()  # the sweep goes on: Optuna's storage is the source of truth
    assert any("not a readable DuckDB database" in e for e in state.events)
    assert corrupt.read_bytes() == b"not a database" * 500
    rebuilt = ResultsStore(tmp_path / "new.duckdb")
    assert rebuilt.sync_study(sweep.study) == 20
    assert len(rebuilt.trials("gate")) == 20


def test_a_resumed_study_does_not_replay_the_first_runs_draws(tmp_path: Path) -> None:
    """Rerunning a spec continues its study (under its new budget) with new random draws: a sampler seeded as on the
    first run would propose the very same trials again (seen: a resumed demo sweep re-ran
    trials 0 and 1 as trials 3 and 4). A new study is still reproducible from its seed."""

    def lrs(trials) -> list[float]:
        return [t.params["lr"] for t in trials]

    raw = {
        "search": {"methods": ["full"], "lr": {"low": 1e-6, "high": 1e-3, "log": True}},
        "sampler": "random",
        "budget": {"trials": 100},
    }
    spec = _spec(tmp_path, **raw)
    Sweep.open(spec).run()  # every trial infeasible (full 8B on one H100): 20 draws, none run
    assert ResultsStore(spec.run.results).studies()[0]["budget_trials"] == 100
    larger = _spec(tmp_path, **{**raw, "budget": {"trials": 200}})
    Sweep.open(larger).run()  # again, with a larger budget: 20 more
    study = optuna.load_study(study_name="gate", storage=open_storage(spec.storage_url))
    first, second = lrs(study.trials[:20]), lrs(study.trials[20:40])
    assert len(second) == 20 and not set(first) & set(second)
    # The study records the spec it last ran under: its budget is the one enforced.
    assert ResultsStore(spec.run.results).studies()[0]["budget_trials"] == 200

    again = _spec(tmp_path / "again", **raw)
    Sweep.open(again).run()
    assert (
        lrs(optuna.load_study(study_name="gate", storage=open_storage(again.storage_url)).trials)
        == first
    )
