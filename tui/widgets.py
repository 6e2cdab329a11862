"""What every screen uses: its base class and footer, the inline error line, how an error is
described."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static

from pricing.errors import UserError

__all__ = ["AppFooter", "AppScreen", "ErrorLine", "describe_error"]


class AppScreen(Screen):
    """A main screen of the app: its footer lists the app's keys (F1-F5, Ctrl+Q) first.

    Textual lists the focused widget's keys first and the app's last, so on an 80-column
    terminal the keys that switch screens were the ones cut off.
    """

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        bindings = super().active_bindings
        app_keys = {k: b for k, b in bindings.items() if b.node is self.app}
        return app_keys | {k: b for k, b in bindings.items() if b.node is not self.app}


class AppFooter(Footer):
    """The footer of a main screen: compact, without the command palette's key, so the app's
    keys and the screen's main keys fit in 80 columns."""

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)


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


class ChoiceScreen(ModalScreen[bool]):
    """A question with buttons; dismissed True when the button ``yes`` (its id) is pressed,
    False on any other button or Esc. ``buttons``: (label, variant, id) in order; ``focus``:
    the id of the button that starts focused."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel")]
    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical { width: 80%; max-width: 90; height: auto;
                              border: thick $warning; padding: 0 1; background: $surface; }
    ChoiceScreen Horizontal { height: auto; align: right middle; }
    ChoiceScreen Button { margin: 1 0 0 2; }
    """

    def __init__(
        self,
        title: str,
        text: str,
        buttons: list[tuple[str, str, str]],
        *,
        yes: str,
        text_id: str | None = None,
        focus: str | None = None,
    ) -> None:
        super().__init__()
        self.title_text, self.text, self.buttons = title, text, buttons
        self.yes, self.text_id, self.focus_id = yes, text_id, focus

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            yield Static(self.text, id=self.text_id)
            with Horizontal():
                for label, variant, button_id in self.buttons:
                    yield Button(label, variant=variant, id=button_id)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        if self.focus_id is not None:
            self.query_one(f"#{self.focus_id}", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == self.yes)
