"""What autograd keeps for LoRA adapters and for a chunked, trained lm_head, measured on
the CPU with torch's own hooks, against the planner's formulas."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner import MethodSpec, Workload, arch_from_config, memory_terms  # noqa: E402
from planner.estimation.memory import (  # noqa: E402
    _adapter_saved_bytes,
    _loss_phase_with_head,
    constants,
)

TINY = dict(
    model_type="llama",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _saved_activation_bytes(model, ids) -> int:
    """Bytes of the distinct tensors autograd saves in a forward, parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids).logits.sum()
    return sum(saved.values())


def _lora_model(adapters_in_fp32: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
    # Eager attention: the CPU's SDPA picks its kernel by the inputs' strides, which
    # peft's fp32 branch changes; that is not the adapters' memory.
    config._attn_implementation = "eager"
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    return get_peft_model(base, lora, autocast_adapter_dtype=adapters_in_fp32).train()


def test_adapters_keep_their_inputs_as_peft_runs_them() -> None:
    """peft casts each module's input to fp32 adapters (one copy per module); with
    adapters in the compute dtype the cast is a no-op, and q/k/v (and gate/up) keep the one
    norm output they all read."""
    ids = torch.randint(0, 256, (2, 16))
    measured = _saved_activation_bytes(_lora_model(True), ids) - _saved_activation_bytes(
        _lora_model(False), ids
    )
    arch = arch_from_config(TINY, name="tiny")

    def planned(adapter_fp32: bool) -> float:
        method = MethodSpec(kind="lora", rank=4, targets="all", adapter_fp32=adapter_fp32)
        return _adapter_saved_bytes(arch, method, moe=False) * ids.numel() * arch.layers

    assert measured == planned(True) - planned(False)


class _CompiledCrossEntropyLike(torch.autograd.Function):
    """What inductor makes of a chunk's cross-entropy: it keeps the 16-bit chunk and
    returns a fresh 16-bit gradient of it."""

    @staticmethod
    def forward(ctx, logits):
        ctx.save_for_backward(logits)
        return logits.float().sum()

    @staticmethod
    def backward(ctx, grad):
        (logits,) = ctx.saved_tensors
        return torch.ones_like(logits)


def test_chunked_head_gradients_as_autograd_holds_them() -> None:
    """torchtune's chunked output: every chunk's loss backward runs before the head's, and
    the head's per-chunk weight gradients are summed in one buffer, the first time into a
    new tensor: three head gradients beside the logit gradients not yet consumed."""
    from torch.distributed._tools.mem_tracker import MemTracker

    tokens, hidden, vocab = 1024, 384, 8192
    chunks = constants()["chunked_loss_chunks"]
    head = torch.randn(vocab, hidden, dtype=torch.bfloat16, requires_grad=True)
    hidden_states = torch.randn(tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    tracker = MemTracker()
    tracker.track_external(head, hidden_states)
    with tracker:
        logits = [torch.nn.functional.linear(c, head) for c in hidden_states.chunk(chunks)]
        loss = sum(_CompiledCrossEntropyLike.apply(chunk) for chunk in logits)
        del logits
        loss.backward()
    [peak] = tracker.get_tracker_snapshot("peak").values()
    inputs = (head.numel() + hidden_states.numel()) * 2
    measured = peak["Total"] - inputs - hidden_states.numel() * 2  # and its gradient

    arch = arch_from_config({**TINY, "vocab_size": vocab, "hidden_size": hidden}, name="tiny")
    method = MethodSpec(kind="full", loss="chunked", compiled=True)
    logits16 = tokens * vocab * 2
    frozen_head = logits16 * (1 + 1 / chunks)
    planned = _loss_phase_with_head(arch, method, tokens, frozen_head, vocab * hidden * 2)
    head_bytes = vocab * hidden * 2
    assert planned == logits16 * (chunks - 2) / chunks + 3 * head_bytes
    assert measured == pytest.approx(planned, rel=0.02)


def test_trained_head_under_chunked_loss_is_charged_beside_the_logits() -> None:
    """Full fine-tuning with torchtune's chunked loss: at the loss phase the 16-bit logit
    gradients still waiting sit beside the head's gradients (three at the first sum); a
    frozen head (LoRA) adds nothing there."""
    llama = arch_from_config(
        {**TINY, "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336},
        name="wide",
    )
    work = Workload(seq_len=2048, batch=2)
    tokens = work.seq_len * work.batch
    chunks = constants()["chunked_loss_chunks"]
    logits16 = tokens * llama.vocab * 2
    head = llama.vocab * llama.hidden * 2
    full = MethodSpec(
        kind="full",
        loss="chunked",
        compiled=True,
        optimizer="adamw_bf16",
        optimizer_in_backward=True,
    )
    terms = memory_terms(llama, work, full).breakdown
    assert terms["logits_loss"] + terms["gradients"] == pytest.approx(
        logits16 * (chunks - 2) / chunks + 3 * head, rel=1e-6
    )
    lora = memory_terms(llama, work, MethodSpec(kind="lora", loss="chunked", compiled=True))
    assert lora.breakdown["logits_loss"] == pytest.approx(logits16 * (1 + 1 / chunks))
