"""Microsoft Azure: the Retail Prices API for GPU virtual machines (no account needed).

Request (https://learn.microsoft.com/en-us/rest/api/cost-management/retail-prices/azure-retail-prices):
``GET https://prices.azure.com/api/retail/prices?$filter=...`` with an OData filter on
service, region, price type and SKU; the answer is paged:

    {"BillingCurrency": "USD", "Items": [{"currencyCode": "USD", "retailPrice": 98.32,
      "unitOfMeasure": "1 Hour", "armRegionName": "eastus", "armSkuName":
      "Standard_ND96isr_H100_v5", "skuName": "ND96isr H100 v5", "productName":
      "Virtual Machines NDisrH100v5 Series", "type": "Consumption", ...}, ...],
     "NextPageLink": null, "Count": 1}

Linux prices only (Windows products end in "Windows"); a ``skuName`` ending in "Spot" is
the spot price, "Low Priority" is skipped. Prices are per instance-hour; the catalogue
stores them per GPU.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from decimal import Decimal

from pricing.feeds.base import FeedChangedShape, FeedOffer, Fetch, field, money

ENDPOINT = "https://prices.azure.com/api/retail/prices"
REGION = "eastus"
MAX_PAGES = 20

# VM size -> (catalogue GPU, GPUs per VM)
SKUS = {
    "Standard_ND96isr_H200_v5": ("h200", 8),
    "Standard_ND96isr_H100_v5": ("h100-sxm", 8),
    "Standard_ND96amsr_A100_v4": ("a100-80gb", 8),
    "Standard_NC24ads_A100_v4": ("a100-80gb", 1),
    "Standard_ND96asr_v4": ("a100-40gb", 8),
    "Standard_NV36ads_A10_v5": ("a10", 1),
    "Standard_NC4as_T4_v3": ("t4", 1),
}


def _filter() -> str:
    skus = " or ".join(f"armSkuName eq '{sku}'" for sku in SKUS)
    return (
        f"serviceName eq 'Virtual Machines' and armRegionName eq '{REGION}' "
        f"and priceType eq 'Consumption' and ({skus})"
    )


class AzureFeed:
    name: str = "azure"
    providers: tuple[str, ...] = ("azure",)
    source: str = ENDPOINT
    key_env: str | None = None
    key_required: bool = False
    key_hint: str = ""

    def read(self, fetch: Fetch, key: str | None) -> tuple[list[FeedOffer], list[str]]:
        url: str | None = ENDPOINT + "?" + urllib.parse.urlencode({"$filter": _filter()})
        offers: dict[tuple[str, str], FeedOffer] = {}
        pages = 0
        while url and pages < MAX_PAGES:
            answer = fetch(urllib.request.Request(url))
            pages += 1
            for i, item in enumerate(field(answer, "Items", list, "the answer")):
                offer = _offer(item, f"Items[{i}]")
                if offer is not None:
                    offers.setdefault((offer.instance, offer.kind), offer)
            url = answer.get("NextPageLink")
        return list(offers.values()), []


def _offer(item: object, where: str) -> FeedOffer | None:
    sku = field(item, "armSkuName", str, where)
    product = field(item, "productName", str, where)
    sku_name = field(item, "skuName", str, where)
    unit = field(item, "unitOfMeasure", str, where)
    currency = field(item, "currencyCode", str, where)
    if sku not in SKUS or product.endswith("Windows") or "Low Priority" in sku_name:
        return None
    if unit != "1 Hour" or currency != "USD":
        raise FeedChangedShape(f"{where} ({sku}) is priced per {unit!r} in {currency}")
    price = money(field(item, "retailPrice", (int, float), where), f"{where}.retailPrice")
    if price is None:
        return None
    gpu, gpus = SKUS[sku]
    kind = "spot" if sku_name.endswith("Spot") else "on-demand"
    per_gpu = (price / Decimal(gpus)).quantize(Decimal("0.0001"))
    return FeedOffer(gpu, "azure", per_gpu, sku, kind, gpus, REGION)  # type: ignore[arg-type]
