"""``python -m tui.cli``: the ``paretune`` command."""

from tui.cli import run

run()
