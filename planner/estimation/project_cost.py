"""The cost of the whole project, not only the training hours; and the same run on spot GPUs.

Beside the training run that :func:`planner.estimate` prices, a fine-tuning project pays
for the evaluation passes (the eval set scored every few steps), the forgetting probe,
several trials of a sweep, the minutes a rented machine is billed before the first step
(start-up and the model download), and the storage of what the trials keep. Each term
comes from a constant in ``planner/data/project_costs.json`` with its source; every one
can be overridden. Pure functions of an :class:`Estimate` and the catalogue, like the
rest of the planner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

from planner.errors import InvalidSpecError
from planner.estimation.arch import ModelArch
from planner.estimation.estimate import Estimate
from planner.estimation.memory import constants as memory_constants
from planner.specs import MethodSpec, Workload

if TYPE_CHECKING:
    from pricing import ApiPrice, Catalog

__all__ = [
    "ApiJob",
    "CostTerm",
    "ProjectCost",
    "SpotQuote",
    "api_jobs",
    "cost_constants",
    "eval_interval",
    "expected_hours_with_restarts",
    "project_cost",
    "spot_quote",
]

_CENT = Decimal("0.01")
_ADAPTER_METHODS = ("lora", "qlora", "dora")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _money(value: float) -> Decimal:
    return Decimal(repr(value))


def cost_constants(overrides: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Every constant as ``{name: {"value": ..., "source": ...}}``, with ``overrides`` applied.

    Raises :class:`InvalidSpecError` for an unknown name or a negative value.
    """
    text = resources.files("planner").joinpath("data/project_costs.json").read_text("utf-8")
    table = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    for name, value in (overrides or {}).items():
        if name not in table:
            from pricing.errors import did_you_mean

            raise InvalidSpecError(f"unknown cost constant {name!r}", did_you_mean(name, table))
        if not math.isfinite(value) or value < 0:
            raise InvalidSpecError(f"cost constant {name!r} must be 0 or more, got {value}")
        table[name] = {"value": value, "source": "given on the command line"}
    return table


@dataclass(frozen=True)
class CostTerm:
    """One line of the bill: its dollars, the GPU-hours behind them (if any), in words."""

    name: str
    dollars: Decimal
    hours: float | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        hours = None if self.hours is None else round(self.hours, 4)
        return {"dollars": float(self.dollars), "hours": hours, "detail": self.detail}


@dataclass(frozen=True)
class ProjectCost:
    """A method's whole project: per-trial terms x trials, plus once-only terms."""

    method: str
    per_trial: tuple[CostTerm, ...]  # training, evaluation, forgetting
    once: tuple[CostTerm, ...]  # start-up (per worker), storage
    trials: int

    @property
    def trial_dollars(self) -> Decimal:
        return sum((t.dollars for t in self.per_trial), Decimal(0))

    @property
    def trial_hours(self) -> float:
        return sum(t.hours or 0.0 for t in self.per_trial)

    @property
    def total(self) -> Decimal:
        once = sum((t.dollars for t in self.once), Decimal(0))
        return _cents(self.trial_dollars * self.trials + once)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "per_trial": {t.name: t.to_json() for t in self.per_trial},
            "trial_dollars": float(self.trial_dollars),
            "trials": self.trials,
            "once": {t.name: t.to_json() for t in self.once},
            "total_dollars": float(self.total),
        }


def eval_interval(
    total_steps: int, every: int | None = None, *, minimum: int = 10, evals_per_run: int = 20
) -> int:
    """Optimizer steps between two scorings of the eval set, as ``paretune trial`` scores it.

    ``every`` when the trial sets it; else every ``minimum`` (10) steps, or ``evals_per_run``
    (20) times in a run longer than ``minimum x evals_per_run`` steps, so that a long run's
    evaluation costs a bounded share of it (every 10 steps, a 5,000-step run would score its
    eval set 500 times). Shared by the trial and the planner's cost of evaluation.
    """
    if every is not None:
        return max(1, int(every))
    return max(1, int(minimum), math.ceil(total_steps / max(1, int(evals_per_run))))


def _eval_passes(est: Estimate, every: float, evals_per_run: float) -> int:
    w = est.workload
    sequences_per_step = w.batch * w.grad_accum * est.gpus
    steps = max(1, math.ceil(w.tokens / (w.seq_len * sequences_per_step)))
    interval = eval_interval(steps, minimum=int(every), evals_per_run=int(evals_per_run))
    return steps // interval + (steps % interval != 0)


def _saved_bytes(arch: ModelArch, est: Estimate) -> int:
    """What a trial keeps: its adapter (fp32, as peft saves it) or the whole model in bf16."""
    numbers = memory_constants()
    if est.method.kind in _ADAPTER_METHODS:
        return int(est.trainable_params * numbers["adapter_bytes_per_param"])
    return int(arch.total_params * numbers["bytes_per_param"]["bf16"])


def _startup_hours(arch: ModelArch, c: dict[str, dict[str, Any]]) -> float:
    download_s = arch.total_params * 2 / 1e9 / max(c["download_gb_per_s"]["value"], 1e-9)
    return c["startup_minutes"]["value"] / 60 + download_s / 3600


def expected_trials(per_trial: Decimal, trials: int | None, budget: float | None) -> int:
    """Trials a sweep runs: ``trials``, or as many as ``budget`` dollars pays for, or the fewer."""
    if budget is None:
        return int(trials or 0)
    affordable = int(Decimal(repr(budget)) // per_trial) if per_trial > 0 else 10**6
    return min(affordable, trials) if trials is not None else affordable


def project_cost(
    arch: ModelArch,
    est: Estimate,
    *,
    overrides: dict[str, float] | None = None,
    trials: int | None = None,
    budget: float | None = None,
) -> ProjectCost | None:
    """The whole project of ``est``'s method, or None when the estimate has no price.

    ``trials`` defaults to the sweep's default trial count; with ``budget`` (dollars) it is
    the number of trials the budget pays for (at most ``trials`` if given).
    """
    if est.dollars is None or not est.hours:
        return None
    c = cost_constants(overrides)
    usd_per_hour = est.dollars / _money(est.hours)  # the rented GPUs' price, instance-rounded
    flop_rate = est.flops / est.hours  # FLOPs per hour at the method's MFU
    # Forward only: 2 FLOPs per parameter per token (Kaplan et al. 2020, table 1).
    forward_flops_per_token = 2 * arch.compute_params

    passes = _eval_passes(est, c["eval_every_steps"]["value"], c["evals_per_run"]["value"])
    eval_tokens = c["eval_fraction"]["value"] * est.workload.dataset_tokens * passes
    eval_hours = eval_tokens * forward_flops_per_token / flop_rate
    retain_tokens = c["retain_tokens"]["value"]
    retain_hours = retain_tokens * forward_flops_per_token / flop_rate
    per_trial = (
        CostTerm("training", est.dollars, est.hours, f"{est.workload.tokens:,} tokens trained"),
        CostTerm(
            "evaluation",
            _cents(_money(eval_hours) * usd_per_hour),
            eval_hours,
            f"{passes} passes over {c['eval_fraction']['value']:g} of the data "
            f"({eval_tokens:,.0f} tokens, forward only)",
        ),
        CostTerm(
            "forgetting",
            _cents(_money(retain_hours) * usd_per_hour),
            retain_hours,
            f"{retain_tokens:,.0f} retain tokens scored once",
        ),
    )
    trial_dollars = sum((t.dollars for t in per_trial), Decimal(0))
    if budget is None:
        count = trials if trials is not None else int(c["sweep_trials"]["value"])
    else:
        count = expected_trials(trial_dollars, trials, budget)
    workers = max(1, int(c["workers"]["value"]))
    startup_hours = _startup_hours(arch, c) * workers
    saved = _saved_bytes(arch, est) * count
    storage = (
        _money(saved / 1e9)
        * _money(c["storage_usd_per_gb_month"]["value"])
        * _money(c["storage_months"]["value"])
    )
    once = (
        CostTerm(
            "start-up",
            _cents(_money(startup_hours) * usd_per_hour),
            startup_hours,
            f"{workers} machine start(s): {c['startup_minutes']['value']:g} min plus the "
            f"{arch.total_params * 2 / 1e9:,.1f} GB model download",
        ),
        CostTerm(
            "storage",
            _cents(storage),
            None,
            f"{saved / 1e9:,.2f} GB for {c['storage_months']['value']:g} month(s): every "
            f"trial's {'adapter' if est.method.kind in _ADAPTER_METHODS else 'model'} "
            "(save = frontier keeps fewer)",
        ),
    )
    return ProjectCost(est.method.kind, per_trial, once, count)


# -- spot ---------------------------------------------------------------------------------


def expected_hours_with_restarts(hours: float, rate_per_hour: float, restart_hours: float) -> float:
    """Expected wall-clock hours of a ``hours``-long run that restarts from scratch when interrupted.

    Interruptions arrive at ``rate_per_hour`` (Poisson) and each costs ``restart_hours``
    before work resumes. Daly (2006), "A higher order estimate of the optimum checkpoint
    interval", eq. 9 with a single segment (no checkpoint): E = M e^(R/M) (e^(T/M) - 1),
    M = 1/rate; E -> T as the rate goes to 0.
    """
    if rate_per_hour <= 0:
        return hours
    mean = 1 / rate_per_hour
    exponent = min(hours / mean, 700.0)  # beyond this the run never finishes in practice
    return mean * math.exp(restart_hours / mean) * math.expm1(exponent)


@dataclass(frozen=True)
class SpotQuote:
    """One trial of a method on the cheapest spot offer that fits, restarts included."""

    method: str
    gpu: str
    gpus: int
    provider: str
    usd_per_gpu_hour: Decimal
    interruption_rate: float
    hours: float  # one trial (training, evaluation, forgetting) without interruptions
    expected_hours: float
    expected_dollars: Decimal
    on_demand_dollars: Decimal | None  # the same trial on the on-demand plan

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gpu": self.gpu,
            "gpus": self.gpus,
            "provider": self.provider,
            "usd_per_gpu_hour": float(self.usd_per_gpu_hour),
            "interruption_rate_per_hour": self.interruption_rate,
            "hours": round(self.hours, 4),
            "expected_hours": round(self.expected_hours, 4),
            "expected_dollars": float(self.expected_dollars),
            "on_demand_dollars": None
            if self.on_demand_dollars is None
            else float(self.on_demand_dollars),
        }


def spot_quote(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    catalog: Catalog,
    *,
    gpu: str | None = None,
    provider: str | None = None,
    on_demand: ProjectCost | None = None,
    rate_per_hour: float | None = None,
    overrides: dict[str, float] | None = None,
) -> SpotQuote | None:
    """One trial of ``method`` on spot capacity: the cheapest spot offer that fits (on ``gpu``
    if given), with the expected hours and dollars of restarts. None without a spot price.

    A preempted trial is lost and re-run from its start (paretune's trials do not resume),
    each restart paying the machine's start-up again.
    """
    from planner.estimation.estimate import plan

    c = cost_constants(overrides)
    rate = c["interruption_rate_per_hour"]["value"] if rate_per_hour is None else rate_per_hour
    if not math.isfinite(rate) or rate < 0:
        raise InvalidSpecError(f"--interruption-rate must be 0 or more per hour, got {rate}")
    spot_plan = plan(
        arch,
        workload,
        [method],
        gpu=gpu,
        provider=provider,
        catalog=catalog.spot_view(),
        apis=False,
    )
    est = spot_plan.estimates[0]
    if est.dollars is None or est.gpu is None or est.provider is None or not est.fits:
        return None
    trial = project_cost(arch, est, overrides=overrides, trials=1)
    assert trial is not None  # est has a price
    hours = trial.trial_hours
    expected = expected_hours_with_restarts(hours, rate, _startup_hours(arch, c))
    expected_dollars = _cents(trial.trial_dollars * _money(expected / hours))
    assert est.usd_per_gpu_hour is not None
    return SpotQuote(
        method=method.kind,
        gpu=est.gpu,
        gpus=est.gpus,
        provider=est.provider,
        usd_per_gpu_hour=est.usd_per_gpu_hour,
        interruption_rate=rate,
        hours=hours,
        expected_hours=expected,
        expected_dollars=expected_dollars,
        on_demand_dollars=on_demand.trial_dollars if on_demand is not None else None,
    )


# -- fine-tuning APIs ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApiJob:
    """What a fine-tuning API charges for the same training tokens, as it bills them."""

    price: ApiPrice
    billed_epochs: float
    dollars: Decimal

    def to_json(self) -> dict[str, Any]:
        p = self.price
        return {
            "provider": p.provider,
            "model": p.model_bracket,
            "method": p.method,
            "usd_per_mtok": float(p.usd_per_mtok),
            "minimum_usd": None if p.minimum_usd is None else float(p.minimum_usd),
            "billed_epochs": self.billed_epochs,
            "dollars": float(self.dollars),
        }


def api_jobs(arch: ModelArch, workload: Workload, catalog: Catalog, kind: str) -> list[ApiJob]:
    """Every API that trains this model size with ``kind`` (lora or full), cheapest first."""
    billions = arch.total_params / 1e9
    w = workload
    jobs = [
        ApiJob(
            price,
            math.ceil(w.epochs) if price.whole_epochs else w.epochs,
            _cents(price.job_usd(w.dataset_tokens, w.epochs)),
        )
        for price in catalog.apis()
        if price.method == kind and price.trains(billions)
    ]
    return sorted(jobs, key=lambda j: (j.dollars, j.price.provider))
