"""The sweeps screen: launch, watch and stop sweeps; studies, trials and one trial's detail.

A sweep launched here is a detached ``paretune sweep run SPEC`` process (see
``tui.launcher``): it keeps running when the app closes and can be stopped from here.
The studies and trials tables refresh by polling the results database in a thread
worker every couple of seconds; nothing here blocks the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import (
    DataTable,
    Header,
    Input,
    Label,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)

from pricing.display import format_dollars
from pricing.errors import UserError
from sweeps.results.schema import TRIAL_PARAMETERS
from tui.launcher import LaunchedSweep, check_sweep, launch_sweep, launched_sweeps, stop_sweep
from tui.messages import OpenTrial, SpecEdited, SweepThisPlan
from tui.screens.cpu_offer import CpuOffer, CpuOfferScreen, cpu_offer, on_the_cpu
from tui.screens.sweeps_data import StudySummary, TrialDetail, load_studies, load_trial, load_trials
from tui.screens.trial_export import ExportTrialScreen, TrialExported, export_shown_trial
from tui.widgets import AppFooter, AppScreen, ErrorLine

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

__all__ = ["POLL_S", "SweepsScreen"]

POLL_S = 2.0
"""Seconds between refreshes of the studies and trials tables."""


class LaunchError(UserError):
    title = "Cannot launch"


@dataclass
class StudiesLoaded(Message):
    studies: list[StudySummary]
    study: str | None
    trials: list[dict]


@dataclass
class TrialLoaded(Message):
    study: str
    number: int
    detail: TrialDetail | None


@dataclass
class LoadFailed(Message):
    error: BaseException


@dataclass
class PreflightDone(Message):
    """The checks before launching ``spec`` (saved at ``path``) ended; ``error`` is None when
    they passed."""

    path: Path
    spec: SweepSpec
    error: BaseException | None
    offer: CpuOffer | None = None


def find_specs(run_dir: Path) -> list[Path]:
    """Sweep specs near at hand: ./*.toml, examples/*.toml and the run folder's specs/."""
    found: list[Path] = []
    for folder in (Path("."), Path("examples"), Path(run_dir) / "specs"):
        found += sorted(p for p in folder.glob("*.toml") if p.name != "pyproject.toml")
    return list(dict.fromkeys(found))


class OpenSpecScreen(ModalScreen[Path | None]):
    """Pick a sweep spec from the list, or type any path."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    OpenSpecScreen { align: center middle; }
    OpenSpecScreen > Vertical { width: 80%; max-width: 90; height: auto; max-height: 80%;
                                border: thick $primary; padding: 0 1; background: $surface; }
    OpenSpecScreen OptionList { height: auto; max-height: 12; }
    """

    def __init__(self, candidates: list[Path]) -> None:
        super().__init__()
        self.candidates = candidates

    def compose(self) -> ComposeResult:
        from textual.suggester import SuggestFromList
        from textual.widgets import OptionList

        with Vertical():
            yield Label("Sweep spec file (.toml) — type a path, or pick one below:")
            yield Input(
                placeholder="examples/demo.toml",
                id="spec-path",
                suggester=SuggestFromList([str(p) for p in self.candidates]),
            )
            if self.candidates:
                yield OptionList(*[str(p) for p in self.candidates], id="spec-list")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(Path(event.value).expanduser() if event.value.strip() else None)

    def on_option_list_option_selected(self, event) -> None:
        self.dismiss(self.candidates[event.option_index])


class SweepsScreen(AppScreen):
    BINDINGS = [
        Binding("ctrl+o", "open_spec", "Open spec"),
        Binding("ctrl+s", "save_spec", "Save spec", priority=True),
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("ctrl+k", "stop", "Stop sweep", priority=True),
        Binding("ctrl+r", "refresh", "Refresh"),
        Binding("ctrl+e", "export_trial", "Export trial"),
    ]
    DEFAULT_CSS = """
    SweepsScreen #sweeps-tabs { height: 1fr; }
    SweepsScreen ContentSwitcher { height: 1fr; }
    SweepsScreen TabPane { height: 1fr; padding: 0; }
    SweepsScreen #launch-status { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    SweepsScreen #studies { height: auto; max-height: 8; margin-bottom: 1; }
    SweepsScreen #trials { height: 2fr; min-height: 5; }
    SweepsScreen #spec-editor { height: 1fr; }
    SweepsScreen #spec-path-line { height: 1; padding: 0 1; }
    SweepsScreen #sweep-log { height: auto; max-height: 8; padding: 0 1; color: $text-muted; }
    SweepsScreen #trial-text { height: auto; }
    SweepsScreen #loss-curve { height: 14; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.study: str | None = None
        self.studies: list[StudySummary] = []
        self.trials: list[dict] = []
        self.spec_path: Path | None = None
        self.launched: LaunchedSweep | None = None
        self._final_refresh_done = False
        self._checking = False
        """Whether the preflight checks of a launch are running."""
        self.shown_trial: tuple[str, int] | None = None
        """The trial the Trial tab shows (or is loading)."""
        self.shown_running = False
        """Whether that trial was running when last loaded: then each poll reloads it."""
        self._db_stamp: tuple = ()
        self._saved_text: str | None = None
        """The open spec as last read or saved: the editor differs from it when edited."""

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        yield Static("", id="launch-status")
        yield ErrorLine(id="sweeps-error")
        with TabbedContent(initial="studies-tab", id="sweeps-tabs"):
            with TabPane("Studies", id="studies-tab"):
                yield DataTable(id="studies", cursor_type="row")
                yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
            with TabPane("Trial", id="trial-tab"), VerticalScroll(id="trial-scroll"):
                yield Static("Pick a trial on the Studies tab (Enter).", id="trial-text")
                yield PlotextPlot(id="loss-curve")
            with TabPane("Spec", id="spec-tab"):
                yield Static(
                    "No spec open: Ctrl+O opens one; F2 → Ctrl+W sweeps a plan.",
                    id="spec-path-line",
                )
                yield TextArea.code_editor("", id="spec-editor")
                yield Static("", id="sweep-log")
        yield AppFooter()

    def on_mount(self) -> None:
        studies = self.query_one("#studies", DataTable)
        studies.add_columns("study", "progress", "complete", "failed", "running", "spend")
        trials = self.query_one("#trials", DataTable)
        trials.add_columns(
            "#",
            "state",
            "method",
            "rank",
            "lr",
            "eval NLL",
            "retain ΔNLL",
            "$",
            "GB pred",
            "GB meas",
        )
        found = launched_sweeps(self.app.run_dir)
        if found and found[0].running:
            self.launched = found[0]  # a sweep started by an earlier session of the app
        self._show_launch_status()
        self._db_stamp = _file_stamp(self.app.db_path)
        self.action_refresh()
        self.set_interval(POLL_S, self._poll)

    # -- polling -----------------------------------------------------------------------

    def _poll(self) -> None:
        # Refresh while a sweep runs (ours or any study with running trials), and whenever
        # the results file changed: a sweep started from another terminal shows up too.
        stamp = _file_stamp(self.app.db_path)
        changed, self._db_stamp = stamp != self._db_stamp, stamp
        if (
            changed
            or (self.launched is not None and self.launched.running)
            or any(s.running for s in self.studies)
        ):
            self.action_refresh()
        if self.shown_trial is not None and self.shown_running:
            self._load_trial(*self.shown_trial)  # a running trial: its loss curve grows
        self._show_launch_status()

    def action_refresh(self) -> None:
        self._load(self.study)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps-load")
    def _load(self, study: str | None) -> None:
        try:
            studies = load_studies(self.app.db_path)
            names = [s.name for s in studies]
            chosen = study if study in names else (names[0] if names else None)
            trials = load_trials(self.app.db_path, chosen) if chosen else []
            self.post_message(StudiesLoaded(studies, chosen, trials))
        except Exception as error:
            self.post_message(LoadFailed(error))

    @on(StudiesLoaded)
    def _studies_loaded(self, message: StudiesLoaded) -> None:
        self.query_one("#sweeps-error", ErrorLine).clear()
        self.studies, self.study, self.trials = message.studies, message.study, message.trials
        # Refilling a table moves its cursor: those moves are not the user's choice.
        table = self.query_one("#studies", DataTable)
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            for s in message.studies:
                table.add_row(
                    s.name,
                    s.progress,
                    str(s.complete),
                    str(s.failed),
                    str(s.running),
                    s.spend,
                    key=s.name,
                )
            if message.study is not None:
                index = [s.name for s in message.studies].index(message.study)
                table.move_cursor(row=index, animate=False)
        trials = self.query_one("#trials", DataTable)
        trial_cursor = trials.cursor_row
        with trials.prevent(DataTable.RowHighlighted):
            trials.clear()
            for row in message.trials:
                cells = [_cell(row.get(c), c) for c in _TRIAL_COLUMNS]
                if row.get("state") == "running":
                    cells[_TRIAL_COLUMNS.index("state")] = Text(running_label(row), style="yellow")
                elif row.get("state") == "pruned":
                    cells[_TRIAL_COLUMNS.index("state")] = Text(pruned_label(row), style="magenta")
                trials.add_row(*cells, key=str(row["number"]))
            if message.trials:
                trials.move_cursor(row=min(trial_cursor, len(message.trials) - 1), animate=False)

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.query_one("#sweeps-error", ErrorLine).show_error(message.error)

    @on(DataTable.RowHighlighted, "#studies")
    def _study_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.studies):
            name = self.studies[event.cursor_row].name
            if name != self.study:
                self.study = name
                self._load(name)

    @on(DataTable.RowSelected, "#trials")
    def _trial_selected(self, event: DataTable.RowSelected) -> None:
        if self.study is not None and 0 <= event.cursor_row < len(self.trials):
            self.open_trial(self.study, int(self.trials[event.cursor_row]["number"]))

    # -- one trial ---------------------------------------------------------------------

    @on(OpenTrial)
    def _open_trial_message(self, message: OpenTrial) -> None:
        message.stop()  # handled here: it must not bubble back to the app that routed it
        self.open_trial(message.study, message.trial_number)

    def open_trial(self, study: str, number: int) -> None:
        self.shown_trial, self.shown_running = (study, number), False
        self.query_one("#sweeps-tabs", TabbedContent).active = "trial-tab"
        # The focus leaves the hidden trials table: a focused widget in the Studies pane
        # would switch the tabs back to it.
        self.query_one("#trial-scroll").focus()
        self.query_one("#trial-text", Static).update(f"Loading trial {number} of {study}…")
        self._load_trial(study, number)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps-trial")
    def _load_trial(self, study: str, number: int) -> None:
        try:
            detail = load_trial(self.app.db_path, study, number)
            self.post_message(TrialLoaded(study, number, detail))
        except Exception as error:
            self.post_message(LoadFailed(error))

    @on(TrialLoaded)
    def _trial_loaded(self, message: TrialLoaded) -> None:
        from textual_plotext import PlotextPlot

        if (message.study, message.number) != self.shown_trial:
            return  # a reload of a trial no longer shown
        text = self.query_one("#trial-text", Static)
        plot = self.query_one("#loss-curve", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if message.detail is None:
            self.shown_running = False
            text.update(f"Trial {message.number} of {message.study} is not in the database.")
            plot.refresh()
            return
        running = self.shown_running = message.detail.row.get("state") == "running"
        text.update(trial_detail_table(message.study, message.number, message.detail.row))
        steps = message.detail.steps
        if steps:
            plt.plot(
                [s["step"] for s in steps],
                [s["loss"] for s in steps],
                label="train loss",
                marker="braille",
                color="blue",
            )
            evals = [s for s in steps if s.get("eval_nll") is not None]
            if evals:
                plt.plot(
                    [s["step"] for s in evals],
                    [s["eval_nll"] for s in evals],
                    label="eval NLL",
                    marker="braille",
                    color="red",
                )
            plt.xlabel("optimizer step")
        title = f"trial {message.number}: loss curve"
        if running:
            title += f" ({running_label(message.detail.row)}, refreshing)"
        plt.title(
            title + ("" if steps else " (no steps logged yet)" if running else " (no steps logged)")
        )
        plot.refresh()

    # -- exporting the shown trial as a framework config ----------------------------------

    def action_export_trial(self) -> None:
        """Ask for a framework, then write the shown trial's config beside the results file."""
        if self.shown_trial is None:
            self.notify("Open a trial first (Enter on the Studies tab).", severity="warning")
            return
        study, number = self.shown_trial

        def chosen(to: str | None) -> None:
            if to is not None:
                self.notify(f"Writing trial {number} of {study} as {to} ...")
                self._export_trial(study, number, to)

        self.app.push_screen(ExportTrialScreen(study, number), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps-export")
    def _export_trial(self, study: str, number: int, to: str) -> None:
        self.post_message(export_shown_trial(self.app.db_path, study, number, to))

    @on(TrialExported)
    def _trial_exported(self, message: TrialExported) -> None:
        if message.error is not None:
            self.query_one("#sweeps-error", ErrorLine).show_error(message.error)
            return
        self.query_one("#sweeps-error", ErrorLine).clear()
        notes = f" ({len(message.notes)} notes in the file: what it could not express)"
        self.notify(f"Wrote {message.path}" + (notes if message.notes else ""), timeout=10)

    # -- spec editing and launching ----------------------------------------------------

    @on(SweepThisPlan)
    def _sweep_this_plan(self, message: SweepThisPlan) -> None:
        message.stop()  # handled here: it must not bubble back to the app that routed it
        from sweeps.spec import write_spec
        from tui.screens.plan_spec import spec_from_plan

        try:
            spec = spec_from_plan(message.inputs, run_dir=self.app.run_dir, db=self.app.db_path)
            path = write_spec(spec, self.app.run_dir / "specs" / f"{spec.name}.toml")
        except Exception as error:
            self.query_one("#sweeps-error", ErrorLine).show_error(error)
            return
        self.show_spec(path)

    def _offer_the_cpu(self, path: Path, spec: SweepSpec, offer: CpuOffer) -> None:
        """No CUDA GPU here: offer to switch the spec to the CPU and launch it (or say why not)."""
        from sweeps.spec import write_spec

        def chosen(use_cpu: bool | None) -> None:
            if not use_cpu:
                return
            try:
                write_spec(on_the_cpu(spec), path)
            except (OSError, UserError) as error:
                self.query_one("#sweeps-error", ErrorLine).show_error(error)
                return
            self.show_spec(path)
            self.notify(f"{path.name} now runs on the CPU; checking it again before launching.")
            self.action_launch()

        self.app.push_screen(CpuOfferScreen(offer), chosen)

    def show_spec(self, path: Path) -> None:
        """Open ``path`` in the spec editor (the Spec tab)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            self.query_one("#sweeps-error", ErrorLine).show_error(
                LaunchError(f"cannot read {path}: {error.strerror}", "Check the path.")
            )
            return
        self.query_one("#sweeps-error", ErrorLine).clear()
        self.spec_path = path
        self._saved_text = text
        self.query_one("#spec-editor", TextArea).text = text
        self.query_one("#spec-path-line", Static).update(
            f"{path} — edit, Ctrl+S saves, Ctrl+L launches"
        )
        self.query_one("#sweeps-tabs", TabbedContent).active = "spec-tab"

    def action_open_spec(self) -> None:
        def chosen(path: Path | None) -> None:
            if path is not None:
                self.show_spec(path)

        self.app.push_screen(OpenSpecScreen(find_specs(self.app.run_dir)), chosen)

    def _validated_spec_text(self):
        """Parse the editor's text as a spec; show the error inline and return None if bad."""
        from sweeps.spec import spec_from_text

        if self.spec_path is None:
            self.query_one("#sweeps-error", ErrorLine).show_error(
                LaunchError("no sweep spec is open", "Ctrl+O opens one; F2 then Ctrl+W makes one.")
            )
            return None
        text = self.query_one("#spec-editor", TextArea).text
        try:
            spec = spec_from_text(text, source=self.spec_path.name, base_dir=self.spec_path.parent)
        except UserError as error:
            self.query_one("#sweeps-error", ErrorLine).show_error(error)
            return None
        self.query_one("#sweeps-error", ErrorLine).clear()
        return spec, text

    def action_save_spec(self) -> bool:
        checked = self._validated_spec_text()
        if checked is None:
            return False
        _, text = checked
        self.spec_path.write_text(text, encoding="utf-8")
        self._saved_text = text
        self.app.post_message(SpecEdited(self.spec_path, unsaved=False))
        self.notify(f"Saved {self.spec_path}")
        return True

    @on(TextArea.Changed, "#spec-editor")
    def _spec_changed(self, event: TextArea.Changed) -> None:
        if self.spec_path is not None:
            unsaved = event.text_area.text != self._saved_text
            self.app.post_message(SpecEdited(self.spec_path, unsaved=unsaved))

    def action_launch(self) -> None:
        if self.launched is not None and self.launched.running:
            self.query_one("#sweeps-error", ErrorLine).show_error(
                LaunchError(
                    f"a sweep launched from here is still running (pid {self.launched.pid})",
                    "Stop it with Ctrl+K, or run more workers with `paretune sweep run`.",
                )
            )
            return
        if self._checking:
            self.notify("The spec is being checked; it launches when the check passes.")
            return
        if not self.action_save_spec():
            return
        spec, _ = self._validated_spec_text()
        self._checking = True
        self.query_one("#launch-status", Static).update(
            f"checking {self.spec_path.name} before launching it (`paretune sweep check`) ..."
        )
        self._preflight(self.spec_path, spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps-preflight")
    def _preflight(self, path: Path, spec: SweepSpec) -> None:
        problems = check_sweep(path)
        error = LaunchError(problems) if problems is not None else None
        offer = cpu_offer(problems, spec, _params_b(spec.model)) if problems else None
        self.post_message(PreflightDone(path, spec, error, offer))

    @on(PreflightDone)
    def _preflight_done(self, message: PreflightDone) -> None:
        self._checking = False
        if message.error is not None:
            self.query_one("#sweeps-error", ErrorLine).show_error(message.error)
            self._show_launch_status()
            if message.offer is not None:
                self._offer_the_cpu(message.path, message.spec, message.offer)
            return
        spec = message.spec  # the saved file was checked: its process need not check again
        self.launched = launch_sweep(message.path, self.app.run_dir, check=False)
        self._final_refresh_done = False
        if Path(spec.run.results).resolve() != Path(self.app.db_path).resolve():
            self.notify(
                f"This sweep writes its results to {spec.run.results}, not {self.app.db_path}.",
                severity="warning",
            )
        self.query_one("#sweeps-tabs", TabbedContent).active = "studies-tab"
        self._show_launch_status()

    def action_stop(self) -> None:
        if self.launched is None or not self.launched.running:
            self.query_one("#sweeps-error", ErrorLine).show_error(
                LaunchError("no sweep launched from here is running", None)
            )
            return
        stop_sweep(self.launched)
        self.notify(f"Sent Ctrl-C to the sweep (pid {self.launched.pid}); it stops after cleanup.")

    def _show_launch_status(self) -> None:
        if self._checking:  # the line says so until the check ends
            return
        status = self.query_one("#launch-status", Static)
        sweep = self.launched
        if sweep is None:
            status.update(f"results: {self.app.db_path} · Ctrl+O opens a spec, Ctrl+L launches it")
            return
        code = sweep.exit_code()
        state = "running" if code is None else ("finished" if code == 0 else f"exited with {code}")
        last = " ".join(sweep.log_tail(2).split())  # the sweep wraps its lines at 80
        status.update(
            f"sweep {Path(sweep.spec).name} (pid {sweep.pid}) {state} · log: {sweep.log}"
            + (f"\n{last}" if last else "")
        )
        self.query_one("#sweep-log", Static).update(Text(sweep.log_tail(6)))
        if code is not None and not self._final_refresh_done:
            # Once it ends: show its last rows, and why it stopped if it failed.
            self._final_refresh_done = True
            if code != 0:
                self.query_one("#sweeps-error", ErrorLine).show_text(
                    Text(f"The sweep exited with status {code}:\n{sweep.log_tail(6)}")
                )
            self.action_refresh()


def _file_stamp(db: Path) -> tuple:
    """Size and modification time of the results file and its write-ahead log (a stat each:
    cheap enough for the UI thread)."""
    stamp = []
    for path in (Path(db), Path(f"{db}.wal")):
        try:
            info = path.stat()
            stamp.append((info.st_size, info.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


_TRIAL_COLUMNS = (
    "number",
    "state",
    "method",
    "rank",
    "lr",
    "eval_nll",
    "retain_delta_nll",
    "dollars",
    "predicted_peak_gb",
    "measured_peak_gb",
)


def running_label(row: dict) -> str:
    """A running trial's state cell: how far it is, from the steps written so far."""
    step, total = row.get("steps_done"), row.get("max_steps")
    if step is None:
        return "running"
    return f"running {step}/{total}" if total else f"running step {step}"


def pruned_label(row: dict) -> str:
    """A pruned trial's state cell: the rung (step) where early stopping stopped it."""
    step = row.get("stopped_at_step")
    return "pruned" if step is None else f"pruned at {step}"


def _cell(value, column: str) -> str | Text:
    if value is None:
        return ""
    if column == "state":
        colour = {"complete": "green", "running": "yellow"}.get(value, "red")
        return Text(str(value), style=colour)
    if column == "lr":
        return f"{value:.1e}"
    if column == "dollars":
        return format_dollars(value, sign=False)
    if isinstance(value, float):
        # Significant digits, not decimals: forgetting on the demo is a few 1e-3 nats.
        return f"{value:.4g}"
    return str(value)


# How a trial's row is shown: groups of columns in the order a user reads them.
_DETAIL_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("outcome", ("state", "error", "retry_of", "stopped_at_step")),
    ("parameters", TRIAL_PARAMETERS),
    (
        "quality",
        (
            "eval_nll",
            "base_eval_nll",
            "exact_match",
            "base_exact_match",
            "train_nll",
            "overfit_gap",
            "generalization_gap",
            "best_step",
        ),
    ),
    ("forgetting", ("retain_delta_nll", "retain_kl", "fact_recall_drop", "base_retain_nll")),
    (
        "memory GB",
        ("predicted_peak_gb", "measured_peak_gb", "measured_peak_reserved_gb", "gpu_memory_gb"),
    ),
    (
        "time and cost",
        (
            "predicted_hours",
            "wall_s",
            "train_s",
            "eval_s",
            "tokens_per_s",
            "mfu",
            "steps_done",
            "predicted_dollars",
            "dollars",
            "usd_per_hour",
        ),
    ),
    ("hardware", ("device", "device_name", "devices", "gpu", "provider", "cpu_instance")),
    ("reproduce", ("artifact", "command")),
]
_NOT_SHOWN = {
    "rungs",  # early stopping's reports: the JSON column holds them
    "study",
    "number",
    "params",
    "config",
    "versions",
    "objective_quality",
    "objective_forgetting",
    "objective_cost",
}


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def trial_detail_table(study: str, number: int, row: dict) -> Table:
    """A trial's non-empty columns, grouped: outcome, parameters, metrics, memory, cost..."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    table.add_row("trial", "", f"{study} / {number}")
    placed: set[str] = set()
    for group, columns in _DETAIL_GROUPS:
        heading = group
        for column in columns:
            placed.add(column)
            value = row.get(column)
            if value is None or value == "":
                continue
            style = "red" if column == "error" else "green" if value == "complete" else ""
            if column == "state" and value != "complete":
                style = "magenta" if value == "pruned" else "red"  # stopped early: no failure
            table.add_row(heading, column, Text(_shown(value), style=style))
            heading = ""
    heading = "other"
    for column, value in row.items():
        if column in placed or column in _NOT_SHOWN or value is None or value == "":
            continue
        table.add_row(heading, column, _shown(value))
        heading = ""
    return table


def _params_b(model: str) -> float | None:
    """The model's size in billions of parameters, when the planner resolves it (else None)."""
    from planner.estimation.catalog import resolve_model

    try:
        return resolve_model(model).billions
    except Exception:  # unknown or unreachable: the offer says "an unknown size"
        return None
