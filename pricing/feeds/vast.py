"""Vast.ai: the median price of the marketplace's offer search, on-demand and interruptible.

Request (the offer search of https://docs.vast.ai/api-reference/search/search-offers, as the
``vastai search offers`` command sends it): ``GET
https://console.vast.ai/api/v0/bundles/?q=<JSON>`` with ``q`` = ``{"verified": {"eq": true},
"rentable": {"eq": true}, "type": "on-demand", "limit": 1000}`` (``"type": "bid"`` for
interruptible offers). An API key (``$VAST_API_KEY``, optional) goes in an
``Authorization: Bearer`` header. The answer:

    {"offers": [{"id": 1, "gpu_name": "H100 SXM", "num_gpus": 8, "gpu_ram": 81559,
      "dph_total": 19.2, "min_bid": 12.0, ...}, ...]}

Hosts set their own prices, so the catalogue keeps the median per-GPU price of the
listings of each GPU (``dph_total`` on-demand, ``min_bid`` interruptible).
"""

from __future__ import annotations

import json
import statistics
import urllib.parse
import urllib.request
from decimal import Decimal

from pricing.feeds.base import FeedOffer, Fetch, field, money

ENDPOINT = "https://console.vast.ai/api/v0/bundles/"

# Vast.ai's gpu_name -> catalogue GPU; A100s come in 40 and 80 GB under one name.
GPU_NAMES = {
    "B200": "b200",
    "H200": "h200",
    "H100 SXM": "h100-sxm",
    "H100 PCIE": "h100-pcie",
    "L40S": "l40s",
    "L4": "l4",
    "A10": "a10",
    "Tesla T4": "t4",
    "RTX 6000Ada": "rtx-6000-ada",
    "RTX 4090": "rtx-4090",
}
A100_NAMES = {"A100 SXM4", "A100 PCIE", "A100X"}
A100_80GB_MIN_MB = 70_000  # gpu_ram in MB: the 40 GB card reports ~40,960, the 80 GB ~81,920

# search type -> (price field, kind, instance name)
SEARCHES = {
    "on-demand": ("dph_total", "on-demand", "marketplace median"),
    "bid": ("min_bid", "spot", "marketplace median (interruptible)"),
}


class VastFeed:
    name: str = "vast-ai"
    providers: tuple[str, ...] = ("vast-ai",)
    source: str = ENDPOINT
    key_env: str | None = "VAST_API_KEY"
    key_required: bool = False
    key_hint: str = "https://cloud.vast.ai/manage-keys/"

    def read(self, fetch: Fetch, key: str | None) -> tuple[list[FeedOffer], list[str]]:
        offers: list[FeedOffer] = []
        unknown: set[str] = set()
        for search, (price_field, kind, instance) in SEARCHES.items():
            query = {"verified": {"eq": True}, "rentable": {"eq": True}, "type": search}
            query["limit"] = 1000  # type: ignore[assignment]
            url = ENDPOINT + "?" + urllib.parse.urlencode({"q": json.dumps(query)})
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            answer = fetch(urllib.request.Request(url, headers=headers))
            listings = field(answer, "offers", list, "the answer")
            per_gpu: dict[str, list[Decimal]] = {}
            for i, listing in enumerate(listings):
                where = f"offers[{i}]"
                name = field(listing, "gpu_name", str, where)
                gpus = field(listing, "num_gpus", int, where)
                gpu = _catalogue_gpu(name, listing, where)
                price = money(field(listing, price_field, (int, float), where), where)
                if gpu is None:
                    unknown.add(name)
                elif price is not None and gpus > 0:
                    per_gpu.setdefault(gpu, []).append(price / gpus)
            for gpu, prices in sorted(per_gpu.items()):
                median = statistics.median(prices).quantize(Decimal("0.001"))
                note = f"median of {len(prices)} listings"
                offers.append(FeedOffer(gpu, "vast-ai", median, instance, kind, note=note))  # type: ignore[arg-type]
        return offers, sorted(unknown)


def _catalogue_gpu(name: str, listing: dict, where: str) -> str | None:
    if name in A100_NAMES:
        memory_mb = field(listing, "gpu_ram", (int, float), where)
        return "a100-80gb" if memory_mb >= A100_80GB_MIN_MB else "a100-40gb"
    return GPU_NAMES.get(name)
