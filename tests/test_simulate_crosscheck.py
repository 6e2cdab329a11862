"""Cross-check, both ways: the analytic planner against the simulated training step.

For every architecture family of the catalogue (as a tiny config), every memory method,
with and without gradient checkpointing, at two sequence lengths, each memory term that
both compute must agree within 10%. The cells where they do not agree today are listed in
``DISAGREEING`` with the reason found, and run as strict expected failures: they show in
every test report (``xfailed``), and a fix that makes one agree shows as a failure until
the cell is taken off the list.
"""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("torch")

from planner import MethodSpec, Workload, arch_from_config, list_models, memory_terms
from planner.simulation.simulate import simulate

TOLERANCE = 0.10

_DENSE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
FAMILIES: dict[str, dict[str, object]] = {
    "llama": dict(_DENSE, model_type="llama"),
    "mistral": dict(_DENSE, model_type="mistral"),
    "qwen2": dict(_DENSE, model_type="qwen2"),
    "qwen3": dict(_DENSE, model_type="qwen3", head_dim=16),
    "qwen2_moe": dict(
        _DENSE,
        model_type="qwen2_moe",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
    ),
    "qwen3_moe": dict(
        _DENSE,
        model_type="qwen3_moe",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        head_dim=16,
    ),
    "mixtral": dict(_DENSE, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "gemma2": dict(_DENSE, model_type="gemma2", head_dim=16),
    "gemma3_text": dict(_DENSE, model_type="gemma3_text", head_dim=16),
    "phi3": dict(_DENSE, model_type="phi3"),
    "gpt2": dict(
        model_type="gpt2", vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=256
    ),
    "bloom": dict(model_type="bloom", vocab_size=256, hidden_size=64, n_layer=2, n_head=4),
}
METHODS = ("full", "lora", "qlora", "dora")
SEQ_LENS = (32, 128)

# Where the planner and the step disagree by more than 10% today, and why. Only the
# activation term disagrees (and the peak, which follows from it): the simulated step runs
# the real transformers/peft code, so the formula is what is off, except for gpt2. These
# are residual gaps at tiny sizes, where per-token constants weigh more than at 7B (there
# the two agree within a few percent, see benchmarks/simulate_vs_analytic.py).
_MOE_WHY = "MoE routing buffers and the experts' LoRA deltas are missing from the formula"
WHY: dict[str, str] = {
    "qwen2_moe": _MOE_WHY,
    "qwen3_moe": _MOE_WHY,
    "mixtral": _MOE_WHY + "; its checkpointed layers hold more than the formula's working set",
    "gemma2": "checkpointed layers hold more than the formula's working set",
    "gemma3_text": "Gemma 3's extra norms with full fine-tuning are missing from the formula",
    "bloom": "checkpointed layers hold more than the formula's working set",
    # The simulator's gap: gpt2 trains with attention dropout, which the CPU flash kernel
    # lacks, so the CPU runs SDPA's math kernel and keeps s x s scores and masks that
    # CUDA's flash kernel would not.
    "gpt2": "attention dropout runs SDPA's math kernel on the CPU (s x s scores and masks)",
}
# (method, checkpointing, sequence length) cells of each family where a term is off by
# more than TOLERANCE today. Each is an expected failure, strictly: when a fix makes a
# cell agree, the run fails until the cell is taken off this list.
DISAGREEING: dict[str, set[tuple[str, bool, int]]] = {
    "qwen2_moe": {
        *itertools.product(("full", "lora", "qlora"), (False, True), SEQ_LENS),
        ("dora", False, 32),
    },
    "qwen3_moe": {
        ("full", False, 128),
        ("full", True, 128),
        *itertools.product(("lora", "qlora"), (False, True), SEQ_LENS),
    },
    "mixtral": {
        ("full", True, 128),
        *itertools.product(("lora", "qlora"), (False, True), SEQ_LENS),
    },
    "gemma2": {("full", True, 32), ("full", True, 128)},
    "gemma3_text": set(itertools.product(("full",), (False, True), SEQ_LENS)),
    "gpt2": {
        *itertools.product(("full",), (False, True), SEQ_LENS),
        *itertools.product(("lora", "qlora", "dora"), (False,), SEQ_LENS),
        ("lora", True, 128),
        ("qlora", True, 128),
        ("dora", True, 128),
    },
    "bloom": {
        ("full", True, 32),
        ("full", True, 128),
        ("lora", True, 32),
        ("qlora", True, 32),
    },
}


def _disagreements(family: str, kind: str, checkpointing: bool, seq_len: int) -> dict[str, str]:
    arch = arch_from_config(FAMILIES[family], name=f"tiny-{family}")
    method = MethodSpec(kind=kind, rank=8, grad_checkpointing=checkpointing)
    workload = Workload(seq_len=seq_len, batch=2)
    sim = simulate(arch, workload, method)
    analytic = memory_terms(arch, workload, method, on_gpu=False)
    a = analytic.breakdown
    step = sim.phases["optimizer_step"]
    gradient_bytes = 4 if method.uses_adapters else 2
    short_lived = max(
        t["activations"] + t["logits_loss"]
        for phase, t in sim.phases.items()
        if phase != "optimizer_step"
    )
    pairs = {
        "weights": (a["weights"], step["weights"]),
        "adapter_weights": (a["adapter_weights"], step["adapter_weights"]),
        # The planner charges gradients only beyond the loss-phase memory (they never
        # coexist); the gradients themselves are compared here, all alive in the step.
        "gradient_size": (analytic.trainable_params * gradient_bytes, step["gradients"]),
        "optimizer_states": (a["optimizer_states"], step["optimizer_states"]),
        "activations": (a["activations"] + a["logits_loss"], short_lived),
        "peak": (analytic.peak_bytes, sim.peak_bytes - sim.breakdown["framework_overhead"]),
    }
    out = {}
    for term, (planned, simulated) in pairs.items():
        if abs(planned - simulated) > TOLERANCE * max(planned, simulated, 1):
            out[term] = (
                f"planner {planned:,} vs simulated {simulated:,} ({simulated / max(planned, 1):.2f}x)"
            )
    return out


def test_matrix_covers_every_catalogue_family() -> None:
    assert set(FAMILIES) == {arch.model_type for arch in list_models()}
    assert set(DISAGREEING) == set(WHY) <= set(FAMILIES)
    for cells in DISAGREEING.values():
        assert cells <= set(itertools.product(METHODS, (False, True), SEQ_LENS))


class ActivationsGap(AssertionError):
    """The planner's activation term (and the peak) off by more than TOLERANCE."""


def _cell(family: str, kind: str, checkpointing: bool, seq_len: int) -> object:
    if (kind, checkpointing, seq_len) not in DISAGREEING.get(family, set()):
        return (family, kind, checkpointing, seq_len)
    return pytest.param(
        family,
        kind,
        checkpointing,
        seq_len,
        marks=pytest.mark.xfail(strict=True, raises=ActivationsGap, reason=WHY[family]),
    )


CELLS = [
    _cell(family, kind, checkpointing, seq_len)
    for family, kind, checkpointing, seq_len in itertools.product(
        FAMILIES, METHODS, (False, True), SEQ_LENS
    )
]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "kind", "checkpointing", "seq_len"), CELLS)
def test_planner_agrees_with_the_simulated_step(
    family: str, kind: str, checkpointing: bool, seq_len: int
) -> None:
    found = _disagreements(family, kind, checkpointing, seq_len)
    # An expected failure is a gap in the activations (and so the peak) only: any other
    # term off fails the cell for real.
    others = {t: v for t, v in found.items() if t not in ("activations", "peak")}
    assert not others, f"planner off by more than {TOLERANCE:.0%}: {others}"
    if found:
        raise ActivationsGap(f"planner off by more than {TOLERANCE:.0%}: {found}")


def test_freeze_with_checkpointing_backpropagates_through_every_layer() -> None:
    # transformers' checkpointing makes the embedding output require grad, so a model
    # whose top layer alone trains still keeps every layer's checkpoint and runs every
    # layer's backward: the planner charges all of them, as the simulated step holds.
    arch = arch_from_config(dict(FAMILIES["llama"], num_hidden_layers=6), name="tiny-llama-6")
    method = MethodSpec(kind="freeze", freeze_layers=1, grad_checkpointing=True)
    workload = Workload(seq_len=128, batch=2)
    sim = simulate(arch, workload, method, extrapolate=False)
    analytic = memory_terms(arch, workload, method, on_gpu=False).breakdown
    simulated = max(
        t["activations"] + t["logits_loss"]
        for phase, t in sim.phases.items()
        if phase != "optimizer_step"
    )
    planned = analytic["activations"] + analytic["logits_loss"]
    # Within 20% (the recomputed layer's backward holds a little more than the formula's
    # working set, as for every checkpointed method but full: 12% here). Charging the top
    # layer's checkpoint alone would leave five layers' inputs out: 26% too little.
    assert abs(planned - simulated) <= 0.20 * simulated
