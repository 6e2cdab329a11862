"""Peak GPU memory of one training step, as named terms in bytes.

Every term is computed for one GPU. ``peak = sum(terms)``: the loss phase (logits)
and the backward of a recomputed layer never hold memory at the same time, so the
recomputed layer is charged only for what it needs beyond the memory the loss freed.
Each formula names its source; constants live in ``planner/data/constants.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from planner.errors import InvalidSpecError
from planner.estimation.arch import LinearShape, ModelArch
from planner.specs import MethodSpec, Workload
from pricing.errors import did_you_mean

__all__ = [
    "TERMS",
    "MemoryTerms",
    "constants",
    "logits_loss_bytes",
    "memory_terms",
    "state_bytes",
    "targeted_shapes",
    "trainable_params",
    "zero_bucket_bytes",
]

TERMS = (
    "weights",
    "adapter_weights",
    "gradients",
    "optimizer_states",
    "activations",
    "logits_loss",
    "framework_overhead",
)
"""Breakdown keys, in the order they are shown."""


@cache
def constants() -> dict[str, Any]:
    """The planner's constants (value per name); sources are in the JSON file."""
    text = resources.files("planner").joinpath("data/constants.json").read_text(encoding="utf-8")
    return {k: v["value"] for k, v in json.loads(text).items() if not k.startswith("_")}


# -- which modules an adapter method trains ----------------------------------------------


def targeted_shapes(arch: ModelArch, method: MethodSpec) -> tuple[LinearShape, ...]:
    """The Linear layers LoRA/DoRA adapt for ``method.targets`` on ``arch``.

    ``attn``/``mlp``/``all`` select groups (``all`` is peft's ``all-linear`` minus the
    lm_head); a tuple selects modules by name (``q_proj`` or ``experts.down_proj``).
    Raises :class:`InvalidSpecError` for a name the architecture does not have.
    """
    shapes = arch.linear_shapes()
    targets = method.targets
    if method.kind == "dora" and targets in ("all", "mlp"):
        # peft applies DoRA only to modules, and transformers 5 stores each MoE layer's
        # experts as one 3-D parameter: DoRA adapts the rest.
        shapes = tuple(s for s in shapes if not s.name.startswith("experts."))
    if targets == "all":
        return shapes
    if targets in ("attn", "mlp"):
        return tuple(s for s in shapes if s.group == targets)
    wanted = set(targets)
    if method.kind == "dora":
        if any(t.startswith("experts.") for t in wanted):
            raise InvalidSpecError(
                f"method: DoRA cannot adapt the expert parameters of {arch.name}",
                "transformers stores each MoE layer's experts as one 3-D parameter, which "
                "peft adapts with LoRA only; use --method lora for experts.",
            )
        shapes = tuple(s for s in shapes if not s.name.startswith("experts."))
    elif arch.is_moe and wanted & {"gate_proj", "up_proj", "experts.gate_proj", "experts.up_proj"}:
        wanted.add("experts.gate_up_proj")  # the experts' gate and up are one parameter
    chosen = tuple(s for s in shapes if s.name in wanted or s.name.rsplit(".", 1)[-1] in wanted)
    known = {s.name for s in shapes} | {s.name.rsplit(".", 1)[-1] for s in shapes}
    if arch.is_moe:
        known |= {"experts.gate_proj", "experts.up_proj", "gate_proj", "up_proj"}
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidSpecError(
            f"method: unknown target module {unknown[0]!r} for {arch.name} ({arch.model_type})",
            did_you_mean(unknown[0], sorted(known | {"attn", "mlp", "all"})),
        )
    return chosen


def _adapter_params(arch: ModelArch, method: MethodSpec) -> int:
    """LoRA: r·(d_in + d_out) per adapted Linear (Hu et al. 2021, section 4); DoRA adds a
    magnitude vector of d_out per module (Liu et al. 2024, eq. 5)."""
    r = method.rank
    total = 0
    for s in targeted_shapes(arch, method):
        per_module = r * (s.d_in + s.d_out) + (s.d_out if method.kind == "dora" else 0)
        total += per_module * s.count * s.layers
    return total


def _trained_layers(arch: ModelArch, method: MethodSpec) -> int:
    """Decoder layers gradients flow through: all, or the top k for ``freeze``."""
    if method.kind == "freeze":
        return min(method.freeze_layers, arch.layers)
    return arch.layers


def trainable_params(arch: ModelArch, method: MethodSpec) -> int:
    """Parameters with gradients: all (full), the top k layers plus the final norm
    (freeze, LLaMA-Factory's ``freeze_trainable_layers``), or the adapters."""
    if method.kind == "full":
        return arch.total_params
    if method.kind == "freeze":
        final_norm = arch.hidden * (2 if arch.layer_norm else 1)
        return arch.layer_params * _trained_layers(arch, method) + final_norm
    return _adapter_params(arch, method)


# -- the terms ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryTerms:
    """Bytes per term on one GPU, and the facts derived on the way."""

    breakdown: dict[str, int]
    trainable_params: int
    adapter_params: int
    context_bytes: int = 0
    reserve_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        """What ``nvidia-smi`` shows at the peak: every term, overhead included."""
        return sum(self.breakdown.values())

    @property
    def allocated_bytes(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` reports: the peak less the CUDA context
        (outside the allocator) and the allocator's reserve (cached, not allocated)."""
        return self.peak_bytes - self.context_bytes - self.reserve_bytes


def _adafactor_states(arch: ModelArch, method: MethodSpec) -> int:
    """Adafactor (Shazeer & Stern 2018, section 3): an fp32 row and column accumulator
    per matrix, a full fp32 accumulator per vector; no first moment by default."""
    if method.uses_adapters:
        total = 0
        for s in targeted_shapes(arch, method):
            # A: r x d_in, B: d_out x r, DoRA magnitude: a vector of d_out.
            per = (method.rank + s.d_in) + (s.d_out + method.rank)
            per += s.d_out if method.kind == "dora" else 0
            total += per * s.count * s.layers
        return 4 * total
    layer_fraction = _trained_layers(arch, method) / arch.layers
    matrices = 0
    vectors = 0
    for s in arch.linear_shapes():
        matrices += (s.d_in + s.d_out) * s.count * s.layers
        vectors += (s.d_out if s.bias else 0) * s.count * s.layers
    vectors += arch.norm_params
    if method.kind == "freeze":
        return int(4 * (matrices + vectors) * layer_fraction)
    matrices += arch.router_params // max(arch.experts, 1) + (arch.vocab + arch.hidden)
    if not arch.tied_embeddings:
        matrices += arch.vocab + arch.hidden
    if arch.learned_positions:
        matrices += arch.learned_positions + arch.hidden
    return 4 * (matrices + vectors)


def _optimizer_bytes(
    arch: ModelArch, method: MethodSpec, trainable: int, trainable_dtype_bytes: int
) -> int:
    per_param = constants()["optimizer_bytes_per_param"]
    opt = method.optimizer
    if opt == "adafactor":
        return _adafactor_states(arch, method)
    if opt == "sgd":
        # torch.optim.SGD: one momentum buffer shaped and typed like the parameter.
        return trainable * trainable_dtype_bytes
    if opt == "adamw":
        # Mixed precision (ZeRO section 3.1): 16-bit trainables get an fp32 master copy +
        # two fp32 moments (12 B); fp32 trainables (adapters, fp32 runs) just the moments (8 B).
        return trainable * (12 if trainable_dtype_bytes == 2 else 8)
    if opt == "adamw_bf16":
        # Moments in the parameter dtype: 2 x 2 B for bf16 weights, 2 x 4 B for fp32 adapters.
        return trainable * 2 * trainable_dtype_bytes
    return int(trainable * per_param[opt])  # 8-bit AdamW (bitsandbytes), paged or not


def _layer_saved_bytes(arch: ModelArch, method: MethodSpec, seq_len: int, moe: bool) -> float:
    """Bytes one decoder layer saves for its backward, per token, tensor by tensor as the
    transformers and peft implementations save them (Korthikanti et al. 2022, section
    4.1, redone for pre-norm, gated, GQA decoders):

    - RMSNorm upcasts its input and keeps the fp32 copy (4 B per value); when its weight
      trains it also keeps the normalised 16-bit input of the weight multiply. LayerNorm
      (gpt2) keeps its 16-bit input.
    - A Linear keeps its input only to compute its weight's gradient, i.e. when the
      weight trains (full, freeze); bitsandbytes' 4-bit MatMul4Bit keeps only the
      quantized weight.
    - Attention keeps the rotated Q and K, V (at kv-head width: GQA), its output and an
      fp32 log-sum-exp per head (SDPA / flash); eager attention keeps the fp32 softmax
      and its 16-bit copy (6 B per score). o_proj's input is a contiguous copy of it.
    - SwiGLU keeps gate, up and act(gate) (and their product, down_proj's input, if it
      is kept); a plain MLP (gpt2) keeps the GELU input (and output).
    - Dropout (when the config has it: gpt2) keeps a 1-byte mask per value.
    - LoRA (peft) casts each adapted module's input to the fp32 adapter dtype and keeps
      that copy and the r-wide A output; with dropout, the dropped copy and its 1-byte
      mask instead of the copy; with adapters in the compute dtype (torchtune) and no
      dropout, the input itself, one for the modules that read it (q, k, v; gate, up);
      DoRA also keeps the base output (16-bit) and the LoRA output (fp32) for the
      magnitude's gradient (peft DoraLinearLayer.forward).
    """
    c = constants()
    ab = _activation_bytes(method)
    h, i = arch.hidden, arch.intermediate
    trains_base = method.kind in ("full", "freeze")
    base_keeps_input = trains_base
    norm = (2 * h if arch.layer_norm else 4 * h) + (
        ab * h if trains_base and not arch.layer_norm else 0
    )
    linear_in = ab * h if base_keeps_input else 0
    total: float = 2 * norm + 2 * linear_in  # the two pre-norms and the Linear inputs they feed
    if arch.model_type in ("gpt2", "bloom"):
        total += ab * 3 * h + ab * h + (ab * h if base_keeps_input else 0)  # qkv, out, c_proj in
        total += ab * i + (ab * i if base_keeps_input else 0)  # GELU input, c_proj input
    else:
        total += ab * (arch.q_dim + 2 * arch.kv_dim)  # rotated Q, K and V
        total += ab * arch.q_dim + (ab * arch.q_dim if base_keeps_input else 0)  # out, o_proj in
        if arch.qk_norm:  # per-head RMSNorms on q and k, fp32 inputs
            total += 4 * (arch.q_dim + arch.kv_dim) + (
                ab * (arch.q_dim + arch.kv_dim) if trains_base else 0
            )
        if moe:
            e, k, mi = arch.experts, arch.experts_per_token, arch.moe_intermediate
            total += 4 * e  # fp32 router logits and softmax
            # Each token is copied to its k experts; each expert is a SwiGLU of width mi.
            per_expert = ab * h + ab * 3 * mi + (ab * mi if base_keeps_input else 0)
            total += k * per_expert
            si = arch.shared_expert_intermediate
            if si:
                total += ab * 3 * si + (ab * si if base_keeps_input else 0)
        else:
            gated = 3 if arch.gated_mlp else 1
            total += ab * gated * i + (ab * i if base_keeps_input else 0)
        extra_norms = arch.norms_per_layer - 2  # gemma's post-attention / post-MLP norms
        total += extra_norms * (4 * h + (ab * h if trains_base else 0))
    if arch.activation == "gelu_new":
        # transformers' NewGELUActivation is composed of elementwise ops that keep the tanh
        # output, 0.5·x and 1 + tanh: three more copies of the MLP width.
        total += 3 * ab * i
    if arch.residual_dropout > 0:
        total += 2 * h  # nn.Dropout keeps a 1-byte mask per value, twice per block
    if _eager(arch, method):
        # gpt2's eager attention runs the softmax in the 16-bit dtype: one 2-byte copy.
        per_score = ab if arch.model_type == "gpt2" else c["eager_attention_bytes_per_score"]
        if arch.attention_softcap:
            per_score += ab  # tanh soft-capping keeps its 16-bit output
        total += arch.heads * seq_len * per_score
        if arch.attention_dropout > 0:
            total += arch.heads * seq_len * (1 + ab)  # the mask and the dropped copy
    else:
        # SDPA / flash draw dropout inside the kernel: nothing s x s is kept.
        total += arch.heads * c["flash_lse_bytes_per_head_token"]
    if method.uses_adapters:
        total += _adapter_saved_bytes(arch, method, moe)
    return total


def _expert_delta_bytes(arch: ModelArch, method: MethodSpec) -> float:
    """Per MoE layer (not per token): LoRA on expert parameters (peft
    ``target_parameters``) adds B·A to every expert's weight in each forward and keeps
    the merged 16-bit weights for the backward."""
    if not (method.uses_adapters and arch.is_moe):
        return 0.0
    ab = _activation_bytes(method)
    return sum(
        ab * s.count * s.d_in * s.d_out
        for s in targeted_shapes(arch, method)
        if s.name.startswith("experts.")
    )


def _activation_bytes(method: MethodSpec) -> int:
    """Bytes per activation value: the compute dtype (16-bit under bf16/fp16, 4 in fp32)."""
    if method.precision == "fp32":
        return constants()["bytes_per_param"]["fp32"]
    return constants()["activation_bytes_per_value"]


def _adapter_bytes(method: MethodSpec) -> int:
    """Bytes per adapter value: fp32 under peft's default ``autocast_adapter_dtype=True``,
    the 16-bit compute dtype where the framework builds adapters in it (torchtune)."""
    if method.adapter_fp32:
        return int(constants()["adapter_bytes_per_param"])
    return _activation_bytes(method)


def logits_loss_bytes(arch: ModelArch, method: MethodSpec, tokens: int) -> float:
    """Bytes the lm_head output and the cross-entropy hold at the loss backward, per
    ``method.loss`` (constants and their sources in ``planner/data/constants.json``):

    - ``standard``: the full s·b·V logits in fp32, ``logit_copies`` of them (transformers'
      ForCausalMLoss upcasts them before ``cross_entropy``);
    - ``chunked`` (torchtune ``CEWithChunkedOutputLoss``): the full logits stay 16-bit and
      are upcast one of ``chunked_loss_chunks`` chunks at a time; without torch.compile each
      chunk's ``log_softmax`` keeps its fp32 output until the backward; compiled (as
      torchtune recommends, and as its published peaks were measured) a fused kernel per
      chunk keeps only the 16-bit input and writes a 16-bit gradient;
    - ``fused`` (Liger ``LigerFusedLinearCrossEntropyLoss``, TRL ``chunked_nll``, Unsloth's
      fused CE): the lm_head runs on chunks of ``fused_loss_chunk_tokens`` tokens and the
      chunk's logits and fp32 loss tensors are freed before the next; what stays is the
      gradient of the hidden states (s·b·h, 16-bit).
    """
    c = constants()
    ab = _activation_bytes(method)
    fp32_working = c["loss_bytes_per_logit"]  # three fp32 s·b·V tensors in the backward
    if method.loss == "fused":
        chunk = min(tokens, int(c["fused_loss_chunk_tokens"]))
        return chunk * arch.vocab * (ab + fp32_working) + tokens * arch.hidden * ab
    if method.loss == "chunked":
        chunks = c["chunked_loss_chunks"]
        fp32 = c["bytes_per_param"]["fp32"]
        # Compiled, one fused kernel per chunk: the 16-bit logits and one chunk's 16-bit
        # gradient. Eager: the 16-bit logits, every chunk's saved fp32 log_softmax output,
        # and the fp32 upcast of the chunk in flight (the forward's end is the larger moment).
        eager = ab + fp32 + fp32 / chunks
        per_logit = ab * (1 + 1 / chunks) if method.compiled else eager
        total = tokens * arch.vocab * per_logit
    else:
        total = tokens * arch.vocab * fp32_working * method.logit_copies / 3
    if arch.final_softcap:
        total += tokens * arch.vocab * ab  # gemma2's tanh soft-capping keeps its output
    return total


def _eager(arch: ModelArch, method: MethodSpec) -> bool:
    """Whether attention materialises the s x s scores: ``eager``; gemma2 under ``sdpa``
    (transformers 5 has no SDPA path for its soft-capped attention); bloom always (it
    adds ALiBi biases to explicit scores)."""
    return (
        method.attention == "eager"
        or arch.model_type == "bloom"
        or (arch.model_type == "gemma2" and method.attention == "sdpa")
    )


_SHARED_INPUT = {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention"}
_SHARED_INPUT |= {"gate_proj": "mlp", "up_proj": "mlp"}
"""Modules that read the same tensor (the attention or MLP norm's output), by name."""


def _adapter_saved_bytes(arch: ModelArch, method: MethodSpec, moe: bool) -> float:
    """Per token and layer, what the adapters keep (see ``_layer_saved_bytes``). Checked
    on CPU with torch.autograd.graph.saved_tensors_hooks on peft's LoRA forward
    (``lora_B(lora_A(dropout(x))) * scaling`` after ``_cast_input_dtype``)."""
    adapter = _adapter_bytes(method)
    ab = _activation_bytes(method)
    kept_inputs: set[str] = set()
    total = 0.0
    for s in targeted_shapes(arch, method):
        expert = s.name.startswith(("experts.", "shared_expert."))
        dense_mlp = s.group == "mlp" and not expert
        if (moe and dense_mlp) or (not moe and expert):
            continue  # that module lives in the other kind of layer
        if s.name.startswith("experts."):
            continue  # adapted as parameters: see _expert_delta_bytes
        per = adapter * method.rank  # A's output, kept by B
        if method.lora_dropout > 0:
            # nn.Dropout on CUDA (native_dropout) keeps a 1-byte mask and A keeps the
            # dropped copy; the input, or the cast copy that fed the dropout, is not kept.
            per += adapter * s.d_in + s.d_in
        elif adapter != ab:
            per += adapter * s.d_in  # the input cast to the adapter dtype, one per module
        else:
            # The cast is a no-op: A keeps the module's input itself, shared with the
            # modules that read the same tensor.
            prefix, _, leaf = s.name.rpartition(".")
            read = f"{prefix}.{_SHARED_INPUT.get(leaf, leaf)}"
            if read not in kept_inputs:
                kept_inputs.add(read)
                per += ab * s.d_in
        if method.kind == "dora":
            per += ab * s.d_out + adapter * s.d_out
        total += per * s.active_count
    return total


def _largest_parameter(arch: ModelArch, method: MethodSpec) -> int:
    """Values of the largest trainable parameter of ``method`` (transformers stores each
    MoE layer's experts as one 3-D parameter; peft adapts them with one A and B each)."""

    def copies(s: LinearShape) -> int:
        return s.count if s.name.startswith("experts.") else 1

    if method.uses_adapters:
        return max(
            (method.rank * max(s.d_in, s.d_out) * copies(s) for s in targeted_shapes(arch, method)),
            default=0,
        )
    largest = max(s.d_in * s.d_out * copies(s) for s in arch.linear_shapes())
    if method.kind == "full":
        largest = max(largest, arch.vocab * arch.hidden)
    return largest


def _largest_tensor_values(arch: ModelArch) -> int:
    widest = max(arch.intermediate, arch.q_dim + 2 * arch.kv_dim, arch.hidden)
    if arch.is_moe:
        widest = max(widest, arch.moe_intermediate * arch.experts_per_token)
    return widest


def state_bytes(arch: ModelArch, method: MethodSpec, *, gpus: int | None = None) -> dict[str, int]:
    """What the trained model's tensors hold on one of ``gpus`` ranks between steps: its
    weights, adapter weights, gradients and optimizer states, partitioned as
    ``method.sharding`` says (ZeRO section 5: stage 2 the gradients and optimizer states,
    stage 3 / FSDP the weights too). Unlike :func:`memory_terms` it leaves out what exists
    only during a step (ZeRO-3's gathered layers, QLoRA's dequantized weight, activations),
    so it is what a sharded trial measures by summing its local shards
    (``measured.states_gb``)."""
    c = constants()
    n_gpus = method.gpus if gpus is None else gpus
    pb = c["bytes_per_param"][method.precision]
    if method.kind == "qlora":
        quantized = arch.linear_params - arch.router_params
        bits = c["nf4_bits_per_param"] + c["nf4_double_quant_bits_per_param"]
        kept = c["bytes_per_param"]["fp32"] if method.unquantized_fp32 else pb
        weights: float = quantized * bits / 8 + (arch.total_params - quantized) * kept
    else:
        weights = arch.total_params * pb
    adapter_params = _adapter_params(arch, method) if method.uses_adapters else 0
    adapter_weights: float = adapter_params * _adapter_bytes(method)
    trainable = adapter_params if method.uses_adapters else trainable_params(arch, method)
    dtype_bytes = _adapter_bytes(method) if method.uses_adapters else pb
    gradients: float = trainable * dtype_bytes
    optimizer_states: float = _optimizer_bytes(arch, method, trainable, dtype_bytes)
    gradients, optimizer_states = _partitioned(method, n_gpus, gradients, optimizer_states)
    if n_gpus > 1 and method.sharding == "zero3":
        weights /= n_gpus
        adapter_weights /= n_gpus
    found = {
        "weights": weights,
        "adapter_weights": adapter_weights,
        "gradients": gradients,
        "optimizer_states": optimizer_states,
    }
    return {name: int(round(value)) for name, value in found.items()}


def _partitioned(
    method: MethodSpec, n_gpus: int, gradients: float, optimizer_states: float
) -> tuple[float, float]:
    """One GPU's share of the gradients and optimizer states (ZeRO section 5: stage 1
    partitions the optimizer states, stages 2 and 3 the gradients too). Under
    ``optimizer_offload`` both are in host memory: DeepSpeed's ZeRO-Offload keeps the
    states, the fp32 master weights and each reduced gradient partition on the CPU
    (``DeepSpeedZeroOptimizer`` with ``cpu_offload``: gradients are copied out of the
    reduction bucket as it is reduced), so only the buckets stay (:func:`zero_bucket_bytes`)."""
    if method.optimizer_offload and method.sharding != "none":
        return 0.0, 0.0
    if n_gpus > 1 and method.sharding in ("zero1", "zero2", "zero3"):
        optimizer_states /= n_gpus
        if method.sharding != "zero1":
            gradients /= n_gpus
    return gradients, optimizer_states


def zero_bucket_bytes(method: MethodSpec) -> int:
    """DeepSpeed ZeRO-2's (and ZeRO-1's) gradient reduction buckets on each GPU, in bytes
    (0 unless ``method.sharding`` is ``zero1`` or ``zero2``).

    ``DeepSpeedZeroOptimizer.backward`` (DeepSpeed v0.16.4,
    deepspeed/runtime/zero/stage_1_and_2.py) allocates, with ``contiguous_gradients``, one
    ``ipg_buffer`` of ``reduce_bucket_size`` elements in the parameters' dtype (the module is
    cast to the 16-bit precision by the engine), and a second with ``overlap_comm`` ("double
    buffers to avoid data access conflict"); each gradient is copied into the current
    bucket as it is produced, and the buffers are released after the backward
    (``independent_gradient_partition_epilogue`` -> ``_release_ipg_buffers``). They are
    allocated on any number of GPUs. ``allgather_bucket_size`` allocates nothing: the
    updated partitions are gathered into the flat 16-bit groups in place
    (deepspeed/runtime/utils.py, ``all_gather_dp_groups``). ZeRO-3 is left as it is: the
    planner's ``zero3`` is also FSDP's full shard, which has no such buffer.
    """
    if method.sharding not in ("zero1", "zero2"):
        return 0
    buffers = 2 if method.zero_overlap_comm else 1
    element_bytes = constants()["bytes_per_param"][method.precision]
    return int(buffers * method.zero_reduce_bucket_size * element_bytes)


def _loss_phase_with_head(
    arch: ModelArch, method: MethodSpec, tokens: int, logits_loss: float, head_values: float
) -> float:
    """What the loss phase holds when the lm_head trains (its gradient: ``head_values``
    bytes on one GPU), against ``logits_loss`` without it.

    torchtune's chunked_output runs the lm_head once per chunk. Autograd runs every
    chunk's loss backward first (higher sequence numbers), then the head's, one chunk at a
    time, and sums the chunks' weight gradients in one buffer before AccumulateGrad
    (torch autograd engine, InputBuffer::accumulate). The first gradient arrives as a
    transposed view of the matmul's output, which the engine does not add into in place:
    the first sum is a third head-sized tensor beside the two it adds, later sums go in
    place. So, with the chunks' logit gradients still waiting: all of them and the first
    head gradient; seven eighths and two; six eighths and three (the order and the three
    gradients seen on CPU with torch's MemTracker and in the process's resident memory).
    Other losses produce the head's gradient once, after the loss tensors (see
    ``memory_terms``).
    """
    if method.loss != "chunked" or not head_values:
        return logits_loss
    chunks = constants()["chunked_loss_chunks"]
    logits16 = tokens * arch.vocab * _activation_bytes(method)
    return max(
        logits_loss,
        *(logits16 * (chunks - k) / chunks + (k + 1) * head_values for k in range(3)),
    )


def memory_terms(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    *,
    on_gpu: bool = True,
    gpus: int | None = None,
) -> MemoryTerms:
    """The memory terms of one training step on one of ``gpus`` GPUs (default:
    ``method.gpus``). ``on_gpu=False`` leaves out the CUDA framework overhead."""
    c = constants()
    n_gpus = method.gpus if gpus is None else gpus
    if arch.learned_positions and workload.seq_len > arch.learned_positions:
        raise InvalidSpecError(
            f"workload: `seq_len` {workload.seq_len} is longer than the "
            f"{arch.learned_positions} positions {arch.name} has embeddings for",
            f"Use a sequence length of at most {arch.learned_positions}.",
        )
    if method.kind == "freeze" and method.freeze_layers > arch.layers:
        raise InvalidSpecError(
            f"method: `freeze_layers` {method.freeze_layers} is more than the "
            f"{arch.layers} decoder layers of {arch.name}",
            f"Use at most {arch.layers} (all layers is --method full without the embeddings).",
        )
    largest_count = max(c["min_gpus_candidates"])
    if n_gpus > largest_count:
        raise InvalidSpecError(
            f"method: `gpus` {n_gpus} is beyond the {largest_count} GPUs the planner sizes "
            "runs for",
            f"Use --gpus {largest_count} or fewer.",
        )
    if method.uses_adapters and method.rank > arch.hidden:
        raise InvalidSpecError(
            f"method: `rank` {method.rank} is larger than the hidden size {arch.hidden} "
            f"of {arch.name}",
            f"Use a rank of at most {arch.hidden} (typical: 8-64).",
        )
    pb = c["bytes_per_param"][method.precision]
    ab = _activation_bytes(method)
    tokens = workload.seq_len * workload.batch

    # Weights. QLoRA (Dettmers et al. 2023): decoder Linear weights in NF4 (4 bits) with
    # double-quantized constants (0.127 bits); embeddings, lm_head, norms and MoE routers
    # stay 16-bit (transformers keeps the output embedding out of bitsandbytes), and each
    # matmul dequantizes one weight to 16-bit first (a transient of the largest Linear).
    # With ``unquantized_fp32`` (peft's prepare_model_for_kbit_training) the parts that
    # stay unquantized are cast to fp32 (4 B) instead.
    if method.kind == "qlora":
        quantized = arch.linear_params - arch.router_params
        bits = c["nf4_bits_per_param"] + c["nf4_double_quant_bits_per_param"]
        largest = max(s.d_in * s.d_out for s in arch.linear_shapes())
        kept = c["bytes_per_param"]["fp32"] if method.unquantized_fp32 else pb
        weights: float = (
            quantized * bits / 8 + (arch.total_params - quantized) * kept + largest * pb
        )
        layer_weight_bytes = (arch.linear_params - arch.router_params) / arch.layers * bits / 8
    else:
        weights = arch.total_params * pb
        layer_weight_bytes = arch.layer_params * pb

    adapter_params = _adapter_params(arch, method) if method.uses_adapters else 0
    adapter_weights: float = adapter_params * _adapter_bytes(method)
    trainable = adapter_params if method.uses_adapters else trainable_params(arch, method)
    trainable_dtype_bytes = _adapter_bytes(method) if method.uses_adapters else pb
    # Gradients in the trainable parameters' dtype (ZeRO section 3.1: 2 B/param for 16-bit).
    gradients: float = trainable * trainable_dtype_bytes
    optimizer_states: float = _optimizer_bytes(arch, method, trainable, trainable_dtype_bytes)
    if method.optimizer_in_backward:
        if workload.grad_accum > 1:
            raise InvalidSpecError(
                "method: `optimizer_in_backward` steps on every micro-batch, so it cannot "
                f"accumulate gradients over grad_accum {workload.grad_accum}",
                "Use --grad-accum 1 with --optimizer-in-backward.",
            )
        # torchtune's optimizer_in_bwd: a hook per parameter steps and frees its gradient
        # as soon as it is complete, so at most one parameter's gradient is alive (the
        # largest: a vocab x hidden embedding or lm_head, or one layer matrix).
        gradients = min(gradients, _largest_parameter(arch, method) * trainable_dtype_bytes)

    # Sharding (ZeRO section 5): stage 1 partitions the optimizer states over N GPUs,
    # stage 2 the gradients too; stage 3 (FSDP full shard) also the weights, plus the
    # all-gathered full weights of the layers being computed and prefetched. ZeRO-Offload
    # moves the states and the reduced gradients to host memory.
    gradients, optimizer_states = _partitioned(method, n_gpus, gradients, optimizer_states)
    if n_gpus > 1 and method.sharding == "zero3":
        weights = weights / n_gpus + c["zero3_gathered_layers"] * layer_weight_bytes
        adapter_weights /= n_gpus

    # Activations (bytes per token, then times the tokens of a micro-batch).
    backward_layers = _trained_layers(arch, method)
    moe_layers = min(arch.moe_layers, backward_layers)
    dense_layers = backward_layers - moe_layers
    per_layer = {
        False: _layer_saved_bytes(arch, method, workload.seq_len, moe=False),
        True: _layer_saved_bytes(arch, method, workload.seq_len, moe=True) if arch.is_moe else 0.0,
    }
    # The final norm's fp32 input; with a training lm_head, also the normalised input of
    # the norm's weight multiply and the lm_head's input.
    head = (2 if arch.layer_norm else 4) * arch.hidden
    if method.kind == "full":
        head += 2 * ab * arch.hidden
    full_stack = dense_layers * per_layer[False] + moe_layers * per_layer[True] + head
    expert_deltas = _expert_delta_bytes(arch, method)
    logits_loss = logits_loss_bytes(arch, method, tokens)
    # The backward of a layer holds gradients of its activations: bounded by its widest
    # tensor, twice (the incoming gradient and the one being produced).
    backward_temporaries = 2 * _largest_tensor_values(arch) * ab * tokens
    if method.uses_adapters:
        # peft adds the fp32 LoRA branch to the 16-bit base output, which promotes the sum
        # to fp32 (LoraLayer Linear.forward); its backward holds fp32 gradients: the
        # sum's (d_out), the scaled branch's (d_out) and the adapter input's (d_in), for
        # the widest adapted module.
        backward_temporaries += tokens * max(
            (
                _adapter_bytes(method) * (2 * s.d_out + s.d_in)
                for s in targeted_shapes(arch, method)
                if not s.name.startswith("experts.")
            ),
            default=0,
        )
    dora_forward = 0.0
    if method.kind == "dora":
        # peft's DoRA rebuilds each adapted module's weight in its forward to take the
        # column norm (DoraLinearLayer.forward / get_lora_weight / get_weight_norm): an
        # fp32 identity of d_in x d_in, B·A through it (d_out x d_in, kept while the
        # module's forward runs), an fp32 copy of the base weight, the scaled B·A, their
        # sum, and the squares torch.linalg.norm reduces (5 fp32 d_out x d_in): a
        # transient of the largest module, alive during its forward (the fake-tensor
        # simulator, running peft's code, holds the same within 10%).
        adapter = _adapter_bytes(method)
        dora_forward = max(
            (
                adapter * (s.d_in * s.d_in + 5 * s.d_in * s.d_out)
                for s in targeted_shapes(arch, method)
            ),
            default=0,
        )
    if method.grad_checkpointing:
        # Full recomputation (Korthikanti section 5; HF gradient_checkpointing): each layer
        # keeps only its 16-bit input; the backward of one layer first rebuilds its
        # activations.
        # freeze: transformers' gradient checkpointing makes the embedding output require
        # grad (enable_input_require_grads, so that checkpointed layers get a gradient),
        # so the backward runs through every layer and every layer keeps its checkpoint.
        kept_layers = arch.layers if method.kind == "freeze" else backward_layers
        if method.offload_checkpoints:
            # Unsloth's offloaded checkpointing copies each layer input to host memory in
            # the forward and back in the backward: only the layers in flight stay.
            kept_layers = min(kept_layers, int(c["offload_resident_layers"]))
        stored: float = (kept_layers * ab * arch.hidden + head) * tokens
        layer = max(
            per_layer[False] * tokens if dense_layers else 0,
            per_layer[True] * tokens + expert_deltas if moe_layers else 0,
        )
        # The recomputed forward (with DoRA's transient) runs inside the backward, before
        # the layer's own gradient temporaries exist.
        working = layer + max(backward_temporaries, dora_forward)
        forward_excess = 0.0
    else:
        stored = full_stack * tokens + moe_layers * expert_deltas
        working = backward_temporaries
        # DoRA's transient in the last layer's forward: every activation is stored by
        # then, and the logits do not exist yet, so it is not hidden by them.
        forward_excess = dora_forward
    # The loss phase and a layer's backward never overlap: charge only the excess.
    activations = stored + max(forward_excess, working - logits_loss)
    # Two moments hold the peak: the loss phase (activations and logits alive) and the end
    # of the backward / optimizer step (all gradients and states alive, activations freed).
    # Terms that exist only in the second are charged for what they need beyond the
    # memory the first one freed, so that the terms still add up to the peak:
    # - with grad_accum 1 the gradients of the last step were freed (zero_grad sets them
    #   to None, the default in torch and the HF Trainer) and are rebuilt while the
    #   backward frees activations; with grad_accum > 1 they persist through the forward;
    # - paged optimizers keep their states in CUDA unified memory, evicted to host RAM
    #   under pressure (bitsandbytes docs, "Paged optimizers"): resident only in the step.
    transient = activations + logits_loss
    # Gradients that do not live through the forward: with grad_accum 1 the last step's
    # were freed by zero_grad (set to None, the default in torch and the HF Trainer).
    # The lm_head's weight gradient appears at the end of the loss backward, once the
    # fp32 loss tensors are freed, and lives on through each layer's backward; the others
    # grow while the backward frees the activations.
    head_values = 0.0  # the trained lm_head's gradient on one GPU
    if method.kind == "full":
        head_values = _partitioned(method, n_gpus, arch.vocab * arch.hidden, 0.0)[0]
        head_values *= trainable_dtype_bytes
    rest_gradients = gradients if workload.grad_accum == 1 else 0.0
    head_gradient = min(rest_gradients, head_values)
    rest_gradients -= head_gradient
    loss_phase = _loss_phase_with_head(arch, method, tokens, logits_loss, head_values)
    # Beyond the larger of the loss phase and a layer's backward, both as charged above.
    head_charged = max(0.0, max(loss_phase, working + head_gradient) - max(logits_loss, working))
    late_states = optimizer_states if method.optimizer.startswith("paged_") else 0.0
    late = rest_gradients + late_states
    if head_gradient or head_charged or late:
        # The step needs every gradient and state at once, after the activations are gone.
        late_charged = max(0.0, head_gradient + late - (transient + head_charged))
        share = late_charged / late if late else 0.0
        gradients -= head_gradient - head_charged + rest_gradients * (1 - share)
        optimizer_states -= late_states * (1 - share)
    # DeepSpeed ZeRO-2's reduction buckets live from the start of the backward to its end,
    # through the loss phase and the last gradients alike: charged at both moments.
    gradients += zero_bucket_bytes(method)

    framework = context = reserve = 0.0
    if on_gpu:
        # CUDA context, cuBLAS workspace, and the caching allocator's fragmentation of the
        # short-lived terms (research notes: reserved > allocated).
        context = c["cuda_context_bytes"]
        reserve = c["allocator_fragmentation"] * (activations + logits_loss)
        framework = context + c["cublas_workspace_bytes"] + reserve

    breakdown = {
        "weights": weights,
        "adapter_weights": adapter_weights,
        "gradients": gradients,
        "optimizer_states": optimizer_states,
        "activations": activations,
        "logits_loss": logits_loss,
        "framework_overhead": framework,
    }
    return MemoryTerms(
        breakdown={k: int(round(v)) for k, v in breakdown.items()},
        trainable_params=trainable,
        adapter_params=adapter_params,
        context_bytes=int(round(context)),
        reserve_bytes=int(round(reserve)),
    )
