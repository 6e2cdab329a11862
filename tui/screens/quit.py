"""Asked before Ctrl+Q closes the app on a sweep spec with edits that are not saved."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

__all__ = ["ConfirmQuitScreen"]


class ConfirmQuitScreen(ModalScreen[bool]):
    """Dismissed True to quit and lose the edits, False to go back to them."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Back")]
    DEFAULT_CSS = """
    ConfirmQuitScreen { align: center middle; }
    ConfirmQuitScreen > Vertical { width: 80%; max-width: 70; height: auto;
                                   border: thick $warning; padding: 0 1; background: $surface; }
    ConfirmQuitScreen Horizontal { height: auto; align: right middle; }
    ConfirmQuitScreen Button { margin: 1 0 0 2; }
    """

    def __init__(self, spec: Path) -> None:
        super().__init__()
        self.spec = spec

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Unsaved spec edits", classes="title")
            yield Static(
                f"{self.spec} has edits that are not saved. Quit and lose them, or go back "
                "(Esc) and save them with Ctrl+S on the Sweeps screen?"
            )
            with Horizontal():
                yield Button("Quit without saving", variant="error", id="quit")
                yield Button("Back", variant="primary", id="back")

    def on_mount(self) -> None:
        self.query_one("#back", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "quit")
