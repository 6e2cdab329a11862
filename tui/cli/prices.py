"""``paretune prices``: the catalogue as a table, JSON or CSV (registered by :mod:`tui.cli`).

The catalogue itself is imported inside the command so that ``paretune --help`` does not
pay for pydantic and YAML.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pricing.catalog import Catalog
    from pricing.models import GPU, ApiPrice, CpuInstance, Offer

# A price older than this is shown in yellow in the table: GPU prices moved by tens of
# percent within weeks in 2026.
_STALE_AFTER_DAYS = 60


class _Selection:
    """What one `paretune prices` call shows, after filters and the as-of date."""

    def __init__(
        self, catalog: Catalog, gpu: str | None, provider: str | None, as_of: dt.date | None
    ):
        self.today = as_of or dt.date.today()
        gpu_id = catalog.gpu(gpu).id if gpu else None
        provider_id = catalog.check_provider(provider) if provider else None
        self.offers: list[Offer] = catalog.offers(gpu_id, provider_id, as_of, kind=None)
        offered = {offer.gpu for offer in self.offers}
        self.gpus: list[GPU] = [
            g
            for g in catalog.gpus
            if (gpu_id is None or g.id == gpu_id) and (provider_id is None or g.id in offered)
        ]
        self.apis: list[ApiPrice] = [
            api for api in catalog.apis(as_of) if provider_id is None or api.provider == provider_id
        ]
        self.cpu_instances: list[CpuInstance] = [
            cpu
            for cpu in catalog.cpu_instances
            if provider_id is None or cpu.provider == provider_id
        ]
        # API and CPU prices do not depend on the GPU: a --gpu table leaves them out.
        self.show_gpu_free_tables = gpu_id is None
        self.override_file = catalog.override_file

    def offers_of(self, gpu_id: str) -> list[Offer]:
        return [offer for offer in self.offers if offer.gpu == gpu_id]


def _as_json(selection: _Selection) -> dict[str, Any]:
    # Prices as JSON numbers: every catalogue price has few enough digits that float's
    # shortest repr prints it exactly as written in the data file.
    return {
        "gpus": [
            {
                "id": g.id,
                "name": g.name,
                "memory_gb": g.memory_gb,
                "bf16_tflops": g.bf16_tflops,
                "bandwidth_gbps": g.bandwidth_gbps,
            }
            for g in selection.gpus
        ],
        "offers": [
            {
                "gpu": o.gpu,
                "provider": o.provider,
                "usd_per_hour": float(o.usd_per_hour),
                "kind": o.kind,
                "source": o.source,
                "checked": o.checked.isoformat(),
                "verified": o.verified,
            }
            for g in selection.gpus
            for o in selection.offers_of(g.id)
        ],
        "apis": [
            {
                "provider": a.provider,
                "model_bracket": a.model_bracket,
                "method": a.method,
                "usd_per_mtok": float(a.usd_per_mtok),
                "source": a.source,
                "checked": a.checked.isoformat(),
                "verified": a.verified,
            }
            for a in selection.apis
        ],
    }


_CSV_COLUMNS = (
    "gpu", "provider", "usd_per_hour", "kind", "gpus_per_instance", "instance", "region",
    "source", "checked", "age_days", "verified",
)  # fmt: skip


def _write_csv(selection: _Selection) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for g in selection.gpus:
        for o in selection.offers_of(g.id):
            writer.writerow(
                [
                    o.gpu, o.provider, str(o.usd_per_hour), o.kind, o.gpus_per_instance, o.instance,
                    o.region or "", o.source, o.checked.isoformat(),
                    o.age_days(selection.today), str(o.verified).lower(),
                ]
            )  # fmt: skip


def _age(days: int) -> str:
    text = f"{days} d"
    return f"[yellow]{text}[/]" if days > _STALE_AFTER_DAYS else text


def _tflops(g: GPU) -> str:
    if g.bf16_tflops is not None:
        return f"{g.bf16_tflops:g}"
    return f"no BF16 (FP16 {g.fp16_tflops:g})"


def _print_tables(selection: _Selection) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        # Piped or redirected: rich would assume 80 columns and wrap every cell.
        console = Console(width=160)

    def table(title: str) -> Table:
        return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)

    gpus = table("GPUs (memory in GB = 10^9 bytes; dense TFLOP/s)")
    for header, justify in [
        ("GPU", "left"), ("name", "left"), ("memory GB", "right"), ("BF16 TFLOP/s", "right"),
        ("bandwidth GB/s", "right"), ("cheapest on-demand $/GPU-h", "right"), ("at", "left"),
    ]:  # fmt: skip
        gpus.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for g in selection.gpus:
        on_demand = [o for o in selection.offers_of(g.id) if o.kind == "on-demand"]
        cheapest = on_demand[0] if on_demand else None
        gpus.add_row(
            g.id, g.name, f"{g.memory_gb:g}", _tflops(g), f"{g.bandwidth_gbps:g}",
            f"{cheapest.usd_per_hour}" if cheapest else "-",
            cheapest.provider if cheapest else "",
        )  # fmt: skip
    console.print(gpus)

    offers = table(f"Offers, cheapest first per GPU (USD per GPU-hour; age on {selection.today})")
    for header, justify in [
        ("GPU", "left"), ("provider", "left"), ("$/GPU-h", "right"), ("kind", "left"),
        ("GPUs", "right"), ("instance", "left"), ("region", "left"), ("checked", "left"), ("age", "right"),
        ("verified", "left"),
    ]:  # fmt: skip
        offers.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for g in selection.gpus:
        for i, o in enumerate(selection.offers_of(g.id)):
            offers.add_row(
                g.id if i == 0 else "", o.provider, str(o.usd_per_hour), o.kind,
                str(o.gpus_per_instance), o.instance, o.region or "", o.checked.isoformat(),
                _age(o.age_days(selection.today)), "yes" if o.verified else "no",
                end_section=i == len(selection.offers_of(g.id)) - 1,
            )  # fmt: skip
    console.print(offers)

    if selection.show_gpu_free_tables and selection.cpu_instances:
        cpus = table("CPU instances (for CPU runs; USD per instance-hour)")
        for header, justify in [
            ("id", "left"), ("provider", "left"), ("$/h", "right"), ("vCPUs", "right"),
            ("memory GB", "right"), ("region", "left"), ("checked", "left"), ("age", "right"),
            ("verified", "left"),
        ]:  # fmt: skip
            cpus.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for c in selection.cpu_instances:
            cpus.add_row(
                c.id, c.provider, str(c.usd_per_hour), str(c.vcpus or ""),
                f"{c.memory_gb:g}" if c.memory_gb else "", c.region or "",
                c.checked.isoformat(), _age(c.age_days(selection.today)),
                "yes" if c.verified else "no",
            )  # fmt: skip
        console.print(cpus)

    if selection.show_gpu_free_tables and selection.apis:
        apis = table("Fine-tuning APIs (USD per million tokens processed)")
        for header, justify in [
            ("provider", "left"), ("model / size", "left"), ("method", "left"),
            ("$/Mtok", "right"), ("checked", "left"), ("age", "right"), ("verified", "left"),
        ]:  # fmt: skip
            apis.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for a in selection.apis:
            apis.add_row(
                a.provider, a.model_bracket, a.method, str(a.usd_per_mtok),
                a.checked.isoformat(), _age(a.age_days(selection.today)),
                "yes" if a.verified else "no",
            )  # fmt: skip
        console.print(apis)
    if selection.override_file is not None:
        console.print(f"Merged with your price file: {selection.override_file}")


@click.group("prices", invoke_without_command=True)
@click.option(
    "--gpu", "gpu", metavar="ID", help="Only this GPU (id or alias, e.g. h100, 'A100 40GB')."
)
@click.option("--provider", metavar="NAME", help="Only this provider's offers and API prices.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table for reading; json (GPUs, offers, APIs) or csv (offers) for scripts.",
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Price override file merged over the shipped catalogue "
    "(default: $PARETUNE_PRICES, else prices.yaml in the user config directory).",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    metavar="YYYY-MM-DD",
    help="Use the prices known on that date; ages are counted up to it.",
)
@click.pass_context
def prices_command(
    ctx: click.Context,
    gpu: str | None,
    provider: str | None,
    output_format: str,
    prices_file: Path | None,
    as_of: dt.datetime | None,
) -> None:
    """List GPUs and their hourly offers, cheapest first, with the age of each price.

    `paretune prices update` refreshes them from the providers' own price feeds.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pricing.catalog import load_catalog

    catalog = load_catalog(prices_file)
    selection = _Selection(catalog, gpu, provider, as_of.date() if as_of else None)
    if output_format == "json":
        import json

        click.echo(json.dumps(_as_json(selection), indent=2))
    elif output_format == "csv":
        _write_csv(selection)
    else:
        _print_tables(selection)


@prices_command.command("update")
@click.option(
    "--provider",
    "feeds",
    multiple=True,
    metavar="FEED",
    help="Read only this feed (runpod, vast-ai, lambda, azure); repeat for several. Default: all.",
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="The price file to write (default: $PARETUNE_PRICES, else prices.yaml in the user "
    "config directory). The shipped catalogue is never written.",
)
@click.option("--dry-run", is_flag=True, help="Read the feeds and report; write nothing.")
def update_command(feeds: tuple[str, ...], prices_file: Path | None, dry_run: bool) -> None:
    """Fetch current GPU prices from the providers' public price feeds into your price file.

    Reads RunPod's GraphQL prices, Vast.ai's offer search, Lambda's instance types
    ($LAMBDA_API_KEY) and Azure's Retail Prices API, on-demand and spot. Each price is
    written with its feed's address as source, today as checked and verified: true; the
    prices it replaces stay in the file as history, so --as-of still answers for earlier
    dates. A feed that fails or changes its shape keeps its previous prices. Exit code 1 if
    no feed could be read, else 0.
    """
    from pricing.catalog import load_catalog, shipped_catalog, user_price_file
    from pricing.feeds import update_prices

    path = user_price_file(prices_file)
    catalog = load_catalog(path) if path.is_file() else shipped_catalog()
    with _status(f"Reading {len(feeds) or 'all'} price feed(s)…"):
        report = update_prices(catalog, path, feeds=feeds or None, dry_run=dry_run)
    _print_update(report, dry_run)
    if not report.updated:
        raise SystemExit(1)


def _status(text: str) -> Any:
    from rich.console import Console

    return Console(stderr=True).status(text)


def _print_update(report: Any, dry_run: bool) -> None:
    for feed in report.feeds:
        if feed.updated:
            spot = sum(1 for o in feed.offers if o.kind == "spot")
            line = (
                f"{feed.feed}: updated {len(feed.offers)} prices "
                f"({len(feed.offers) - spot} on-demand, {spot} spot) from {feed.source}"
            )
            if feed.unknown_gpus:
                line += f"; not in the catalogue, skipped: {', '.join(feed.unknown_gpus)}"
            click.echo(_fill(line))
            for change in feed.changes:
                if change.before is None:
                    moved = f"new {change.after}"
                elif change.before == change.after:
                    continue
                else:
                    pct = (change.after - change.before) / change.before * 100
                    moved = f"{change.before} -> {change.after} ({pct:+.0f}%)"
                click.echo(
                    f"    {change.gpu} at {change.provider} ({change.instance}, {change.kind}): "
                    f"{moved} $/GPU-h"
                )
        else:
            click.echo(_fill(f"{feed.feed}: skipped: {feed.reason}."), err=True)
    if report.written:
        kept = f" (previous version: {report.backup})" if report.backup else ""
        click.echo(
            f"Wrote {sum(len(f.offers) for f in report.updated)} prices to {report.path}{kept}."
        )
    elif dry_run and report.updated:
        click.echo(f"Dry run: nothing written to {report.path}.")
    else:
        click.echo(
            "No feed could be read: nothing was written, and every price stays as it was.",
            err=True,
        )


def _fill(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=100, subsequent_indent="  ")


COMMANDS: list[click.Command] = [prices_command]
