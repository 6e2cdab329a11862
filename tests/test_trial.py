"""Real fine-tunes of the demo model: every method, and evidence that the metrics are real."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pricing.errors import UserError
from sweeps.trial.recipe import TrialError, run_trial, trial_command
from sweeps.trial.types import TrialConfig, TrialResult

# Short trials: a few dozen steps of a ~2M-parameter model. max_new_tokens=4 is enough for
# the demo's one-word answers and keeps greedy generation cheap.
_SHORT = {"max_new_tokens": 4, "eval_every": 10}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these tiny models gain nothing from more, and on a shared 2-core
    machine extra threads only contend (the trials run several times faster this way)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def lora_usual(runs) -> TrialResult:
    """LoRA at rank 8 with its usual learning rate (2e-4 .. 3e-4 in the literature)."""
    return run_trial(
        TrialConfig(
            method="lora", rank=8, alpha=16, lr=3e-4, max_steps=30, run_dir=str(runs), **_SHORT
        )
    )


@pytest.fixture(scope="module")
def full_high_lr(runs) -> TrialResult:
    """Full fine-tuning at 1e-3, twenty times its usual 1e-5 .. 5e-5."""
    return run_trial(
        TrialConfig(method="full", lr=1e-3, max_steps=30, save="none", run_dir=str(runs), **_SHORT)
    )


@pytest.mark.slow
def test_lora_learns_the_task(lora_usual: TrialResult) -> None:
    q = lora_usual.quality
    assert lora_usual.state == "complete"
    assert q.eval_nll < q.base_eval_nll - 1.0
    assert q.base_exact_match == 0.0
    assert [s.step for s in lora_usual.steps] == list(range(1, 31))
    assert [s.step for s in lora_usual.steps if s.eval_nll is not None] == [10, 20, 30]


@pytest.mark.slow
def test_full_fine_tuning_at_high_lr_forgets_more_than_lora(
    lora_usual: TrialResult, full_high_lr: TrialResult
) -> None:
    lora, full = lora_usual.forgetting, full_high_lr.forgetting
    assert full.retain_delta_nll > lora.retain_delta_nll + 0.2
    assert full.retain_kl > lora.retain_kl
    assert full.fact_recall_drop > lora.fact_recall_drop + 0.05
    assert full.base_fact_recall == lora.base_fact_recall >= 0.8


def _tiny_train(folder: Path, demo, rows: int = 6) -> Path:
    lines = demo.train.read_text().splitlines()[:rows]
    path = folder / "tiny.jsonl"
    path.write_text("\n".join(lines[:3] + ["{broken"] + lines[3:]) + "\n")
    return path


@pytest.mark.slow
def test_many_epochs_on_a_tiny_set_overfit_and_early_stopping_keeps_the_best(
    runs, demo, tmp_path
) -> None:
    tiny = _tiny_train(tmp_path, demo)
    settings = {
        "method": "full",
        "lr": 3e-3,
        "train": str(tiny),
        "eval": str(demo.eval),
        "bad_rows": "skip",
        "batch": 6,
        "max_steps": 40,
        "eval_every": 2,
        "warmup_ratio": 0.0,
        "lr_schedule": "constant",
        "save": "none",
        "run_dir": str(runs),
        "max_new_tokens": 4,
    }
    overfit = run_trial(TrialConfig(**settings))
    assert overfit.params["bad_rows_skipped"] == 1
    curve = [s.eval_nll for s in overfit.steps if s.eval_nll is not None]
    assert overfit.quality.overfit_gap > 0.5
    assert overfit.quality.overfit_gap == pytest.approx(overfit.quality.eval_nll - min(curve))
    assert overfit.quality.generalization_gap > 1.0  # train NLL far below eval NLL

    stopped = run_trial(TrialConfig(**settings, early_stopping=True, early_stopping_patience=2))
    stopped_curve = [s.eval_nll for s in stopped.steps if s.eval_nll is not None]
    assert len(stopped.steps) < 40
    assert stopped.quality.eval_nll == pytest.approx(min(stopped_curve), abs=1e-4)
    assert stopped.quality.overfit_gap == pytest.approx(0.0, abs=1e-4)
    assert (
        stopped.quality.best_step
        == stopped.steps[stopped_curve.index(min(stopped_curve)) * 2 + 1].step
    )


@pytest.mark.parametrize("method", ["qlora", "dora", "freeze"])
def test_every_method_runs_end_to_end(method: str, runs) -> None:
    result = run_trial(
        TrialConfig(
            method=method, lr=1e-3, max_steps=4, eval_every=2, run_dir=str(runs), max_new_tokens=4
        )
    )
    assert result.state == "complete"
    assert result.quality.eval_nll < result.quality.base_eval_nll
    f = result.forgetting
    assert f.retain_source == "demo" and math.isfinite(f.retain_kl)
    # The demo's world text, and the base model's own samples beside it.
    assert f.self_retain_kl > 0 and math.isfinite(f.self_retain_delta_nll)
    assert result.measured.tokens > 0 and result.measured.peak_gb > 0
    # No price given, on the CPU: your own machine, at the catalogue's local-cpu price.
    assert result.hardware.cpu_instance == "local-cpu" and result.dollars == 0.0
    trainable, total = result.params["trainable_params"], result.params["total_params"]
    assert 0 < trainable < total
    assert Path(result.artifact).is_dir()


def test_artifacts_model_card_and_reproducing_command(lora_usual: TrialResult) -> None:
    from tui.cli.trial import config_from_spec

    adapter = Path(lora_usual.artifact)
    assert (adapter / "adapter_config.json").exists()
    card = (adapter.parent / "README.md").read_text()
    assert "lora fine-tune of demo" in card and lora_usual.command in card
    # Settings without a flag (run_dir, eval_every, ...): the command runs the saved spec.
    spec = adapter.parent / "trial.toml"
    assert lora_usual.command == f"paretune trial --spec {spec}"
    again = config_from_spec(spec)
    assert again == lora_usual.config


def test_a_config_said_by_flags_reproduces_with_flags() -> None:
    config = TrialConfig(method="lora", rank=8, alpha=16, lr=3e-4, max_steps=30)
    assert trial_command(config) == "paretune trial --demo --method lora --lr 0.0003 --max-steps 30"
    assert trial_command(config.model_copy(update={"eval_every": 5}), Path("t.toml")) == (
        "paretune trial --spec t.toml"
    )


def test_planner_prediction_and_measurements_sit_side_by_side(lora_usual: TrialResult) -> None:
    m, p = lora_usual.measured, lora_usual.predicted
    assert p.peak_gb is not None and p.peak_gb > 0
    # On CPU the trial's own memory (resident set above the baseline after imports) is what
    # the planner predicts, in the precision the trial trained in; torch and the libraries
    # (~0.5 GB) are only in the whole-process peak.
    assert lora_usual.params["precision"] == "fp32"
    assert 0 < m.peak_gb < m.process_peak_gb / 4
    assert p.peak_gb / 10 < m.peak_gb < p.peak_gb * 10
    assert max(step.peak_gb for step in lora_usual.steps) <= m.peak_gb + 1e-4
    assert m.train_s > 0 and m.wall_s >= m.load_s + m.train_s
    assert m.tokens_per_s == pytest.approx(m.tokens / m.train_s)
    assert lora_usual.hardware.device == "cpu" and "torch" in lora_usual.hardware.versions


def test_dollars_use_the_hourly_price(runs) -> None:
    result = run_trial(
        TrialConfig(max_steps=1, usd_per_hour=3.6, save="none", run_dir=str(runs), max_new_tokens=2)
    )
    assert result.dollars == pytest.approx(result.measured.wall_s / 3600 * 3.6)


def test_a_gpu_given_prices_the_run_at_its_cheapest_offer(runs) -> None:
    from pricing import load_catalog

    result = run_trial(
        TrialConfig(max_steps=1, gpu="h100", save="none", run_dir=str(runs), max_new_tokens=2)
    )
    offer = load_catalog().cheapest("h100")
    assert result.hardware.gpu == offer.gpu and result.hardware.provider == offer.provider
    assert result.hardware.usd_per_hour == float(offer.usd_per_hour) > 0
    assert result.dollars == pytest.approx(
        result.measured.wall_s / 3600 * result.hardware.usd_per_hour
    )


@pytest.mark.gpu
def test_on_a_gpu_with_no_price_the_detected_gpu_is_priced(runs) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from pricing import load_catalog
    from sweeps.trial.recipe import _catalog_gpu

    catalog = load_catalog()
    try:
        gpu = _catalog_gpu(catalog, torch.cuda.get_device_name())
    except UserError:
        pytest.skip("the catalogue does not know this GPU")
    result = run_trial(
        TrialConfig(device="cuda", max_steps=1, save="none", run_dir=str(runs), max_new_tokens=2)
    )
    offer = catalog.cheapest(gpu.id)
    assert (result.hardware.gpu, result.hardware.provider) == (gpu.id, offer.provider)
    assert result.hardware.usd_per_hour == float(offer.usd_per_hour)
    assert result.dollars > 0 and result.predicted.hours is not None


def test_unknown_price_ids_fail_before_training(runs) -> None:
    for bad, words in (
        ({"gpu": "h1000"}, "unknown GPU 'h1000'"),
        ({"gpu": "h100", "provider": "nowhere"}, "unknown provider 'nowhere'"),
        ({"cpu_instance": "c99.huge"}, "unknown CPU instance 'c99.huge'"),
        ({"provider": "lambda"}, "prices a GPU, and this trial runs on the CPU"),
    ):
        with pytest.raises(UserError, match=words):
            run_trial(TrialConfig(max_steps=1, device="cpu", run_dir=str(runs), **bad))


def test_bad_input_is_a_user_error_before_training(runs) -> None:
    with pytest.raises(TrialError, match="no linear module named 'q_prj'") as error:
        run_trial(TrialConfig(targets="q_prj", max_steps=1, run_dir=str(runs)))
    assert "q_proj" in error.value.hint
    with pytest.raises(TrialError, match="freeze_trainable_layers=9"):
        run_trial(
            TrialConfig(method="freeze", freeze_trainable_layers=9, max_steps=1, run_dir=str(runs))
        )


def test_epochs_with_gradient_accumulation_checkpointing_and_rslora(runs) -> None:
    """96 training rows, micro-batch 8, 2 micro-batches per step: one epoch is 6 steps."""
    result = run_trial(
        TrialConfig(
            method="lora",
            use_rslora=True,
            targets="attn",
            grad_accum=2,
            grad_checkpointing=True,
            epochs=1,
            lr=1e-3,
            eval_every=3,
            save="none",
            run_dir=str(runs),
            max_new_tokens=2,
        )
    )
    assert result.state == "complete"
    assert [s.step for s in result.steps] == [1, 2, 3, 4, 5, 6]
    assert result.steps[-1].epoch == pytest.approx(1.0)
    # Attention projections only: 4 per layer, A (r x 192) and B (192 x r) each, 4 layers.
    assert result.params["trainable_params"] == 4 * 4 * 2 * 8 * 192


def test_packing_trains_on_packed_rows(runs) -> None:
    result = run_trial(
        TrialConfig(
            packing=True,
            max_seq_len=64,
            batch=4,
            max_steps=2,
            save="none",
            run_dir=str(runs),
            max_new_tokens=2,
        )
    )
    assert result.state == "complete"
    assert result.measured.tokens == 2 * 4 * 64  # full rows, no padding


@pytest.mark.parametrize("optimizer", ["adamw8bit", "adafactor", "sgd"])
def test_other_optimizers(optimizer: str, runs) -> None:
    result = run_trial(
        TrialConfig(
            optimizer=optimizer,
            lr=1e-3,
            max_steps=2,
            eval_every=2,
            save="none",
            run_dir=str(runs),
            max_new_tokens=2,
        )
    )
    assert result.state == "complete"
    assert result.quality.eval_nll < result.quality.base_eval_nll


@pytest.mark.slow
def test_more_trained_parameters_forget_more_at_the_same_lr_and_steps(runs) -> None:
    """Biderman et al. 2024 ("LoRA Learns Less and Forgets Less") and Kalajdzievski 2024
    (forgetting grows with the number of parameters fine-tuned): after 150 steps at one lr,
    LoRA rank 4 < rank 64 < full fine-tuning in forgetting, on the demo's world text and on
    the base model's self-samples alike. Each learns the task. Seeds 0, 1 and 2 keep the order
    (benchmarks/forgetting_literature.py prints the figures)."""
    common = {"lr": 1e-3, "max_steps": 150, "eval_every": 50, "save": "none", "run_dir": str(runs)}
    common["max_new_tokens"] = 4
    low, high, full = (
        run_trial(TrialConfig(**common, **settings))
        for settings in (
            {"method": "lora", "rank": 4, "alpha": 8},
            {"method": "lora", "rank": 64, "alpha": 128},
            {"method": "full"},
        )
    )
    for result in (low, high, full):
        assert result.quality.eval_nll < result.quality.base_eval_nll - 5  # 8.95 -> below 1
    for field in ("retain_delta_nll", "retain_kl", "self_retain_delta_nll", "self_retain_kl"):
        forgot = [getattr(r.forgetting, field) for r in (low, high, full)]
        assert 0 < forgot[0] < forgot[1] < forgot[2], (field, forgot)


def test_the_command_line_refuses_unknown_price_ids_with_exit_2(tmp_path) -> None:
    from conftest import paretune

    for flags, words in (
        (["--gpu", "h1000"], "unknown GPU 'h1000'"),
        (["--gpu", "h100", "--provider", "nowhere"], "unknown provider 'nowhere'"),
        (["--cpu-instance", "c99.huge"], "unknown CPU instance 'c99.huge'"),
    ):
        done = paretune("trial", "--demo", *flags, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before any trial started
