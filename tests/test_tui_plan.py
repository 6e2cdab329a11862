"""The plan screen: recomputes on every change, errors inline, simulate, sweep this plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.spec import load_spec
from tui.app import ParetuneApp
from tui.screens.plan_inputs import BadInput, PlanForm, parse_tokens, plan_command
from tui.widgets import ErrorLine

TINY_CONFIG = {
    "model_type": "llama",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
}


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder


def peak_column(app) -> list[str]:
    table = app.screen.query_one("#methods")
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


async def _type(pilot, widget_id: str, text: str) -> None:
    field = pilot.app.screen.query_one(f"#{widget_id}")
    field.value = text
    await pilot.pause()


async def _settle(pilot) -> None:
    await pilot.pause(0.4)  # the model lookup waits for typing to pause
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_table_follows_model_and_sequence_length(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = peak_column(app)
        assert len(first) == 5 and all(float(v.replace(",", "")) > 0 for v in first)
        await _type(pilot, "seq-len", "8192")
        longer = peak_column(app)
        assert all(
            float(a.replace(",", "")) > float(b.replace(",", ""))
            for a, b in zip(longer, first, strict=False)
        )
        await _type(pilot, "model", "qwen2.5-0.5b")
        await _settle(pilot)
        smaller = peak_column(app)
        assert smaller != longer
        assert app.screen.view.request.model == "qwen2.5-0.5b"
        assert app.screen.view.total_params_b < 1
        assert not app.screen.query_one("#plan-error", ErrorLine).shown


async def test_local_config_folder_is_resolved(tmp_path: Path, tiny_model: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await _type(pilot, "model", str(tiny_model))
        await _settle(pilot)
        assert not app.screen.query_one("#plan-error", ErrorLine).shown
        assert app.screen.view.total_params_b < 0.001


async def test_bad_model_and_bad_number_show_inline_errors(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        before = peak_column(app)
        await _type(pilot, "model", "no-such-model-xyz")
        await _settle(pilot)
        error = app.screen.query_one("#plan-error", ErrorLine)
        assert error.shown
        assert "Unknown model" in str(error.render())
        assert "no-such-model-xyz" in str(error.render())
        assert peak_column(app) == before  # the last good plan stays on screen
        await pilot.press("ctrl+w")  # nothing is swept under a name that did not resolve
        await pilot.pause()
        assert app.screen.query_one("#plan-error", ErrorLine).shown
        assert not (tmp_path / "specs").exists()
        await _type(pilot, "model", "llama-3.1-8b")
        await _settle(pilot)
        assert not error.shown
        await _type(pilot, "batch", "two")
        assert error.shown and "micro-batch" in str(error.render())
        await _type(pilot, "batch", "2")
        assert not error.shown


async def test_simulate_fills_the_simulated_column(tmp_path: Path, tiny_model: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await _type(pilot, "model", str(tiny_model))
        await _settle(pilot)
        await _type(pilot, "seq-len", "256")
        await _type(pilot, "batch", "1")
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#methods")
        simulated = [str(table.get_row_at(i)[6]) for i in range(table.row_count)]
        assert all(simulated), simulated
        assert set(app.screen.simulated) == {"full", "lora", "qlora", "dora", "freeze"}
        assert all(gb > 0 for gb in app.screen.simulated.values())
        # full fine-tuning keeps gradients and optimizer states of every weight: the largest
        assert max(app.screen.simulated, key=app.screen.simulated.get) == "full"


async def test_sweep_this_plan_opens_a_spec_that_loads(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb", run_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen.query_one("#seq-len").focus()  # even from a text field
        await pilot.press("ctrl+w")
        await _settle(pilot)
        screen = app.screen
        assert screen.query_one("#sweeps-tabs").active == "spec-tab"
        spec = load_spec(screen.spec_path)
        assert spec.model == "llama-3.1-8b" and spec.hardware.gpu == "h100-sxm"
        # the planned methods that fit on one H100 (full fine-tuning of 8B does not)
        assert "full" not in spec.search.methods and "lora" in spec.search.methods


def test_form_parsing_and_command_line() -> None:
    assert parse_tokens("20M") == 20_000_000
    assert parse_tokens("50k x 400") == 20_000_000
    assert parse_tokens("1.5e6") == 1_500_000
    with pytest.raises(BadInput, match="dataset size"):
        parse_tokens("lots")
    with pytest.raises(BadInput, match="epochs"):
        PlanForm(epochs="0").parse()
    command = plan_command(
        PlanForm(provider="lambda", gpus="2", sharding="zero3", grad_checkpointing=False).parse()
    )
    assert "--gpus 2 --sharding zero3" in command
    assert command.startswith("paretune plan llama-3.1-8b --seq-len 2048")
    assert "--provider lambda" in command and "--no-grad-checkpointing" in command
    # The framework options appear only where they differ from the command's defaults.
    assert "--optimizer-in-backward" not in command and "--logit-copies" not in command
    framework = plan_command(
        PlanForm(
            grad_accum="1", optimizer_in_backward=True, unquantized_fp32=True, logit_copies="5"
        ).parse()
    )
    assert framework.endswith("--optimizer-in-backward --unquantized-fp32 --logit-copies 5")
    for copies in ("abc", "0", "2.5"):
        with pytest.raises(BadInput, match="logit copies"):
            PlanForm(logit_copies=copies).parse()
    with pytest.raises(BadInput, match="grad accum must be 1, got 4"):
        PlanForm(grad_accum="4", optimizer_in_backward=True).parse()


async def test_copied_command_prints_the_same_plan(tmp_path: Path) -> None:
    import shlex
    import subprocess
    import sys

    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await _type(pilot, "seq-len", "1024")
        await _type(pilot, "dataset", "10k x 500")
        # Every framework option away from its default: the command must carry them all.
        await _type(pilot, "grad-accum", "1")
        await _type(pilot, "logit-copies", "4")
        await pilot.click("#opt-in-bwd")
        await pilot.click("#unquantized-fp32")
        await pilot.pause()
        assert not app.screen.query_one("#plan-error", ErrorLine).shown
        await pilot.press("ctrl+y")
        await pilot.pause()
        command = app.clipboard
        shown = {row.method: row for row in app.screen.view.rows}
    words = shlex.split(command)
    assert words[:2] == ["paretune", "plan"] and "--dataset-tokens" in words
    assert {"--optimizer-in-backward", "--unquantized-fp32", "--logit-copies"} <= set(words)
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", *words[1:], "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = {m["method"]: m for m in json.loads(done.stdout)["methods"]}
    assert all(
        (
            m["framework"]["optimizer_in_backward"],
            m["framework"]["unquantized_fp32"],
            m["framework"]["logit_copies"],
        )
        == (True, True, 4)
        for m in printed.values()
    )
    for method, row in printed.items():
        assert row["peak_gb"] == pytest.approx(shown[method].peak_gb, abs=1e-3)
        assert row["fits"] == shown[method].fits
        if shown[method].dollars is None:
            assert row["dollars"] is None
        else:
            assert row["dollars"] == pytest.approx(shown[method].dollars)


async def test_provider_and_gpu_count_change_the_plan(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        cheapest = app.screen.view.row("lora")
        app.screen.query_one("#provider").value = "lambda"
        await pilot.pause()
        at_lambda = app.screen.view.row("lora")
        assert at_lambda.provider == "lambda" and cheapest.provider != "lambda"
        assert at_lambda.dollars > cheapest.dollars  # the default is the cheapest provider
        assert app.screen.view.row("full").fits is False
        await _type(pilot, "gpus", "4")
        assert app.screen.view.row("full").fits is False  # four full copies: data parallel
        app.screen.query_one("#sharding").value = "zero3"
        await pilot.pause()
        assert app.screen.view.row("full").fits is True  # split four ways
        assert "4× h100-sxm" in str(app.screen.query_one("#cheapest").render())


async def test_targets_take_module_names_and_unknown_ones_are_inline_errors(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        every = app.screen.view.row("lora").breakdown_gb["adapter_weights"]
        await _type(pilot, "targets", "q_proj,v_proj")
        two = app.screen.view.row("lora").breakdown_gb["adapter_weights"]
        assert 0 < two < every
        await _type(pilot, "targets", "q_proj,no_such_proj")
        error = app.screen.query_one("#plan-error", ErrorLine)
        assert error.shown and "no_such_proj" in str(error.render())


def peak_of(app, method: str) -> float:
    """The peak GB the table shows for ``method``."""
    table = app.screen.query_one("#methods")
    return float(str(table.get_row(method)[1]).replace(",", ""))


async def test_framework_options_move_the_peaks_the_right_way(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await _type(pilot, "grad-accum", "1")  # optimizer in backward needs it
        before = {m: peak_of(app, m) for m in ("full", "lora", "qlora")}

        # Each parameter steps and frees its gradient in the backward: full fine-tuning
        # never holds all of its 8B gradients.
        await pilot.click("#opt-in-bwd")
        await pilot.pause()
        assert app.screen.query_one("#opt-in-bwd").value is True
        assert peak_of(app, "full") < before["full"]
        await pilot.click("#opt-in-bwd")
        await pilot.pause()
        assert peak_of(app, "full") == before["full"]

        # More fp32 copies of the logits in the loss backward: a higher peak, for every method.
        await _type(pilot, "logit-copies", "5")
        assert all(peak_of(app, m) > before[m] for m in before)
        await _type(pilot, "logit-copies", "3")
        assert {m: peak_of(app, m) for m in before} == before

        # QLoRA's unquantized embeddings, head and norms in fp32: only QLoRA grows.
        await pilot.click("#unquantized-fp32")
        await pilot.pause()
        assert peak_of(app, "qlora") > before["qlora"]
        assert peak_of(app, "lora") == before["lora"] and peak_of(app, "full") == before["full"]
        assert not app.screen.query_one("#plan-error", ErrorLine).shown


async def test_bad_framework_options_are_inline_errors(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        error = app.screen.query_one("#plan-error", ErrorLine)
        before = peak_column(app)
        for bad in ("abc", "0"):
            await _type(pilot, "logit-copies", bad)
            assert error.shown and "logit copies" in str(error.render())
            assert peak_column(app) == before  # the last good plan stays on screen
        await _type(pilot, "logit-copies", "3")
        assert not error.shown
        # Accumulating over 4 micro-batches is what optimizer in backward cannot do.
        await _type(pilot, "grad-accum", "4")
        await pilot.click("#opt-in-bwd")
        await pilot.pause()
        assert error.shown and "grad accum must be 1, got 4" in str(error.render())
        await pilot.press("ctrl+y")  # nothing is copied while the form is bad
        await pilot.pause()
        assert "--optimizer-in-backward" not in (app.clipboard or "")
        await _type(pilot, "grad-accum", "1")
        assert not error.shown


async def test_project_cost_and_stale_prices_are_shown(tmp_path: Path) -> None:
    import datetime as dt

    app = ParetuneApp(db=tmp_path / "results.duckdb", today=dt.date(2026, 12, 1))
    async with app.run_test(size=(120, 60)) as pilot:
        await _settle(pilot)
        text = _plain(app.screen.query_one("#project-cost").content)
        assert "Whole project of" in text and "a sweep of 10 trials" in text
        for term in ("training / trial", "evaluation / trial", "forgetting / trial", "start-up",
                     "storage", "total"):  # fmt: skip
            assert term in text
        age = _plain(app.screen.query_one("#price-age").content)
        assert "run `paretune prices update`" in age  # the shipped prices are past 30 days


def _plain(renderable) -> str:
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def test_framework_select_replans_and_names_what_it_changed(tmp_path: Path) -> None:
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        transformers = app.screen.view.row("qlora")
        assert transformers.term_notes == {}
        app.screen.query_one("#framework").value = "torchtune"
        await pilot.pause()
        torchtune = app.screen.view.row("qlora")
        assert torchtune.breakdown_gb["logits_loss"] < transformers.breakdown_gb["logits_loss"]
        assert "chunked CE" in torchtune.term_notes["logits_loss"]
        app.screen.query_one("#loss").value = "standard"  # the form's choice wins
        await pilot.pause()
        assert app.screen.view.row("qlora").breakdown_gb["logits_loss"] == pytest.approx(
            transformers.breakdown_gb["logits_loss"]
        )
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert "--framework torchtune --loss standard" in (app.clipboard or "")


def _write_lora_profile(request, scale: float) -> Path:
    """A profile at the user's default path fitted from three LoRA runs on the request's GPU
    whose measured peaks are ``scale`` times the planner's prediction."""
    from planner import estimate, resolve_model
    from planner.calibration import Run, build_profile, default_profile_path
    from tui.screens.plan_inputs import planner_inputs

    arch = resolve_model(request.model)
    runs = []
    for seq_len in (request.seq_len // 2, request.seq_len, request.seq_len * 2):
        workload, method = planner_inputs(
            request.__class__(**{**request.__dict__, "seq_len": seq_len}), "lora"
        )
        est = estimate(arch, workload, method, gpu=request.gpu)
        runs.append(
            Run(
                source="measured",
                device=request.gpu,
                method="lora",
                framework="hf",
                model=request.model,
                seq_len=seq_len,
                batch=request.batch,
                breakdown=dict(est.breakdown),
                measured_peak_bytes=scale * est.peak_bytes,
            )
        )
    path = default_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    build_profile(runs, min_runs=1).write(path)
    return path


async def test_the_users_calibration_profile_corrects_the_plan_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    request = PlanForm().parse()
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        plain = app.screen.view.row("lora")
        assert plain.calibration == ""
    path = _write_lora_profile(request, scale=1.5)

    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        view = app.screen.view
        lora = view.row("lora")
        assert lora.calibration.startswith(f"calibrated from 3 runs on {request.gpu}")
        assert lora.peak_gb == pytest.approx(1.5 * plain.peak_gb, rel=0.1)
        # Methods the profile has no runs of keep the planner's figures, and say why.
        assert view.row("qlora").calibration.startswith("not calibrated")
        shown = " ".join(_plain(app.screen.query_one("#breakdown").content).split())
        assert f"calibration profile {path}" in shown

    # The same numbers as `paretune plan` reading the same profile.
    from click.testing import CliRunner

    from tui.cli import main

    words = plan_command(request).split()[2:]
    printed = CliRunner().invoke(main, ["plan", *words, "--format", "json"])
    assert printed.exit_code == 0, printed.output
    rows = {m["method"]: m for m in json.loads(printed.stdout)["methods"]}
    printed_terms = rows["lora"]["breakdown_gb"]
    assert sum(printed_terms.values()) == pytest.approx(sum(lora.breakdown_gb.values()), abs=0.01)


async def test_an_unreadable_profile_is_said_on_the_screen_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planner.calibration import default_profile_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = default_profile_path()
    path.parent.mkdir(parents=True)
    path.write_text("version = [unclosed")
    app = ParetuneApp(db=tmp_path / "results.duckdb")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.screen.view.row("lora").calibration == ""
        shown = " ".join(_plain(app.screen.query_one("#breakdown").content).split())
        assert "calibration profile unreadable, plans uncalibrated" in shown
