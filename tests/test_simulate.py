"""The step simulator (``planner.simulation.simulate``): real training steps of tiny models on fake
tensors, checked against what each method must allocate."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from planner import MethodSpec, Workload, arch_from_config, memory_terms
from planner.estimation.memory import constants, trainable_params
from planner.simulation.simulate import TERMS, simulate

TINY = dict(
    model_type="llama",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def tiny_arch(layers: int = 2, **changes: object):
    return arch_from_config({**TINY, "num_hidden_layers": layers, **changes}, name=f"tiny-{layers}")


WORKLOAD = Workload(seq_len=64, batch=2)


def without_overhead(terms: dict[str, int]) -> int:
    return sum(v for k, v in terms.items() if k != "framework_overhead")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "grad_checkpointing", "grad_accum"),
    [("full", False, 1), ("lora", True, 2), ("dora", False, 1), ("freeze", True, 1)],
)
def test_extrapolation_matches_a_full_simulation(
    kind: str, grad_checkpointing: bool, grad_accum: int
) -> None:
    """Six identical layers: simulating 2 and 4 and extrapolating gives every phase of
    the six-layer step, byte for byte (within 0.5% for DoRA's weight-norm temporaries)."""
    arch = tiny_arch(6)
    method = MethodSpec(kind=kind, rank=8, grad_checkpointing=grad_checkpointing, freeze_layers=1)
    workload = Workload(seq_len=64, batch=2, grad_accum=grad_accum)
    fast = simulate(arch, workload, method)
    exact = simulate(arch, workload, method, extrapolate=False)
    assert fast.extrapolated and fast.layers_simulated < 6
    assert not exact.extrapolated and exact.layers_simulated == 6
    assert fast.peak_bytes == pytest.approx(exact.peak_bytes, rel=0.005)
    assert fast.peak_phase == exact.peak_phase
    for term in ("weights", "adapter_weights", "optimizer_states"):
        assert fast.breakdown[term] == pytest.approx(exact.breakdown[term], rel=0.005), term


def test_result_adds_up_and_has_the_json_shape_of_plan_simulate() -> None:
    result = simulate(tiny_arch(), WORKLOAD, MethodSpec(kind="lora", rank=8))
    assert tuple(result.breakdown) == TERMS
    assert result.peak_bytes == sum(result.breakdown.values())
    assert result.peak_gb == result.peak_bytes / 1e9
    assert result.peak_phase in result.phases
    assert all(result.peak_bytes >= sum(terms.values()) for terms in result.phases.values())
    out = result.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert set(out) >= {"peak_gb", "breakdown_gb", "layers_simulated", "extrapolated", "recipe"}
    assert out["recipe"] == "planner"
    assert set(out["breakdown_gb"]) == set(TERMS)
    # The overhead is the planner's: context + workspace + fragmentation of short-lived memory.
    c = constants()
    short = result.breakdown["activations"] + result.breakdown["logits_loss"]
    assert result.breakdown["framework_overhead"] == round(
        c["cuda_context_bytes"] + c["cublas_workspace_bytes"] + c["allocator_fragmentation"] * short
    )


def test_full_fine_tune_holds_weights_gradients_and_mixed_precision_adam_states() -> None:
    arch = tiny_arch()
    result = simulate(arch, WORKLOAD, MethodSpec(kind="full", optimizer="adamw"))
    step = result.phases["optimizer_step"]
    n = arch.total_params
    assert 2 * n <= step["weights"] <= 2 * n + 64  # bf16 weights and the rotary table
    assert step["gradients"] == 2 * n
    # fp32 master copy and two fp32 moments, one fp32 step counter per tensor, and at the
    # step's peak one weight's gradient upcast to fp32 (the embedding is the largest).
    assert 12 * n <= step["optimizer_states"] <= 12 * n + 4 * 64 + 4 * arch.vocab * arch.hidden
    bf16 = simulate(arch, WORKLOAD, MethodSpec(kind="full", optimizer="adamw_bf16"))
    assert 4 * n <= bf16.phases["optimizer_step"]["optimizer_states"] <= 4 * n + 4 * 64


def test_adapters_are_fp32_and_only_they_have_gradients_and_states() -> None:
    arch = tiny_arch()
    method = MethodSpec(kind="lora", rank=8, targets="attn")
    result = simulate(arch, WORKLOAD, method)
    adapters = trainable_params(arch, method)
    step = result.phases["optimizer_step"]
    assert step["adapter_weights"] == 4 * adapters  # peft upcasts adapters to fp32
    assert 2 * arch.total_params <= step["weights"] <= 2 * arch.total_params + 64
    assert step["gradients"] == 4 * adapters
    assert 8 * adapters <= step["optimizer_states"] <= 8 * adapters + 4 * 64


def test_qlora_counts_the_quantized_weights_as_nf4() -> None:
    arch = tiny_arch()
    qlora = simulate(arch, WORKLOAD, MethodSpec(kind="qlora", rank=8))
    lora = simulate(arch, WORKLOAD, MethodSpec(kind="lora", rank=8))
    quantized = arch.linear_params
    largest = max(s.d_in * s.d_out for s in arch.linear_shapes())
    nf4 = quantized * (4 + 8 / 64 + 32 / (64 * 256)) / 8  # QLoRA: NF4 + double quantization
    # The 16-bit decoder matrices become NF4, plus one matrix dequantized for its matmul.
    saved = lora.breakdown["weights"] - qlora.breakdown["weights"]
    assert saved == pytest.approx(2 * quantized - nf4 - 2 * largest, abs=1)
    # Same adapters, same activations: QLoRA's base runs in 16-bit for the compute.
    assert qlora.breakdown["adapter_weights"] == lora.breakdown["adapter_weights"]
    assert qlora.breakdown["activations"] == lora.breakdown["activations"]
    assert any("NF4" in note for note in qlora.notes)


def test_eight_bit_optimizer_states_are_the_bitsandbytes_bytes() -> None:
    arch = tiny_arch()
    method = MethodSpec(kind="full", optimizer="adamw8bit")
    step = simulate(arch, WORKLOAD, method).phases["optimizer_step"]
    # bitsandbytes: 1 byte per value and state, an fp32 absmax per 256; tensors under
    # 4096 values (the norms here) keep fp32 states.
    expected = 0
    for numel in _parameter_numels(arch):
        expected += 8 * numel if numel < 4096 else 2 * (numel + 4 * math.ceil(numel / 256))
    assert step["optimizer_states"] == expected


def _parameter_numels(arch) -> list[int]:
    h, i, v, q, kv = arch.hidden, arch.intermediate, arch.vocab, arch.q_dim, arch.kv_dim
    per_layer = [q * h, kv * h, kv * h, h * q, i * h, i * h, h * i, h, h]
    return [v * h] + per_layer * arch.layers + [h, v * h]


def test_freeze_trains_the_top_layers_and_the_final_norm() -> None:
    arch = tiny_arch(4)
    method = MethodSpec(kind="freeze", freeze_layers=1)
    step = simulate(arch, WORKLOAD, method).phases["optimizer_step"]
    assert step["gradients"] == 2 * trainable_params(arch, method)


def test_gradients_persist_through_the_forward_only_when_accumulating() -> None:
    arch = tiny_arch()
    method = MethodSpec(kind="full", grad_checkpointing=True)
    once = simulate(arch, WORKLOAD, method)
    twice = simulate(arch, WORKLOAD.with_(grad_accum=2), method)
    assert once.phases["forward"]["gradients"] == 0
    assert twice.phases["forward"]["gradients"] == 2 * arch.total_params


def test_checkpointing_saves_activations() -> None:
    arch = tiny_arch()
    plain = simulate(arch, WORKLOAD, MethodSpec(kind="lora", rank=8, grad_checkpointing=False))
    checkpointed = simulate(
        arch, WORKLOAD, MethodSpec(kind="lora", rank=8, grad_checkpointing=True)
    )
    assert checkpointed.phases["forward"]["activations"] < plain.phases["forward"]["activations"]


def test_eager_attention_keeps_the_scores_and_flash_runs_as_sdpa() -> None:
    arch = tiny_arch()
    workload = Workload(seq_len=256, batch=1)
    method = MethodSpec(kind="lora", rank=8, grad_checkpointing=False)
    sdpa = simulate(arch, workload, method)
    eager = simulate(arch, workload, method.with_(attention="eager"))
    flash = simulate(arch, workload, method.with_(attention="flash"))
    # Eager keeps softmax probabilities, s x s per head and layer (fp32 upcast then bf16).
    scores = arch.layers * arch.heads * workload.seq_len**2 * 2
    assert eager.phases["forward"]["activations"] - sdpa.phases["forward"]["activations"] >= scores
    assert flash.peak_bytes == sdpa.peak_bytes
    assert any("flash" in note for note in flash.notes)


def test_fp32_weights_compute_under_bf16_autocast() -> None:
    arch = tiny_arch()
    result = simulate(arch, WORKLOAD, MethodSpec(kind="full", precision="fp32"))
    step = result.phases["optimizer_step"]
    assert 4 * arch.total_params <= step["weights"] <= 4 * arch.total_params + 64
    assert step["gradients"] == 4 * arch.total_params


@pytest.mark.parametrize("model_type", ["gemma2", "mixtral"])
def test_families_without_sdpa_or_with_experts_simulate(model_type: str) -> None:
    extra = (
        {"head_dim": 16}
        if model_type == "gemma2"
        else {"num_local_experts": 4, "num_experts_per_tok": 2}
    )
    arch = tiny_arch(model_type=model_type, **extra)
    result = simulate(arch, WORKLOAD, MethodSpec(kind="lora", rank=8))
    assert result.peak_bytes > 0
    if model_type == "gemma2":
        assert any("eager" in note for note in result.notes)
    else:
        # Experts are 3-D parameters in transformers; peft adapts them by parameter.
        step = result.phases["optimizer_step"]
        assert step["adapter_weights"] > 4 * trainable_params(
            arch, MethodSpec(kind="lora", rank=8, targets="attn")
        )


def test_simulated_peak_is_near_the_planner_for_a_checkpointed_full_fine_tune() -> None:
    """The one setting where the planner's activation formula and the step agree today
    (see tests/test_simulate_crosscheck.py for the whole matrix)."""
    arch = tiny_arch()
    method = MethodSpec(kind="full", grad_checkpointing=True)
    sim = simulate(arch, WORKLOAD, method)
    analytic = memory_terms(arch, WORKLOAD, method, on_gpu=False).peak_bytes
    assert without_overhead(sim.breakdown) == pytest.approx(analytic, rel=0.10)


def test_importing_the_simulator_does_not_import_torch() -> None:
    code = "import sys, planner, planner.simulation.simulate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plan_simulate_json(tmp_path) -> None:
    from click.testing import CliRunner

    from tui.cli import main as cli

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            str(config),
            "--simulate",
            "--format",
            "json",
            "--method",
            "lora",
            "--method",
            "full",
            "--seq-len",
            "64",
        ],
    )
    assert result.exit_code == 0, result.output
    methods = json.loads(result.stdout)["methods"]
    assert len(methods) == 2
    for row in methods:
        simulated = row["simulated"]
        assert simulated["peak_gb"] > 0
        assert set(simulated["breakdown_gb"]) == set(TERMS)


def test_plan_simulate_recipe_trial_upcasts_qlora(tmp_path) -> None:
    """``--simulate-recipe trial`` (which implies --simulate) runs QLoRA as a trial does:
    prepare_model_for_kbit_training's fp32 upcast of the unquantized weights makes its peak
    larger than the planner recipe's. The recipe is named in the JSON and under the table."""
    from click.testing import CliRunner

    from tui.cli import main as cli

    # A vocabulary large enough for the upcast (2 B more per embedding and head parameter)
    # to show in the JSON's three decimals of a GB.
    changes = {"vocab_size": 32_000}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, **changes}))
    args = ["plan", str(config), "--method", "qlora", "--seq-len", "64"]

    def simulated(*options: str) -> dict:
        result = CliRunner().invoke(cli, [*args, *options, "--format", "json"])
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)["methods"]
        return row["simulated"]

    planner_recipe = simulated("--simulate")
    assert simulated("--simulate", "--simulate-recipe", "planner") == planner_recipe
    trial_recipe = simulated("--simulate-recipe", "trial")
    assert (planner_recipe["recipe"], trial_recipe["recipe"]) == ("planner", "trial")
    assert trial_recipe["peak_gb"] > planner_recipe["peak_gb"]
    arch = tiny_arch(**changes)
    upcast_gb = 2 * (arch.total_params - arch.linear_params) / 1e9
    weights = trial_recipe["breakdown_gb"]["weights"] - planner_recipe["breakdown_gb"]["weights"]
    assert weights == pytest.approx(upcast_gb, abs=0.002)

    table = CliRunner().invoke(cli, [*args, "--simulate-recipe", "trial"])
    assert table.exit_code == 0, table.output
    assert "sim GB (trial)" in table.output
    assert "each method as `paretune trial` runs it" in " ".join(table.output.split())


def test_trial_recipe_runs_a_step_as_the_trial_loop_does() -> None:
    """sweeps.trial.recipe: fp32 weights under bf16 autocast for full fine-tuning with torch's
    foreach AdamW, whose step holds one fp32 temporary per weight; the loop keeps the bf16
    logits of the last micro-batch through the optimizer step."""
    arch = tiny_arch()
    result = simulate(arch, WORKLOAD, MethodSpec(kind="full"), recipe="trial")
    step = result.phases["optimizer_step"]
    n = arch.total_params
    assert 4 * n <= step["weights"] <= 4 * n + 64
    assert step["gradients"] == 4 * n
    assert 12 * n <= step["optimizer_states"] <= 12 * n + 4 * 64  # two moments + foreach temporary
    logits = WORKLOAD.batch * WORKLOAD.seq_len * arch.vocab * 2
    assert step["activations"] + step["logits_loss"] >= logits


def test_trial_recipe_qlora_upcasts_what_bitsandbytes_did_not_quantize() -> None:
    arch = tiny_arch()
    method = MethodSpec(kind="qlora", rank=8)
    planner_recipe = simulate(arch, WORKLOAD, method).breakdown["weights"]
    trial_recipe = simulate(arch, WORKLOAD, method, recipe="trial").breakdown["weights"]
    # prepare_model_for_kbit_training: embeddings, head and norms from bf16 to fp32.
    unquantized = arch.total_params - arch.linear_params
    assert trial_recipe - planner_recipe == 2 * unquantized


@pytest.mark.slow
def test_trial_recipe_extrapolates_exactly() -> None:
    arch = tiny_arch(6)
    method = MethodSpec(kind="lora", rank=8)
    fast = simulate(arch, WORKLOAD, method, recipe="trial")
    exact = simulate(arch, WORKLOAD, method, recipe="trial", extrapolate=False)
    assert fast.extrapolated and fast.peak_bytes == pytest.approx(exact.peak_bytes, rel=0.005)
