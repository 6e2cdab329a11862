"""Repeats: one configuration run with seeds seed, seed+1, ...; means, standard deviations,
the sum of the cost, and what a sweep stores and tells Optuna.

The command-line and sweep tests train the real demo model for a few steps per run.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import load_spec_study, paretune, write_demo_spec

from sweeps.results.store import ResultsStore
from sweeps.trial.repeats import combine
from sweeps.trial.types import Forgetting, Measured, Quality, TrialConfig, TrialResult


def _run(seed: int, eval_nll: float, dollars: float, state: str = "complete") -> TrialResult:
    return TrialResult(
        state=state,
        method="lora",
        quality=Quality(eval_nll=eval_nll, best_step=3),
        forgetting=Forgetting(retain_delta_nll=eval_nll / 10, retain_source="demo"),
        measured=Measured(wall_s=10.0 + seed, peak_gb=1.0 + seed, tokens=100, steps=3),
        dollars=dollars,
        error=None if state == "complete" else "ValueError: boom",
        command="paretune trial --demo",
    )


def test_combine_means_sums_largest_and_sds() -> None:
    config = TrialConfig(seed=5)
    result = combine(config, [_run(0, 1.0, 0.1), _run(1, 2.0, 0.3)], 2)
    assert result.state == "complete"
    assert result.quality.eval_nll == pytest.approx(1.5)
    assert result.sd["quality.eval_nll"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    assert result.forgetting.retain_delta_nll == pytest.approx(0.15)
    assert result.forgetting.retain_source == "demo"
    assert result.dollars == pytest.approx(0.4)  # every run is paid for
    assert result.sd["dollars"] == pytest.approx(statistics.stdev([0.1, 0.3]))
    assert result.measured.wall_s == pytest.approx(21.0)
    assert result.measured.tokens == 200
    assert result.measured.peak_gb == pytest.approx(2.0)
    assert result.measured.steps == 3
    assert [(r.repeat, r.seed) for r in result.repeats] == [(0, 5), (1, 6)]
    assert result.command == "paretune trial --demo --repeats 2"


def test_a_run_that_fails_ends_the_trial_with_its_error() -> None:
    result = combine(TrialConfig(), [_run(0, 1.0, 0.1), _run(1, 2.0, 0.2, state="failed")], 3)
    assert result.state == "failed"
    assert result.error == "repeat 1 (seed 1): ValueError: boom"
    assert len(result.repeats) == 2
    assert result.dollars == pytest.approx(0.3)


@pytest.mark.slow
def test_trial_repeats_reports_means_and_sds_of_its_runs(demo, tmp_path: Path) -> None:
    done = paretune(
        "trial",
        "--demo",
        "--max-steps",
        "3",
        "--repeats",
        "2",
        "--usd-per-hour",
        "1.0",
        "--run-dir",
        str(tmp_path / "runs"),
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    runs = result["repeats"]
    assert [(r["repeat"], r["seed"], r["state"]) for r in runs] == [
        (0, 0, "complete"),
        (1, 1, "complete"),
    ]
    for group, name in (
        ("quality", "eval_nll"),
        ("quality", "exact_match"),
        ("forgetting", "retain_delta_nll"),
        ("forgetting", "retain_kl"),
    ):
        values = [r[group][name] for r in runs]
        assert result[group][name] == pytest.approx(statistics.fmean(values)), name
        assert result["sd"][f"{group}.{name}"] == pytest.approx(statistics.stdev(values)), name
    # Another seed trains another model: the runs differ, so the sd measures something.
    assert runs[0]["quality"]["eval_nll"] != runs[1]["quality"]["eval_nll"]
    assert result["sd"]["quality.eval_nll"] > 0
    assert result["dollars"] == pytest.approx(sum(r["dollars"] for r in runs))
    assert result["measured"]["wall_s"] == pytest.approx(sum(r["measured"]["wall_s"] for r in runs))
    assert result["command"].endswith("--repeats 2")

    table = paretune(
        "trial", "--demo", "--max-steps", "2", "--repeats", "2", "--run-dir", str(tmp_path / "t")
    )
    assert table.returncode == 0, table.stdout + table.stderr
    assert "mean ± sd of 2 runs, seeds 0-1" in table.stdout
    assert " ± " in table.stdout.split("eval NLL", 1)[1].splitlines()[0]


@pytest.mark.slow
def test_a_sweep_with_repeats_stores_each_run_and_tells_optuna_the_mean(
    demo, tmp_path: Path
) -> None:
    spec = write_demo_spec(tmp_path, "rep", trials=2, save="none")
    spec.write_text(spec.read_text().replace("[trial]\n", "[trial]\nrepeats = 2\n"))
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr

    study = load_spec_study(spec)
    store = ResultsStore(tmp_path / "results.duckdb")
    rows = {r["number"]: r for r in store.trials("rep")}
    assert sorted(rows) == [0, 1]
    _, runs = store.query(
        "SELECT number, repeat, seed, state, objective_quality, objective_forgetting, "
        "objective_cost, eval_nll, dollars FROM trial_repeats ORDER BY number, repeat"
    )
    assert [(n, k, seed, state) for n, k, seed, state, *_ in runs] == [
        (0, 0, 0, "complete"),
        (0, 1, 1, "complete"),
        (1, 0, 0, "complete"),
        (1, 1, 1, "complete"),
    ]
    for trial in study.get_trials(deepcopy=False):
        row = rows[trial.number]
        ours = [r for r in runs if r[0] == trial.number]
        quality = [r[4] for r in ours]
        forgetting = [r[5] for r in ours]
        cost = [r[6] for r in ours]
        assert row["state"] == "complete" and row["repeats"] == 2
        # Optuna is told the mean of quality and forgetting and the sum of the cost.
        assert trial.values[0] == pytest.approx(statistics.fmean(quality))
        assert trial.values[1] == pytest.approx(statistics.fmean(forgetting))
        assert trial.values[2] == pytest.approx(sum(cost))
        assert row["objective_quality"] == pytest.approx(trial.values[0])
        assert row["eval_nll"] == pytest.approx(statistics.fmean(r[7] for r in ours))
        assert row["dollars"] == pytest.approx(sum(r[8] for r in ours))
        assert row["objective_quality_sd"] == pytest.approx(statistics.stdev(quality))
        assert row["objective_forgetting_sd"] == pytest.approx(statistics.stdev(forgetting))
        assert row["objective_cost_sd"] == pytest.approx(statistics.stdev(cost) * math.sqrt(2))
        assert json.loads(row["metric_sd"])["quality.eval_nll"] == pytest.approx(
            statistics.stdev(r[7] for r in ours)
        )
        # The loss curve is the first run's: its steps once each.
        steps = [s["step"] for s in store.steps("rep", trial.number)]
        assert steps == sorted(set(steps)) and steps[-1] == 2

    front = paretune("frontier", "rep", "--db", str(tmp_path / "results.duckdb"))
    assert front.returncode == 0, front.stdout + front.stderr
    assert "within noise" in front.stdout
