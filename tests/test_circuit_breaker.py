"""The circuit breaker: trials that keep failing the same way stop the sweep (exit code 2).

The end-to-end test runs a real demo sweep whose every trial fails after the preflight would
have passed (a target module the model does not have, with --no-check); the unit tests feed
:class:`sweeps.breaker.CircuitBreaker` the outcomes a sweep records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import paretune

from sweeps.breaker import CircuitBreaker, error_class
from sweeps.outcome import Outcome
from sweeps.results.store import ResultsStore

_TRACEBACK = """Traceback (most recent call last):
  File "/home/a/paretune/sweeps/trial/recipe.py", line {line}, in run_trial
    model = apply_method(model, config)
ValueError: Target modules {{'q_nope'}} not found in the base model at /tmp/run-{n}/model (rank {n})
"""


def _failure(n: int) -> str:
    return _TRACEBACK.format(line=100 + n, n=n)


def test_error_class_masks_numbers_and_paths_but_keeps_type_and_words() -> None:
    assert error_class(Outcome.FAILED, _failure(1)) == error_class(Outcome.FAILED, _failure(7))
    assert error_class(Outcome.FAILED, _failure(1)) == (
        "failed ValueError: Target modules {'q_nope'} not found in the base model at <path> "
        "(rank <n>)"
    )
    other_type = _failure(1).replace("ValueError", "KeyError")
    assert error_class(Outcome.FAILED, _failure(1)) != error_class(Outcome.FAILED, other_type)
    other_words = _failure(1).replace("not found", "is frozen")
    assert error_class(Outcome.FAILED, _failure(1)) != error_class(Outcome.FAILED, other_words)
    # A message without a traceback (a bad data row found by the trial) is its first line.
    assert error_class("failed", "data.jsonl line 12: no 'prompt'\nmore") == (
        "failed data.jsonl line <n>: no 'prompt'"
    )


def test_breaker_trips_on_k_same_failures_in_a_row_only() -> None:
    breaker = CircuitBreaker(3)
    assert breaker.observe(0, Outcome.FAILED, _failure(0)) is None
    assert breaker.observe(1, Outcome.FAILED, _failure(1)) is None
    # An oom trial is a result: the run starts again; gate refusals leave it as it is.
    assert breaker.observe(2, Outcome.OOM, "CUDA out of memory") is None
    assert breaker.observe(3, Outcome.FAILED, _failure(3)) is None
    assert breaker.observe(4, Outcome.INFEASIBLE, "does not fit") is None
    assert breaker.observe(5, Outcome.OVER_BUDGET, "over budget") is None
    assert breaker.observe(6, Outcome.FAILED, _failure(6)) is None
    # A different error starts a new run of its own.
    assert breaker.observe(7, Outcome.FAILED, "RuntimeError: other") is None
    assert breaker.observe(8, Outcome.FAILED, _failure(8)) is None
    assert breaker.observe(9, Outcome.FAILED, _failure(9)) is None
    trip = breaker.observe(10, Outcome.FAILED, _failure(10))
    assert trip is not None and trip.trials == (8, 9, 10)
    assert breaker.tripped is trip
    assert "#8, #9, #10" in trip.message and "Target modules" in trip.message
    assert "\n" not in trip.message


def test_breaker_zero_never_trips_and_complete_resets() -> None:
    never = CircuitBreaker(0)
    assert all(never.observe(n, Outcome.FAILED, _failure(n)) is None for n in range(10))
    breaker = CircuitBreaker(2)
    breaker.observe(0, Outcome.FAILED, _failure(0))
    breaker.observe(1, Outcome.COMPLETE, None)
    assert breaker.observe(2, Outcome.FAILED, _failure(2)) is None
    assert breaker.observe(3, Outcome.FAILED, _failure(3)) is not None
    with pytest.raises(ValueError, match="breaker"):
        CircuitBreaker(-1)


def _broken_spec(folder: Path, name: str, *, breaker: int | None, trials: int = 10) -> Path:
    spec = folder / f"{name}.toml"
    breaker_line = "" if breaker is None else f"breaker = {breaker}"
    spec.write_text(f"""
name = "{name}"
model = "demo"
[hardware]
device = "cpu"
usd_per_hour = 0.10
[search]
methods = ["lora"]
rank = [2, 8]
lr = {{ low = 1e-4, high = 1e-2, log = true }}
max_steps = 2
[trial]
targets = "no_such_proj"
batch = 4
max_seq_len = 64
[budget]
trials = {trials}
[run]
dir = "{folder / "runs"}"
results = "{folder / "results.duckdb"}"
save = "none"
{breaker_line}
""")
    return spec


@pytest.mark.slow
def test_a_sweep_whose_trials_all_fail_stops_after_three_with_exit_2(demo, tmp_path: Path) -> None:
    spec = _broken_spec(tmp_path, "broken", breaker=None)  # the default: 3
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "circuit breaker: 3 trials in a row (#0, #1, #2) failed" in done.stderr
    assert "no_such_proj" in done.stderr
    assert "check the model, the data files" in done.stderr
    assert "Traceback" not in done.stderr
    rows = ResultsStore(tmp_path / "results.duckdb").trials("broken")
    assert [(r["number"], r["state"]) for r in rows] == [(n, "failed") for n in range(3)]
    assert all("no_such_proj" in r["error"] for r in rows)
    assert f"paretune sql --db {tmp_path / 'results.duckdb'}" in done.stderr


@pytest.mark.slow
def test_breaker_zero_lets_the_sweep_spend_its_budget(demo, tmp_path: Path) -> None:
    spec = _broken_spec(tmp_path, "unbroken", breaker=0, trials=4)
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "circuit breaker" not in done.stdout + done.stderr
    rows = ResultsStore(tmp_path / "results.duckdb").trials("unbroken")
    assert [r["state"] for r in rows] == ["failed"] * 4
