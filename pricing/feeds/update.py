"""``paretune prices update``: read the feeds, and write what they say into the user's price file.

The shipped catalogue is never written. Each fetched price becomes an ``offers`` entry of
the user's override file with ``source`` = the feed's address, ``checked`` = today and
``verified: true``. An override entry for a GPU at a provider hides every shipped price of
that pair (see :mod:`pricing.catalog`), so the first time a pair is updated its shipped
history is copied into the file too: ``--as-of`` still answers for earlier dates.

A feed that fails, or answers in a shape it did not document, changes nothing: its
providers keep their previous prices and the report says why in one paragraph.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from pricing.catalog import Catalog, _loader, _merge, _read_layer, _shipped_layers
from pricing.errors import PricingError, UserError, did_you_mean
from pricing.feeds.azure import AzureFeed
from pricing.feeds.base import Feed, FeedError, FeedOffer, Fetch, fetch_json
from pricing.feeds.lambda_cloud import LambdaFeed
from pricing.feeds.runpod import RunPodFeed
from pricing.feeds.vast import VastFeed
from pricing.models import MAX_USD, Offer

__all__ = ["FEEDS", "FeedReport", "UpdateReport", "feed_names", "update_prices"]

FEEDS: tuple[Feed, ...] = (RunPodFeed(), VastFeed(), LambdaFeed(), AzureFeed())
"""Every price feed, in the order they are read."""

_SECTIONS = ("providers", "gpus", "offers", "cpu_instances", "apis")


def feed_names() -> tuple[str, ...]:
    return tuple(feed.name for feed in FEEDS)


@dataclass
class PriceChange:
    gpu: str
    provider: str
    instance: str
    kind: str
    before: Decimal | None
    after: Decimal


@dataclass
class FeedReport:
    """What one feed did: ``updated`` with the prices it wrote, or ``skipped`` and why."""

    feed: str
    source: str
    status: str = "skipped"  # updated or skipped
    reason: str = ""
    offers: list[Offer] = field(default_factory=list)
    unknown_gpus: list[str] = field(default_factory=list)
    changes: list[PriceChange] = field(default_factory=list)

    @property
    def updated(self) -> bool:
        return self.status == "updated"


@dataclass
class UpdateReport:
    """Every feed's report, and where the prices went."""

    path: Path
    feeds: list[FeedReport]
    written: bool
    backup: Path | None = None

    @property
    def updated(self) -> list[FeedReport]:
        return [f for f in self.feeds if f.updated]


def update_prices(
    catalog: Catalog,
    path: Path,
    *,
    feeds: Sequence[str] | None = None,
    today: dt.date | None = None,
    fetch: Fetch | None = None,
    environ: dict[str, str] | None = None,
    dry_run: bool = False,
) -> UpdateReport:
    """Read ``feeds`` (default: all) and write their prices into the override file ``path``.

    ``catalog`` is the catalogue as it stands (shipped data + ``path`` if it exists).
    ``fetch`` sends each request (default: :func:`~pricing.feeds.base.fetch_json`). The
    file is rewritten whole, after the merged result has been checked, and its previous
    version is kept beside it as ``<name>.bak``. Nothing is written if no feed updated
    anything, or with ``dry_run``.
    """
    today = today or dt.date.today()
    fetch = fetch or fetch_json
    environ = dict(os.environ) if environ is None else environ
    chosen = _choose(feeds)
    reports = [_read_feed(feed, catalog, fetch, environ, today) for feed in chosen]
    new_offers = [offer for report in reports for offer in report.offers]
    if not new_offers or dry_run:
        return UpdateReport(path=path, feeds=reports, written=False)
    backup = _write(path, catalog, new_offers)
    return UpdateReport(path=path, feeds=reports, written=True, backup=backup)


def _choose(names: Sequence[str] | None) -> list[Feed]:
    if not names:
        return list(FEEDS)
    by_name = {feed.name: feed for feed in FEEDS}
    chosen = []
    for name in names:
        wanted = name.strip().lower()
        if wanted not in by_name:
            raise UserError(
                f"no price feed named {name!r}",
                did_you_mean(wanted, by_name) + " `paretune prices update` reads all of them.",
            )
        chosen.append(by_name[wanted])
    return chosen


# -- reading one feed ---------------------------------------------------------------------


def _read_feed(
    feed: Feed, catalog: Catalog, fetch: Fetch, environ: dict[str, str], today: dt.date
) -> FeedReport:
    report = FeedReport(feed=feed.name, source=feed.source)
    key = None
    if feed.key_env is not None:
        key = environ.get(feed.key_env, "").strip() or None
    if feed.key_required and key is None:
        report.reason = (
            f"needs an API key in ${feed.key_env} (get one at {feed.key_hint}); "
            "its previous prices are kept"
        )
        return report
    try:
        fetched, unknown = feed.read(fetch, key)
        offers = [_offer(f, feed.source, today) for f in fetched]
    except FeedError as error:
        report.reason = f"{error}; its previous prices are kept"
        return report
    except PricingError as error:  # a fetched figure outside the catalogue's bounds
        report.reason = f"a price failed the catalogue's checks ({error.message}); kept the old"
        return report
    report.unknown_gpus = unknown
    if not offers:
        report.reason = "the feed listed no GPU the catalogue knows; its previous prices are kept"
        return report
    report.status, report.offers = "updated", offers
    report.changes = [_change(catalog, offer) for offer in offers]
    return report


def _offer(fetched: FeedOffer, source: str, today: dt.date) -> Offer:
    from pydantic import ValidationError

    if fetched.usd_per_hour > MAX_USD:
        raise PricingError(f"{fetched.gpu} at {fetched.provider}: ${fetched.usd_per_hour}/h")
    try:
        return Offer(
            gpu=fetched.gpu,
            provider=fetched.provider,
            usd_per_hour=fetched.usd_per_hour,
            kind=fetched.kind,
            gpus_per_instance=fetched.gpus_per_instance,
            instance=fetched.instance,
            region=fetched.region,
            source=source,
            checked=today,
            verified=True,
            note=fetched.note,
        )
    except ValidationError as error:
        raise PricingError(
            f"{fetched.gpu} at {fetched.provider}: {error.errors()[0]['msg']}"
        ) from None


def _change(catalog: Catalog, offer: Offer) -> PriceChange:
    before = next(
        (
            o.usd_per_hour
            for o in catalog.offers(offer.gpu, offer.provider, kind=offer.kind)
            if o.instance.lower() == offer.instance.lower()
        ),
        None,
    )
    return PriceChange(
        offer.gpu, offer.provider, offer.instance, offer.kind, before, offer.usd_per_hour
    )


# -- writing the user's price file --------------------------------------------------------


def _entry(offer: Offer) -> dict[str, Any]:
    """An offer as a price-file entry: only the fields that differ from their defaults."""
    data = offer.model_dump(mode="json", exclude_defaults=True)
    data["verified"] = offer.verified
    order = ("gpu", "provider", "usd_per_hour", "kind", "gpus_per_instance", "instance")
    return {k: data[k] for k in order if k in data} | {
        k: v for k, v in data.items() if k not in order
    }


def _read_raw(path: Path) -> dict[str, list[Any]]:
    if not path.is_file():
        return {}
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader()) or {}
    return {key: list(value or []) for key, value in raw.items()}


def _merged_offers(raw: dict[str, list[Any]], catalog: Catalog, new: Iterable[Offer]) -> list[Any]:
    """The file's offers with the new prices added and every updated pair's history kept."""
    entries = list(raw.get("offers", []))
    in_file = {(catalog.gpu(str(e["gpu"])).id, str(e["provider"])) for e in entries}
    for offer in new:
        pair = (offer.gpu, offer.provider)
        if pair not in in_file:
            # Overriding a pair hides all its shipped prices: bring their history along.
            entries += [_entry(o) for o in catalog.offer_history(*pair)]
            in_file.add(pair)
        entries = [e for e in entries if not _same_day(e, offer, catalog)] + [_entry(offer)]
    return entries


def _same_day(entry: dict[str, Any], offer: Offer, catalog: Catalog) -> bool:
    """True for an entry that a second update on the same day replaces."""
    return (
        catalog.gpu(str(entry["gpu"])).id == offer.gpu
        and entry["provider"] == offer.provider
        and str(entry["instance"]).lower() == offer.instance.lower()
        and entry.get("kind", "on-demand") == offer.kind
        and str(entry["checked"]) == offer.checked.isoformat()
    )


def _dump(raw: dict[str, list[Any]], today: dt.date, backup: str) -> str:
    lines = [
        "# Your prices, merged over paretune's shipped catalogue (docs/guides/prices.md).",
        f"# Rewritten by `paretune prices update` on {today}; the previous version is {backup}.",
        "# Entries with verified: true were read from the source named in them on that date.",
    ]
    for section in [*_SECTIONS, *(k for k in raw if k not in _SECTIONS)]:
        if section not in raw:
            continue
        lines.append(f"{section}:")
        for entry in raw[section]:
            text = yaml.safe_dump(
                entry, default_flow_style=True, width=1_000_000, sort_keys=False
            ).strip()
            lines.append(f"  - {text}")
    return "\n".join(lines) + "\n"


def _write(path: Path, catalog: Catalog, new: list[Offer]) -> Path | None:
    raw = _read_raw(path)
    raw["offers"] = _merged_offers(raw, catalog, new)
    backup = path.with_name(path.name + ".bak")
    text = _dump(raw, new[0].checked, backup.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
    tmp_path = Path(tmp.name)
    try:
        # The new file must load and merge exactly as the catalogue will read it.
        _merge([*_shipped_layers(), _read_layer(tmp_path)], path)
    except UserError:
        tmp_path.unlink()
        raise
    had_file = path.is_file()
    if had_file:
        shutil.copy2(path, backup)
    os.replace(tmp_path, path)
    return backup if had_file else None
