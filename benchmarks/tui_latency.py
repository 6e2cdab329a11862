"""Terminal UI latency: input change -> updated plan table, and first paint of 100,000 rows.

Run from the repository root:

    python benchmarks/tui_latency.py [--repeats 20]

Prints each figure next to its reference with the ratio (ours / reference):

- plan table: median time from a changed input (sequence length) to the table showing the
  new estimates, against the 50 ms aim;
- SQL result: time from Ctrl+R on a 100,000-row query to the result painted on screen,
  against the 1 s aim and against Textual's built-in DataTable filled with the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from tui.app import ParetuneApp

SIZE = (120, 40)
ROWS = 100_000


async def plan_latency(repeats: int) -> tuple[list[float], list[float]]:
    """(input change -> table updated and painted, the handler's recompute alone), seconds."""
    app = ParetuneApp(db=Path(tempfile.mkdtemp()) / "none.duckdb")
    times, handler = [], []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#methods")
        field = app.screen.query_one("#seq-len")
        for i in range(repeats):
            before = str(table.get_row_at(1)[1])
            start = time.perf_counter()
            field.value = str(1024 + 256 * (i % 2))  # alternate, so every change is a change
            while str(table.get_row_at(1)[1]) == before:
                await asyncio.sleep(0)
            app.screen._compositor.render_update(full=True)  # and painted
            times.append(time.perf_counter() - start)
        from textual.widgets import Input

        for i in range(repeats):
            with app.screen.prevent(Input.Changed):  # call the handler's work directly
                field.value = str(2048 + 256 * (i % 2))
            start = time.perf_counter()
            app.screen.recompute()
            handler.append(time.perf_counter() - start)
    return times, handler


async def first_paint(db: Path, sql: str) -> float:
    app = ParetuneApp(db=db, start="sql")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.screen.query_one("#editor").text = sql
        start = time.perf_counter()
        await pilot.press("ctrl+r")
        while not app.screen.query("#result-table"):
            await asyncio.sleep(0.001)
        await pilot.pause()
        app.export_screenshot()  # render the whole screen, the table's visible rows included
        return time.perf_counter() - start


async def builtin_datatable_paint(db: Path, sql: str) -> float:
    """The reference: the same query shown in Textual's own DataTable."""
    from textual.app import App
    from textual.widgets import DataTable

    class Reference(App):
        def compose(self):
            yield DataTable(id="table")

    app = Reference()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        start = time.perf_counter()
        with duckdb.connect(str(db), read_only=True) as connection:
            result = connection.execute(sql)
            columns = [d[0] for d in result.description]
            rows = result.fetchall()
        table = app.query_one(DataTable)
        table.add_columns(*columns)
        table.add_rows(rows)
        await pilot.pause()
        app.export_screenshot()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    plan, handler = asyncio.run(plan_latency(args.repeats))
    folder = Path(tempfile.mkdtemp())
    db = folder / "bench.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute(
            "CREATE TABLE big AS SELECT range AS i, range * 0.5 AS half, "
            "'row ' || range AS label, "
            f"range % 7 = 0 AS flag FROM range({ROWS})"
        )
    sql = "SELECT * FROM big ORDER BY i"
    ours = statistics.median(asyncio.run(first_paint(db, sql)) for _ in range(3))
    reference = statistics.median(asyncio.run(builtin_datatable_paint(db, sql)) for _ in range(3))

    median_ms = statistics.median(plan) * 1e3
    worst_ms = max(plan) * 1e3
    print(f"{'measure':52} {'ours':>10} {'reference':>10} {'ratio':>7}")
    print(
        f"{'plan table after an input change (median, ms)':52} {median_ms:10.1f} {50.0:10.1f} "
        f"{median_ms / 50.0:7.2f}   (reference: the 50 ms aim)"
    )
    worst = f"plan table after an input change (worst of {len(plan)}, ms)"
    print(f"{worst:52} {worst_ms:10.1f} {50.0:10.1f} {worst_ms / 50.0:7.2f}")
    handler_ms = statistics.median(handler) * 1e3
    print(
        f"{'  of which the handler recomputing (median, ms)':52} {handler_ms:10.1f} {50.0:10.1f} "
        f"{handler_ms / 50.0:7.2f}"
    )
    print(
        f"{'100,000-row result, Ctrl+R to first paint (s)':52} {ours:10.3f} {1.0:10.3f} "
        f"{ours / 1.0:7.2f}   (reference: the 1 s aim)"
    )
    print(
        f"{'100,000-row result vs Textual DataTable (s)':52} {ours:10.3f} {reference:10.3f} "
        f"{ours / reference:7.2f}   (reference: textual.widgets.DataTable)"
    )


if __name__ == "__main__":
    main()
