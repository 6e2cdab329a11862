"""The error a run config that cannot be read raises (it names the file and the key)."""

from __future__ import annotations

from planner.errors import InvalidSpecError

__all__ = ["ConfigFileError"]


class ConfigFileError(InvalidSpecError):
    """A run config that cannot be read (names the file and the key)."""

    title = "Bad config file"
