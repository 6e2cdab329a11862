"""SVG snapshots of every screen at 120x40 (`pytest --snapshot-update` rewrites them).

Deterministic by construction: a fixed "today" for price ages, relative database paths
(the test runs in a temporary folder), results written with fixed values, no timings shown.
The plan snapshot follows the shipped price catalogue: a price update changes it, on purpose.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest
from conftest import write_study

from tui.app import ParetuneApp

SIZE = (120, 40)
TODAY = date(2026, 11, 28)


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _app(start: str) -> ParetuneApp:
    return ParetuneApp(db=Path("results.duckdb"), start=start, today=TODAY)


async def _settle(pilot) -> None:
    # A focused field's cursor blinks: held steady, or the capture depends on the moment.
    for field in pilot.app.screen.query("Input, TextArea"):
        field.cursor_blink = False
    # Twice: a worker's result may start another (a query, then its row count), and on a
    # loaded machine the second can begin after the first wait returned.
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.1)


def test_plan_screen(snap_compare, in_tmp: Path) -> None:
    assert snap_compare(_app("plan"), terminal_size=SIZE, run_before=_settle)


def test_help_screen(snap_compare, in_tmp: Path) -> None:
    assert snap_compare(_app("plan"), press=["f1"], terminal_size=SIZE, run_before=_settle)


def test_sweeps_screen(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")
    assert snap_compare(_app("sweeps"), terminal_size=SIZE, run_before=_settle)


def test_trial_detail(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")

    async def open_trial(pilot) -> None:
        await _settle(pilot)
        pilot.app.screen.open_trial("demo-frontier", 1)
        await _settle(pilot)

    assert snap_compare(_app("sweeps"), terminal_size=SIZE, run_before=open_trial)


def test_sql_screen(snap_compare, in_tmp: Path) -> None:
    with duckdb.connect(str(in_tmp / "results.duckdb")) as connection:
        connection.execute(
            "CREATE TABLE big AS SELECT range AS i, range * 0.5 AS half FROM range(1000)"
        )

    async def run_query(pilot) -> None:
        pilot.app.screen.query_one("#editor").text = "SELECT * FROM big ORDER BY i"
        await pilot.press("ctrl+r")
        await _settle(pilot)

    assert snap_compare(_app("sql"), terminal_size=SIZE, run_before=run_query)


def test_sql_error(snap_compare, in_tmp: Path) -> None:
    async def run_query(pilot) -> None:
        pilot.app.screen.query_one("#editor").text = "SELEC 1"
        await pilot.press("ctrl+r")
        await _settle(pilot)

    assert snap_compare(_app("sql"), terminal_size=SIZE, run_before=run_query)


def test_frontier_screen(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")
    assert snap_compare(_app("frontier"), terminal_size=SIZE, run_before=_settle)


def test_plan_screen_at_80x24(snap_compare, in_tmp: Path) -> None:
    assert snap_compare(_app("plan"), terminal_size=(80, 24), run_before=_settle)


def test_sweeps_screen_at_80x24(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")
    assert snap_compare(_app("sweeps"), terminal_size=(80, 24), run_before=_settle)


def test_frontier_screen_at_80x24(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")
    assert snap_compare(_app("frontier"), terminal_size=(80, 24), run_before=_settle)


def test_trial_detail_at_80x24(snap_compare, in_tmp: Path) -> None:
    write_study(in_tmp / "results.duckdb")

    async def open_trial(pilot) -> None:
        await _settle(pilot)
        pilot.app.screen.query_one("#trials").focus()
        await pilot.press("down", "enter")  # Enter on a trial opens the Trial tab
        await _settle(pilot)

    assert snap_compare(_app("sweeps"), terminal_size=(80, 24), run_before=open_trial)
