"""Small widgets every screen uses: the inline error line and how an error is described."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from pricing.errors import UserError

__all__ = ["ErrorLine", "describe_error"]


def describe_error(error: BaseException) -> Text:
    """One readable paragraph for an error: a user's mistake with its hint, or a bug."""
    text = Text()
    if isinstance(error, UserError):
        text.append(f"{error.title}: ", style="bold red")
        text.append(error.message)
        if error.hint:
            text.append("\n" + error.hint, style="italic")
    else:
        # Not the user's fault: say so, with the exception type, but no traceback.
        text.append("Unexpected error: ", style="bold red")
        text.append(f"{type(error).__name__}: {error}")
    return text


class ErrorLine(Static):
    """Shows the last error in place, under the widget that caused it; hidden when clear."""

    DEFAULT_CSS = """
    ErrorLine {
        display: none;
        color: $text-error;
        background: $error 15%;
        padding: 0 1;
        height: auto;
    }
    ErrorLine.-shown { display: block; }
    """

    def show_error(self, error: BaseException) -> None:
        self.update(describe_error(error))
        self.add_class("-shown")

    def show_text(self, text: str | Text) -> None:
        self.update(text)
        self.add_class("-shown")

    def clear(self) -> None:
        self.update("")
        self.remove_class("-shown")

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")
