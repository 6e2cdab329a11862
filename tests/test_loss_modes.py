"""The three loss modes: the same loss value, and the memory the planner charges for each
agrees with the simulated step running the same code as the trial."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner import MethodSpec, Workload, arch_from_config, memory_terms  # noqa: E402
from planner.methods import token_loss_sum  # noqa: E402
from planner.simulation.simulate import simulate  # noqa: E402

# Logits dominate: a large vocabulary on a narrow model, as in modern LLMs.
TINY = dict(
    model_type="llama",
    vocab_size=8192,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"}))


@pytest.mark.parametrize("loss", ["chunked", "fused"])
def test_every_mode_computes_the_same_loss(tiny_model, loss: str) -> None:
    ids = torch.randint(0, 8192, (2, 600))
    labels = ids[:, 1:].clone()
    labels[0, :50] = -100  # a prompt that is not scored
    mask = torch.ones_like(ids)
    standard, _ = token_loss_sum(tiny_model, ids, mask, labels, loss="standard")
    other, _ = token_loss_sum(tiny_model, ids, mask, labels, loss=loss)
    assert float(other.detach()) == pytest.approx(float(standard.detach()), rel=1e-5)
    other.backward()
    assert tiny_model.lm_head.weight.grad is not None  # the head still trains through it


def test_fused_refuses_a_soft_capped_head() -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from planner.errors import InvalidSpecError

    config = Gemma2Config(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    model = Gemma2ForCausalLM(config)
    ids = torch.randint(0, 256, (1, 16))
    with pytest.raises(InvalidSpecError, match="soft-capping"):
        token_loss_sum(model, ids, None, ids[:, 1:], loss="fused")


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["standard", "chunked", "fused"])
def test_planner_peak_agrees_with_the_simulated_step_per_loss(loss: str) -> None:
    arch = arch_from_config(TINY, name="tiny-llama")
    work = Workload(seq_len=512, batch=2)
    method = MethodSpec(kind="lora", loss=loss, targets="attn")
    planned = memory_terms(arch, work, method, on_gpu=False)
    simulated = simulate(arch, work, method, extrapolate=False)
    # The simulator adds the CUDA overhead; the planner, off the GPU, does not.
    simulated_bytes = simulated.peak_bytes - simulated.breakdown["framework_overhead"]
    ratio = planned.peak_bytes / simulated_bytes
    assert 0.85 < ratio < 1.15, (loss, planned.breakdown, simulated.breakdown)


@pytest.mark.slow
def test_loss_modes_order_the_simulated_peak() -> None:
    arch = arch_from_config(TINY, name="tiny-llama")
    work = Workload(seq_len=512, batch=2)
    peaks = {
        loss: simulate(arch, work, MethodSpec(kind="lora", loss=loss), extrapolate=False).peak_bytes
        for loss in ("standard", "chunked", "fused")
    }
    assert peaks["standard"] > peaks["chunked"] > peaks["fused"]


@pytest.mark.slow
def test_the_trial_trains_with_each_loss_alike(demo, tmp_path) -> None:
    """A real trial on the demo model: the same seed gives the same step losses whichever
    way the loss is computed, and the prediction describes the same loss."""
    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    losses = {}
    for loss in ("standard", "chunked", "fused"):
        result = run_trial(
            TrialConfig(
                max_steps=2, loss=loss, save="none", run_dir=str(tmp_path), max_new_tokens=2
            )
        )
        assert result.state == "complete"
        losses[loss] = [step.loss for step in result.steps]
    assert losses["chunked"] == pytest.approx(losses["standard"], rel=1e-4)
    assert losses["fused"] == pytest.approx(losses["standard"], rel=1e-4)


def test_sweep_this_plan_keeps_the_planned_loss(tmp_path) -> None:
    from tui.screens.plan_inputs import PlanForm
    from tui.screens.plan_spec import spec_from_plan

    def trial_loss(**form: str) -> tuple[str, str]:
        inputs = {**PlanForm(**form).parse().as_dict(), "methods": ["qlora"]}
        spec = spec_from_plan(inputs, run_dir=tmp_path / "runs", db=tmp_path / "r.duckdb")
        return spec.framework, spec.trial_config({"method": "qlora", "lr": 1e-4}).loss

    assert trial_loss(framework="torchtune") == ("torchtune", "chunked")
    assert trial_loss(framework="torchtune", loss="fused") == ("torchtune", "fused")
    assert trial_loss() == ("hf", "standard")  # transformers' own loss: the trial's default
