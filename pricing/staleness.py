"""When a price is too old to plan with, and the one line that says so.

GPU rental prices moved by tens of percent within weeks in 2026, so a plan or a sweep
priced on prices older than :data:`STALE_AFTER_DAYS` says so once, with the command that
refreshes them. ``$PARETUNE_PRICE_MAX_AGE_DAYS`` changes the limit.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable

from pricing.errors import UserError

__all__ = [
    "MAX_AGE_ENV",
    "REFRESH_COMMAND",
    "STALE_AFTER_DAYS",
    "max_price_age_days",
    "staleness_notice",
]

STALE_AFTER_DAYS = 30
MAX_AGE_ENV = "PARETUNE_PRICE_MAX_AGE_DAYS"
REFRESH_COMMAND = "paretune prices update"


def max_price_age_days() -> int:
    """The age in days past which a price is stale: ``$PARETUNE_PRICE_MAX_AGE_DAYS`` or 30."""
    text = os.environ.get(MAX_AGE_ENV, "").strip()
    if not text:
        return STALE_AFTER_DAYS
    if not text.isdigit():
        raise UserError(
            f"${MAX_AGE_ENV} must be a whole number of days, got {text!r}",
            f"Set it to e.g. 30, or unset it for the default of {STALE_AFTER_DAYS} days.",
        )
    return int(text)


def staleness_notice(
    checked: Iterable[dt.date], *, today: dt.date | None = None, max_age_days: int | None = None
) -> str | None:
    """One sentence if the oldest of ``checked`` is past the limit, else None."""
    dates = list(checked)
    if not dates:
        return None
    limit = max_price_age_days() if max_age_days is None else max_age_days
    oldest = min(dates)
    age = ((today or dt.date.today()) - oldest).days
    if age <= limit:
        return None
    return (
        f"The prices used here were checked on {oldest}, {age} days ago (more than {limit}): "
        f"run `{REFRESH_COMMAND}` to refresh them."
    )
