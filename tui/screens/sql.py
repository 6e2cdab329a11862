"""The SQL screen: an editor, a results table that stays fast at 100,000 rows, export.

Queries run read-only on the results file in a thread worker, through the connection factory
`paretune sql` uses (:mod:`sweeps.results.readonly`): no file but the results file, no
extension, no setting changes, and COPY, ATTACH, CHECKPOINT and the like refused inline; without
a results file, on an in-memory database locked down the same way. The result arrives as an
Arrow table and is shown by textual-fastdatatable's Arrow backend, which renders only the
visible rows, so a large result paints as fast as a small one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Header, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from sweeps.results.export import ExportError, write_table
from tui.db import query_arrow
from tui.widgets import AppFooter, AppScreen, ErrorLine

__all__ = ["EXAMPLE_QUERIES", "ExportError", "SqlScreen", "export_table"]

# Over the schema documented in docs/reference/schema.md.
EXAMPLE_QUERIES: list[tuple[str, str]] = [
    ("Studies and their spend", "SELECT * FROM studies;"),
    (
        "Trials by quality",
        "SELECT study, number, method, state, eval_nll, retain_delta_nll, dollars\n"
        "FROM trials\nORDER BY eval_nll NULLS LAST\nLIMIT 50;",
    ),
    ("The Pareto frontier", "SELECT * FROM frontier;"),
    ("Planner calibration (predicted vs measured)", "SELECT * FROM calibration;"),
    (
        "Mean forgetting per method",
        "SELECT method, count(*) AS trials, avg(retain_delta_nll) AS mean_delta_nll,\n"
        "       avg(dollars) AS mean_dollars\nFROM trials WHERE state = 'complete'\n"
        "GROUP BY method ORDER BY mean_delta_nll;",
    ),
    (
        "Loss curve of one trial",
        "SELECT step, loss, eval_nll FROM steps\nWHERE study = (SELECT max(study) FROM steps)"
        " AND number = 0\nORDER BY step;",
    ),
]


def export_table(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` (.csv, .parquet or .json), as ``paretune sql --out`` does."""
    return write_table(table, path)


def _shown(table: pa.Table) -> pa.Table:
    """``table`` as the grid shows it: booleans as true/false (the grid's own ``X False`` reads
    as a mark and a value). Exports write the table itself."""
    for index, field in enumerate(table.schema):
        if pa.types.is_boolean(field.type):
            table = table.set_column(index, field.name, table.column(index).cast(pa.string()))
    return table


@dataclass
class QueryFinished(Message):
    sql: str
    table: pa.Table


@dataclass
class QueryFailed(Message):
    error: BaseException


@dataclass
class ExportFinished(Message):
    path: Path | None
    error: BaseException | None = None


class ExamplesScreen(ModalScreen[str | None]):
    """Pick an example query; returns its SQL."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    ExamplesScreen { align: center middle; }
    ExamplesScreen > OptionList {
        width: 70; height: auto; max-height: 80%; border: thick $primary;
    }
    """

    def compose(self) -> ComposeResult:
        yield OptionList(
            *[Option(title, id=str(i)) for i, (title, _) in enumerate(EXAMPLE_QUERIES)]
        )

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(EXAMPLE_QUERIES[int(event.option.id)][1])


class ExportScreen(ModalScreen[Path | None]):
    """Ask for the file to export to; the suffix (.csv, .parquet, .json) picks the format."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 70; height: auto; border: thick $primary; padding: 1; background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export the result to (.csv, .parquet or .json):")
            yield Input(value="results.csv", id="export-path")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(Path(event.value).expanduser())


class SqlScreen(AppScreen):
    """Query the results database; Ctrl+R runs the editor's text."""

    BINDINGS = [
        Binding("ctrl+r", "run_query", "Run", priority=True),
        # The editor binds these keys to cursor moves; the screen's meaning wins.
        Binding("ctrl+l", "examples", "Examples", priority=True),
        Binding("ctrl+e", "export", "Export", priority=True),
    ]
    DEFAULT_CSS = """
    SqlScreen #editor { height: 30%; min-height: 5; max-height: 14; }
    SqlScreen #results { height: 1fr; }
    SqlScreen #no-rows { padding: 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.result: pa.Table | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self._db_line(), classes="status", id="db")
        yield TextArea.code_editor(EXAMPLE_QUERIES[1][1], language="sql", id="editor")
        yield ErrorLine(id="sql-error")
        yield Static("Ctrl+R runs the query.", classes="status", id="sql-status")
        yield Container(id="results")
        yield AppFooter()

    def _db_line(self) -> str:
        db = self.app.db_path
        state = "" if Path(db).exists() else " (does not exist yet: queries run in memory)"
        return f"database: {db}{state}"

    # -- running a query ---------------------------------------------------------------

    def action_run_query(self) -> None:
        sql = self.query_one("#editor", TextArea).text.strip()
        if not sql:
            return
        self.query_one("#sql-status", Static).update("Running…")
        self.query_one("#db", Static).update(self._db_line())
        self._run_query(sql)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sql")
    def _run_query(self, sql: str) -> None:
        try:
            table = query_arrow(self.app.db_path, sql)
        except Exception as error:  # shown inline; the screen keeps working
            self.post_message(QueryFailed(error))
        else:
            self.post_message(QueryFinished(sql, table))

    @on(QueryFailed)
    def _query_failed(self, message: QueryFailed) -> None:
        self.query_one("#sql-error", ErrorLine).show_error(message.error)
        self.query_one("#sql-status", Static).update("The query failed; the last result stays.")

    @on(QueryFinished)
    async def _query_finished(self, message: QueryFinished) -> None:
        self.query_one("#sql-error", ErrorLine).clear()
        await self.show_table(message.table)

    async def show_table(self, table: pa.Table) -> None:
        """Replace the results table (a new fast table per result, like Harlequin)."""
        from textual_fastdatatable import ArrowBackend, DataTable

        self.result = table
        results = self.query_one("#results", Container)
        await results.remove_children()
        rows, columns = table.num_rows, table.num_columns
        self.query_one("#sql-status", Static).update(
            f"{rows:,} row{'s' if rows != 1 else ''} × "
            f"{columns} column{'s' if columns != 1 else ''}"
        )
        if columns == 0:
            await results.mount(Static("The statement returned no result set.", id="no-rows"))
            return
        await results.mount(DataTable(backend=ArrowBackend(_shown(table)), id="result-table"))

    # -- examples and export -----------------------------------------------------------

    def action_examples(self) -> None:
        def chosen(sql: str | None) -> None:
            if sql:
                self.query_one("#editor", TextArea).text = sql
                self.query_one("#editor", TextArea).focus()

        self.app.push_screen(ExamplesScreen(), chosen)

    def action_export(self) -> None:
        if self.result is None:
            self.query_one("#sql-error", ErrorLine).show_error(
                ExportError("there is no result to export yet", "Run a query first (Ctrl+R).")
            )
            return

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._export(self.result, path)

        self.app.push_screen(ExportScreen(), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _export(self, table: pa.Table, path: Path) -> None:
        try:
            self.post_message(ExportFinished(export_table(table, path)))
        except Exception as error:
            self.post_message(ExportFinished(None, error))

    @on(ExportFinished)
    def _exported(self, message: ExportFinished) -> None:
        if message.error is not None:
            self.query_one("#sql-error", ErrorLine).show_error(message.error)
        else:
            self.query_one("#sql-error", ErrorLine).clear()
            self.notify(f"Exported {self.result.num_rows:,} rows to {message.path}")
