"""A sweep launched from the app: a detached `paretune sweep run` that completes on the demo."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sweeps.spec import load_spec
from tui.app import ParetuneApp
from tui.launcher import launched_sweeps

SPEC = """\
# Two tiny demo trials: what the app launches in this test.
name = "tui-demo"
model = "demo"

[hardware]
device = "cpu"
usd_per_hour = 0.10

[search]
methods = ["lora"]
rank = 4
lr = 1e-3
max_steps = 2

[trial]
batch = 4
eval_every = 10      # no mid-run eval: two steps only
max_new_tokens = 4   # short exact-match generations

[budget]
trials = 2

[run]
dir = "runs"
results = "runs/results.duckdb"
save = "none"
timeout_s = 300
"""


@pytest.mark.slow
async def test_sweep_launched_from_the_app_completes(demo, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(SPEC)
    load_spec(spec_path)  # the spec itself is valid
    app = ParetuneApp(db=Path("runs/results.duckdb"), run_dir=Path("runs"), start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#spec-path").value = str(spec_path)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert screen.spec_path == spec_path
        await pilot.press("ctrl+l")
        await app.workers.wait_for_complete()  # the preflight checks, then the launch
        await pilot.pause()
        launched = screen.launched
        assert launched is not None
        # Detached: its own session and process group, so closing the app does not stop it.
        assert os.getpgid(launched.pid) == launched.pid != os.getpgid(0)
        deadline = time.monotonic() + 400
        while launched.exit_code() is None and time.monotonic() < deadline:
            await pilot.pause(1.0)
        assert launched.exit_code() == 0, launched.log_tail(40)
        await pilot.pause(3.0)  # the next poll shows the final rows
        await app.workers.wait_for_complete()
        await pilot.pause()
        studies = screen.query_one("#studies")
        assert studies.get_row_at(0)[:3] == ["tui-demo", "2/2", "2"], launched.log_tail(40)
        trials = screen.query_one("#trials")
        assert trials.row_count == 2
        assert [str(trials.get_row_at(i)[1]) for i in range(2)] == ["complete", "complete"]
        # The frontier screen draws the real demo study.
        await pilot.press("f5")
        await app.workers.wait_for_complete()
        await pilot.pause()
        frontier = app.screen
        assert frontier.study == "tui-demo" and len(frontier.points) == 2
        assert any(point.pareto for point in frontier.points)
        assert all(
            point.quality is not None and point.forgetting is not None for point in frontier.points
        )
        assert "tui-demo: 2 trials" in frontier.query_one("#chart").plt.build()
    # The record lets a later session of the app find the sweep and its log.
    found = launched_sweeps(Path("runs"))
    assert found and found[0].pid == launched.pid and Path(found[0].log).exists()


@pytest.mark.slow
async def test_sweep_launched_from_the_app_can_be_stopped(
    demo, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec_path = tmp_path / "long.toml"
    spec_path.write_text(
        SPEC.replace('name = "tui-demo"', 'name = "tui-stop"')
        .replace("max_steps = 2", "max_steps = 400")
        .replace("trials = 2", "trials = 50")
    )
    app = ParetuneApp(db=Path("runs/results.duckdb"), run_dir=Path("runs"), start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen.show_spec(spec_path)
        await pilot.press("ctrl+l")
        await app.workers.wait_for_complete()  # the preflight checks, then the launch
        await pilot.pause()
        launched = app.screen.launched
        await pilot.pause(5.0)  # let it start its first trial
        assert launched.running, launched.log_tail(40)
        await pilot.press("ctrl+k")
        deadline = time.monotonic() + 120
        while launched.exit_code() is None and time.monotonic() < deadline:
            await pilot.pause(0.5)
        assert launched.exit_code() is not None, "the sweep did not stop on Ctrl-C"
        # Nothing of it is left running: the whole process group got the signal.
        with pytest.raises(ProcessLookupError):
            os.killpg(launched.pid, 0)
