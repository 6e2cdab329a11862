"""The one exception hierarchy for mistakes a user can make.

Every package raises a subclass of :class:`UserError` for bad input (an unknown GPU, a
malformed spec, bad SQL, ...). The command line and the terminal UI render it in one
place: the message, then the hint, with no traceback and exit code 2. Anything else
that escapes is a bug and keeps its traceback.

It lives in ``pricing`` only because that is the bottom layer every other package may
import; it is project-wide.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "PricingError",
    "UnknownCpuInstanceError",
    "UnknownGPUError",
    "UnknownProviderError",
    "UserError",
    "did_you_mean",
    "suggest",
]


class UserError(Exception):
    """A mistake in the user's input, with what to do about it.

    ``message`` says what was wrong; ``hint`` (optional) says how to fix it.
    ``title`` is a short heading the terminal UI shows above the message.
    """

    title = "Error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


def suggest(word: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Close matches of ``word`` among ``choices`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=cutoff)
    # Substring matches help with ids like "h100" vs "h100-sxm".
    for key in lowered:
        if word.lower() in key and key not in found and len(found) < n:
            found.append(key)
    return [lowered[f] for f in found]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint sentence: 'Did you mean X or Y?', or the list of valid choices."""
    choices = sorted(set(choices))
    close = suggest(word, choices)
    if close:
        return "Did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"Valid choices: {shown}."


class PricingError(UserError):
    """A price file that cannot be used: unreadable, not YAML, or an entry that fails checks.

    ``file``, ``entry`` and ``field`` say where: the path, the entry (``offers[3] (h100-sxm
    on lambda)``) and the field (``usd_per_hour``), each None when it does not apply.
    """

    title = "Bad price file"

    def __init__(
        self,
        problem: str,
        hint: str | None = None,
        *,
        file: str | None = None,
        entry: str | None = None,
        field: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (file, entry, f"field '{field}'" if field else None)
            if part is not None
        )
        super().__init__(f"{where}: {problem}" if where else problem, hint)
        self.file = file
        self.entry = entry
        self.field = field


class UnknownGPUError(UserError):
    """A GPU name that is neither an id nor an alias in the catalogue."""

    title = "Unknown GPU"


class UnknownProviderError(UserError):
    """A provider name the catalogue has no prices for."""

    title = "Unknown provider"


class UnknownCpuInstanceError(UserError):
    """A CPU instance id the catalogue does not list."""

    title = "Unknown CPU instance"
