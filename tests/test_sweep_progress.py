"""The live display shows budget, spend, running trials' step and loss, and the frontier size."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

from sweeps.progress import render_state
from sweeps.worker import RunningTrial, SweepState


def test_render_state_shows_what_an_overnight_sweep_needs() -> None:
    state = SweepState(
        "demo",
        budget_trials=12,
        budget_dollars=0.5,
        budget_hours=None,
        done=3,
        failed={"oom": 1},
        infeasible=2,
        dollars=0.0123,
        frontier_size=2,
    )
    state.running["0"] = RunningTrial(
        7, "lora", "0", time.monotonic() - 5, step=12, loss=1.2345, max_steps=40
    )
    state.event("trial 6: oom: out of memory")
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_state(state))
    text = console.export_text()
    assert "trials 4 / 12" in text
    assert "spent $0.0123 / $0.50" in text
    assert "frontier 2" in text and "oom 1" in text and "infeasible 2" in text
    assert "#7" in text and "12/40" in text and "1.2345" in text
    assert "trial 6: oom" in text


def test_piped_output_logs_each_running_trial_once_per_step_moved() -> None:
    from sweeps.progress import _print_running

    state = SweepState("demo", budget_trials=4, budget_dollars=None, budget_hours=None)
    state.running["cpu0"] = RunningTrial(
        3, "lora", "cpu0", time.monotonic() - 95, step=40, loss=2.31017, max_steps=120
    )
    state.running["cpu1"] = RunningTrial(4, "freeze", "cpu1", time.monotonic())  # not started
    console = Console(record=True, width=200, file=io.StringIO())
    logged: dict[int, int | None] = {}
    _print_running(state, console, logged)
    _print_running(state, console, logged)  # nothing moved: nothing new
    state.running["cpu0"].step = 41
    _print_running(state, console, logged)
    lines = console.export_text().splitlines()
    assert lines[0].startswith("trial 3 (lora, cpu0): step 40/120, loss 2.3102, 9")
    assert lines[1].startswith("trial 3 (lora, cpu0): step 41/120")
    assert len(lines) == 2


def test_on_a_terminal_the_panel_redraws_while_the_sweep_runs() -> None:
    """The live panel follows the state as the sweep changes it, and ends on the final state."""
    from sweeps.progress import watch

    class Counting:  # stands in for a Sweep: watch() needs its state and run()
        def __init__(self) -> None:
            self.state = SweepState("demo", budget_trials=4, budget_dollars=None, budget_hours=None)

        def run(self) -> SweepState:
            for done in (1, 2, 3):
                time.sleep(0.7)
                with self.state.lock:
                    self.state.done = done
            self.state.event("trial 2 complete (lora)")
            return self.state

    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=140)
    assert watch(Counting(), console).done == 3
    drawn = console.file.getvalue()
    assert "trials 1 / 4" in drawn and "trials 2 / 4" in drawn  # redrawn while it ran
    last = drawn.rsplit("study demo", 1)[1]  # the panel as it was left
    assert "trials 3 / 4" in last and "trial 2 complete (lora)" in last


@pytest.mark.slow
def test_a_running_trial_is_in_the_results_file_with_its_steps_so_far(
    demo, tmp_path, monkeypatch
) -> None:
    """While a real trial trains, its row says ``running`` and its loss curve grows in DuckDB;
    when it ends, the final row replaces it (no step written twice)."""
    from click.testing import CliRunner
    from conftest import write_demo_spec

    from sweeps import worker
    from sweeps.results.store import ResultsStore
    from sweeps.spec import load_spec
    from sweeps.trial.isolation import run_trial_isolated
    from tui.cli import main
    from tui.screens.sweeps_data import load_trial

    monkeypatch.setattr(worker, "PROGRESS_WRITE_S", 0.05)
    spec = load_spec(write_demo_spec(tmp_path, "live", trials=1, save="none", max_steps=6))
    db = tmp_path / "results.duckdb"
    seen: list[tuple[str, int | None, int]] = []
    statuses = []

    def observed(config, *, on_step, **kwargs):
        def step_then_look(step) -> None:
            on_step(step)
            if step.step in (2, 4):  # the trial's child waits on its pipe while we look
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    detail = load_trial(db, "live", 0)
                    if detail and detail.row["steps_done"] == step.step:
                        seen.append(
                            (detail.row["state"], detail.row["steps_done"], len(detail.steps))
                        )
                        if step.step == 4:
                            statuses.append(
                                CliRunner().invoke(
                                    main,
                                    [
                                        "sweep",
                                        "status",
                                        "live",
                                        "--db",
                                        str(db),
                                        "--format",
                                        "json",
                                    ],
                                )
                            )
                        return
                    time.sleep(0.05)
                raise AssertionError(f"step {step.step} never reached the results file")

        return run_trial_isolated(config, on_step=step_then_look, **kwargs)

    state = worker.Sweep.open(spec, run_trial=observed).run()
    assert state.done == 1
    assert seen == [("running", 2, 2), ("running", 4, 4)]
    (status,) = statuses  # `paretune sweep status` mid-trial names the running trial's step
    assert status.exit_code == 0, status.output
    (report,) = json.loads(status.output)
    (running,) = report["running_trials"]
    assert (running["number"], running["steps_done"], running["max_steps"]) == (0, 4, 6)
    assert running["loss"] > 0 and report["running"] == 1
    store = ResultsStore(db)
    (row,) = store.trials("live")
    assert row["state"] == "complete" and row["steps_done"] == 6
    steps = store.steps("live", 0)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
