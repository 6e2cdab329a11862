"""Mistakes a user can make when asking the planner something.

All are :class:`pricing.errors.UserError` subclasses, so the command line and the
terminal UI print them as a message plus a hint, with exit code 2.
"""

from __future__ import annotations

from pricing.errors import UserError

__all__ = ["ConfigFileError", "InvalidSpecError", "ModelConfigError", "UnknownModelError"]


class UnknownModelError(UserError):
    """A model name that is neither in the catalogue, a local config, nor a reachable Hub id."""

    title = "Unknown model"


class ModelConfigError(UserError):
    """A config.json that cannot describe a supported architecture (names the bad field)."""

    title = "Bad model config"


class InvalidSpecError(UserError):
    """A workload or method setting out of range (names the field and the value)."""

    title = "Bad setting"


class ConfigFileError(InvalidSpecError):
    """A run config that cannot be read (names the file and the key)."""

    title = "Bad config file"
