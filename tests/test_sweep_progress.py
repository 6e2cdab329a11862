"""The live display shows budget, spend, running trials' step and loss, and the frontier size."""

from __future__ import annotations

import io
import time

from rich.console import Console

from sweeps.progress import render_state
from sweeps.worker import RunningTrial, SweepState


def test_render_state_shows_what_an_overnight_sweep_needs() -> None:
    state = SweepState("demo", budget_trials=12, budget_dollars=0.5, budget_hours=None,
                       done=3, failed={"oom": 1}, infeasible=2, dollars=0.0123, frontier_size=2)
    state.running["0"] = RunningTrial(7, "lora", "0", time.monotonic() - 5, step=12, loss=1.2345, max_steps=40)
    state.event("trial 6: oom: out of memory")
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_state(state))
    text = console.export_text()
    assert "trials 4 / 12" in text
    assert "spent $0.0123 / $0.50" in text
    assert "frontier 2" in text and "oom 1" in text and "infeasible 2" in text
    assert "#7" in text and "12/40" in text and "1.2345" in text
    assert "trial 6: oom" in text
