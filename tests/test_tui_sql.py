"""The SQL screen on a real DuckDB file: run, inline errors, 100,000 rows, export."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet
import pytest

from tui.app import ParetuneApp
from tui.widgets import ErrorLine


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "results.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "CREATE TABLE big AS SELECT range AS i, range * 0.5 AS half, 'row ' || range AS label "
            "FROM range(100000)"
        )
    return path


async def _run_sql(pilot, sql: str) -> None:
    editor = pilot.app.screen.query_one("#editor")
    editor.text = sql
    await pilot.press("ctrl+r")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_query_shows_100000_rows(results_db: Path) -> None:
    from textual_fastdatatable import DataTable

    app = ParetuneApp(db=results_db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await _run_sql(pilot, "SELECT * FROM big ORDER BY i")
        table = app.screen.query_one("#result-table", DataTable)
        assert table.row_count == 100_000
        assert app.screen.result.column_names == ["i", "half", "label"]
        assert "100,000 rows × 3 columns" in str(app.screen.query_one("#sql-status").render())
        assert not app.screen.query_one("#sql-error", ErrorLine).shown


async def test_sql_error_is_inline_and_keeps_last_result(results_db: Path) -> None:
    app = ParetuneApp(db=results_db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await _run_sql(pilot, "SELECT 42 AS answer")
        await _run_sql(pilot, "SELEC * FROM big")
        error = app.screen.query_one("#sql-error", ErrorLine)
        assert error.shown
        assert "SQL error" in str(error.render())
        assert "syntax error" in str(error.render()).lower()
        assert app.screen.result.to_pylist() == [{"answer": 42}]
        await _run_sql(pilot, "SELECT * FROM no_such_table")
        assert "no_such_table" in str(error.render())


async def test_console_cannot_change_the_results_file(results_db: Path) -> None:
    app = ParetuneApp(db=results_db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await _run_sql(pilot, "DELETE FROM big")
        error = app.screen.query_one("#sql-error", ErrorLine)
        assert error.shown and "read-only" in str(error.render()).lower()
    with duckdb.connect(str(results_db), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM big").fetchone() == (100_000,)


async def test_export_csv_and_parquet(results_db: Path, tmp_path: Path) -> None:
    app = ParetuneApp(db=results_db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await _run_sql(pilot, "SELECT i, label FROM big WHERE i < 3 ORDER BY i")
        for name in ("out.csv", "out.parquet"):
            await pilot.press("ctrl+e")
            await pilot.pause()
            field = app.screen.query_one("#export-path")
            field.value = str(tmp_path / name)
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert (tmp_path / "out.csv").read_text().splitlines()[1] == '0,"row 0"'
        assert pyarrow.parquet.read_table(tmp_path / "out.parquet").num_rows == 3
        # A name without a known suffix is refused inline.
        await pilot.press("ctrl+e")
        await pilot.pause()
        app.screen.query_one("#export-path").value = str(tmp_path / "out.xlsx")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "Export failed" in str(app.screen.query_one("#sql-error").render())
        assert not (tmp_path / "out.xlsx").exists()


async def test_example_query_fills_editor(results_db: Path) -> None:
    from tui.screens.sql import EXAMPLE_QUERIES

    app = ParetuneApp(db=results_db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one("#editor").text == EXAMPLE_QUERIES[0][1]


async def test_a_file_that_is_not_duckdb_is_an_inline_error(tmp_path: Path) -> None:
    not_duckdb = tmp_path / "results.duckdb"
    not_duckdb.write_text("this is not a database\n")
    app = ParetuneApp(db=not_duckdb, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        await _run_sql(pilot, "SELECT 1")
        error = app.screen.query_one("#sql-error", ErrorLine)
        assert error.shown and "not a readable DuckDB database" in str(error.render())
    assert not_duckdb.read_text() == "this is not a database\n"  # left untouched
