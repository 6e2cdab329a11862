"""``paretune plan``'s whole-project cost, spot prices and price age (used by :mod:`tui.cli.plan`).

The options are added to the plan command by :func:`project_options`; the command passes
them back here with its plan, and gets the text or the JSON object to show.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from planner import Plan

__all__ = ["ProjectReport", "project_options", "project_report"]


def project_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The plan command's options for spot capacity and the whole project's cost."""
    options = [
        click.option(
            "--cost",
            "costs",
            multiple=True,
            metavar="NAME=VALUE",
            help="Override a whole-project cost constant (repeatable), e.g. --cost "
            "eval_every_steps=100 --cost storage_months=3; docs/guides/prices.md lists them.",
        ),
        click.option(
            "--sweep-budget",
            type=float,
            default=None,
            metavar="USD",
            help="Dollars for the sweep: the project counts the trials it pays for.",
        ),
        click.option(
            "--sweep-trials",
            type=click.IntRange(min=1),
            default=None,
            help="Trials of the sweep in the whole-project cost [default: 10, the sweep's].",
        ),
        click.option(
            "--interruption-rate",
            type=click.FloatRange(min=0),
            default=None,
            metavar="PER_HOUR",
            help="Spot interruptions per hour for --spot [default: 0.05, once in 20 hours].",
        ),
        click.option(
            "--spot",
            is_flag=True,
            help="Also price each method on the cheapest spot (interruptible) offer of its "
            "GPU, with the expected cost of restarted trials.",
        ),
    ]
    for option in options:
        command = option(command)
    return command


@dataclass
class ProjectReport:
    projects: list[Any] = field(default_factory=list)
    spot: list[Any] = field(default_factory=list)
    spot_asked: bool = False
    apis: list[Any] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    price_notice: str | None = None
    oldest_price: Any = None


def _overrides(costs: tuple[str, ...]) -> dict[str, float]:
    from planner.errors import InvalidSpecError

    found: dict[str, float] = {}
    for text in costs:
        name, sep, value = text.partition("=")
        try:
            if not sep:
                raise ValueError
            found[name.strip()] = float(value)
        except ValueError:
            raise InvalidSpecError(
                f"--cost {text!r}: write NAME=VALUE with a number, e.g. --cost storage_months=3"
            ) from None
    return found


def project_report(
    result: Plan,
    options: dict[str, Any],
    *,
    specs: list[Any],
    gpu: str | None = None,
    provider: str | None = None,
) -> ProjectReport:
    """The whole-project cost of every priced method, spot quotes and the price age.

    ``specs`` are the methods as asked (before the planner chose a GPU count), so that
    the spot search chooses its own GPU and count the same way.
    """
    from planner.errors import InvalidSpecError
    from planner.estimation.project_cost import api_jobs, cost_constants, project_cost, spot_quote
    from pricing import load_catalog
    from pricing.staleness import staleness_notice

    catalog = load_catalog()
    overrides = _overrides(options.get("costs") or ())
    budget = options.get("sweep_budget")
    if budget is not None and not budget > 0:
        raise InvalidSpecError(f"--sweep-budget must be more than 0 dollars, got {budget}")
    report = ProjectReport(
        constants=cost_constants(overrides), spot_asked=options.get("spot", False)
    )
    checked = []
    for spec, est in zip(specs, result.estimates, strict=True):
        project = project_cost(
            result.arch, est, overrides=overrides, trials=options.get("sweep_trials"), budget=budget
        )
        if project is None:
            continue
        report.projects.append(project)
        offer = catalog.cheapest(est.gpu, est.provider) if est.gpu else None
        if offer is not None:
            checked.append(offer.checked)
        if report.spot_asked:
            quote = spot_quote(
                result.arch,
                result.workload,
                spec,
                catalog,
                gpu=gpu,
                provider=provider,
                on_demand=project,
                rate_per_hour=options.get("interruption_rate"),
                overrides=overrides,
            )
            if quote is not None:
                report.spot.append(quote)
                spot_offer = catalog.cheapest(quote.gpu, quote.provider, kind="spot")
                checked += [spot_offer.checked] if spot_offer else []
    # Adapter methods compare with LoRA fine-tuning services, full and freeze with full ones.
    api_kinds = {
        "full" if e.method.kind in ("full", "freeze") else "lora" for e in result.estimates
    }
    for kind in ("lora", "full"):
        if kind in api_kinds:
            report.apis += api_jobs(result.arch, result.workload, catalog, kind)
    report.oldest_price = min(checked) if checked else None
    report.price_notice = staleness_notice(checked)
    return report


def project_json(report: ProjectReport) -> dict[str, Any]:
    """The ``project`` object of ``paretune plan --format json``."""
    from pricing.staleness import REFRESH_COMMAND, max_price_age_days

    oldest = report.oldest_price
    return {
        "methods": [p.to_json() for p in report.projects],
        "spot": [q.to_json() for q in report.spot] if report.spot_asked else None,
        "apis": [job.to_json() for job in report.apis],
        "constants": report.constants,
        "prices": {
            "oldest_checked": oldest.isoformat() if oldest else None,
            "stale": report.price_notice is not None,
            "max_age_days": max_price_age_days(),
            "refresh": REFRESH_COMMAND,
        },
    }


def print_project(report: ProjectReport, echo_grid: Callable[..., None]) -> None:
    """The whole-project table, spot quotes and API jobs, under the plan's tables."""
    if report.projects:
        trials = {p.trials for p in report.projects}
        count = f"{trials.pop()} trials" if len(trials) == 1 else "trials per method"
        click.echo(f"\nwhole project ($): one sweep of {count}, each a full run with its evals")
        methods = [p.method for p in report.projects]
        names = [t.name for t in report.projects[0].per_trial]
        rows = [
            [f"{name} (per trial)"] + [f"{_term(p.per_trial, name):,.2f}" for p in report.projects]
            for name in names
        ]
        rows.append(["trial"] + [f"{p.trial_dollars:,.2f}" for p in report.projects])
        rows.append(["x trials"] + [str(p.trials) for p in report.projects])
        for name in [t.name for t in report.projects[0].once]:
            rows.append([name] + [f"{_term(p.once, name):,.2f}" for p in report.projects])
        rows.append(["total"] + [f"{p.total:,.2f}" for p in report.projects])
        echo_grid(["term"] + methods, rows)
        first = report.projects[0]
        for term in (*first.per_trial[1:], *first.once):
            click.echo(_fill(f"  {term.name} ({first.method}): {term.detail}"))
        click.echo(
            _fill(
                "  Every constant and its source: --format json (project.constants); "
                "override with --cost NAME=VALUE."
            )
        )
    if report.spot_asked:
        _print_spot(report, echo_grid)
    if report.apis:
        click.echo("\nfine-tuning APIs for the same tokens (whole epochs billed, minimum charge)")
        echo_grid(
            ["provider", "model", "method", "$/Mtok", "epochs billed", "minimum", "$ per job"],
            [
                [
                    j.price.provider, j.price.model_bracket, j.price.method,
                    str(j.price.usd_per_mtok), f"{j.billed_epochs:g}",
                    "-" if j.price.minimum_usd is None else f"{j.price.minimum_usd}",
                    f"{j.dollars:,.2f}",
                ]
                for j in report.apis
            ],
        )  # fmt: skip
    if report.price_notice:
        click.echo(f"\nNote: {report.price_notice}", err=True)


def _print_spot(report: ProjectReport, echo_grid: Callable[..., None]) -> None:
    if not report.spot:
        click.echo(
            "\nspot: no spot price on record for these GPUs; `paretune prices update` reads "
            "spot prices from RunPod, Vast.ai and Azure."
        )
        return
    rate = report.spot[0].interruption_rate
    click.echo(f"\nspot, one trial ({rate:g} interruptions per hour assumed; --interruption-rate)")
    echo_grid(
        ["method", "GPU", "provider", "$/GPU-h", "hours", "expected h", "expected $",
         "on-demand $"],
        [
            [
                q.method, f"{q.gpus}x {q.gpu}", q.provider, str(q.usd_per_gpu_hour),
                f"{q.hours:,.2f}", f"{q.expected_hours:,.2f}", f"{q.expected_dollars:,.2f}",
                "-" if q.on_demand_dollars is None else f"{q.on_demand_dollars:,.2f}",
            ]
            for q in report.spot
        ],
    )  # fmt: skip
    click.echo(
        _fill(
            "  A preempted trial is lost and run again from its start (the sweep re-queues it), "
            "paying the start-up again: expected hours = M e^(R/M) (e^(T/M) - 1), M = 1/rate "
            "(Daly 2006). Short trials lose little, which is why a sweep suits spot capacity."
        )
    )


def _term(terms: tuple[Any, ...], name: str) -> Any:
    return next(t.dollars for t in terms if t.name == name)


def _fill(text: str) -> str:
    return textwrap.fill(text, width=100, subsequent_indent="    ", break_on_hyphens=False)
