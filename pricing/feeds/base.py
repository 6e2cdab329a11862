"""What every price feed shares: the request, the reading of its JSON, and its failures.

A feed turns one provider's public price source into :class:`FeedOffer` rows. Fetching
goes through one function, :func:`fetch_json` (standard-library ``urllib``), which a
caller may replace, e.g. to read through a proxy or, in tests, from a local server that
replays recorded responses.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pricing.models import OfferKind

__all__ = [
    "Feed",
    "FeedChangedShape",
    "FeedError",
    "FeedOffer",
    "FeedUnavailable",
    "Fetch",
    "fetch_json",
    "field",
    "money",
]

TIMEOUT_S = 30
USER_AGENT = "paretune-prices-update (+https://github.com/paretune/paretune)"


class FeedError(Exception):
    """A feed that could not be read; the message is one sentence for the report."""


class FeedUnavailable(FeedError):
    """No usable answer: the network, an HTTP error status, a refused key, not JSON."""


class FeedChangedShape(FeedError):
    """The answer came, but not in the documented shape (a field gone, renamed or retyped)."""


@dataclass(frozen=True)
class FeedOffer:
    """One price as a feed read it: per GPU-hour, for a catalogue GPU and provider."""

    gpu: str  # catalogue GPU id
    provider: str  # catalogue provider id
    usd_per_hour: Decimal  # per GPU-hour
    instance: str
    kind: OfferKind = "on-demand"
    gpus_per_instance: int = 1
    region: str | None = None
    note: str | None = None


Fetch = Callable[[urllib.request.Request], Any]
"""Sends one request and returns the decoded JSON body; raises :class:`FeedUnavailable`."""


class Feed(Protocol):
    """One provider's price source."""

    name: str  # short name used on the command line: runpod, vast-ai, lambda, azure
    providers: tuple[str, ...]  # catalogue provider ids whose prices it updates
    source: str  # the address recorded as each price's `source` (never with a key in it)
    key_env: str | None  # environment variable holding the API key, if the feed needs one
    key_required: bool
    key_hint: str  # where a user gets that key

    def read(self, fetch: Fetch, key: str | None) -> tuple[list[FeedOffer], list[str]]:
        """(prices of catalogue GPUs, the provider's names of GPUs the catalogue lacks)."""
        ...


def fetch_json(request: urllib.request.Request) -> Any:
    """Send ``request`` with urllib and decode its JSON body."""
    request.add_header("User-Agent", USER_AGENT)
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (https feeds)
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:200].decode("utf-8", "replace").strip()
        raise FeedUnavailable(
            f"HTTP {error.code} {error.reason}" + (f": {detail}" if detail else "")
        ) from None
    except urllib.error.URLError as error:
        raise FeedUnavailable(f"could not connect: {error.reason}") from None
    except TimeoutError:
        raise FeedUnavailable(f"no answer within {TIMEOUT_S} s") from None
    try:
        return json.loads(body)
    except ValueError:
        start = body[:80].decode("utf-8", "replace").strip()
        raise FeedUnavailable(f"the answer is not JSON (it starts {start!r})") from None


def field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[key]`` checked to be a ``kind``; else :class:`FeedChangedShape` naming it."""
    if not isinstance(record, Mapping):
        raise FeedChangedShape(f"{where} is a {type(record).__name__}, not an object")
    if key not in record:
        known = ", ".join(sorted(map(str, record))[:8])
        raise FeedChangedShape(f"{where} has no field {key!r} (it has: {known})")
    value = record[key]
    # JSON's true/false are Python bools, which are ints too: only a bool field takes them.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise FeedChangedShape(
            f"{where}.{key} is a {type(value).__name__} ({value!r:.40}), "
            f"not a {' or '.join(t.__name__ for t in _tuple(kind))}"
        )
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def money(value: Any, where: str) -> Decimal | None:
    """A price from JSON as an exact Decimal; None for an absent or zero price (not offered)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FeedChangedShape(f"{where} is {value!r:.40}, not a price")
    try:
        price = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise FeedChangedShape(f"{where} is {value!r:.40}, not a price") from None
    if not price.is_finite() or price < 0:
        raise FeedChangedShape(f"{where} is {value!r:.40}, not a price")
    return price if price > 0 else None
