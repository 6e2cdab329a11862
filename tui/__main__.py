"""``python -m tui``: the ``paretune`` command."""

from tui.cli import run

run()
