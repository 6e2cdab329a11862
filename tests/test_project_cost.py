"""The whole project's cost, spot capacity and the price-age notice, in the planner and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from planner import MethodSpec, Workload, estimate, resolve_model
from planner.estimation.project_cost import (
    api_jobs,
    cost_constants,
    eval_interval,
    expected_hours_with_restarts,
    project_cost,
    spot_quote,
)
from pricing import load_catalog
from pricing.models import ApiPrice
from pricing.staleness import staleness_notice
from tui.cli import main

SPOT_FILE = """\
offers:
  - {gpu: h100-sxm, provider: runpod-community, usd_per_hour: "1.49", kind: spot,
     instance: 1x H100 SXM, source: "https://api.runpod.io/graphql", checked: 2026-11-30,
     verified: true}
  - {gpu: h100-sxm, provider: runpod-community, usd_per_hour: "2.69", instance: 1x H100 SXM,
     source: "https://api.runpod.io/graphql", checked: 2026-11-30, verified: true}
"""


@pytest.fixture(autouse=True)
def _no_user_price_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PARETUNE_PRICES", raising=False)
    monkeypatch.delenv("PARETUNE_PRICE_MAX_AGE_DAYS", raising=False)


@pytest.fixture()
def spot_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(SPOT_FILE)
    monkeypatch.setenv("PARETUNE_PRICES", str(path))
    return path


def test_constants_are_the_sweeps_own_defaults() -> None:
    from sweeps.spec import SweepSpec
    from sweeps.trial.retain import SelfSampleSettings
    from sweeps.trial.types import TrialConfig

    c = {name: entry["value"] for name, entry in cost_constants().items()}
    fields = TrialConfig.model_fields
    assert c["eval_fraction"] == fields["eval_fraction"].default
    # The trial's default cadence is eval_interval's, with the constants as its arguments.
    assert fields["eval_every"].default is None
    minimum, per_run = int(c["eval_every_steps"]), int(c["evals_per_run"])
    assert eval_interval(92) == eval_interval(92, minimum=minimum, evals_per_run=per_run) == 10
    assert eval_interval(5_000) == eval_interval(5_000, minimum=minimum, evals_per_run=per_run)
    s = SelfSampleSettings()
    assert c["retain_tokens"] == s.prompts * s.samples_per_prompt * s.max_new_tokens
    assert c["sweep_trials"] == SweepSpec(name="x").budget.trials
    assert all(entry["source"] for entry in cost_constants().values())


def test_eval_cadence_is_bounded_in_long_runs() -> None:
    # Short runs: every 10 steps, as before; long ones: 20 evals; a set interval wins.
    assert [eval_interval(n) for n in (4, 200, 201, 5_000)] == [10, 10, 11, 250]
    assert eval_interval(5_000, 7) == 7
    # 30M tokens at 2048 x 16 per step: 916 steps, scored every 46 steps = 20 passes (was 92).
    arch, est = _lora_estimate(tokens=20_000_000)
    (evaluation,) = (t for t in project_cost(arch, est).per_trial if t.name == "evaluation")
    assert evaluation.detail.startswith("20 passes over 0.1 of the data")
    assert evaluation.dollars < est.dollars  # no longer dearer than the training it checks


def test_restarts_from_scratch() -> None:
    assert expected_hours_with_restarts(3.0, 0.0, 0.5) == 3.0
    # M = 2 h, T = 2 h, no restart cost: 2 (e - 1).
    assert expected_hours_with_restarts(2.0, 0.5, 0.0) == pytest.approx(2 * (math.e - 1))
    short, long = (expected_hours_with_restarts(t, 0.05, 0.1) / t for t in (0.5, 20.0))
    assert 1 < short < 1.05 < 1.5 < long  # short trials lose little; a 20 h run loses a lot


def _lora_estimate(tokens: int = 2_000_000):
    arch = resolve_model("llama-3.1-8b")
    workload = Workload(seq_len=2048, batch=4, grad_accum=4, dataset_tokens=tokens, epochs=1.5)
    return arch, estimate(arch, workload, MethodSpec(kind="lora"), gpu="h100")


def test_project_terms_add_up() -> None:
    arch, est = _lora_estimate()
    project = project_cost(arch, est)
    terms = {t.name: t for t in (*project.per_trial, *project.once)}
    assert list(terms) == ["training", "evaluation", "forgetting", "start-up", "storage"]
    assert terms["training"].dollars == est.dollars
    # 3,000,000 tokens / (2048 x 16) per step = 92 steps: scored every 10 steps and at the end.
    assert terms["evaluation"].detail.startswith("10 passes over 0.1 of the data (2,000,000")
    assert project.trials == 10
    once = terms["start-up"].dollars + terms["storage"].dollars
    assert project.total == project.trial_dollars * 10 + once
    # Evaluation is forward only (2N per token): cheaper per token than training.
    assert terms["evaluation"].hours < est.hours * 2_000_000 / 3_000_000

    cheaper = project_cost(arch, est, overrides={"eval_every_steps": 1000, "storage_months": 0})
    assert cheaper.total < project.total
    budget = project_cost(arch, est, budget=float(project.trial_dollars) * 3.5)
    assert budget.trials == 3
    assert project_cost(arch, est, budget=1e9, trials=4).trials == 4


def test_api_jobs_bill_whole_epochs_and_a_minimum() -> None:
    price = ApiPrice(
        provider="together", model="open", min_params_b=0, max_params_b=16, method="lora",
        usd_per_mtok="0.50", minimum_usd="5", source="https://example.com",
        checked=dt.date(2026, 1, 1),
    )  # fmt: skip
    assert price.job_usd(1_000_000, 1.5) == Decimal("5")  # 2 epochs x 1M x 0.50 = 1 < 5
    assert price.job_usd(10_000_000, 1.5) == Decimal("10")  # 2 epochs billed, not 1.5
    fractional = price.model_copy(update={"whole_epochs": False})
    assert fractional.job_usd(10_000_000, 1.5) == Decimal("7.5")
    arch, est = _lora_estimate()
    jobs = api_jobs(arch, est.workload, load_catalog(), "lora")
    assert {j.price.provider for j in jobs} == {"ori", "together"}
    assert all(j.billed_epochs == 2 for j in jobs)
    together = next(j for j in jobs if j.price.provider == "together")
    assert together.price.minimum_usd == 0  # stated: no minimum
    assert together.dollars == Decimal("0.48") * 2 * 2  # 2 whole epochs of 2M tokens


def test_spot_quote_uses_spot_offers_and_restarts(spot_prices: Path) -> None:
    arch, est = _lora_estimate(tokens=20_000_000)
    catalog = load_catalog()
    project = project_cost(arch, est)
    spec = MethodSpec(kind="lora")
    quote = spot_quote(arch, est.workload, spec, catalog, gpu="h100", on_demand=project)
    assert (quote.gpu, quote.provider, quote.usd_per_gpu_hour) == (
        "h100-sxm", "runpod-community", Decimal("1.49")
    )  # fmt: skip
    assert quote.interruption_rate == 0.05
    assert quote.expected_hours > quote.hours == pytest.approx(project.trial_hours)
    calm = spot_quote(arch, est.workload, spec, catalog, gpu="h100", rate_per_hour=0.0)
    assert calm.expected_hours == calm.hours
    assert quote.expected_dollars > calm.expected_dollars
    # No spot price for the GPU: no quote, rather than an on-demand price called spot.
    assert spot_quote(arch, est.workload, spec, catalog, gpu="a10g") is None


def _plan(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["plan", "llama-3.1-8b", "--dataset-tokens", "2000000", *args]
    )
    return result.exit_code, result.stdout, result.stderr


def test_plan_json_has_the_project_and_says_once_that_prices_are_old() -> None:
    code, out, err = _plan("--method", "lora", "--gpu", "h100", "--format", "json")
    assert code == 0, err
    project = json.loads(out)["project"]
    (lora,) = project["methods"]
    assert set(lora["per_trial"]) == {"training", "evaluation", "forgetting"}
    assert set(lora["once"]) == {"start-up", "storage"}
    assert lora["trials"] == 10 and lora["total_dollars"] > lora["trial_dollars"] * 10
    assert project["constants"]["storage_usd_per_gb_month"]["source"].startswith("Amazon S3")
    assert project["spot"] is None
    assert project["prices"]["stale"] is True and project["prices"]["max_age_days"] == 30
    assert err.count("run `paretune prices update` to refresh them") == 1


def test_plan_table_with_spot_and_overrides(spot_prices: Path) -> None:
    code, out, err = _plan(
        "--method", "lora", "--method", "qlora", "--gpu", "h100", "--spot",
        "--interruption-rate", "0.2", "--cost", "storage_months=3", "--sweep-trials", "4",
    )  # fmt: skip
    assert code == 0, err
    assert "whole project ($): one sweep of 4 trials" in out
    assert "for 3 month(s)" in out
    assert "spot, one trial (0.2 interruptions per hour assumed" in out
    spot_rows = [line.split() for line in out.splitlines() if "runpod-community" in line]
    assert [row[0] for row in spot_rows] == ["lora", "qlora"]
    assert "whole epochs billed" in out
    # On-demand, Vast.ai's shipped 2.40 (2026-10-24) still beats the file's 2.69: the notice
    # names the oldest price the plan used, once.
    assert err.count("checked on 2026-10-24") == 1


def test_bad_cost_options_are_user_errors() -> None:
    result = CliRunner().invoke(main, ["plan", "llama-3.1-8b", "--cost", "storage_month=3"])
    assert result.exit_code != 0
    assert "unknown cost constant 'storage_month'" in str(result.exception)
    assert "storage_months" in result.exception.hint
    result = CliRunner().invoke(main, ["plan", "llama-3.1-8b", "--cost", "storage_months"])
    assert "write NAME=VALUE" in str(result.exception)


def test_staleness_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    today = dt.date(2026, 12, 1)
    assert staleness_notice([], today=today) is None
    assert staleness_notice([dt.date(2026, 11, 1)], today=today) is None  # 30 days: not yet
    notice = staleness_notice([dt.date(2026, 11, 20), dt.date(2026, 10, 31)], today=today)
    assert notice.startswith("The prices used here were checked on 2026-10-31, 31 days ago")
    monkeypatch.setenv("PARETUNE_PRICE_MAX_AGE_DAYS", "60")
    assert staleness_notice([dt.date(2026, 10, 31)], today=today) is None


def test_sweep_says_once_that_its_price_is_old(tmp_path: Path) -> None:
    from sweeps.spec import spec_from_text
    from tui.cli.sweep import _price_notice

    def notice(hardware: str) -> str:
        spec = spec_from_text(f'name = "s"\n[hardware]\n{hardware}\n', base_dir=tmp_path)
        out = io.StringIO()
        _price_notice(Console(file=out, width=300), spec)
        return out.getvalue()

    said = notice('gpu = "h100"\nprovider = "lambda"')
    assert said.count("run `paretune prices update`") == 1 and "2026-09-25" in said
    assert notice('gpu = "h100"\nusd_per_hour = 2.5') == ""  # its own price: nothing to refresh
    assert notice("") == ""
