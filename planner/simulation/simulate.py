"""The peak memory of a real training step, simulated on the CPU with no GPU and no weights.

``simulate(arch, workload, method)`` builds the model from its config with transformers,
applies the method with the code a trial applies it with (:mod:`planner.methods`: peft
LoRA/DoRA with the same rank and targets, QLoRA, full, freeze, gradient checkpointing,
the optimizer), sets the attention implementation and runs two real training steps on
*fake* tensors (shapes, no data), counting every storage alive. It is a second,
independent answer to "will it fit", and the referee of the analytic formulas in
:mod:`planner`.

What is simulated and what is added analytically:

- simulated: weights, adapters, gradients, optimizer states of torch AdamW (fused),
  SGD and transformers Adafactor, every activation and temporary of the forward,
  backward and optimizer step, in the order the real step allocates and frees them;
- QLoRA: the base runs in 16-bit for the activations (bitsandbytes dequantizes to the
  compute dtype before each matmul), and the 16-bit bytes of the quantized Linear
  weights are replaced by their NF4 bytes;
- 8-bit optimizers (``adamw8bit``, ``paged_adamw8bit``): bitsandbytes kernels do not
  run on fake tensors, so the step runs torch AdamW and its states are replaced by the
  bitsandbytes state bytes;
- ``framework_overhead`` (CUDA context, workspaces, allocator slack) is the planner's
  own analytic term;
- attention: CPU kernels stand in for CUDA ones; ``flash`` is simulated as ``sdpa``
  (the CPU flash kernel, which like CUDA flash keeps no s x s matrix).

Speed: decoder layers are identical, so by default the step is simulated for a few
layers and every term is extrapolated linearly to the real depth
(``SimulatedPeak.extrapolated``); a test checks this against a full simulation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from planner.estimation.memory import TERMS, zero_bucket_bytes
from planner.methods import MethodSetup

if TYPE_CHECKING:
    from planner.estimation.arch import ModelArch
    from planner.specs import MethodSpec, Workload

__all__ = ["RECIPES", "TERMS", "SimulatedPeak", "simulate"]

GB = 1e9

RECIPES = ("planner", "trial")
"""How ``simulate`` runs a method: as the planner defines it, or as ``paretune trial`` does."""

# Layer counts simulated before extrapolating: two even counts, so that families whose
# layers alternate two kinds (Gemma 2 sliding-window / global) stay balanced.
_FEW_LAYERS = (2, 4)

# bitsandbytes 8-bit blockwise optimizers: one byte per state value plus one fp32 absmax
# per block of 256 values (bitsandbytes/optim/optimizer.py, Optimizer8bit, block size
# 256); tensors under 4096 elements keep 32-bit states (``min_8bit_size=4096``).
_BNB_BLOCK = 256
_BNB_MIN_8BIT_SIZE = 4096

# NF4 with double quantization (Dettmers et al. 2023, QLoRA, section 3): 4 bits per
# weight, one 8-bit absmax per block of 64 weights and one fp32 second-level constant
# per 256 blocks: 4 + 8/64 + 32/(64*256) bits per parameter.
_NF4_BITS_PER_PARAM = 4 + 8 / 64 + 32 / (64 * 256)


@dataclass(frozen=True)
class SimulatedPeak:
    """The simulated peak of one training step, by term.

    ``breakdown`` holds bytes per term (see ``TERMS``) at the moment of the peak;
    ``activations`` includes the backward's temporaries; ``logits_loss`` is the part
    of the activations that does not grow with depth (embeddings output, logits, the
    fp32 loss and their gradients) and is only separated when the result was
    extrapolated (otherwise it stays inside ``activations``). ``peak_phase`` says
    whether the peak fell in the forward/backward or in the optimizer step;
    ``phases`` holds the breakdown at the peak of each phase of the step (forward,
    backward of the loss and head, of the top, middle and bottom decoder layers, of the
    embeddings, optimizer step): gradients are all alive only in the last. ``recipe`` is
    the one the step ran under (see ``simulate``).
    """

    peak_bytes: int
    breakdown: dict[str, int]
    layers_simulated: int
    layers: int
    extrapolated: bool
    peak_phase: str
    phases: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())
    recipe: str = "planner"

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    @property
    def breakdown_gb(self) -> dict[str, float]:
        return {term: nbytes / GB for term, nbytes in self.breakdown.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``paretune plan --simulate``."""
        return {
            "peak_gb": round(self.peak_gb, 3),
            "breakdown_gb": {t: round(v, 3) for t, v in self.breakdown_gb.items()},
            "peak_phase": self.peak_phase,
            "layers_simulated": self.layers_simulated,
            "extrapolated": self.extrapolated,
            "recipe": self.recipe,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Step:
    """One training step's settings, in the simulator's terms (from Workload + MethodSpec)."""

    method: MethodSetup  # how planner.methods applies the method, as the recipe runs it
    optimizer: str  # adamw | adamw_bf16 | adamw8bit | paged_adamw8bit | adafactor | sgd
    param_dtype: str  # dtype the weights are stored in
    autocast_dtype: str | None  # mixed precision: compute dtype under autocast
    recipe: str  # planner | trial (see simulate)
    attention: str  # sdpa | eager
    seq_len: int
    batch: int
    micro_batches: int  # micro-batches simulated per step (gradients accumulate)
    trainable_layers: int  # freeze: top decoder layers that train
    loss: str = "standard"  # standard | chunked | fused (planner.methods.token_loss_sum)

    @property
    def kind(self) -> str:
        return self.method.kind


def simulate(
    arch: ModelArch,
    workload: Workload,
    method: MethodSpec,
    *,
    extrapolate: bool = True,
    recipe: str = "planner",
) -> SimulatedPeak:
    """Simulate two training steps of ``arch`` under ``method`` and return the peak.

    ``extrapolate=False`` simulates every layer (slower, exact); by default a model
    deeper than a few layers is simulated at a few depths and extrapolated linearly.

    ``recipe`` says how a method is run. ``"planner"`` (default) follows the planner's
    definitions, so that the two can be compared term by term: 16-bit weights, and for
    ``adamw`` an fp32 master copy plus fp32 moments (DeepSpeed/FSDP mixed precision);
    ``freeze`` also trains the final norm. ``"trial"`` runs a step as
    ``sweeps.trial.recipe`` does: full and freeze keep fp32 weights and compute under 16-bit
    autocast, adapters compute under autocast on a 16-bit base, ``adamw`` is torch's
    AdamW (foreach, as on CUDA), QLoRA goes through ``prepare_model_for_kbit_training``
    (embeddings, norms and head upcast to fp32), the loop keeps the logits it computed the
    loss from until the next micro-batch, and ``freeze`` trains the top layers only.
    """
    if recipe not in RECIPES:
        from planner.errors import InvalidSpecError
        from pricing.errors import did_you_mean

        raise InvalidSpecError(
            f"simulate: unknown recipe {recipe!r}", did_you_mean(str(recipe), RECIPES)
        )
    step, notes = _step_from_spec(arch, workload, method, recipe)
    return _simulate_config(arch.hf_config, arch.layers, step, notes, extrapolate)


# -- from the planner's types -------------------------------------------------------------


def _step_from_spec(
    arch: ModelArch, workload: Workload, method: MethodSpec, recipe: str = "planner"
) -> tuple[_Step, list[str]]:
    from planner.estimation.memory import targeted_shapes

    notes: list[str] = []
    attention = method.attention
    if attention == "flash":
        notes.append("flash attention simulated with the CPU sdpa flash kernel")
        attention = "sdpa"
    if method.optimizer in ("adamw8bit", "paged_adamw8bit"):
        notes.append(f"{method.optimizer} states: bitsandbytes bytes (the step ran torch AdamW)")
    if method.kind == "qlora":
        notes.append("QLoRA base simulated in 16-bit; quantized weights counted as NF4 bytes")
        if method.unquantized_fp32 and recipe == "planner":
            notes.append(
                "unquantized_fp32 is not simulated: embeddings, lm_head and norms stay "
                "16-bit here (recipe='trial' upcasts them)"
            )
    if method.gpus > 1:
        notes.append("simulated on one device without sharding")
    if method.optimizer_offload:
        notes.append("optimizer offload is not simulated: states and gradients stay on the device")
    if zero_bucket_bytes(method):
        notes.append("DeepSpeed's reduction buckets are not simulated (torch AdamW, no ZeRO)")
    param_dtype, autocast_dtype = _dtypes(method.precision)
    if recipe == "trial":
        compute = {"bf16": "bfloat16", "fp16": "float16"}.get(method.precision)
        param_dtype = "float32" if method.kind in ("full", "freeze") else (compute or "float32")
        autocast_dtype = compute
    if method.uses_adapters:
        targeted_shapes(arch, method)  # a target the model lacks fails before any model is built
    step = _Step(
        method=MethodSetup.from_spec(method, recipe=recipe),  # type: ignore[arg-type]
        optimizer=method.optimizer,
        param_dtype=param_dtype,
        autocast_dtype=autocast_dtype,
        recipe=recipe,
        attention=attention,
        seq_len=workload.seq_len,
        batch=workload.batch,
        # Gradients accumulate from the second micro-batch on; two show every effect.
        micro_batches=min(workload.grad_accum, 2),
        trainable_layers=min(method.freeze_layers, arch.layers)
        if method.kind == "freeze"
        else arch.layers,
        loss=method.loss,
    )
    if method.loss == "chunked" and method.compiled:
        notes.append("compiled chunked loss simulated uncompiled (fp32 chunks kept)")
    return step, notes


def _dtypes(precision: str) -> tuple[str, str | None]:
    """(weight dtype, autocast dtype or None) for the planner's ``precision``.

    16-bit weights compute in their own dtype; fp32 weights compute under bf16
    autocast, as the planner's activation bytes assume (a 16-bit compute dtype).
    """
    if precision == "fp16":
        return "float16", None
    if precision == "fp32":
        return "float32", "bfloat16"
    return "bfloat16", None


# -- the simulation -----------------------------------------------------------------------


def _simulate_config(
    hf_config: dict[str, Any],
    layers: int,
    step: _Step,
    notes: list[str],
    extrapolate: bool,
) -> SimulatedPeak:
    """Simulate, at a few depths when extrapolating, and combine into one peak."""
    frozen_layers = layers - step.trainable_layers if step.kind == "freeze" else 0
    dims = {"frozen": frozen_layers, "trainable": layers - frozen_layers}
    low, high = _FEW_LAYERS
    axes = {d: n > high and extrapolate for d, n in dims.items()}
    if not any(axes.values()):
        _, phases, run_notes = _run(hf_config, dims["frozen"], dims["trainable"], step)
        deepest = layers
    else:
        base = {d: (low if axes[d] else n) for d, n in dims.items()}
        runs = {"base": _run(hf_config, base["frozen"], base["trainable"], step)}
        for d, extrapolated in axes.items():
            if extrapolated:
                point = dict(base, **{d: high})
                runs[d] = _run(hf_config, point["frozen"], point["trainable"], step)
        run_notes = runs["base"][2]
        # Each phase is extrapolated on its own and the highest taken afterwards: the
        # phase holding the peak can change with depth (the optimizer step when shallow,
        # the backward when deep).
        # The middle layers' backward is left out: it holds no layer at the shallow depth
        # (so it does not grow linearly from there), and with layers identical its peak
        # never exceeds the top or bottom layer's.
        measured = [
            phase
            for phase in runs["base"][1]
            if phase != "backward_middle_layers" and all(phase in r[1] for r in runs.values())
        ]
        phases = {phase: _extrapolate_phase(runs, phase, dims, base, axes) for phase in measured}
        deepest = sum(base.values()) + high - low
    phases = {phase: _with_overhead(terms) for phase, terms in phases.items()}
    peak_phase = max(phases, key=lambda phase: sum(phases[phase].values()))
    return SimulatedPeak(
        peak_bytes=sum(phases[peak_phase].values()),
        breakdown=phases[peak_phase],
        layers_simulated=deepest,
        layers=layers,
        extrapolated=deepest < layers,
        peak_phase=peak_phase,
        phases=phases,
        notes=tuple(dict.fromkeys(notes + run_notes)),
        recipe=step.recipe,
    )


def _extrapolate_phase(
    runs: dict[str, tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], list[str]]],
    phase: str,
    dims: dict[str, int],
    base: dict[str, int],
    axes: dict[str, bool],
) -> dict[str, int]:
    low, high = _FEW_LAYERS
    base_terms = runs["base"][1][phase]
    out: dict[str, float] = {t: float(v) for t, v in base_terms.items()}
    layer_independent: dict[str, float] = dict(out)
    for d, extrapolated in axes.items():
        if not extrapolated:
            continue
        deeper = runs[d][1][phase]
        for term in out:
            per_layer = (deeper.get(term, 0) - base_terms[term]) / (high - low)
            out[term] += (dims[d] - base[d]) * per_layer
            layer_independent[term] -= base[d] * per_layer
    result = {t: max(0, round(v)) for t, v in out.items()}
    # What the activations would be with no layers at all is the part that does not grow
    # with depth: the embedding output, the logits, the fp32 loss and their gradients.
    fixed = round(layer_independent["activations"])
    if 0 < fixed <= result["activations"]:
        result["logits_loss"] = fixed
        result["activations"] -= fixed
    return result


def _with_overhead(terms: dict[str, int]) -> dict[str, int]:
    out = {t: int(terms.get(t, 0)) for t in TERMS if t != "framework_overhead"}
    out["framework_overhead"] = _framework_overhead(out)
    return out


def _framework_overhead(terms: dict[str, int]) -> int:
    """The planner's CUDA overhead term (``planner.estimation.memory.memory_terms``: context,
    cuBLAS workspace, allocator fragmentation of the short-lived memory), applied to
    the simulated short-lived memory."""
    from planner.estimation.memory import constants

    c = constants()
    short_lived = terms["activations"] + terms["logits_loss"]
    return round(
        c["cuda_context_bytes"]
        + c["cublas_workspace_bytes"]
        + c["allocator_fragmentation"] * short_lived
    )


def _run(
    hf_config: dict[str, Any], frozen_layers: int, trainable_layers: int, step: _Step
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], list[str]]:
    """Two training steps of a model with this many layers, on fake tensors.

    Returns (raw peaks by MemTracker category, peaks by breakdown term, notes), both
    keyed by phase (see ``_PHASES``).
    """
    # In the planner recipe QLoRA runs the very step LoRA runs (a 16-bit base); only the
    # accounting differs, so one simulated step serves both (``plan --simulate`` asks for
    # both). The trial recipe upcasts QLoRA's unquantized weights, so it runs its own.
    shared = step.kind == "qlora" and step.recipe == "planner"
    run_step = replace(step, method=replace(step.method, kind="lora")) if shared else step
    config_key = json.dumps(hf_config, sort_keys=True)
    raw, counts, notes = _run_cached(config_key, frozen_layers, trainable_layers, run_step)
    terms = {phase: _terms(peak, counts, step) for phase, peak in raw.items()}
    return raw, terms, list(notes)


@lru_cache(maxsize=32)
def _run_cached(
    config_key: str, frozen_layers: int, trainable_layers: int, step: _Step
) -> tuple[dict[str, dict[str, int]], _ParameterBytes, tuple[str, ...]]:
    import warnings

    hf_config = json.loads(config_key)

    with warnings.catch_warnings():
        # Noise of running on fake tensors: MemTracker warns for modules freed before
        # their backward hook, torch when a phase hook sits on a layer whose input needs
        # no gradient (it then fires earlier, still inside that layer's backward), peft
        # and transformers about renamed checkpointing APIs.
        warnings.filterwarnings("ignore", message="Module is None")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")  # gpt2
        return _run_quietly(hf_config, frozen_layers, trainable_layers, step)


def _run_quietly(
    hf_config: dict[str, Any], frozen_layers: int, trainable_layers: int, step: _Step
) -> tuple[dict[str, dict[str, int]], _ParameterBytes, tuple[str, ...]]:
    from planner.methods import apply_method
    from planner.simulation import _torch_memory as tm

    notes: list[str] = []
    layers = frozen_layers + trainable_layers
    model, attention_used = _build_model(hf_config, layers, step)
    if attention_used != step.attention:
        notes.append(
            f"{model.config.model_type} has no {step.attention} attention; simulated {attention_used}"
        )
    # Through the code a trial applies its method with: k-bit preparation, checkpointing,
    # the adapters (the recipe only sets what differs, see MethodSetup.from_spec).
    model = apply_method(model, replace(step.method, freeze_layers=trainable_layers))
    model.train()
    vocab = model.config.get_text_config().vocab_size

    with tm.fake_tensor_mode():
        tm.materialize_as_fake(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = _build_optimizer(trainable, step)
        with tm.PeakTracker(model, optimizer) as tracker:
            hooks = _phase_hooks(model, tracker)
            kept = None  # released when the next micro-batch's forward returns
            for _ in range(2):
                for _ in range(step.micro_batches):
                    tracker.start_phase("forward")
                    loss, kept = _forward_loss(model, step, vocab)
                    tracker.start_phase("backward_head")
                    (loss / step.micro_batches).backward()
                    del loss
                    tracker.end_iteration()
                tracker.start_phase("optimizer_step")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            del kept
            raw = tracker.phase_peaks()
            for hook in hooks:
                hook.remove()
        counts = _parameter_bytes(model, step)
    return raw, counts, tuple(notes)


# The phases a step is measured in. Within the backward through the decoder layers the
# memory changes linearly from layer to layer (activations freed, gradients built), so
# its peak is at the top or the bottom layer: measuring those two separately keeps every
# phase's peak linear in the depth, which is what makes extrapolation exact.
_PHASES = (
    "forward",
    "backward_head",
    "backward_top_layer",
    "backward_middle_layers",
    "backward_bottom_layer",
    "backward_tail",
    "optimizer_step",
)


def _phase_hooks(model: Any, tracker: Any) -> list[Any]:
    from planner.methods import decoder_layers

    layers = decoder_layers(model)
    if len(layers) < 2:
        return []
    top, bottom = layers[len(layers) - 1], layers[0]

    def switch(phase: str) -> Any:
        def hook(*_: Any) -> None:
            tracker.start_phase(phase)

        return hook

    return [
        top.register_full_backward_pre_hook(switch("backward_top_layer")),
        top.register_full_backward_hook(switch("backward_middle_layers")),
        bottom.register_full_backward_pre_hook(switch("backward_bottom_layer")),
        bottom.register_full_backward_hook(switch("backward_tail")),
    ]


def _forward_loss(model: Any, step: _Step, vocab: int) -> tuple[Any, Any]:
    """(loss, what the loop keeps alive besides it) for one micro-batch.

    The planner recipe lets transformers compute the loss and keeps only the loss; the
    trial recipe computes cross-entropy from the logits as ``sweeps.trial.recipe`` does and, like
    its loop, holds the logits until the next micro-batch.
    """
    import contextlib

    import torch

    input_ids = torch.randint(0, vocab, (step.batch, step.seq_len))
    autocast = (
        contextlib.nullcontext()
        if step.autocast_dtype is None
        else torch.autocast("cpu", dtype=getattr(torch, step.autocast_dtype))
    )
    with autocast:
        if step.loss != "standard":
            from planner.methods import token_loss_sum

            targets = input_ids[:, 1:]
            total, logits = token_loss_sum(model, input_ids, None, targets, loss=step.loss)
            kept = logits if step.recipe == "trial" else None
            return total / targets.numel(), kept
        if step.recipe == "planner":
            return model(input_ids=input_ids, labels=input_ids).loss, None
        logits = model(input_ids=input_ids).logits
        loss = (
            torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                input_ids[:, 1:].reshape(-1),
                reduction="sum",
            )
            / input_ids[:, 1:].numel()
        )
    return loss, logits


def _build_model(hf_config: dict[str, Any], layers: int, step: _Step) -> tuple[Any, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = dict(hf_config)
    model_type = config_dict.pop("model_type")
    if isinstance(config_dict.get("layer_types"), list):
        config_dict["layer_types"] = config_dict["layer_types"][:layers]
    config_dict["use_cache"] = False
    config = AutoConfig.for_model(model_type, **config_dict)
    # Through the config's attribute map, so gpt2's and bloom's n_layer follow too.
    config.get_text_config().num_hidden_layers = layers
    _drop_out_of_vocab_token_ids(config)
    dtype = getattr(torch, step.param_dtype)
    attention = step.attention
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=attention, dtype=dtype
            )
        except ValueError:
            # Families without an sdpa path (Gemma 2 needs eager for its logit soft-capping).
            attention = "eager"
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=attention, dtype=dtype
            )
    return model, attention


def _drop_out_of_vocab_token_ids(config: Any) -> None:
    # Special-token ids do not change memory; small test vocabularies can make them invalid.
    text = config.get_text_config()
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value >= text.vocab_size:
            setattr(text, key, None)


def _build_optimizer(params: list[Any], step: _Step) -> Any:
    from planner.methods import build_optimizer

    if step.optimizer in ("adamw8bit", "paged_adamw8bit"):
        # bitsandbytes kernels do not run on fake tensors: torch's fused AdamW (one kernel
        # per tensor, no temporaries, like bitsandbytes') stands in, and its states are
        # replaced by the bitsandbytes state bytes afterwards (``_terms``).
        return build_optimizer(params, "adamw_bf16", lr=1e-4, kernel="fused")
    # The trial recipe's AdamW is torch's default on CUDA tensors, the multi-tensor
    # (foreach) implementation; the planner's is fused (or mixed precision, on 16-bit
    # weights).
    kernel: Literal["foreach", "fused"] = (
        "foreach" if step.optimizer == "adamw" and step.recipe == "trial" else "fused"
    )
    return build_optimizer(params, step.optimizer, lr=1e-4, kernel=kernel)


@dataclass(frozen=True)
class _ParameterBytes:
    adapter: int  # trainable adapter parameters (peft methods)
    quantized_16bit: int  # decoder weights QLoRA stores in NF4, as simulated (16-bit)
    quantized_nf4: int  # the same weights in NF4
    dequantized: int  # the largest quantized matrix back in 16-bit (QLoRA's transient)
    trainable_numels: tuple[int, ...]  # for the 8-bit optimizer states


def _parameter_bytes(model: Any, step: _Step) -> _ParameterBytes:
    from planner.methods import quantized_weights

    adapter = 0
    if step.kind in ("lora", "qlora", "dora"):
        adapter = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    quantized_16bit = quantized_numel = dequantized = 0
    if step.kind in ("lora", "qlora"):
        # What QLoRA stores in NF4, by the planner's convention: every frozen weight
        # matrix of the decoder layers (experts included); MoE routers, norms, embeddings
        # and the head stay 16-bit (transformers keeps the output embedding out of
        # bitsandbytes).
        for _, param in quantized_weights(_unwrap(model)):
            if param.requires_grad:  # the adapters
                continue
            quantized_16bit += param.numel() * param.element_size()
            quantized_numel += param.numel()
            matrix = param[0] if param.dim() == 3 else param
            # bitsandbytes dequantizes a weight to the compute dtype before its matmul.
            dequantized = max(dequantized, matrix.numel() * param.element_size())
    trainable_numels = tuple(p.numel() for p in model.parameters() if p.requires_grad)
    return _ParameterBytes(
        adapter=adapter,
        quantized_16bit=quantized_16bit,
        quantized_nf4=math.ceil(quantized_numel * _NF4_BITS_PER_PARAM / 8),
        dequantized=dequantized,
        trainable_numels=trainable_numels,
    )


def _unwrap(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _terms(peak: dict[str, int], counts: _ParameterBytes, step: _Step) -> dict[str, int]:
    """MemTracker categories at one peak -> the planner's breakdown terms."""
    weights = peak["parameters"] + peak["buffers"] - counts.adapter
    if step.kind == "qlora":
        weights += counts.quantized_nf4 - counts.quantized_16bit + counts.dequantized
    optimizer_states = peak["optimizer_states"]
    if step.optimizer in ("adamw8bit", "paged_adamw8bit") and optimizer_states:
        optimizer_states = _bnb_adamw_state_bytes(counts.trainable_numels)
    return {
        "weights": weights,
        "adapter_weights": counts.adapter,
        "gradients": peak["gradients"],
        "optimizer_states": optimizer_states,
        "activations": peak["activations"] + peak["temporaries"] + peak["other"],
        "logits_loss": 0,
    }


def _bnb_adamw_state_bytes(numels: tuple[int, ...]) -> int:
    """bitsandbytes AdamW8bit: two states per parameter, 8-bit blockwise when large enough."""
    total = 0
    for n in numels:
        if n < _BNB_MIN_8BIT_SIZE:
            total += 2 * 4 * n
        else:
            total += 2 * (n + 4 * math.ceil(n / _BNB_BLOCK))
    return total
