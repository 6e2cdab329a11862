"""The Textual application (placeholder until the screens land)."""

from __future__ import annotations

from pathlib import Path


def run_app(db: Path | None = None) -> None:
    from textual.app import App
    from textual.widgets import Footer, Header, Static

    class ParetuneApp(App):
        TITLE = "paretune"
        BINDINGS = [("q", "quit", "Quit")]

        def compose(self):
            yield Header()
            yield Static("paretune — the plan screen is coming.")
            yield Footer()

    ParetuneApp().run()
