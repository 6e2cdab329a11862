"""Load, merge and query the price catalogue.

The shipped data is every ``pricing/data/*.yaml`` file; a user override file (same
format) merges over it. Prices change by tens of percent within weeks, so the data keeps
their history: several entries may describe the same offer on different ``checked``
dates, and every lookup takes an ``as_of`` date and uses the latest entry not after it.

Merge rules for an override file (documented in docs/guides/prices.md):

- a GPU, provider or CPU instance with the same id replaces the shipped one;
- offers for a GPU at a provider replace *all* shipped offers for that GPU at that
  provider (every instance and every past price), so "my H100 price at Lambda is X"
  is one entry;
- an API price with the same provider, model and method replaces the shipped ones;
- anything else is added.

Loading is all-or-nothing: a malformed override raises :class:`PricingError` naming the
file, the entry and the field, and no catalogue is built from it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from pricing.errors import (
    PricingError,
    UnknownCpuInstanceError,
    UnknownGPUError,
    UnknownProviderError,
    UserError,
    did_you_mean,
)
from pricing.models import (
    GPU,
    ApiPrice,
    CpuInstance,
    Offer,
    OfferKind,
    PriceFile,
    Provider,
    _Record,
)

__all__ = [
    "SHIPPED_DATA_DIR",
    "Catalog",
    "default_override_path",
    "load_catalog",
    "shipped_catalog",
    "user_price_file",
]

SHIPPED_DATA_DIR = Path(__file__).parent / "data"
OVERRIDE_ENV = "PARETUNE_PRICES"

_PriceT = TypeVar("_PriceT", Offer, CpuInstance, ApiPrice)


def default_override_path() -> Path:
    """Where the user's override file is read from when none is named."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("paretune")) / "prices.yaml"


def _normal(name: str) -> str:
    """A name with case, spaces and punctuation removed: 'H100 SXM' == 'h100-sxm'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _latest(entries: Iterable[_PriceT], as_of: date | None) -> list[_PriceT]:
    """Per history key, the entry checked last on or before ``as_of`` (any date if None)."""
    chosen: dict[Any, _PriceT] = {}
    for entry in entries:
        if as_of is not None and entry.checked > as_of:
            continue
        key = entry.history_key
        if key not in chosen or entry.checked > chosen[key].checked:
            chosen[key] = entry
    return list(chosen.values())


class Catalog:
    """GPUs, providers, hourly offers, CPU instances and fine-tuning API prices.

    Immutable once built; get one from :func:`load_catalog`. Name lookups are
    case-insensitive and ignore spaces and punctuation; an unknown name raises a
    :class:`UserError` subclass whose hint suggests the closest known names.
    """

    def __init__(
        self,
        *,
        gpus: Sequence[GPU],
        providers: Sequence[Provider],
        offers: Sequence[Offer],
        cpu_instances: Sequence[CpuInstance],
        apis: Sequence[ApiPrice],
        override_file: Path | None = None,
    ) -> None:
        self.gpus: tuple[GPU, ...] = tuple(gpus)
        self._providers = {p.id: p for p in providers}
        self._all_offers = tuple(offers)
        self._all_cpu_instances = tuple(cpu_instances)
        self._all_apis = tuple(apis)
        self.override_file = override_file
        """The user file merged over the shipped data, or None."""
        self._gpu_by_name: dict[str, GPU] = {}
        for gpu in self.gpus:
            for name in gpu.names:
                self._gpu_by_name.setdefault(_normal(name), gpu)
        self._provider_by_name: dict[str, Provider] = {}
        for provider in self._providers.values():
            for name in (provider.id, provider.name):
                self._provider_by_name.setdefault(_normal(name), provider)

    # -- GPUs -------------------------------------------------------------------------

    def gpu(self, name: str) -> GPU:
        """The GPU with this id, name or alias ('H100', 'h100-sxm', 'H100 SXM')."""
        found = self._gpu_by_name.get(_normal(name))
        if found is None:
            names = [n for gpu in self.gpus for n in (gpu.id, *gpu.aliases)]
            raise UnknownGPUError(
                f"unknown GPU {name!r}",
                did_you_mean(name, names) + " `paretune prices` lists every GPU.",
            )
        return found

    # -- providers --------------------------------------------------------------------

    @property
    def providers(self) -> tuple[str, ...]:
        """Every provider id, sorted."""
        return tuple(sorted(self._providers))

    @property
    def gpu_providers(self) -> tuple[str, ...]:
        """The providers that rent at least one GPU (no API-only or CPU-only ones), sorted."""
        return tuple(sorted({offer.provider for offer in self._all_offers}))

    def provider(self, name: str) -> Provider:
        """The provider with this id or display name ('lambda', 'Lambda', 'Vast.ai')."""
        found = self._provider_by_name.get(_normal(name))
        if found is None:
            raise UnknownProviderError(
                f"unknown provider {name!r}",
                did_you_mean(name, self.providers) + " `paretune prices` lists every provider.",
            )
        return found

    def check_provider(self, name: str) -> str:
        """The provider id for ``name``; raises :class:`UnknownProviderError` if unknown."""
        return self.provider(name).id

    # -- hourly prices ----------------------------------------------------------------

    def offers(
        self,
        gpu: str | None = None,
        provider: str | None = None,
        as_of: date | None = None,
        kind: OfferKind | None = "on-demand",
    ) -> list[Offer]:
        """Current offers (as of ``as_of``), cheapest per GPU-hour first.

        ``kind`` is ``on-demand`` (the default: what plans are priced with), ``spot``
        (interruptible capacity) or None for both.
        """
        gpu_id = self.gpu(gpu).id if gpu is not None else None
        provider_id = self.check_provider(provider) if provider is not None else None
        chosen = [
            offer
            for offer in _latest(self._all_offers, as_of)
            if (gpu_id is None or offer.gpu == gpu_id)
            and (provider_id is None or offer.provider == provider_id)
            and (kind is None or offer.kind == kind)
        ]
        return sorted(chosen, key=lambda o: (o.usd_per_hour, o.provider, o.instance))

    def cheapest(
        self,
        gpu: str,
        provider: str | None = None,
        as_of: date | None = None,
        kind: OfferKind = "on-demand",
    ) -> Offer | None:
        """The cheapest ``kind`` offer per GPU-hour for ``gpu``, or None if nobody rents it."""
        found = self.offers(gpu, provider, as_of, kind)
        return found[0] if found else None

    def spot_view(self) -> Catalog:
        """This catalogue with its spot offers standing in for the on-demand ones.

        The planner prices with on-demand offers; handing it this view makes it choose
        and price among the spot (interruptible) offers instead, with the same rules.
        """
        spot = [
            o.model_copy(update={"kind": "on-demand"}) for o in self._all_offers if o.kind == "spot"
        ]
        return Catalog(
            gpus=self.gpus,
            providers=list(self._providers.values()),
            offers=spot,
            cpu_instances=self._all_cpu_instances,
            apis=self._all_apis,
            override_file=self.override_file,
        )

    def offer_history(self, gpu: str, provider: str) -> list[Offer]:
        """Every recorded price of ``gpu`` at ``provider``, oldest first."""
        gpu_id, provider_id = self.gpu(gpu).id, self.check_provider(provider)
        entries = [o for o in self._all_offers if o.gpu == gpu_id and o.provider == provider_id]
        return sorted(entries, key=lambda o: (o.checked, o.instance, o.kind))

    # -- CPU machines -----------------------------------------------------------------

    @property
    def cpu_instances(self) -> tuple[CpuInstance, ...]:
        """The latest price of every CPU instance, cheapest first."""
        latest = _latest(self._all_cpu_instances, None)
        return tuple(sorted(latest, key=lambda c: (c.usd_per_hour, c.id)))

    def cpu_instance(self, instance_id: str, as_of: date | None = None) -> CpuInstance:
        """The CPU instance with this id (as of ``as_of``)."""
        wanted = instance_id.strip().lower()
        for entry in _latest(self._all_cpu_instances, as_of):
            if entry.id == wanted:
                return entry
        known = sorted({c.id for c in self._all_cpu_instances})
        when = f" with a price checked on or before {as_of}" if as_of else ""
        raise UnknownCpuInstanceError(
            f"unknown CPU instance {instance_id!r}{when}", did_you_mean(instance_id, known)
        )

    # -- fine-tuning APIs -------------------------------------------------------------

    def apis(self, as_of: date | None = None) -> list[ApiPrice]:
        """Per-token fine-tuning prices (as of ``as_of``), by provider then bracket."""
        latest = _latest(self._all_apis, as_of)
        return sorted(latest, key=lambda a: (a.provider, a.min_params_b or 0, a.model, a.method))

    def api_cost(
        self, params_b: float, tokens: int, method: str = "lora", as_of: date | None = None
    ) -> list[tuple[ApiPrice, Decimal]]:
        """What each API charges to train an open model of ``params_b`` billion parameters.

        ``tokens`` is the number of tokens processed, i.e. epochs x training tokens (how
        these services bill). Returns (price, dollars) pairs, cheapest first; empty when
        no API trains a model of that size with that method.
        """
        if not params_b > 0:
            raise UserError(f"model size must be positive, got {params_b}B parameters")
        if tokens < 0:
            raise UserError(f"token count must be zero or more, got {tokens}")
        if method not in ("lora", "full"):
            raise UserError(
                f"unknown fine-tuning method {method!r} for API prices",
                "Fine-tuning APIs are priced for method 'lora' or 'full'.",
            )
        costs = [
            (api, api.usd_per_mtok * Decimal(tokens) / Decimal(1_000_000))
            for api in self.apis(as_of)
            if api.method == method and api.trains(params_b)
        ]
        return sorted(costs, key=lambda pair: (pair[1], pair[0].provider))


# -- loading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """The validated contents of one file, with where each entry came from."""

    path: str
    prices: PriceFile


_SECTION_ENTRY_NAMES: dict[str, Callable[[dict[str, Any]], str]] = {
    "gpus": lambda e: f"{e.get('id')}",
    "providers": lambda e: f"{e.get('id')}",
    "offers": lambda e: f"{e.get('gpu')} on {e.get('provider')}",
    "cpu_instances": lambda e: f"{e.get('id')}",
    "apis": lambda e: f"{e.get('provider')} {e.get('model')} {e.get('method')}",
}


def _entry_label(raw: Any, section: str, index: int) -> str:
    entry = raw.get(section, [])[index] if isinstance(raw, dict) else None
    label = f"{section}[{index}]"
    if isinstance(entry, dict) and section in _SECTION_ENTRY_NAMES:
        label += f" ({_SECTION_ENTRY_NAMES[section](entry)})"
    return label


@functools.cache
def _loader() -> type:
    """A safe YAML loader that leaves dates as text, for pydantic to check per field.

    The stock loader turns `checked: 2026-13-01` into a bare ValueError with no line or
    entry; as text it reaches validation, which names the entry and the field.
    """
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = type("PriceFileLoader", (base,), {})
    loader.yaml_implicit_resolvers = {  # type: ignore[attr-defined]
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    return loader


def _read_layer(path: Path) -> _Layer:
    """Parse and validate one price file; raise PricingError naming file, entry and field."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PricingError(
            "price file not found",
            "Check the path given to --prices or in $PARETUNE_PRICES.",
            file=shown,
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PricingError(f"cannot read price file: {error}", file=shown) from None
    try:
        raw = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PricingError(
            f"not valid YAML{where}: {problem}",
            "Fix the YAML syntax; docs/guides/prices.md shows an example file.",
            file=shown,
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PricingError(
            f"the file must be a mapping with lists under gpus, providers, offers, "
            f"cpu_instances or apis, not a {type(raw).__name__}",
            "Start the file with one of those keys, e.g. `offers:`, and list entries under it.",
            file=shown,
        )
    # `offers:` with nothing under it yet is an empty list, not an error.
    raw = {key: [] if value is None else value for key, value in raw.items()}
    try:
        prices = PriceFile.model_validate(raw)
    except ValidationError as error:
        raise _explain(error, raw, shown) from None
    return _Layer(shown, prices)


_SECTION_MODELS: dict[str, type[_Record]] = {
    "gpus": GPU,
    "providers": Provider,
    "offers": Offer,
    "cpu_instances": CpuInstance,
    "apis": ApiPrice,
}


def _explain(error: ValidationError, raw: dict[str, Any], file: str) -> PricingError:
    """The first validation problem, with its file, entry and field named.

    An unknown key is reported before anything else: a misspelt field is also a missing
    one, and the misspelling is what the user has to fix.
    """
    problems = sorted(error.errors(), key=lambda p: p["type"] != "extra_forbidden")
    problem = problems[0]
    loc = problem["loc"]
    message = problem["msg"].removeprefix("Value error, ")
    hint = "See docs/guides/prices.md for the fields of each kind of entry."
    section = str(loc[0]) if loc else ""
    if len(loc) >= 2 and isinstance(loc[1], int):
        entry = _entry_label(raw, section, loc[1])
        field = ".".join(str(p) for p in loc[2:]) or None
    else:
        entry, field = None, ".".join(str(p) for p in loc) or None
    if problem["type"] == "extra_forbidden":
        if entry is None:
            message = "unknown section"
            hint = did_you_mean(section, _SECTION_MODELS)
        else:
            message = "unknown key (not a field of this kind of entry)"
            hint = did_you_mean(str(loc[-1]), _SECTION_MODELS[section].model_fields)
    elif problem["type"] == "missing":
        message = "missing: every entry needs it"
    if len(problems) > 1:
        more = len(problems) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''} in this file)"
    return PricingError(message, hint, file=file, entry=entry, field=field)


def _merge(layers: Sequence[_Layer], override_file: Path | None) -> Catalog:
    """Apply the layers in order (shipped files first, then the override) and check links."""
    gpus: dict[str, tuple[GPU, str]] = {}
    providers: dict[str, tuple[Provider, str]] = {}
    offers: list[tuple[Offer, str]] = []
    cpu_instances: list[tuple[CpuInstance, str]] = []
    apis: list[tuple[ApiPrice, str]] = []

    def overriding(layer_index: int) -> bool:
        return override_file is not None and layer_index == len(layers) - 1

    # GPUs and providers first: offers in any file may name a GPU defined in another.
    for layer_index, layer in enumerate(layers):
        for i, gpu in enumerate(layer.prices.gpus):
            label = f"gpus[{i}] ({gpu.id})"
            _check_not_repeated(gpus, gpu.id, layer, overriding(layer_index), label)
            gpus[gpu.id] = (gpu, f"{layer.path}, {label}")
        for i, provider in enumerate(layer.prices.providers):
            label = f"providers[{i}] ({provider.id})"
            _check_not_repeated(providers, provider.id, layer, overriding(layer_index), label)
            providers[provider.id] = (provider, f"{layer.path}, {label}")
    _check_gpu_names_unique(gpus)
    by_name = _gpu_names({gid: gpu for gid, (gpu, _) in gpus.items()})

    for layer in layers:
        prices = layer.prices
        new_offers: list[tuple[Offer, str]] = []
        for i, offer in enumerate(prices.offers):
            label = f"offers[{i}] ({offer.gpu} on {offer.provider})"
            offer_gpu = by_name.get(_normal(offer.gpu))
            if offer_gpu is None:
                raise PricingError(
                    f"unknown GPU {offer.gpu!r}",
                    did_you_mean(offer.gpu, sorted(gpus))
                    + " A new GPU needs an entry under gpus: in the same file.",
                    file=layer.path,
                    entry=label,
                    field="gpu",
                )
            new_offers.append(
                (offer.model_copy(update={"gpu": offer_gpu.id}), f"{layer.path}, {label}")
            )
        offers = _replace_histories(offers, new_offers, lambda o: (o.gpu, o.provider), layer.path)
        new_cpus = [
            (cpu, f"{layer.path}, cpu_instances[{i}] ({cpu.id})")
            for i, cpu in enumerate(prices.cpu_instances)
        ]
        cpu_instances = _replace_histories(cpu_instances, new_cpus, lambda c: c.id, layer.path)
        new_apis = [
            (api, f"{layer.path}, apis[{i}] ({api.provider} {api.model} {api.method})")
            for i, api in enumerate(prices.apis)
        ]
        apis = _replace_histories(apis, new_apis, lambda a: a.history_key, layer.path)

    dated: list[tuple[Any, str]] = [*offers, *cpu_instances, *apis]
    for record, origin in dated:
        if record.provider not in providers:
            file, _, entry = origin.partition(", ")
            raise PricingError(
                f"unknown provider {record.provider!r}",
                did_you_mean(record.provider, sorted(providers))
                + " A new provider needs an entry under providers: (id, name).",
                file=file,
                entry=entry,
                field="provider",
            )
    return Catalog(
        gpus=sorted((g for g, _ in gpus.values()), key=lambda g: (-g.memory_gb, g.id)),
        providers=[p for p, _ in providers.values()],
        offers=[o for o, _ in offers],
        cpu_instances=[c for c, _ in cpu_instances],
        apis=[a for a, _ in apis],
        override_file=override_file,
    )


def _check_not_repeated(
    seen: dict[str, Any], key: str, layer: _Layer, overriding: bool, label: str
) -> None:
    """Shipped files must not define one id twice; the override may replace any id once."""
    if key not in seen:
        return
    earlier_origin = seen[key][1]
    if overriding and not earlier_origin.startswith(layer.path + ", "):
        return
    raise PricingError(
        f"{key!r} is defined twice (also at {earlier_origin})",
        "Keep one entry per id.",
        file=layer.path,
        entry=label,
        field="id",
    )


def _replace_histories(
    existing: list[tuple[Any, str]],
    new: list[tuple[Any, str]],
    key: Callable[[Any], Any],
    file: str,
) -> list[tuple[Any, str]]:
    """A later layer's entries replace the whole price history of each key they name."""
    _check_history(new, file)
    replaced = {key(record) for record, _ in new}
    return [pair for pair in existing if key(pair[0]) not in replaced] + new


def _check_history(entries: Sequence[tuple[Any, str]], file: str) -> None:
    """Two entries of one price may not share a checked date: which one would apply?"""
    seen: dict[Any, str] = {}
    for record, origin in entries:
        key = (record.history_key, record.checked)
        if key in seen:
            raise PricingError(
                f"same price checked twice on {record.checked} (also at {seen[key]})",
                "Give each entry of a price history its own checked date.",
                file=file,
                entry=origin.partition(", ")[2],
                field="checked",
            )
        seen[key] = origin


def _gpu_names(gpus: dict[str, GPU]) -> dict[str, GPU]:
    names: dict[str, GPU] = {}
    for gpu in gpus.values():
        for name in gpu.names:
            names.setdefault(_normal(name), gpu)
    return names


def _check_gpu_names_unique(gpus: dict[str, tuple[GPU, str]]) -> None:
    owner: dict[str, str] = {}
    for gpu, origin in gpus.values():
        for name in gpu.names:
            key = _normal(name)
            if key in owner and owner[key] != gpu.id:
                file, _, entry = origin.partition(", ")
                raise PricingError(
                    f"name {name!r} already belongs to GPU {owner[key]!r}",
                    "Each id, name and alias must point at one GPU.",
                    file=file,
                    entry=entry,
                    field="aliases",
                )
            owner[key] = gpu.id


@functools.cache
def _shipped_layers() -> tuple[_Layer, ...]:
    files = sorted(SHIPPED_DATA_DIR.glob("*.yaml"))
    return tuple(_read_layer(path) for path in files)


def _override_location(overrides: Path | None) -> Path | None:
    """The override file to merge: the argument, else $PARETUNE_PRICES, else the default."""
    if overrides is not None:
        return Path(overrides).expanduser()
    from_env = os.environ.get(OVERRIDE_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    default = default_override_path()
    return default if default.is_file() else None


def shipped_catalog() -> Catalog:
    """The shipped catalogue alone, without any user price file."""
    return _load(None, None)


def user_price_file(overrides: Path | None = None) -> Path:
    """The user's price file, existing or not: where ``paretune prices update`` writes."""
    return _override_location(overrides) or default_override_path()


@functools.lru_cache(maxsize=16)
def _load(override: Path | None, stamp: tuple[int, int] | None) -> Catalog:
    layers = list(_shipped_layers())
    if override is not None:
        layers.append(_read_layer(override))
    return _merge(layers, override)


def load_catalog(overrides: Path | None = None) -> Catalog:
    """The shipped catalogue with the user's override file merged over it.

    The override file is ``overrides`` if given, else the file named by
    ``$PARETUNE_PRICES``, else ``prices.yaml`` in the user config directory
    (:func:`default_override_path`) if it exists. Results are cached until the
    override file changes. Raises :class:`PricingError` for a missing or malformed
    override file, naming the file, the entry and the field.
    """
    override = _override_location(overrides)
    stamp = None
    if override is not None:
        try:
            stat = override.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None  # _read_layer reports the missing file
    return _load(override.resolve() if override is not None else None, stamp)
