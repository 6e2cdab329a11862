"""``paretune sweep``, ``sql``, ``frontier``, ``results`` (registered by ``tui.cli``)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
