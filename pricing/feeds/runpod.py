"""RunPod: the public GraphQL API's ``gpuTypes`` prices (secure and community, on-demand and spot).

Request (documented at https://docs.runpod.io/sdks/graphql/manage-pods): ``POST
https://api.runpod.io/graphql`` with a JSON body ``{"query": ...}``; an API key, if
``$RUNPOD_API_KEY`` is set, goes in the ``api_key`` query parameter. The answer:

    {"data": {"gpuTypes": [{"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM",
      "memoryInGb": 80, "securePrice": 2.99, "communityPrice": 2.69,
      "secureSpotPrice": 1.75, "communitySpotPrice": 1.25}, ...]}}

or ``{"errors": [{"message": ...}]}``. Prices are USD per GPU-hour for a one-GPU pod; a
null or zero price means that tier does not offer the GPU.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from pricing.feeds.base import FeedChangedShape, FeedOffer, FeedUnavailable, Fetch, field, money

ENDPOINT = "https://api.runpod.io/graphql"
QUERY = (
    "query GpuTypes { gpuTypes { id displayName memoryInGb "
    "securePrice communityPrice secureSpotPrice communitySpotPrice } }"
)

# RunPod's GPU type id -> (catalogue GPU, the pod name the shipped catalogue uses).
GPU_TYPES = {
    "NVIDIA B200": ("b200", "1x B200"),
    "NVIDIA H200": ("h200", "1x H200 SXM"),
    "NVIDIA H100 80GB HBM3": ("h100-sxm", "1x H100 SXM"),
    "NVIDIA H100 PCIe": ("h100-pcie", "1x H100 PCIe"),
    "NVIDIA A100-SXM4-80GB": ("a100-80gb", "1x A100 SXM 80GB"),
    "NVIDIA A100 80GB PCIe": ("a100-80gb", "1x A100 PCIe 80GB"),
    "NVIDIA L40S": ("l40s", "1x L40S"),
    "NVIDIA L4": ("l4", "1x L4"),
    "NVIDIA RTX 6000 Ada Generation": ("rtx-6000-ada", "1x RTX 6000 Ada"),
    "NVIDIA GeForce RTX 4090": ("rtx-4090", "1x RTX 4090"),
}

# price field -> (catalogue provider, kind)
PRICE_FIELDS = {
    "securePrice": ("runpod-secure", "on-demand"),
    "communityPrice": ("runpod-community", "on-demand"),
    "secureSpotPrice": ("runpod-secure", "spot"),
    "communitySpotPrice": ("runpod-community", "spot"),
}


class RunPodFeed:
    name: str = "runpod"
    providers: tuple[str, ...] = ("runpod-community", "runpod-secure")
    source: str = ENDPOINT
    key_env: str | None = "RUNPOD_API_KEY"
    key_required: bool = False
    key_hint: str = "https://www.runpod.io/console/user/settings (API keys)"

    def read(self, fetch: Fetch, key: str | None) -> tuple[list[FeedOffer], list[str]]:
        url = ENDPOINT + ("?" + urllib.parse.urlencode({"api_key": key}) if key else "")
        request = urllib.request.Request(
            url,
            data=json.dumps({"query": QUERY}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        answer = fetch(request)
        if isinstance(answer, dict) and answer.get("errors"):
            messages = "; ".join(str(e.get("message", e)) for e in answer["errors"][:3])
            raise FeedUnavailable(f"the API answered with errors: {messages}")
        data = field(answer, "data", dict, "the answer")
        gpu_types = field(data, "gpuTypes", list, "data")
        offers: list[FeedOffer] = []
        unknown: list[str] = []
        for i, entry in enumerate(gpu_types):
            where = f"gpuTypes[{i}]"
            type_id = field(entry, "id", str, where)
            if type_id not in GPU_TYPES:
                unknown.append(type_id)
                continue
            gpu, instance = GPU_TYPES[type_id]
            for price_field, (provider, kind) in PRICE_FIELDS.items():
                if price_field not in entry:
                    raise FeedChangedShape(f"{where} ({type_id}) has no field {price_field!r}")
                price = money(entry[price_field], f"{where}.{price_field}")
                if price is not None:
                    offers.append(FeedOffer(gpu, provider, price, instance, kind))  # type: ignore[arg-type]
        return offers, unknown
