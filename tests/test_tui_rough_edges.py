"""Rough edges a new user met in the app, each pinned by a pilot test at 120x40 and 80x24."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import RESULTS_STUDY as STUDY
from conftest import write_study
from textual.widgets import Footer, TabbedContent

from tui.app import ParetuneApp


def shown_text(widget) -> str:
    """What a Static shows, as plain text (it may hold a rich Table)."""
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


SIZES = [(120, 40), (80, 24)]


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("results") / "results.duckdb"
    write_study(db)
    return db


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _footer_keys(app: ParetuneApp) -> list[str]:
    """The keys the footer shows whole within the terminal's width."""
    footer = app.screen.query_one(Footer)
    width = app.size.width
    return [
        key.key
        for key in footer.query("FooterKey")
        if key.region.width and key.region.right <= width
    ]


@pytest.mark.parametrize("size", SIZES)
async def test_enter_on_a_trial_opens_the_trial_tab(results_db: Path, size) -> None:
    app = ParetuneApp(db=results_db, start="sweeps")
    async with app.run_test(size=size) as pilot:
        await _settle(pilot)
        app.screen.query_one("#trials").focus()
        await pilot.press("down", "enter")
        await _settle(pilot)
        assert app.screen.query_one("#sweeps-tabs", TabbedContent).active == "trial-tab"
        await pilot.pause(0.3)  # no later focus event switches it back
        assert app.screen.query_one("#sweeps-tabs", TabbedContent).active == "trial-tab"
        assert f"{STUDY} / 1" in shown_text(app.screen.query_one("#trial-text"))


@pytest.mark.parametrize("size", SIZES)
async def test_enter_on_a_frontier_point_opens_the_trial_tab(results_db: Path, size) -> None:
    app = ParetuneApp(db=results_db, start="frontier")
    async with app.run_test(size=size) as pilot:
        await _settle(pilot)
        app.screen.query_one("#points").focus()
        await pilot.press("down", "enter")
        await _settle(pilot)
        await _settle(pilot)
        assert app.current_mode == "sweeps"
        assert app.screen.query_one("#sweeps-tabs", TabbedContent).active == "trial-tab"


@pytest.mark.parametrize("start", ["plan", "sweeps", "sql", "frontier"])
async def test_footer_shows_the_screen_keys_at_80x24(results_db: Path, start: str) -> None:
    app = ParetuneApp(db=results_db, start=start)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        shown = _footer_keys(app)
        others = {"f2": "plan", "f3": "sweeps", "f4": "sql", "f5": "frontier"}
        expected = {"ctrl+q", "f1"} | {key for key, mode in others.items() if mode != start}
        assert expected <= set(shown), shown
        # The key of the screen already shown is left out; the screen's first key fits.
        assert not {key for key, mode in others.items() if mode == start} & set(shown)
        assert len(shown) > len(expected)


def _documented_footers() -> dict[str, list[str]]:
    """The footer line of each screen capture in docs/guides/ui.md, as its "key label" parts."""
    import re

    text = (Path(__file__).parents[1] / "docs" / "guides" / "ui.md").read_text()
    marks = {"^o Open spec": "sweeps", "^r Run": "sql", "m Next view": "frontier"}
    footers: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.endswith("▏^p palette"):
            parts = re.split(r" {2,}", line.removesuffix("▏^p palette").strip())
            screen = next(name for mark, name in marks.items() if mark in line)
            footers.setdefault(screen, parts)
            assert footers[screen] == parts, f"two footers of {screen} differ in ui.md"
    return footers


@pytest.mark.parametrize("start", ["sweeps", "sql", "frontier"])
async def test_the_guide_shows_each_screen_footer_as_the_app_draws_it(
    results_db: Path, start: str
) -> None:
    documented = _documented_footers()[start]
    app = ParetuneApp(db=results_db, start=start)
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        drawn = [str(key.render()) for key in app.screen.query_one(Footer).query("FooterKey")]
    # The capture is cut at its width: every whole label it shows is the app's, in order.
    whole = documented if documented == drawn[: len(documented)] else documented[:-1]
    assert whole == drawn[: len(whole)], (documented, drawn)


async def test_ctrl_q_asks_before_losing_spec_edits(tmp_path: Path) -> None:
    from sweeps.spec import SweepSpec, write_spec
    from tui.screens.quit import ConfirmQuitScreen

    spec = write_spec(SweepSpec(name="edited"), tmp_path / "edited.toml")
    app = ParetuneApp(db=tmp_path / "results.duckdb", start="sweeps")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        app.screen.show_spec(spec)
        await pilot.pause()
        await pilot.press("ctrl+q")  # nothing edited: no question
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuitScreen) and app.return_code is not None

    app = ParetuneApp(db=tmp_path / "results.duckdb", start="sweeps")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        app.screen.show_spec(spec)
        await pilot.pause()
        editor = app.screen.query_one("#spec-editor")
        editor.focus()
        await pilot.press("end", "#", "x")
        await pilot.pause()
        await pilot.press("f5")  # edits are kept on any screen
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("escape")  # back: the app stays, the edit too
        await pilot.pause()
        assert app.return_code is None
        await pilot.press("f3")
        await pilot.pause()
        assert "toml#x" in app.screen.query_one("#spec-editor").text
        await pilot.press("ctrl+s", "ctrl+q")  # saved: quits without asking
        await pilot.pause()
        assert app.return_code is not None
        assert "toml#x" in spec.read_text()


@pytest.mark.parametrize("size", SIZES)
async def test_model_field_focused_completes_closest_and_waits_to_complain(size, tmp_path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb", start="plan")
    async with app.run_test(size=size) as pilot:
        await _settle(pilot)
        field = app.screen.query_one("#model")
        assert app.focused is field
        field.value = ""
        await pilot.press(*"qwen2.5-7")
        await pilot.pause(0.6)  # past the lookup's pause: "qwen2.5-7" is not a model
        await _settle(pilot)
        assert field._suggestion == "qwen2.5-7b"
        assert not app.screen.query_one("#plan-error").shown  # still typing a catalogue name
        await pilot.press("tab")  # leaving the field as it is: now it is an error
        await _settle(pilot)
        error = app.screen.query_one("#plan-error")
        assert error.shown and "qwen2.5-7" in str(error.render())
        field.focus()
        await pilot.press("end", "b")
        await _settle(pilot)
        assert app.screen.arch_name == "qwen2.5-7b"


async def test_plan_table_fits_beside_the_form_at_80x24(tmp_path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb", start="plan")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        table = app.screen.query_one("#methods")
        labels = [c.label.plain.strip() for c in table.columns.values()]
        assert labels[-2:] == ["$", "sim GB"]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert table.region.right <= 80


async def test_sql_grid_shows_booleans_as_true_false(tmp_path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb", start="sql")
    async with app.run_test(size=(80, 24)) as pilot:
        app.screen.query_one("#editor").text = "SELECT true AS kept, false AS dropped"
        await pilot.press("ctrl+r")
        await _settle(pilot)
        grid = app.screen.query_one("#result-table")
        assert [str(v) for v in grid.get_row_at(0)] == ["true", "false"]
        assert app.screen.result.column("kept").to_pylist() == [True]  # exports keep booleans


@pytest.mark.parametrize("size", SIZES)
async def test_frontier_legend_is_a_line_under_the_chart(results_db: Path, size) -> None:
    from sweeps.results.colours import hex_rgb, method_colour

    app = ParetuneApp(db=results_db, start="frontier")
    async with app.run_test(size=size) as pilot:
        await _settle(pilot)
        chart = app.screen.query_one("#chart")
        drawn = chart.plt.build()
        assert "Pareto-optimal" not in drawn and "lora" not in drawn  # no legend over points
        legend = app.screen.query_one("#legend").content
        assert "lora" in str(legend) and "Pareto-optimal" in str(legend)
        assert legend.spans[0].style == method_colour("dora")  # the first method's dot
        colours = chart.plt._active.monitor.color  # one per series drawn
        series = [set(per_point) for per_point in colours]  # each point's colour, per series
        for method in ("dora", "freeze", "full", "lora"):
            assert {hex_rgb(method_colour(method))} in series
