"""Dated, sourced catalogue of GPUs, hourly prices and fine-tuning API prices.

    from pricing import load_catalog
    cat = load_catalog()                 # shipped data + the user's override file
    cat.gpu("H100").memory_bytes         # 80_000_000_000 (GB = 10^9 bytes)
    cat.cheapest("h100", as_of=date(2026, 10, 1))

Every price carries its source and the date it was checked; see ``pricing.catalog`` for
the override rules and ``pricing/data/*.yaml`` for the figures.
"""

from pricing.catalog import Catalog, default_override_path, load_catalog
from pricing.errors import (
    PricingError,
    UnknownCpuInstanceError,
    UnknownGPUError,
    UnknownProviderError,
    UserError,
)
from pricing.models import GPU, ApiPrice, CpuInstance, Offer, Provider

__all__ = [
    "GPU",
    "ApiPrice",
    "Catalog",
    "CpuInstance",
    "Offer",
    "PricingError",
    "Provider",
    "UnknownCpuInstanceError",
    "UnknownGPUError",
    "UnknownProviderError",
    "UserError",
    "default_override_path",
    "load_catalog",
]
