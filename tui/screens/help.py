"""The help screen (F1): what each screen is for and its key bindings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

__all__ = ["HELP_TEXT", "HelpScreen"]

HELP_TEXT = """\
# paretune

**F2 Plan** — what each fine-tuning method needs in memory, hours and dollars; recomputed
as you type. **F3 Sweeps** — launch, watch and stop sweeps; inspect trials.
**F4 SQL** — query the results database. **F5 Frontier** — quality vs forgetting vs cost.

| keys | where | does |
|---|---|---|
| F1 | anywhere | this help (Esc closes) |
| F2 F3 F4 F5 | anywhere | plan, sweeps, SQL, frontier screen |
| Ctrl+Q | anywhere | quit (running sweeps keep running) |
| Tab / Shift+Tab | anywhere | next / previous field |
| Ctrl+Y | plan | copy the equivalent `paretune plan ...` command |
| Ctrl+S | plan | run the step simulator in the background |
| Ctrl+W | plan | sweep this plan: make an editable sweep spec |
| Ctrl+O | sweeps | open a sweep spec file |
| Ctrl+S | sweeps | save the spec being edited |
| Ctrl+L | sweeps | launch the spec as a background sweep |
| Ctrl+K | sweeps | stop the sweep launched from here (Ctrl-C to its processes) |
| Ctrl+R | sweeps | refresh studies now (running sweeps refresh by themselves) |
| Enter | sweeps | open the highlighted study / trial |
| Ctrl+E | sweeps | export the shown trial as an Axolotl, TRL, Unsloth or torchtune config |
| Ctrl+R | SQL | run the query |
| Ctrl+L | SQL | example queries |
| Ctrl+E | SQL | export the result to CSV or Parquet |
| M | frontier | next view: quality–forgetting, quality–cost, forgetting–cost |
| Enter | frontier | open the highlighted trial |
| H | frontier | write the study's HTML report (run folder/reports/STUDY.html) |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("f1", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP_TEXT)
