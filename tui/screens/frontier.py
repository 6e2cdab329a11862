"""The frontier screen: quality vs forgetting (or either vs cost), Pareto points marked.

Every axis is "lower is better": quality is the held-out task's mean NLL, forgetting the
retain set's ΔNLL, cost the trial's measured dollars. Points are coloured by method (the
colours of the PNG chart and the HTML report); the Pareto-optimal ones are yellow stars. The
legend is a line under the chart, so it hides no point. When the study's complete trials
trained or were scored on different data (several data fingerprints), a warning line above
the chart says so, with the trials of each fingerprint: their points are not comparable. The table under the chart lists the same points;
moving through it marks the point on the chart, Enter opens the trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Header, Select, Static

from pricing.display import format_dollars
from sweeps.results.colours import PARETO_COLOUR, hex_rgb, method_colour, method_rgb
from tui.messages import OpenTrial
from tui.screens.frontier_data import (
    AXES,
    VIEWS,
    FrontierPoint,
    load_frontier,
    load_study_names,
)
from tui.widgets import AppFooter, AppScreen, ErrorLine

__all__ = ["FrontierScreen"]


@dataclass
class StudiesLoaded(Message):
    studies: list[str]


@dataclass
class PointsLoaded(Message):
    study: str
    points: list[FrontierPoint]
    data_warning: str | None = None


@dataclass
class LoadFailed(Message):
    error: BaseException


@dataclass
class ReportWritten(Message):
    path: Path | None
    error: BaseException | None = None


class FrontierScreen(AppScreen):
    BINDINGS = [
        Binding("m", "next_view", "Next view"),
        Binding("ctrl+r", "reload", "Reload"),
        Binding("h", "report", "HTML report"),
    ]
    DEFAULT_CSS = """
    FrontierScreen #frontier-bar { height: 3; }
    FrontierScreen #study { width: 30; }
    FrontierScreen #view { width: 1fr; padding: 1 1 0 1; }
    FrontierScreen #data-warning { display: none; height: auto; padding: 0 1;
                                   color: $text-warning; background: $warning 15%; }
    FrontierScreen #data-warning.-shown { display: block; }
    FrontierScreen #chart { height: 2fr; min-height: 8; }
    FrontierScreen #legend { height: 1; padding: 0 1; }
    FrontierScreen #points { height: 1fr; min-height: 5; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.view = 0
        self.points: list[FrontierPoint] = []
        self.study: str | None = None
        self.data_warning: str | None = None

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        with Horizontal(id="frontier-bar"):
            yield Select([], prompt="study", id="study", allow_blank=True)
            yield Static("", id="view")
        yield ErrorLine(id="frontier-error")
        yield Static("", id="data-warning")
        yield PlotextPlot(id="chart")
        yield Static("", id="legend")
        yield DataTable(id="points", cursor_type="row", zebra_stripes=True)
        yield AppFooter()

    def on_mount(self) -> None:
        table = self.query_one("#points", DataTable)
        table.add_columns("pareto", "trial", "method", "rank", "lr", "quality", "forgetting", "$")
        self._show_view_name()
        self.action_reload()

    def on_screen_resume(self) -> None:
        # New trials may have landed while another screen was shown.
        if self.is_mounted:
            self.action_reload()

    # -- loading -----------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load(self.study)

    @work(thread=True, exclusive=True, exit_on_error=False, group="frontier")
    def _load(self, study: str | None) -> None:
        try:
            studies = load_study_names(self.app.db_path)
            self.post_message(StudiesLoaded(studies))
            chosen = study if study in studies else (studies[0] if studies else None)
            if chosen is not None:
                frontier = load_frontier(self.app.db_path, chosen)
                self.post_message(PointsLoaded(chosen, frontier.points, frontier.data_warning))
        except Exception as error:
            self.post_message(LoadFailed(error))

    @on(StudiesLoaded)
    def _studies_loaded(self, message: StudiesLoaded) -> None:
        select = self.query_one("#study", Select)
        with select.prevent(Select.Changed):
            select.set_options([(name, name) for name in message.studies])
        if not message.studies:
            self.query_one("#frontier-error", ErrorLine).show_text(
                f"No studies in {self.app.db_path} yet: run a sweep (F3) first."
            )

    @on(PointsLoaded)
    def _points_loaded(self, message: PointsLoaded) -> None:
        self.query_one("#frontier-error", ErrorLine).clear()
        self.study, self.points = message.study, message.points
        self.data_warning = message.data_warning
        warning = self.query_one("#data-warning", Static)
        warning.update(Text(message.data_warning or ""))
        warning.set_class(message.data_warning is not None, "-shown")
        select = self.query_one("#study", Select)
        if select.value != message.study:
            with select.prevent(Select.Changed):
                select.value = message.study
        self._fill_table()
        self._draw()

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.query_one("#frontier-error", ErrorLine).show_error(message.error)

    @on(Select.Changed, "#study")
    def _study_chosen(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.study:
            self._load(event.value)

    # -- drawing -----------------------------------------------------------------------

    def action_next_view(self) -> None:
        self.view = (self.view + 1) % len(VIEWS)
        self._show_view_name()
        self._draw()

    def _show_view_name(self) -> None:
        x, y = VIEWS[self.view]
        self.query_one("#view", Static).update(
            f"y: {AXES[y].label} · x: {AXES[x].label} · lower is better · M: next view"
        )

    def _fill_table(self) -> None:
        table = self.query_one("#points", DataTable)
        table.clear()
        for point in self.points:
            table.add_row(
                _pareto_cell(point),
                str(point.number),
                point.method,
                "" if point.rank is None else str(point.rank),
                "" if point.lr is None else f"{point.lr:.1e}",
                _fmt(point.quality),
                _fmt(point.forgetting),
                format_dollars(point.dollars, sign=False),
                key=str(point.number),
            )

    def _draw(self) -> None:
        from textual_plotext import PlotextPlot

        chart = self.query_one("#chart", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        x_axis, y_axis = (AXES[name] for name in VIEWS[self.view])
        plotted = [p for p in self.points if x_axis.of(p) is not None and y_axis.of(p) is not None]
        for method in sorted({p.method for p in plotted}):
            ours = [p for p in plotted if p.method == method]
            plt.scatter(
                [x_axis.of(p) for p in ours],
                [y_axis.of(p) for p in ours],
                color=method_rgb(method),
                marker="dot",
            )
        # Pareto-optimal over all three objectives: a 2-D view shows them as stars, not a
        # line, since a point can be on the frontier only because of the third objective.
        pareto = [p for p in plotted if p.pareto]
        if pareto:
            plt.scatter(
                [x_axis.of(p) for p in pareto],
                [y_axis.of(p) for p in pareto],
                color=hex_rgb(PARETO_COLOUR),
                marker="★",
            )
        selected = self._selected_point()
        if selected is not None and selected in plotted:
            plt.scatter([x_axis.of(selected)], [y_axis.of(selected)], color="white", marker="◉")
        plt.xlabel(x_axis.label)
        plt.ylabel(y_axis.label)
        study = self.study or "no study"
        twins = sum(len(p.within_noise) for p in pareto) // 2
        plt.title(
            f"{study}: {len(plotted)} trials, {len(pareto)} on the frontier"
            + (f", {twins} pair(s) within noise (≈)" if twins else "")
        )
        chart.refresh()
        self.query_one("#legend", Static).update(_legend(sorted({p.method for p in plotted})))

    def _selected_point(self) -> FrontierPoint | None:
        table = self.query_one("#points", DataTable)
        if not self.points or table.cursor_row is None or table.row_count == 0:
            return None
        return self.points[min(table.cursor_row, len(self.points) - 1)]

    # -- the HTML report -----------------------------------------------------------------

    def action_report(self) -> None:
        """Write the study's HTML report (``paretune report``) next to the app's runs."""
        if self.study is None:
            self.notify("No study to report on yet.", severity="warning")
            return
        out = Path(self.app.run_dir) / "reports" / f"{self.study}.html"
        self.notify(f"Writing the report of {self.study} ...")
        self._write_report(self.study, out)

    @work(thread=True, exclusive=True, exit_on_error=False, group="frontier-report")
    def _write_report(self, study: str, out: Path) -> None:
        from sweeps.results.report import write_report

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.post_message(ReportWritten(write_report(self.app.db_path, study, out)))
        except Exception as error:  # shown inline
            self.post_message(ReportWritten(None, error))

    @on(ReportWritten)
    def _report_written(self, message: ReportWritten) -> None:
        if message.error is not None:
            self.query_one("#frontier-error", ErrorLine).show_error(message.error)
        else:
            self.notify(f"Wrote {message.path}: open it in a browser.")

    @on(DataTable.RowHighlighted, "#points")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._draw()

    @on(DataTable.RowSelected, "#points")
    def _selected(self, event: DataTable.RowSelected) -> None:
        point = self.points[event.cursor_row]
        self.app.post_message(OpenTrial(point.study, point.number))


def _legend(methods: list[str]) -> Text:
    """The chart's legend, one line: a coloured dot per method, then the two marks."""
    legend = Text()
    for method in methods:
        legend.append("● ", style=method_colour(method)).append(f"{method}  ")
    legend.append("★ ", style=PARETO_COLOUR).append("Pareto-optimal  ")
    return legend.append("◉ ", style="bold").append("selected row")


def _pareto_cell(point: FrontierPoint) -> str:
    """★ on the frontier; ≈ and the trials the measured noise cannot tell it apart from."""
    if not point.pareto:
        return ""
    return "★" + ("" if not point.within_noise else " ≈" + ",".join(map(str, point.within_noise)))


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
