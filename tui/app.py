"""The Textual application: plan, sweeps, SQL and frontier screens, one per mode.

``paretune`` with no arguments (or ``paretune tui [--db PATH]``) calls :func:`run_app`.
Screens never call each other: they post messages (``tui.messages``) that the app routes.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from textual import on
from textual.app import App
from textual.binding import Binding

from sweeps.results.store import DEFAULT_RESULTS
from tui.messages import OpenTrial, SpecEdited, SweepThisPlan

__all__ = ["DEFAULT_DB", "ParetuneApp", "run_app"]

DEFAULT_DB = DEFAULT_RESULTS


def _screen(module: str, name: str):
    """An instance of screen ``name`` from ``tui.screens.<module>``, imported on first use."""
    import importlib

    return getattr(importlib.import_module(f".screens.{module}", __package__), name)()


class ParetuneApp(App):
    """paretune's terminal UI.

    ``db`` is the DuckDB results file (it may not exist yet); ``run_dir`` holds specs and
    logs of sweeps launched from the app (default: the folder of ``db``); ``start`` names
    the first screen (plan, sweeps, sql or frontier).
    """

    TITLE = "paretune"
    CSS_PATH = "app.tcss"
    # Each screen's module is imported when its mode is first opened.
    MODES = {
        "plan": lambda: _screen("plan", "PlanScreen"),
        "sweeps": lambda: _screen("sweeps", "SweepsScreen"),
        "sql": lambda: _screen("sql", "SqlScreen"),
        "frontier": lambda: _screen("frontier", "FrontierScreen"),
    }
    DEFAULT_MODE = "plan"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("f2", "switch_mode('plan')", "Plan"),
        Binding("f3", "switch_mode('sweeps')", "Sweeps"),
        Binding("f4", "switch_mode('sql')", "SQL"),
        Binding("f5", "switch_mode('frontier')", "Frontier"),
        Binding("ctrl+q", "ask_quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        db: Path | None = None,
        *,
        run_dir: Path | None = None,
        start: str = "plan",
        today: date | None = None,
    ) -> None:
        # The first screen is the start mode's, so other screens load only when opened.
        self.DEFAULT_MODE = start
        super().__init__()
        self.db_path = Path(db) if db is not None else DEFAULT_DB
        # Specs, logs and trial artifacts of sweeps launched from the app go here.
        self.run_dir = Path(run_dir) if run_dir is not None else self.db_path.parent
        # Price ages are counted to this date (None: today); snapshot tests fix it.
        self.today = today
        # The sweep spec with edits not saved yet, if any: Ctrl+Q asks before losing them.
        self.unsaved_spec: Path | None = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The key of the screen already shown is left out of the footer (room at 80 columns).
        shown = action == "switch_mode" and parameters and parameters[0] == self.current_mode
        return not shown

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_ask_quit(self) -> None:
        from tui.screens.quit import ConfirmQuitScreen

        if self.unsaved_spec is None:
            self.exit()
        elif not isinstance(self.screen, ConfirmQuitScreen):

            def chosen(quit_anyway: bool | None) -> None:
                if quit_anyway:
                    self.exit()

            self.push_screen(ConfirmQuitScreen(self.unsaved_spec), chosen)

    @on(SpecEdited)
    def _spec_edited(self, message: SpecEdited) -> None:
        self.unsaved_spec = message.path if message.unsaved else None

    @on(SweepThisPlan)
    async def _sweep_this_plan(self, message: SweepThisPlan) -> None:
        await self.switch_mode("sweeps")
        self.screen.post_message(SweepThisPlan(message.inputs))

    @on(OpenTrial)
    async def _open_trial(self, message: OpenTrial) -> None:
        await self.switch_mode("sweeps")
        self.screen.post_message(OpenTrial(message.study, message.trial_number))


def run_app(db: Path | None = None) -> None:
    """Open the terminal UI on the plan screen, reading results from ``db``.

    Without ``db``, uses ``runs/results.duckdb`` (it need not exist yet).
    """
    ParetuneApp(db=db).run()
