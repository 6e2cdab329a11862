"""The validated records of the price catalogue, and the shape of one price file.

Every record is a frozen pydantic model that rejects unknown keys, so a typo in a price
file (``usd_per_hour`` spelled ``usd_per_hr``) is an error instead of a silently missing
price. Money is :class:`~decimal.Decimal` (never float), dates are :class:`~datetime.date`,
memory is GB = 10^9 bytes and bandwidth GB/s.
"""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = [
    "GPU",
    "OFFER_KINDS",
    "ApiMethod",
    "ApiPrice",
    "CpuInstance",
    "Offer",
    "OfferKind",
    "PriceFile",
    "Provider",
]

ApiMethod = Literal["lora", "full", "undisclosed"]
OfferKind = Literal["on-demand", "spot"]
OFFER_KINDS: tuple[OfferKind, ...] = ("on-demand", "spot")


def _money(value: object) -> object:
    # YAML reads `3.99` as a float; go through its shortest repr so 3.99 stays exactly 3.99
    # instead of 3.9900000000000002131628... . Booleans are not money.
    if isinstance(value, bool):
        raise ValueError("a price must be a number such as 3.99, not true/false")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, float):
        return repr(value)
    return value


MAX_USD = Decimal(1_000_000)
"""The largest price a file may give, per GPU-hour, instance-hour or million tokens. Real ones
are below $100; a bound keeps every cost the planner multiplies out of it (hours x GPUs x price,
rounded to the cent) inside Decimal's 28 digits, where 1e308 made every plan crash."""

MAX_GPUS_PER_INSTANCE = 1024


def _bounded_money(value: Decimal) -> Decimal:
    if value > MAX_USD:
        raise ValueError(f"a price must be at most {MAX_USD:,} dollars, got {value:.6g}")
    return value


def _lower_id(value: str) -> str:
    if value != value.lower():
        raise ValueError(f"ids are lowercase, e.g. {value.lower()!r}")
    return value


def _web_address(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be the web address (http:// or https://) the figure was read from")
    return value


Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    AfterValidator(_lower_id),
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Url = Annotated[Text, AfterValidator(_web_address)]
Usd = Annotated[
    Decimal,
    BeforeValidator(_money),
    Field(ge=0, allow_inf_nan=False),
    AfterValidator(_bounded_money),
]


class _Record(BaseModel):
    # No inf or nan anywhere: an infinite memory or TFLOP/s figure breaks every plan too.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )


class GPU(_Record):
    """One accelerator model: what the planner needs to size and time a training step.

    ``bf16_tflops`` and ``fp16_tflops`` are dense tensor-core peaks (no 2:4 sparsity).
    ``bf16_tflops`` is None on GPUs without BF16 (T4): the planner then times the step
    with ``fp16_tflops`` and the run trains in FP16 with loss scaling.
    """

    id: Id
    name: Text
    # Bounds far outside any real GPU, so that no figure makes a plan's hours or bytes overflow.
    memory_gb: float = Field(gt=0, le=100_000)
    bf16_tflops: float | None = Field(default=None, ge=0.01, le=1_000_000)
    fp16_tflops: float | None = Field(default=None, ge=0.01, le=1_000_000)
    bandwidth_gbps: float = Field(gt=0, le=1_000_000)
    aliases: tuple[Text, ...] = ()
    source: Url
    note: str | None = None

    @model_validator(mode="after")
    def _has_a_matmul_rate(self) -> GPU:
        if self.bf16_tflops is None and self.fp16_tflops is None:
            raise ValueError("give bf16_tflops or fp16_tflops (dense TFLOP/s)")
        if self.fp16_tflops is None:
            # On every tensor-core GPU with BF16, FP16 runs at the same dense rate.
            object.__setattr__(self, "fp16_tflops", self.bf16_tflops)
        return self

    @property
    def memory_bytes(self) -> int:
        """Memory in bytes, with GB = 10^9 bytes."""
        return round(self.memory_gb * 1e9)

    @property
    def supports_bf16(self) -> bool:
        return self.bf16_tflops is not None

    @property
    def matmul_tflops(self) -> float:
        """Dense TFLOP/s of the 16-bit format training would use: BF16, else FP16."""
        rate = self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops
        assert rate is not None  # guaranteed by _has_a_matmul_rate
        return rate

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this GPU answers to: its id, its display name and its aliases."""
        return (self.id, self.name, *self.aliases)


class Provider(_Record):
    """Someone who rents hardware or trains models for money."""

    id: Id
    name: Text
    url: Url | None = None
    note: str | None = None


class _Dated(_Record):
    """A price read from ``source`` on ``checked``; ``verified`` only if that was a primary page."""

    source: Text
    checked: date
    verified: bool = False
    note: str | None = None

    def age_days(self, today: date | None = None) -> int:
        """Days between the day this price was checked and ``today`` (default: today)."""
        return ((today or date.today()) - self.checked).days


class Offer(_Dated):
    """A price for one GPU at one provider, per GPU-hour.

    ``gpus_per_instance`` says how many GPUs the smallest rentable instance holds:
    an 8-GPU instance at $6.88 per GPU-hour costs $55.04 an hour. ``kind`` is
    ``on-demand`` (yours until you stop it) or ``spot`` (interruptible: spare capacity,
    bid or preemptible, that the provider may take back at any time).
    """

    gpu: Text  # a GPU id or alias; the catalogue stores the id
    provider: Id
    usd_per_hour: Usd
    kind: OfferKind = "on-demand"
    gpus_per_instance: int = Field(default=1, ge=1, le=MAX_GPUS_PER_INSTANCE)
    instance: Text
    region: Text | None = None
    source: Url

    @property
    def instance_usd_per_hour(self) -> Decimal:
        return self.usd_per_hour * self.gpus_per_instance

    @property
    def history_key(self) -> tuple[str, str, str, str]:
        """Entries sharing this key are one price over time; the latest one applies."""
        return (self.gpu, self.provider, self.instance.lower(), self.kind)


class CpuInstance(_Dated):
    """A CPU machine, so a CPU-only run (the demo, a smoke test) can be priced too."""

    id: Id
    provider: Id
    vcpus: int | None = Field(default=None, ge=1)
    memory_gb: float | None = Field(default=None, gt=0)
    usd_per_hour: Usd
    region: Text | None = None

    @property
    def history_key(self) -> str:
        return self.id


class ApiPrice(_Dated):
    """A hosted fine-tuning service that bills per training token.

    ``min_params_b``/``max_params_b`` bound the size of the open model it trains at this
    price (billions of parameters, bounds included); both are None for a provider's own
    closed model (``model: gpt-4o-mini``), which cannot be chosen by size. ``method`` is
    ``undisclosed`` where the provider does not say whether it trains adapters or all
    weights. ``usd_per_mtok`` is per million tokens processed (epochs x training tokens).
    ``minimum_usd`` is the smallest charge for one job (None where the provider states
    none). ``whole_epochs``: the service trains whole epochs only (an integer ``n_epochs``),
    so 1.5 epochs of data are billed as 2.
    """

    provider: Id
    model: Text
    min_params_b: float | None = Field(default=None, ge=0)
    max_params_b: float | None = Field(default=None, gt=0)
    method: ApiMethod
    usd_per_mtok: Usd
    minimum_usd: Usd | None = None
    whole_epochs: bool = True
    source: Url

    @model_validator(mode="after")
    def _bracket_is_ordered(self) -> ApiPrice:
        low, high = self.min_params_b, self.max_params_b
        if (low is None) != (high is None):
            raise ValueError("give both min_params_b and max_params_b, or neither")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_params_b ({low}) is above max_params_b ({high})")
        return self

    @property
    def model_bracket(self) -> str:
        """The model or size bracket in words: 'up to 16B', '16.1B to 69B' or 'gpt-4o-mini'."""
        if self.min_params_b is None or self.max_params_b is None:
            return self.model
        high = f"{self.max_params_b:g}B"
        return f"up to {high}" if self.min_params_b == 0 else f"{self.min_params_b:g}B to {high}"

    def job_usd(self, dataset_tokens: int, epochs: float) -> Decimal:
        """What one job of ``epochs`` passes over ``dataset_tokens`` training tokens costs.

        Billed tokens x the rate, with the epochs rounded up where the service trains
        whole epochs only, and at least the minimum charge.
        """
        billed_epochs = math.ceil(epochs) if self.whole_epochs else epochs
        tokens = Decimal(dataset_tokens) * Decimal(repr(billed_epochs))
        cost = self.usd_per_mtok * tokens / Decimal(1_000_000)
        return max(cost, self.minimum_usd or Decimal(0))

    def trains(self, params_b: float) -> bool:
        """True if this price applies to an open model of ``params_b`` billion parameters."""
        if self.min_params_b is None or self.max_params_b is None:
            return False
        return self.min_params_b <= params_b <= self.max_params_b

    @property
    def history_key(self) -> tuple[str, str, str]:
        return (self.provider, self.model.lower(), self.method)


class PriceFile(_Record):
    """One YAML price file, shipped or the user's override: any of these five lists."""

    gpus: list[GPU] = []
    providers: list[Provider] = []
    offers: list[Offer] = []
    cpu_instances: list[CpuInstance] = []
    apis: list[ApiPrice] = []
