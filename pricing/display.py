"""How amounts of money are written for people: significant digits, never ``8.9e-05``."""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["format_dollars"]

_SIGNIFICANT = 3
"""Digits shown of an amount under one dollar: $0.0000893, $0.0120, $0.512."""


def format_dollars(value: float | Decimal | None, *, sign: bool = True) -> str:
    """``value`` dollars as text: cents from $1 up, three significant digits below.

    ``$1,234.50``, ``$0.512``, ``$0.0000893``, ``$0``; ``""`` for None. ``sign=False`` leaves
    out the dollar sign (for a column already headed ``$``).
    """
    if value is None:
        return ""
    amount = float(value)
    prefix = "$" if sign else ""
    if amount == 0:
        return f"{prefix}0"
    if abs(amount) >= 1:
        return f"{'-' if amount < 0 else ''}{prefix}{abs(amount):,.2f}"
    decimals = _SIGNIFICANT - 1 - math.floor(math.log10(abs(amount)))
    return f"{'-' if amount < 0 else ''}{prefix}{abs(amount):.{decimals}f}"
