"""From memory and FLOPs to fits, GPUs, hours and dollars; and the full plan.

``estimate`` answers for one method on one GPU; ``plan`` answers for every method,
choosing the cheapest GPU x provider x GPU count that fits when no GPU is given.
Both are pure functions of their inputs and the pricing catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from planner.estimation.arch import ModelArch
from planner.estimation.memory import (
    TERMS,
    constants,
    memory_terms,
    trainable_params,
    zero_bucket_bytes,
)
from planner.specs import METHODS, MethodSpec, Workload

if TYPE_CHECKING:
    from pricing import GPU, Catalog, Offer

__all__ = [
    "GB",
    "TERMS",
    "ApiQuote",
    "Estimate",
    "Plan",
    "PlanRow",
    "default_methods",
    "estimate",
    "max_fit",
    "plan",
    "training_flops",
]

GB = 1_000_000_000
"""GB = 10^9 bytes, everywhere in paretune."""

_CENT = Decimal("0.01")


def training_flops(arch: ModelArch, workload: Workload, method: MethodSpec) -> float:
    """FLOPs of the whole run (all epochs).

    Kaplan et al. 2020 / PaLM (Chowdhery et al. 2022, appendix B): 6·N per token for
    forward + backward of the weights, plus 12·L·(heads·head_dim)·s for attention.
    A frozen weight skips its weight-gradient matmul (4·N); layers below the trained
    ones in ``freeze`` run forward only (2·N) unless gradient checkpointing is on
    (transformers then backpropagates through them too); LoRA adapters add 6·(their
    params); gradient checkpointing recomputes one forward of the layers it backpropagates.
    N counts active parameters (MoE) taking part in matmuls, including the lm_head.
    """
    s = workload.seq_len
    tokens = workload.tokens
    L = arch.layers
    head = arch.vocab * arch.hidden
    body = arch.compute_params - head  # decoder layers' matmul parameters per token
    per_layer = body / L
    attn_per_layer = 12 * arch.q_dim * s  # forward 4·q_dim·s, backward 8·q_dim·s
    if method.kind == "full":
        per_token: float = 6 * body + 6 * head + L * attn_per_layer
        backward_layers = L
    elif method.kind == "freeze":
        k = min(method.freeze_layers, L)
        per_token = (
            2 * per_layer * (L - k)
            + 6 * per_layer * k
            + 4 * head
            + (L - k) * attn_per_layer / 3
            + k * attn_per_layer
        )
        backward_layers = k
    else:
        adapters = trainable_params(arch, method)
        per_token = 4 * body + 4 * head + 6 * adapters + L * attn_per_layer
        backward_layers = L
    if method.grad_checkpointing:
        if method.kind == "freeze":
            # transformers' checkpointing makes the embedding output require grad, so the
            # frozen layers run a backward too: activation gradients (2·N, attention's
            # backward 8/12 of its term), after recomputing their forward.
            frozen = L - backward_layers
            per_token += frozen * (2 * per_layer + 2 * attn_per_layer / 3)
            backward_layers = L
        per_token += backward_layers * (2 * per_layer + attn_per_layer / 3)
    return float(per_token) * tokens


@dataclass(frozen=True)
class Estimate:
    """Memory, compute, time and money of one method on one GPU type.

    ``breakdown`` maps each of ``planner.estimation.memory.TERMS`` to bytes on one GPU and sums to
    ``peak_bytes``. With ``gpu=None`` (no GPU chosen, e.g. a CPU run) there is no CUDA
    framework overhead and ``fits``, ``min_gpus``, ``hours`` and ``dollars`` are None.
    ``dollars`` is None too when no provider rents that GPU (or the chosen provider does
    not). ``min_gpus`` is the fewest GPUs of this type that fit, sharding with the
    method's ``sharding`` or, if that is ``none``, with ZeRO-3; None if even 512 do not.
    ``hours`` and ``dollars`` are those of a run on ``gpus`` GPUs even when it does not
    fit; :meth:`to_json` and the command line leave them out then (``price_note`` says
    why). ``instance_gpus`` is the size of the instance the provider rents (the dollars
    pay for whole instances); ``sharding_chosen`` is True when the planner chose
    ``method.sharding`` itself to fit the model on more GPUs. ``notes`` are facts about
    the method on this model the numbers alone do not say.
    """

    model: str
    method: MethodSpec
    workload: Workload
    breakdown: dict[str, int]
    trainable_params: int
    flops: float
    mfu: float
    gpu: str | None = None
    gpus: int = 1
    gpu_memory_bytes: int | None = None
    fits: bool | None = None
    min_gpus: int | None = None
    hours: float | None = None
    dollars: Decimal | None = None
    provider: str | None = None
    usd_per_gpu_hour: Decimal | None = field(default=None, repr=False)
    instance_gpus: int = 1
    sharding_chosen: bool = False
    notes: tuple[str, ...] = ()
    context_bytes: int = 0
    reserve_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        return sum(self.breakdown.values())

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    @property
    def allocated_gb(self) -> float:
        """The allocator's peak (``torch.cuda.max_memory_allocated``), in GB."""
        return (self.peak_bytes - self.context_bytes - self.reserve_bytes) / GB

    @property
    def price_note(self) -> str | None:
        """Why hours and dollars are not shown for this run (None when they are)."""
        if self.fits is not False:
            return None
        memory = (self.gpu_memory_bytes or 0) / GB
        more = f"; {self.min_gpus} would" if self.min_gpus else "; no count up to 512 does"
        return (
            f"does not fit: {self.peak_gb:,.1f} GB peak on a {memory:,.0f} GB "
            f"{self.gpu} ({self.gpus} GPU{'s' if self.gpus > 1 else ''}){more}"
        )

    @property
    def breakdown_gb(self) -> dict[str, float]:
        return {term: round(value / GB, 3) for term, value in self.breakdown.items()}

    def to_json(self) -> dict[str, Any]:
        """The per-method object of ``paretune plan --format json``."""
        priced = self.fits is not False
        return {
            "method": self.method.kind,
            "framework": {
                "name": self.method.framework,
                "loss": self.method.loss,
                "compiled": self.method.compiled,
                "offload_checkpoints": self.method.offload_checkpoints,
                "adapter_fp32": self.method.adapter_fp32,
                "attention": self.method.attention,
                "optimizer": self.method.optimizer,
                "optimizer_in_backward": self.method.optimizer_in_backward,
                "unquantized_fp32": self.method.unquantized_fp32,
                "logit_copies": self.method.logit_copies,
                "speed_factor": self.method.speed_factor,
                "speed_factor_is_vendor_claim": self.method.speed_factor != 1.0,
            },
            "trainable_params": self.trainable_params,
            "peak_gb": round(self.peak_gb, 3),
            "allocated_gb": round(self.allocated_gb, 3),
            "cuda_context_gb": round(self.context_bytes / GB, 3),
            "allocator_reserve_gb": round(self.reserve_bytes / GB, 3),
            "breakdown_gb": self.breakdown_gb,
            "fits": self.fits,
            "gpu": self.gpu,
            "gpus": self.gpus,
            "sharding": self.method.sharding,
            "sharding_chosen_by_planner": self.sharding_chosen,
            "min_gpus": self.min_gpus,
            "hours": None if self.hours is None or not priced else round(self.hours, 4),
            "dollars": None if self.dollars is None or not priced else float(self.dollars),
            "price_note": self.price_note,
            "instance_gpus": self.instance_gpus,
            "provider": self.provider,
            "notes": list(self.notes),
        }


def method_notes(arch: ModelArch, method: MethodSpec) -> tuple[str, ...]:
    """What the numbers of ``method`` on ``arch`` do not say by themselves."""
    notes = []
    if method.kind == "dora" and arch.is_moe and method.targets in ("all", "mlp"):
        notes.append(
            "DoRA leaves the MoE experts untrained: transformers stores them as 3-D "
            "parameters, which peft adapts with LoRA only (the trainable count excludes them)"
        )
    buckets = zero_bucket_bytes(method)
    if buckets:
        count = 2 if method.zero_overlap_comm else 1
        stage = method.sharding[-1]
        notes.append(
            f"gradients include DeepSpeed ZeRO-{stage}'s reduction buckets: {count} x "
            f"{method.zero_reduce_bucket_size:,} elements ({buckets / GB:.2f} GB; "
            "reduce_bucket_size and overlap_comm of the DeepSpeed config)"
        )
    if method.optimizer_offload:
        notes.append(
            "optimizer states, fp32 master weights and reduced gradients are in host memory "
            "(DeepSpeed offload_optimizer), not in the GPU peak; the hours leave out the "
            "optimizer step on the CPU"
        )
    return tuple(notes)


def _mfu(method: MethodSpec) -> float:
    return float(constants()["mfu"][method.kind])


def _hours(flops: float, gpu: GPU, gpus: int, mfu: float, speed_factor: float = 1.0) -> float:
    # Time = FLOPs / (GPUs × peak dense 16-bit FLOP/s × MFU) (PaLM appendix B), divided by
    # the framework's claimed speed over transformers (MethodSpec.speed_factor).
    return flops / (gpus * gpu.matmul_tflops * 1e12 * mfu) / 3600 / speed_factor


def _dollars(hours: float, offer: Offer, gpus: int) -> Decimal:
    # Instances come in fixed sizes: 3 GPUs on an 8-GPU instance pay for 8.
    rented = math.ceil(gpus / offer.gpus_per_instance) * offer.gpus_per_instance
    cost = Decimal(repr(hours)) * offer.usd_per_hour * rented
    return cost.quantize(_CENT, rounding=ROUND_HALF_UP)


class _Peaks:
    """Peak bytes of one method per GPU count, computed once each (plan() asks often)."""

    def __init__(self, arch: ModelArch, workload: Workload, method: MethodSpec) -> None:
        self.arch, self.workload, self.method = arch, workload, method
        self._scaled = method if method.sharding != "none" else method.with_(sharding="zero3")
        self._cache: dict[int, int] = {}

    def peak(self, gpus: int) -> int:
        found = self._cache.get(gpus)
        if found is None:
            spec = self.method if gpus == self.method.gpus else self._scaled
            found = memory_terms(self.arch, self.workload, spec, gpus=gpus).peak_bytes
            self._cache[gpus] = found
        return found

    def min_gpus(self, memory_bytes: int) -> int | None:
        for n in constants()["min_gpus_candidates"]:
            if self.peak(n) <= memory_bytes:
                return n
        return None


def _catalog(catalog: Catalog | None) -> Catalog:
    if catalog is not None:
        return catalog
    from pricing import load_catalog

    return load_catalog()


def estimate(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    gpu: str | None = None,
    provider: str | None = None,
    catalog: Catalog | None = None,
) -> Estimate:
    """Memory, fit, time and cost of ``method`` on ``method.gpus`` GPUs of type ``gpu``.

    ``provider`` picks whose price is used (default: the cheapest renting that GPU).
    ``catalog`` defaults to :func:`pricing.load_catalog`. Raises a ``UserError`` for an
    unknown GPU or provider, a rank above the hidden size, or an unknown target module.
    """
    terms = memory_terms(arch, workload, method, on_gpu=gpu is not None)
    flops = training_flops(arch, workload, method)
    mfu = _mfu(method)
    base: dict[str, Any] = dict(
        notes=method_notes(arch, method),
        model=arch.name,
        method=method,
        workload=workload,
        breakdown=terms.breakdown,
        context_bytes=terms.context_bytes,
        reserve_bytes=terms.reserve_bytes,
        trainable_params=terms.trainable_params,
        flops=flops,
        mfu=mfu,
        gpus=method.gpus,
    )
    if gpu is None:
        if provider is not None:
            _catalog(catalog).check_provider(provider)
        return Estimate(**base)
    cat = _catalog(catalog)
    chosen = cat.gpu(gpu)
    provider_id = cat.check_provider(provider) if provider is not None else None
    fits = terms.peak_bytes <= chosen.memory_bytes
    peaks = _Peaks(arch, workload, method)
    peaks._cache[method.gpus] = terms.peak_bytes
    hours = _hours(flops, chosen, method.gpus, mfu, method.speed_factor)
    offer = cat.cheapest(chosen.id, provider_id)
    return Estimate(
        **base,
        gpu=chosen.id,
        gpu_memory_bytes=chosen.memory_bytes,
        fits=fits,
        min_gpus=peaks.min_gpus(chosen.memory_bytes),
        hours=hours,
        dollars=_dollars(hours, offer, method.gpus) if offer is not None else None,
        provider=offer.provider if offer is not None else provider_id,
        usd_per_gpu_hour=offer.usd_per_hour if offer is not None else None,
        instance_gpus=offer.gpus_per_instance if offer is not None else 1,
    )


# -- the largest workload that fits ------------------------------------------------------


def _largest(fits: Any, start: int, limit: int) -> int:
    """The largest n in [1, limit] with fits(n), assuming fits is monotone (0 if none)."""
    if not fits(1):
        return 0
    low, high = 1, min(max(start, 1), limit)
    while high < limit and fits(high):
        low, high = high, min(high * 2, limit)
    if fits(high):
        return high
    while high - low > 1:  # fits(low) and not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def max_fit(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    memory_bytes: int,
    *,
    on_gpu: bool = True,
) -> tuple[int, int]:
    """(longest sequence at ``workload.batch``, largest micro-batch at ``workload.seq_len``)
    whose peak fits in ``memory_bytes`` on ``method.gpus`` GPUs; 0 where nothing fits.
    The sequence is capped at the model's ``max_position_embeddings``."""

    def fits_seq(s: int) -> bool:
        return (
            memory_terms(arch, workload.with_(seq_len=s), method, on_gpu=on_gpu).peak_bytes
            <= memory_bytes
        )

    def fits_batch(b: int) -> bool:
        return (
            memory_terms(arch, workload.with_(batch=b), method, on_gpu=on_gpu).peak_bytes
            <= memory_bytes
        )

    seq_cap = arch.max_position or 1 << 20
    return (
        _largest(fits_seq, workload.seq_len, seq_cap),
        _largest(fits_batch, workload.batch, 1 << 16),
    )


_max_fit_search = max_fit  # plan() has a flag of the same name


# -- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """One method's answer; ``max_seq_len`` / ``max_batch`` only with ``max_fit=True``."""

    estimate: Estimate
    max_seq_len: int | None = None
    max_batch: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.estimate.to_json()
        if self.max_seq_len is not None:
            out["max_seq_len"] = self.max_seq_len
            out["max_batch"] = self.max_batch
        return out


@dataclass(frozen=True)
class ApiQuote:
    """What a fine-tuning API charges for the same tokens."""

    provider: str
    model: str
    method: str
    dollars: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "method": self.method,
            "dollars": float(self.dollars),
        }


@dataclass(frozen=True)
class Plan:
    """Every method for one model and workload (the answer of ``paretune plan``)."""

    arch: ModelArch
    workload: Workload
    rows: tuple[PlanRow, ...]
    apis: tuple[ApiQuote, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """Inputs the planner sizes but the model may not run as asked."""
        found = []
        positions = self.arch.max_position
        if positions and self.workload.seq_len > positions and not self.arch.learned_positions:
            found.append(
                f"seq_len {self.workload.seq_len} is longer than the {positions:,} positions "
                f"{self.arch.name} was trained for (max_position_embeddings): it is sized, "
                "but the model needs RoPE scaling to use them"
            )
        return tuple(found)

    @property
    def estimates(self) -> tuple[Estimate, ...]:
        return tuple(r.estimate for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        w = self.workload
        return {
            "model": {
                "name": self.arch.name,
                "total_params": self.arch.total_params,
                "active_params": self.arch.active_params,
            },
            "workload": {
                "seq_len": w.seq_len,
                "batch": w.batch,
                "grad_accum": w.grad_accum,
                "tokens": w.tokens,
                "epochs": w.epochs,
            },
            "methods": [r.to_json() for r in self.rows],
            "apis": [q.to_json() for q in self.apis],
            "warnings": list(self.warnings),
        }


def default_methods(**settings: Any) -> tuple[MethodSpec, ...]:
    """One :class:`MethodSpec` per method kind, sharing ``settings``."""
    return tuple(MethodSpec(kind=kind, **settings) for kind in METHODS)  # type: ignore[arg-type]


def _cheapest_anywhere(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    cat: Catalog,
    provider: str | None,
    offers: Sequence[tuple[Offer, GPU]],
) -> Estimate:
    """The cheapest GPU type × provider × GPU count (at least ``method.gpus``) that fits."""
    peaks = _Peaks(arch, workload, method)
    flops = training_flops(arch, workload, method)
    mfu = _mfu(method)
    node_gpus = int(constants()["node_gpus"])
    best: tuple[Decimal, Any, Any, int] | None = None
    counts: dict[str, int | None] = {}
    for offer, gpu in offers:
        if gpu.id not in counts:
            counts[gpu.id] = peaks.min_gpus(gpu.memory_bytes)
        n = counts[gpu.id]
        if n is None:
            continue
        n = max(n, method.gpus)
        if n > node_gpus and offer.gpus_per_instance < node_gpus:
            continue  # more than one node of small rentals: not a training cluster
        cost = _dollars(_hours(flops, gpu, n, mfu, method.speed_factor), offer, n)
        if best is None or cost < best[0]:
            best = (cost, gpu, offer, n)
    if best is None:
        return estimate(arch, workload, method, provider=provider, catalog=cat)
    _, gpu, offer, n = best
    if n == method.gpus:
        return estimate(arch, workload, method, gpu=gpu.id, provider=offer.provider, catalog=cat)
    chosen = method.sharding == "none"
    spec = method.with_(gpus=n, sharding="zero3" if chosen else method.sharding)
    found = estimate(arch, workload, spec, gpu=gpu.id, provider=offer.provider, catalog=cat)
    return replace(found, sharding_chosen=chosen)


def plan(
    arch: ModelArch,
    workload: Workload,
    methods: Sequence[MethodSpec] | None = None,
    *,
    gpu: str | None = None,
    provider: str | None = None,
    catalog: Catalog | None = None,
    max_fit: bool = False,
    apis: bool = True,
) -> Plan:
    """Estimate every method (default: one of each kind with default settings).

    With ``gpu`` every method is sized on ``method.gpus`` GPUs of that type; without,
    each method gets the cheapest GPU type × provider × GPU count that fits (respecting
    ``provider`` if given). ``max_fit`` adds the longest sequence and largest micro-batch
    that fit on the chosen GPU. ``apis`` adds what each fine-tuning API would charge.
    """
    cat = _catalog(catalog)
    chosen_methods = tuple(methods) if methods else default_methods()
    provider_id = cat.check_provider(provider) if provider is not None else None
    offers = (
        [] if gpu is not None else [(o, cat.gpu(o.gpu)) for o in cat.offers(provider=provider_id)]
    )
    rows = []
    for method in chosen_methods:
        if gpu is not None:
            est = estimate(arch, workload, method, gpu=gpu, provider=provider_id, catalog=cat)
        else:
            est = _cheapest_anywhere(arch, workload, method, cat, provider_id, offers)
        if max_fit and est.gpu_memory_bytes is not None:
            seq, batch = _max_fit_search(arch, workload, est.method, est.gpu_memory_bytes)
            rows.append(PlanRow(est, seq, batch))
        elif max_fit:
            rows.append(PlanRow(est, 0, 0))
        else:
            rows.append(PlanRow(est))
    quotes: list[ApiQuote] = []
    if apis:
        billions = arch.total_params / 1e9
        for kind in ("lora", "full"):
            for price, dollars in cat.api_cost(billions, workload.tokens, kind):
                quotes.append(
                    ApiQuote(
                        price.provider,
                        price.model,
                        kind,
                        dollars.quantize(_CENT, rounding=ROUND_HALF_UP),
                    )
                )
    return Plan(arch=arch, workload=workload, rows=tuple(rows), apis=tuple(quotes))
