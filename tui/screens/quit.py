"""Asked before Ctrl+Q closes the app on a sweep spec with edits that are not saved."""

from __future__ import annotations

from pathlib import Path

from tui.widgets import ChoiceScreen

__all__ = ["ConfirmQuitScreen"]


class ConfirmQuitScreen(ChoiceScreen):
    """Dismissed True to quit and lose the edits, False to go back to them."""

    def __init__(self, spec: Path) -> None:
        super().__init__(
            "Unsaved spec edits",
            f"{spec} has edits that are not saved. Quit and lose them, or go back "
            "(Esc) and save them with Ctrl+S on the Sweeps screen?",
            [("Quit without saving", "error", "quit"), ("Back", "primary", "back")],
            yes="quit",
            focus="back",
        )
        self.spec = spec
