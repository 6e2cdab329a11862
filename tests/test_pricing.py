"""The price catalogue: shipped data, lookups, price history, overrides and bad input."""

from __future__ import annotations

import os
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import (
    GPU,
    ApiPrice,
    Catalog,
    CpuInstance,
    Offer,
    PricingError,
    UnknownCpuInstanceError,
    UnknownGPUError,
    UnknownProviderError,
    UserError,
    default_override_path,
    load_catalog,
)


@pytest.fixture(autouse=True)
def _no_user_price_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own prices.yaml out of these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PARETUNE_PRICES", raising=False)


@pytest.fixture
def shipped() -> Catalog:
    return load_catalog()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped catalogue -------------------------------------------------------------

REQUIRED_GPUS = [
    "h100-sxm", "h100-pcie", "h200", "b200", "a100-40gb", "a100-80gb", "l40s", "a10g",
    "a10", "l4", "t4", "rtx-4090", "rtx-6000-ada",
]  # fmt: skip
GPU_PROVIDERS = [
    "lambda", "runpod-community", "runpod-secure", "aws", "azure", "gcp", "coreweave",
    "together", "nebius", "vast-ai",
]  # fmt: skip


def test_shipped_catalogue_has_the_required_gpus_and_providers(shipped: Catalog) -> None:
    assert {g.id for g in shipped.gpus} >= set(REQUIRED_GPUS)
    assert set(shipped.providers) >= {*GPU_PROVIDERS, "ori", "openai", "local"}
    for provider in GPU_PROVIDERS:
        assert shipped.offers(provider=provider), f"no GPU offer from {provider}"
    assert shipped.gpu_providers == tuple(sorted(GPU_PROVIDERS))
    assert all(isinstance(g, GPU) for g in shipped.gpus)


def test_every_price_has_a_web_source_and_a_past_checked_date(shipped: Catalog) -> None:
    today = date.today()
    priced: list[Offer | ApiPrice] = list(shipped.apis(as_of=None))
    for gpu in shipped.gpus:
        for provider in shipped.gpu_providers:
            priced += shipped.offer_history(gpu.id, provider)  # past prices too
    assert len(priced) > len(shipped.offers()) > 40
    for price in priced:
        assert re.match(r"https?://\S+$", price.source), price
        assert isinstance(price.checked, date) and price.checked <= today, price
        assert isinstance(price.verified, bool)
    for cpu in shipped.cpu_instances:
        assert cpu.source and isinstance(cpu.checked, date)


def test_money_is_decimal_exactly_as_written(shipped: Catalog) -> None:
    aws = shipped.cheapest("h200", "aws")
    assert aws is not None
    assert aws.usd_per_hour == Decimal("7.912")
    assert aws.instance_usd_per_hour == Decimal("63.296")  # the p5en.48xlarge hourly price
    assert isinstance(shipped.apis()[0].usd_per_mtok, Decimal)


def test_gpu_specs_in_gb_of_10_to_the_9_bytes(shipped: Catalog) -> None:
    h100 = shipped.gpu("h100-sxm")
    assert (h100.memory_gb, h100.bf16_tflops, h100.bandwidth_gbps) == (80, 989, 3350)
    assert h100.memory_bytes == 80_000_000_000
    assert h100.fp16_tflops == 989  # FP16 defaults to the BF16 rate
    assert shipped.gpu("b200").memory_bytes == 180_000_000_000


def test_t4_has_no_bf16_and_is_timed_at_fp16(shipped: Catalog) -> None:
    t4 = shipped.gpu("T4")
    assert t4.bf16_tflops is None and not t4.supports_bf16
    assert t4.fp16_tflops == 65 and t4.matmul_tflops == 65
    assert shipped.gpu("a100").matmul_tflops == 312


@pytest.mark.parametrize(
    ("name", "gpu_id"),
    [
        ("H100", "h100-sxm"), ("h100", "h100-sxm"), ("H100 SXM", "h100-sxm"),
        ("h100-sxm", "h100-sxm"), ("H100 PCIe", "h100-pcie"), ("A10G", "a10g"),
        ("a10", "a10"), ("A100 40GB", "a100-40gb"), ("A100", "a100-80gb"),
        ("RTX 6000 Ada", "rtx-6000-ada"), ("Tesla T4", "t4"),
    ],
)  # fmt: skip
def test_gpu_lookup_by_id_name_or_alias(shipped: Catalog, name: str, gpu_id: str) -> None:
    assert shipped.gpu(name).id == gpu_id


def test_unknown_gpu_suggests_close_names(shipped: Catalog) -> None:
    with pytest.raises(UnknownGPUError) as caught:
        shipped.gpu("h10")
    assert isinstance(caught.value, UserError)
    assert caught.value.message == "unknown GPU 'h10'"
    assert caught.value.hint and "Did you mean" in caught.value.hint
    assert "H100" in caught.value.hint


def test_unknown_provider_suggests_both_runpod_tiers(shipped: Catalog) -> None:
    assert shipped.check_provider("Lambda") == "lambda"
    assert shipped.check_provider("Vast.ai") == "vast-ai"
    with pytest.raises(UnknownProviderError) as caught:
        shipped.check_provider("runpod")
    assert "runpod-community" in str(caught.value) and "runpod-secure" in str(caught.value)
    with pytest.raises(UnknownProviderError, match="lamda"):
        shipped.offers(provider="lamda")


def test_offers_are_cheapest_first(shipped: Catalog) -> None:
    offers = shipped.offers("H100")
    prices = [o.usd_per_hour for o in offers]
    assert prices == sorted(prices) and len(offers) >= 10
    assert {o.gpu for o in offers} == {"h100-sxm"}
    assert shipped.cheapest("H100") == offers[0]
    everything = shipped.offers()
    assert [o.usd_per_hour for o in everything] == sorted(o.usd_per_hour for o in everything)


def test_a_gpu_nobody_rents_has_no_cheapest_offer(shipped: Catalog) -> None:
    assert shipped.offers("rtx-6000-ada") == []
    assert shipped.cheapest("rtx-6000-ada") is None


def test_as_of_picks_the_latest_price_checked_by_then(shipped: Catalog) -> None:
    # RunPod secure H100 SXM: 3.49 read 2026-09-25, 3.99 by 2026-11-09.
    history = shipped.offer_history("h100", "runpod-secure")
    assert [(o.checked, o.usd_per_hour) for o in history] == [
        (date(2026, 9, 25), Decimal("3.49")),
        (date(2026, 11, 9), Decimal("3.99")),
    ]
    latest = shipped.cheapest("h100", "runpod-secure")
    assert latest is not None and latest.usd_per_hour == Decimal("3.99")
    on_oct_1 = shipped.cheapest("h100", "runpod-secure", as_of=date(2026, 10, 1))
    assert on_oct_1 is not None and on_oct_1.usd_per_hour == Decimal("3.49")
    on_the_day = shipped.cheapest("h100", "runpod-secure", as_of=date(2026, 11, 9))
    assert on_the_day is not None and on_the_day.usd_per_hour == Decimal("3.99")
    assert shipped.cheapest("h100", "runpod-secure", as_of=date(2026, 9, 24)) is None
    assert shipped.offers(as_of=date(2020, 1, 1)) == []


def test_age_of_a_price(shipped: Catalog) -> None:
    offer = shipped.cheapest("h100", "runpod-secure", as_of=date(2026, 10, 1))
    assert offer is not None
    assert offer.age_days(date(2026, 10, 5)) == 10
    assert offer.age_days() == (date.today() - date(2026, 9, 25)).days


def test_cpu_instances_price_a_cpu_run(shipped: Catalog) -> None:
    local = shipped.cpu_instance("local-cpu")
    assert isinstance(local, CpuInstance) and local.usd_per_hour == Decimal(0)
    c7i = shipped.cpu_instance("c7i.xlarge")
    assert (c7i.provider, c7i.vcpus, c7i.verified) == ("aws", 4, False)
    assert shipped.cpu_instances[0].id == "local-cpu"  # cheapest first
    with pytest.raises(UnknownCpuInstanceError, match="c7i.xlarg") as caught:
        shipped.cpu_instance("c7i.xlarg")
    assert caught.value.hint and "c7i.xlarge" in caught.value.hint


def test_api_cost_by_model_size_and_method(shipped: Catalog) -> None:
    costs = shipped.api_cost(7, 10_000_000, "lora")
    assert [(api.provider, cost) for api, cost in costs] == [
        ("ori", Decimal("4.60")),
        ("together", Decimal("4.80")),
    ]
    assert [api.provider for api, _ in shipped.api_cost(12, 1_000_000)] == ["together"]
    assert shipped.api_cost(70, 1_000_000) == []  # no bracket recorded above 16B
    assert shipped.api_cost(7, 1_000_000, "full") == []
    with pytest.raises(UserError, match="method"):
        shipped.api_cost(7, 1_000_000, "qlora")
    with pytest.raises(UserError, match="positive"):
        shipped.api_cost(0, 1_000_000)


def test_closed_models_have_no_size_bracket(shipped: Catalog) -> None:
    openai = [api for api in shipped.apis() if api.provider == "openai"]
    assert {api.model for api in openai} >= {"gpt-4o", "gpt-4o-mini", "gpt-4.1-nano"}
    mini = next(api for api in openai if api.model == "gpt-4o-mini")
    assert mini.model_bracket == "gpt-4o-mini" and mini.usd_per_mtok == Decimal(3)
    assert not mini.trains(1)
    ori = next(api for api in shipped.apis() if api.provider == "ori")
    assert ori.model_bracket == "up to 10B" and ori.verified


# -- the user's override file ------------------------------------------------------------

OVERRIDE = """\
gpus:
  - id: mi300x
    name: MI300X
    memory_gb: 192
    bf16_tflops: 1307
    bandwidth_gbps: 5300
    aliases: [AMD MI300X]
    source: https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html
providers:
  - {id: mycloud, name: My Cloud}
offers:
  # Replaces both shipped Lambda H100 SXM offers (1x and 8x).
  - {gpu: H100, provider: lambda, usd_per_hour: 2.5, instance: reserved 1x H100,
     source: "https://lambda.ai/pricing", checked: 2026-11-20}
  - {gpu: mi300x, provider: mycloud, usd_per_hour: "1.75", gpus_per_instance: 8,
     instance: 8x MI300X, source: "https://example.com/prices", checked: 2026-11-01}
  - {gpu: mi300x, provider: mycloud, usd_per_hour: "2.10", gpus_per_instance: 8,
     instance: 8x MI300X, source: "https://example.com/prices", checked: 2026-06-01}
cpu_instances:
  - {id: local-cpu, provider: local, usd_per_hour: "0.05", source: my power bill,
     checked: 2026-11-01}
"""


def test_override_replaces_and_adds(tmp_path: Path, shipped: Catalog) -> None:
    catalog = load_catalog(_write(tmp_path / "prices.yaml", OVERRIDE))
    assert catalog.override_file == (tmp_path / "prices.yaml").resolve()

    lambda_h100 = catalog.offers("h100", "lambda")
    assert len(lambda_h100) == 1  # both shipped instances replaced by one entry
    assert lambda_h100[0].usd_per_hour == Decimal("2.5")  # a YAML float, kept exact
    assert lambda_h100[0].gpu == "h100-sxm"  # the alias is stored as the id
    assert len(shipped.offers("h100", "lambda")) == 2  # the shipped catalogue is untouched

    # Offers for other GPUs at Lambda and other providers' H100 offers stay.
    assert catalog.offers("b200", "lambda") == shipped.offers("b200", "lambda")
    assert catalog.offers("h100", "aws") == shipped.offers("h100", "aws")

    mi300x = catalog.gpu("amd mi300x")
    assert mi300x.memory_bytes == 192_000_000_000
    assert "mycloud" in catalog.providers
    assert catalog.cheapest("mi300x").usd_per_hour == Decimal("1.75")  # type: ignore[union-attr]
    old = catalog.cheapest("mi300x", as_of=date(2026, 7, 1))
    assert old is not None and old.usd_per_hour == Decimal("2.10")

    assert catalog.cpu_instance("local-cpu").usd_per_hour == Decimal("0.05")
    assert catalog.cpu_instance("c7i.xlarge") == shipped.cpu_instance("c7i.xlarge")


def test_override_from_environment_and_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = default_override_path()
    assert default == tmp_path / "config" / "paretune" / "prices.yaml"
    assert load_catalog().override_file is None

    default.parent.mkdir(parents=True)
    _write(default, OVERRIDE)
    assert load_catalog().cheapest("mi300x") is not None

    elsewhere = _write(
        tmp_path / "team-prices.yaml",
        "offers:\n  - {gpu: t4, provider: aws, usd_per_hour: '0.40', instance: g4dn.xlarge,"
        " source: 'https://aws.amazon.com/ec2/pricing/', checked: 2026-11-25}\n",
    )
    monkeypatch.setenv("PARETUNE_PRICES", str(elsewhere))
    catalog = load_catalog()
    assert catalog.override_file == elsewhere.resolve()
    assert catalog.cheapest("t4").usd_per_hour == Decimal("0.40")  # type: ignore[union-attr]
    with pytest.raises(UnknownGPUError):
        catalog.gpu("mi300x")  # the default file is not read when the variable is set


def test_edited_override_file_is_read_again(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.yaml",
        "offers:\n  - {gpu: l4, provider: aws, usd_per_hour: '0.70', instance: g6.xlarge,"
        " source: 'https://aws.amazon.com/ec2/pricing/', checked: 2026-11-25}\n",
    )
    first = load_catalog(path).cheapest("l4")
    assert first is not None and first.usd_per_hour == Decimal("0.70")
    assert load_catalog(path) is load_catalog(path)  # cached while unchanged
    _write(path, path.read_text().replace("'0.70'", "'0.655'"))
    os.utime(path, ns=(1, 1))
    second = load_catalog(path).cheapest("l4")
    assert second is not None and second.usd_per_hour == Decimal("0.655")


def test_empty_override_file_changes_nothing(tmp_path: Path, shipped: Catalog) -> None:
    catalog = load_catalog(_write(tmp_path / "empty.yaml", "# nothing yet\n"))
    assert catalog.offers() == shipped.offers()
    catalog = load_catalog(_write(tmp_path / "sections.yaml", "offers:\napis:\n"))
    assert catalog.apis() == shipped.apis()


_GOOD_OFFER = (
    "{gpu: h100, provider: lambda, usd_per_hour: '2.00', instance: 1x H100,"
    " source: 'https://lambda.ai/pricing', checked: 2026-11-20}"
)

BAD_FILES = {
    "bad YAML": ("offers:\n  - {gpu: h100, provider: lambda\n", None, None, "not valid YAML"),
    "unknown key": (
        "offers:\n  - " + _GOOD_OFFER.replace("usd_per_hour", "usd_per_hr") + "\n",
        "offers[0] (h100 on lambda)",
        "usd_per_hr",
        "unknown key",
    ),
    "negative price": (
        "offers:\n  - " + _GOOD_OFFER + "\n  - " + _GOOD_OFFER.replace("'2.00'", "-1") + "\n",
        "offers[1] (h100 on lambda)",
        "usd_per_hour",
        "greater than or equal to 0",
    ),
    "a finite but huge price": (
        "offers:\n  - " + _GOOD_OFFER.replace("'2.00'", "1e308") + "\n",
        "offers[0] (h100 on lambda)",
        "usd_per_hour",
        "a price must be at most 1,000,000 dollars, got 1e+308",
    ),
    "a 74-digit price": (
        "offers:\n  - " + _GOOD_OFFER.replace("'2.00'", "9" * 74) + "\n",
        "offers[0] (h100 on lambda)",
        "usd_per_hour",
        "a price must be at most 1,000,000 dollars",
    ),
    "a huge API price": (
        (
            "apis:\n  - {provider: ori, model: m, min_params_b: 0, max_params_b: 7, method: lora,"
            " usd_per_mtok: 1e300, source: 'https://www.ori.co/pricing', checked: 2026-01-01}\n"
        ),
        "apis[0] (ori m lora)",
        "usd_per_mtok",
        "a price must be at most 1,000,000 dollars",
    ),
    "infinite GPU memory": (
        (
            "gpus:\n  - {id: big, name: Big, memory_gb: .inf, bf16_tflops: 835,"
            " bandwidth_gbps: 3900, source: 'https://example.com/big'}\n"
        ),
        "gpus[0] (big)",
        "memory_gb",
        "finite number",
    ),
    "missing source": (
        "offers:\n  - " + _GOOD_OFFER.replace(" source: 'https://lambda.ai/pricing',", "") + "\n",
        "offers[0] (h100 on lambda)",
        "source",
        "missing",
    ),
    "source is not a web address": (
        "offers:\n  - " + _GOOD_OFFER.replace("https://lambda.ai/pricing", "a friend") + "\n",
        "offers[0] (h100 on lambda)",
        "source",
        "web address",
    ),
    "bad date": (
        "offers:\n  - " + _GOOD_OFFER.replace("2026-11-20", "2026-13-01") + "\n",
        "offers[0] (h100 on lambda)",
        "checked",
        "date",
    ),
    "money as true": (
        (
            "apis:\n  - {provider: ori, model: m, min_params_b: 0, max_params_b: 7, method: lora,"
            " usd_per_mtok: true, source: 'https://www.ori.co/pricing', checked: 2026-01-01}\n"
        ),
        "apis[0] (ori m lora)",
        "usd_per_mtok",
        "not true/false",
    ),
    "unknown GPU": (
        "offers:\n  - " + _GOOD_OFFER.replace("gpu: h100", "gpu: h1000") + "\n",
        "offers[0] (h1000 on lambda)",
        "gpu",
        "unknown GPU 'h1000'",
    ),
    "unknown provider": (
        "offers:\n  - " + _GOOD_OFFER.replace("provider: lambda", "provider: lamda") + "\n",
        "offers[0] (h100 on lamda)",
        "provider",
        "unknown provider 'lamda'",
    ),
    "id not lowercase": (
        "offers:\n  - " + _GOOD_OFFER.replace("provider: lambda", "provider: Lambda") + "\n",
        "offers[0] (h100 on Lambda)",
        "provider",
        "ids are lowercase, e.g. 'lambda'",
    ),
    "unknown section": ("offer:\n  - " + _GOOD_OFFER + "\n", None, "offer", "unknown section"),
    "not a mapping": ("- " + _GOOD_OFFER + "\n", None, None, "must be a mapping"),
    "section not a list": ("offers:\n  gpu: h100\n", None, "offers", "valid list"),
    "entry not a mapping": ("offers:\n  - h100\n", "offers[0]", None, "valid dictionary"),
    "one price twice on one day": (
        "offers:\n  - " + _GOOD_OFFER + "\n  - " + _GOOD_OFFER + "\n",
        "offers[1] (h100 on lambda)",
        "checked",
        "checked twice on 2026-11-20",
    ),
    "alias taken": (
        (
            "gpus:\n  - {id: h100-nvl, name: H100 NVL, memory_gb: 94, bf16_tflops: 835,"
            " bandwidth_gbps: 3900, aliases: [H100],"
            " source: 'https://www.nvidia.com/en-us/data-center/h100/'}\n"
        ),
        "gpus[0] (h100-nvl)",
        "aliases",
        "already belongs to GPU 'h100-sxm'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_override_names_file_entry_and_field(
    tmp_path: Path, shipped: Catalog, case: str
) -> None:
    text, entry, field, problem = BAD_FILES[case]
    path = _write(tmp_path / "my-prices.yaml", text)
    with pytest.raises(PricingError) as caught:
        load_catalog(path)
    error = caught.value
    assert isinstance(error, UserError) and error.hint
    assert error.file == str(path.resolve())
    assert str(path.resolve()) in error.message
    assert error.entry == entry
    assert error.field == field
    assert problem in error.message
    if field:
        assert f"field '{field}'" in error.message
    # Nothing was applied: the catalogue without the file is the shipped one, and the
    # bad file still fails (no half-built catalogue was cached).
    assert load_catalog().offers() == shipped.offers()
    with pytest.raises(PricingError):
        load_catalog(path)


BAD_FOR_PLAN = ["a finite but huge price", "a 74-digit price", "infinite GPU memory"]


@pytest.mark.parametrize("case", BAD_FOR_PLAN)
def test_plan_and_prices_refuse_a_bad_price_file_in_one_paragraph(
    tmp_path: Path, case: str
) -> None:
    """Through the command line: before, `plan` crashed on every run with the price loaded
    (decimal.InvalidOperation) and `prices` printed it. Exit 2, the file and field named."""
    import subprocess
    import sys

    text, _, field, problem = BAD_FILES[case]
    path = _write(tmp_path / "my-prices.yaml", text)
    env = {**os.environ, "PARETUNE_PRICES": str(path)}
    for args in (["plan", "llama-3.1-8b"], ["prices", "--prices", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "tui.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=Path(__file__).parent.parent,
            check=False,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and f"field '{field}'" in done.stderr
        assert problem in done.stderr and "\n\n" not in done.stderr.strip()


def test_missing_override_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PricingError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")
    monkeypatch.setenv("PARETUNE_PRICES", str(tmp_path / "also-nope.yaml"))
    with pytest.raises(PricingError, match="also-nope.yaml"):
        load_catalog()


def test_docs_example_price_file_loads(tmp_path: Path) -> None:
    page = Path(__file__).parent.parent / "docs" / "guides" / "prices.md"
    text = page.read_text(encoding="utf-8")
    section = text[text.index("<!-- section: prices -->") : text.index("<!-- /section: prices -->")]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    catalog = load_catalog(_write(tmp_path / "prices.yaml", example))
    assert catalog.cheapest("h100", "lambda").usd_per_hour == Decimal("2.50")  # type: ignore[union-attr]
    assert catalog.gpu("AMD MI300X").id == "mi300x"
    assert catalog.cpu_instance("local-cpu").usd_per_hour == Decimal("0.03")
