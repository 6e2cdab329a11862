"""Export the shown trial as a framework config (``paretune export`` in the UI).

The sweeps screen's Trial tab binds Ctrl+E to :class:`ExportTrialScreen`, which asks for the
framework; the file is written by a thread worker beside the results file (a free name:
``STUDY-trial-N-FRAMEWORK.yml``, then ``-2`` ...) and :class:`TrialExported` says where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList

from planner.frameworks.exports import EXPORT_FORMATS

__all__ = ["ExportTrialScreen", "TrialExported", "export_shown_trial"]

_TITLES = {
    "axolotl": "Axolotl YAML",
    "trl": "TRL SFTConfig + LoraConfig JSON, and a script that runs it",
    "unsloth": "Unsloth script",
    "torchtune": "torchtune recipe config",
}


@dataclass
class TrialExported(Message):
    """A trial's export was written (``path``), or failed (``error``)."""

    study: str
    number: int
    path: Path | None = None
    notes: tuple[str, ...] = ()
    error: BaseException | None = None


class ExportTrialScreen(ModalScreen[str | None]):
    """Pick the framework to export a trial for."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    ExportTrialScreen { align: center middle; }
    ExportTrialScreen > Vertical { width: 80%; max-width: 80; height: auto;
                                   border: thick $primary; padding: 0 1; background: $surface; }
    ExportTrialScreen OptionList { height: auto; }
    """

    def __init__(self, study: str, number: int) -> None:
        super().__init__()
        self.study, self.number = study, number

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Export trial {self.number} of {self.study} for (written beside the "
                        "results file):")  # fmt: skip
            yield OptionList(*[f"{f}: {_TITLES[f]}" for f in EXPORT_FORMATS], id="export-to")

    def on_mount(self) -> None:
        self.query_one("#export-to", OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(EXPORT_FORMATS[event.option_index])


def export_shown_trial(db: Path, study: str, number: int, to: str) -> TrialExported:
    """Write the export (blocking: call it from a worker) and say how it went."""
    from sweeps.results.trial_export import export_trial

    try:
        done = export_trial(db, to, number=number, study=study, unique=True)
    except Exception as error:  # shown in the screen's error line
        return TrialExported(study, number, error=error)
    return TrialExported(study, number, done.path, done.notes)
