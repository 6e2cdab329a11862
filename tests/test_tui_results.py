"""The sweeps and frontier screens on a real results file written through ResultsStore."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest
from conftest import RESULTS_STUDY as STUDY
from conftest import RESULTS_TRIALS as TRIALS
from conftest import write_study

from sweeps.results.store import ResultsStore
from sweeps.spec import load_spec
from tui.app import ParetuneApp
from tui.messages import SweepThisPlan
from tui.widgets import ErrorLine


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("results") / "results.duckdb"
    write_study(db)
    return db


def shown_text(widget) -> str:
    """What a Static shows, as plain text (it may hold a rich Table)."""
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_frontier_draws_study_and_marks_pareto(results_db: Path) -> None:
    app = ParetuneApp(db=results_db, start="frontier")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        assert screen.study == STUDY
        assert [p.number for p in screen.points] == [0, 1, 2, 3, 4]  # the OOM trial is not drawn
        assert {p.number for p in screen.points if p.pareto} == {
            row["number"] for row in ResultsStore(results_db).frontier(STUDY)
        }
        assert not next(p for p in screen.points if p.number == 4).pareto
        chart = screen.query_one("#chart")
        drawn = chart.plt.build()
        assert f"{STUDY}: 5 trials" in drawn
        assert "forgetting" in str(screen.query_one("#view").render())
        await pilot.press("m")
        assert "cost" in str(screen.query_one("#view").render())
        # Selecting a point opens that trial on the sweeps screen.
        screen.query_one("#points").focus()
        await pilot.press("down", "down", "enter")
        await _settle(pilot)
        await _settle(pilot)
        detail = shown_text(app.screen.query_one("#trial-text"))
        assert f"{STUDY} / 2" in detail and "parameters" in detail
        assert "dora" in detail


async def test_frontier_warns_when_its_trials_ran_on_different_data(tmp_path: Path) -> None:
    from sweeps.results.frontier import mixed_data_warning

    db = tmp_path / "results.duckdb"
    one, other = "a1" * 32, "b2" * 32
    write_study(db, "same-data", datetime(2026, 1, 1), {n: one for n in range(6)})
    write_study(db, "mixed-data", datetime(2026, 1, 2), {0: one, 1: one, 2: other, 3: other})
    app = ParetuneApp(db=db, start="frontier")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        assert screen.study == "mixed-data"  # the newest study first
        warning = screen.query_one("#data-warning")
        said = str(warning.render())
        assert said == mixed_data_warning(ResultsStore(db).trials("mixed-data"))
        assert "2 different data sets" in said and "a1a1a1a1a1a1: #0, #1" in said
        assert "b2b2b2b2b2b2: #2, #3" in said  # trial 4 recorded no fingerprint: not counted
        assert warning.display and warning.region.height > 0  # on screen at 120x40
        assert screen.query_one("#chart").region.height >= 8  # the chart keeps its room
        screen.query_one("#study").value = "same-data"
        await _settle(pilot)
        assert screen.study == "same-data" and screen.data_warning is None
        assert not screen.query_one("#data-warning").display


async def test_sweeps_screen_lists_study_and_failed_trial_detail(results_db: Path) -> None:
    app = ParetuneApp(db=results_db, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        studies = screen.query_one("#studies")
        assert studies.row_count == 1
        assert studies.get_row_at(0)[:4] == [STUDY, "6/8", "5", "1"]
        assert screen.query_one("#trials").row_count == len(TRIALS)
        screen.query_one("#trials").focus()
        await pilot.press(*["down"] * 5, "enter")
        await _settle(pilot)
        detail = shown_text(screen.query_one("#trial-text"))
        assert "CUDA out of memory" in detail
        assert "paretune trial --method qlora" in detail


async def test_sweep_this_plan_writes_a_spec_that_loads(results_db: Path, tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb", start="sweeps")
    inputs = dict(
        model="llama-3.1-8b",
        seq_len=1024,
        batch=2,
        grad_accum=8,
        dataset_tokens=5_000_000,
        epochs=2.0,
        gpu="h100-sxm",
        gpus=1,
        provider=None,
        rank=16,
        targets="all",
        optimizer="adamw",
        grad_checkpointing=True,
        methods=["lora", "qlora"],
        cheapest_dollars=3.5,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        app.post_message(SweepThisPlan(inputs))
        await _settle(pilot)
        screen = app.screen
        assert screen.spec_path is not None and screen.spec_path.exists()
        spec = load_spec(screen.spec_path)
        assert spec.model == "llama-3.1-8b" and spec.hardware.gpu == "h100-sxm"
        assert spec.search.methods == ("lora", "qlora")
        assert spec.budget.dollars == 35.0 and spec.budget.trials == 10
        assert spec.run.results == str(tmp_path / "results.duckdb")
        assert "# " in screen.spec_path.read_text()  # commented
        # An edit that breaks the spec is refused inline and not saved.
        editor = screen.query_one("#spec-editor")
        good = editor.text
        editor.text = good.replace('methods = ["lora", "qlora"]', 'methods = ["lora", "qlra"]')
        await pilot.press("ctrl+s")
        error = screen.query_one("#sweeps-error", ErrorLine)
        assert error.shown and "qlra" in str(error.render())
        assert load_spec(screen.spec_path) == spec


async def test_open_spec_lists_specs_at_hand(tmp_path: Path, monkeypatch) -> None:
    from sweeps.spec import SweepSpec, write_spec

    monkeypatch.chdir(tmp_path)
    write_spec(SweepSpec(name="first"), tmp_path / "examples" / "first.toml")
    app = ParetuneApp(db=Path("runs/results.duckdb"), start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen.query_one("#spec-list").option_count == 1
        await pilot.press("tab", "enter")  # from the path field into the list; pick the first
        await pilot.pause()
        screen = app.screen
        assert screen.spec_path == Path("examples/first.toml")
        assert 'name = "first"' in screen.query_one("#spec-editor").text
        # A path that does not exist is an inline error, not a crash.
        screen.show_spec(Path("no/such.toml"))
        assert "cannot read" in str(screen.query_one("#sweeps-error").render())


async def test_chosen_study_stays_chosen_across_refreshes(tmp_path: Path) -> None:
    db = tmp_path / "results.duckdb"
    write_study(db, "older", datetime(2025, 1, 1))
    write_study(db, "newer", datetime(2026, 1, 1))
    app = ParetuneApp(db=db, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        assert screen.study == "newer"  # newest first
        screen.query_one("#studies").focus()
        await pilot.press("down")
        await _settle(pilot)
        assert screen.study == "older"
        for _ in range(3):
            await pilot.press("ctrl+r")
            await _settle(pilot)
        assert screen.study == "older"
        assert screen.query_one("#studies").cursor_row == 1


async def test_a_running_trial_shows_its_progress_and_its_detail_follows_it(tmp_path: Path) -> None:
    """The sweep writes a running trial's steps as it trains (see sweeps.worker); the trials
    table shows how far it is, and its open Trial tab reloads on each poll until it ends."""
    import re

    db = tmp_path / "results.duckdb"
    write_study(db)
    store = ResultsStore(db)
    running = {
        "study": STUDY,
        "number": len(TRIALS),
        "state": "running",
        "method": "lora",
        "rank": 4,
        "lr": 1e-3,
        "max_steps": 20,
        "predicted_peak_gb": 0.5,
    }

    def progress(done: int, **final) -> None:
        steps = [
            {"study": STUDY, "number": running["number"], "step": s, "loss": 3.0 / s}
            for s in range(1, done + 1)
        ]
        store.write_trials([{**running, "steps_done": done, **final}], steps)

    progress(5)
    app = ParetuneApp(db=db, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        trials = screen.query_one("#trials")
        assert str(trials.get_row_at(len(TRIALS))[1]) == "running 5/20"
        assert screen.query_one("#studies").get_row_at(0)[4] == "1"  # one running
        screen.open_trial(STUDY, len(TRIALS))
        await _settle(pilot)
        assert screen.shown_running
        assert re.search(r"steps_done\s+5\b", shown_text(screen.query_one("#trial-text")))

        async def polled_until(state: str, done: int) -> None:
            """The screen's own poll (every POLL_S) shows the new row and detail."""
            for _ in range(100):
                await pilot.pause(0.1)
                text = shown_text(screen.query_one("#trial-text"))
                if str(trials.get_row_at(len(TRIALS))[1]) == state and re.search(
                    rf"steps_done\s+{done}\b", text
                ):
                    return
            raise AssertionError(f"the screen never showed {state!r} with {done} steps")

        progress(12)
        await polled_until("running 12/20", 12)
        progress(20, state="complete", eval_nll=0.9, dollars=0.01)
        await polled_until("complete", 20)
        assert not screen.shown_running  # finished: no more reloads


async def test_a_study_written_by_another_program_appears_without_a_refresh(tmp_path: Path) -> None:
    """No study was running when the screen last looked; a sweep started elsewhere writes the
    results file, and the next poll (it sees the file change) lists the new study."""
    db = tmp_path / "results.duckdb"
    write_study(db, "first", datetime(2025, 1, 1))
    app = ParetuneApp(db=db, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        studies = app.screen.query_one("#studies")
        assert studies.row_count == 1
        write_study(db, "second", datetime(2026, 1, 1))
        for _ in range(100):
            await pilot.pause(0.1)
            if studies.row_count == 2:
                break
        assert [studies.get_row_at(i)[0] for i in range(studies.row_count)] == ["second", "first"]


async def test_a_pruned_trial_shows_where_it_stopped_and_uses_up_the_budget(tmp_path: Path) -> None:
    """A trial early stopping stopped (state pruned) reads as such on the Sweeps screen: its
    state cell names the rung, its detail its stopped_at_step, and the study's progress counts
    it against the trial budget (it is not a failure)."""
    db = tmp_path / "results.duckdb"
    write_study(db)
    pruned = {
        "study": STUDY,
        "number": len(TRIALS),
        "state": "pruned",
        "method": "lora",
        "rank": 4,
        "lr": 0.3,
        "max_steps": 90,
        "steps_done": 30,
        "stopped_at_step": 30,
        "eval_nll": 3.5,
        "dollars": 0.001,
        "error": "stopped at step 30 by early stopping: place 5 of 6 at the rung",
    }
    ResultsStore(db).write_trials([pruned], [])
    app = ParetuneApp(db=db, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        trials = screen.query_one("#trials")
        assert str(trials.get_row_at(len(TRIALS))[1]) == "pruned at 30"
        assert screen.query_one("#studies").get_row_at(0)[1:4] == ["7/8", "5", "1"]
        screen.open_trial(STUDY, len(TRIALS))
        await _settle(pilot)
        detail = shown_text(screen.query_one("#trial-text"))
        assert "stopped_at_step" in detail and "stopped at step 30 by early stopping" in detail
