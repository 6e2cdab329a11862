"""Command-line commands of this package (registered by ``tui.cli``)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
