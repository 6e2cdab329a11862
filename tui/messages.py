"""Messages the screens send each other through the app (screens never reach into each other)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

__all__ = ["OpenTrial", "SpecEdited", "SweepThisPlan"]


@dataclass
class SweepThisPlan(Message):
    """The plan screen's current inputs, to be turned into an editable sweep spec."""

    inputs: dict[str, Any]


@dataclass
class OpenTrial(Message):
    """Show one trial's detail on the sweeps screen."""

    study: str
    trial_number: int


@dataclass
class SpecEdited(Message):
    """The sweep spec open in the editor has unsaved edits (``unsaved``) or has none."""

    path: Path
    unsaved: bool
