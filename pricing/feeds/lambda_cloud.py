"""Lambda: the Cloud API's instance types and their hourly prices (needs an API key).

Request (https://docs.lambda.ai/api/cloud#listInstanceTypes): ``GET
https://cloud.lambda.ai/api/v1/instance-types`` with ``Authorization: Bearer
$LAMBDA_API_KEY``. The answer:

    {"data": {"gpu_8x_h100_sxm5": {"instance_type": {"name": "gpu_8x_h100_sxm5",
      "description": "8x H100 (80 GB SXM5)", "gpu_description": "H100 (80 GB SXM5)",
      "price_cents_per_hour": 2392, "specs": {"vcpus": 208, "memory_gib": 1800,
      "storage_gib": 22528, "gpus": 8}}, "regions_with_capacity_available": [...]}, ...}}

``price_cents_per_hour`` is for the whole instance; the catalogue stores it per GPU.
"""

from __future__ import annotations

import re
import urllib.request
from decimal import Decimal

from pricing.feeds.base import (
    FeedChangedShape,
    FeedOffer,
    FeedUnavailable,
    Fetch,
    field,
    money,
)

ENDPOINT = "https://cloud.lambda.ai/api/v1/instance-types"

# The GPU part of an instance name (gpu_<n>x_<gpu>) -> (catalogue GPU, name in the catalogue).
GPU_PARTS = {
    "b200_sxm6": ("b200", "B200 SXM6"),
    "h100_sxm5": ("h100-sxm", "H100 SXM"),
    "h100_pcie": ("h100-pcie", "H100 PCIe"),
    "a100_80gb_sxm4": ("a100-80gb", "A100 SXM 80GB"),
    "a100_sxm4": ("a100-40gb", "A100 40GB"),
    "a100": ("a100-40gb", "A100 40GB"),
    "a10": ("a10", "A10"),
}
_NAME = re.compile(r"^gpu_(\d+)x_(.+)$")


class LambdaFeed:
    name: str = "lambda"
    providers: tuple[str, ...] = ("lambda",)
    source: str = ENDPOINT
    key_env: str | None = "LAMBDA_API_KEY"
    key_required: bool = True
    key_hint: str = "https://cloud.lambda.ai/api-keys"

    def read(self, fetch: Fetch, key: str | None) -> tuple[list[FeedOffer], list[str]]:
        request = urllib.request.Request(ENDPOINT, headers={"Authorization": f"Bearer {key}"})
        answer = fetch(request)
        if isinstance(answer, dict) and "error" in answer:
            error = answer["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise FeedUnavailable(f"the API answered with an error: {message}")
        data = field(answer, "data", dict, "the answer")
        offers: list[FeedOffer] = []
        unknown: list[str] = []
        for name, entry in sorted(data.items()):
            where = f"data.{name}"
            instance = field(entry, "instance_type", dict, where)
            specs = field(instance, "specs", dict, f"{where}.instance_type")
            gpus = field(specs, "gpus", int, f"{where}.instance_type.specs")
            cents = field(instance, "price_cents_per_hour", (int, float), f"{where}.instance_type")
            match = _NAME.match(name)
            if match is None or match.group(2) not in GPU_PARTS:
                unknown.append(str(field(instance, "gpu_description", str, where)))
                continue
            if gpus < 1:
                raise FeedChangedShape(f"{where}.instance_type.specs.gpus is {gpus}")
            gpu, label = GPU_PARTS[match.group(2)]
            price = money(cents, f"{where}.instance_type.price_cents_per_hour")
            if price is None:
                continue
            per_gpu = price / Decimal(100) / gpus
            offers.append(
                FeedOffer(gpu, "lambda", per_gpu, f"{gpus}x {label}", gpus_per_instance=gpus)
            )
        return offers, sorted(set(unknown))
