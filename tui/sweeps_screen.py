from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class SweepsScreen(Screen):
    def compose(self):
        yield Header()
        yield Static("coming")
        yield Footer()
