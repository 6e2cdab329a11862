"""What is trained and how: the planner's two frozen, validated inputs.

Both are frozen dataclasses that check themselves on construction and raise
:class:`planner.errors.InvalidSpecError` naming the bad field, so a value that
reaches the formulas is always in range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from planner.errors import InvalidSpecError
from pricing.errors import did_you_mean

__all__ = [
    "ATTENTIONS",
    "FRAMEWORKS",
    "LOSSES",
    "METHODS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SHARDINGS",
    "TARGET_GROUPS",
    "MethodSpec",
    "Workload",
    "parse_count",
]

MethodKind = Literal["full", "lora", "qlora", "dora", "freeze"]
Optimizer = Literal["adamw", "adamw_bf16", "adamw8bit", "paged_adamw8bit", "adafactor", "sgd"]
Precision = Literal["bf16", "fp16", "fp32"]
Attention = Literal["sdpa", "flash", "eager"]
Sharding = Literal["none", "zero1", "zero2", "zero3"]
Loss = Literal["standard", "chunked", "fused"]
FrameworkName = Literal["hf", "trl", "unsloth", "axolotl", "torchtune", "llama-factory"]

METHODS: tuple[str, ...] = get_args(MethodKind)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
PRECISIONS: tuple[str, ...] = get_args(Precision)
ATTENTIONS: tuple[str, ...] = get_args(Attention)
SHARDINGS: tuple[str, ...] = get_args(Sharding)
LOSSES: tuple[str, ...] = get_args(Loss)
FRAMEWORKS: tuple[str, ...] = get_args(FrameworkName)
TARGET_GROUPS = ("attn", "mlp", "all")
ADAPTER_METHODS = ("lora", "qlora", "dora")


def _positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSpecError(
            f"{owner}: `{name}` must be a positive integer, got {value!r}",
            f"Give {name.replace('_', '-')} a whole number of at least 1.",
        )


def _positive_number(owner: str, name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or not math.isfinite(value)
    ):
        raise InvalidSpecError(
            f"{owner}: `{name}` must be a positive finite number, got {value!r}",
            f"Give {name.replace('_', '-')} a number above 0.",
        )


def _non_negative_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSpecError(
            f"{owner}: `{name}` must be a whole number of at least 0, got {value!r}",
            f"Give {name.replace('_', '-')} a whole number (0 or more).",
        )


def _choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidSpecError(
            f"{owner}: unknown {name} {value!r}", did_you_mean(str(value), choices)
        )


_SCALES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(name: str, text: str) -> int:
    """A count written as ``20000000``, ``20M``, ``1.5e7``, ``2B`` or ``10,000``.

    Raises :class:`InvalidSpecError` naming ``name`` for anything else, or below 1.
    """
    cleaned = str(text).strip().lower().replace(",", "").replace("_", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e\+?[0-9]+)?)\s*([kmbgt]?)", cleaned)
    value = float(match.group(1)) * _SCALES[match.group(2)] if match else 0.0
    if not match or value < 1 or not math.isfinite(value):
        raise InvalidSpecError(
            f"workload: cannot read `{name}` {text!r} as a count of at least 1",
            f"Write {name.replace('_', '-')} as e.g. 20000000, 20M, 1.5e7 or 2B.",
        )
    return int(round(value))


@dataclass(frozen=True, slots=True)
class Workload:
    """How much data goes through the model, and in what shape.

    ``batch`` is the micro-batch per GPU (sequences per forward pass);
    ``grad_accum`` micro-batches make one optimizer step. ``dataset_tokens`` is
    the size of one epoch in tokens (padding included unless ``packing``).
    """

    seq_len: int = 2048
    batch: int = 1
    grad_accum: int = 1
    dataset_tokens: int = 10_000_000
    epochs: float = 1.0
    packing: bool = True

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch", "grad_accum", "dataset_tokens"):
            _positive_int("workload", name, getattr(self, name))
        _positive_number("workload", "epochs", self.epochs)

    @property
    def tokens(self) -> int:
        """Tokens processed over the whole run (dataset tokens × epochs)."""
        return int(round(self.dataset_tokens * self.epochs))

    def with_(self, **changes: Any) -> Workload:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A fine-tuning method and the settings that change its memory and time.

    ``kind``: ``full`` (all weights), ``lora``, ``qlora`` (LoRA on an NF4 base with
    double quantization), ``dora`` (LoRA plus a magnitude vector per module), or
    ``freeze`` (train only the top ``freeze_layers`` decoder layers).
    ``targets``: ``attn``, ``mlp``, ``all`` or module names (``("q_proj", "v_proj")``).
    ``optimizer``: ``adamw`` (16-bit weights with an fp32 master copy, the mixed-precision
    default of DeepSpeed/FSDP), ``adamw_bf16`` (pure bf16: states in bf16, no master
    copy), ``adamw8bit`` / ``paged_adamw8bit`` (bitsandbytes), ``adafactor`` (factored
    second moment, no momentum), ``sgd`` (momentum in the parameter dtype).
    ``gpus`` and ``sharding`` (``none`` = data parallel; ``zero1`` partitions the optimizer
    states over the GPUs, ``zero2`` also the gradients, ``zero3``/FSDP also the weights:
    the ZeRO paper's P_os, P_os+g and P_os+g+p).

    Framework behaviours that change the peak (defaults: transformers + peft today):
    ``optimizer_in_backward`` steps the optimizer on each parameter as soon as its
    gradient is complete and frees that gradient (torchtune's ``optimizer_in_bwd``), so
    the gradients of the whole model never exist at once; it needs ``grad_accum`` 1.
    ``unquantized_fp32`` (QLoRA only): True when the run goes through peft's
    ``prepare_model_for_kbit_training`` (TRL, paretune's trial), which casts every
    parameter bitsandbytes did not quantize (embeddings, lm_head, norms) to fp32; False
    (default) keeps them in the 16-bit compute dtype, as transformers loads them and
    torchtune trains them (the QLoRA paper's qlora.py casts embeddings and lm_head back
    to bf16 after that call). ``logit_copies``: the fp32 copies of the seq x batch x
    vocab logits alive at the loss backward: 3 with transformers 5 (log-softmax output,
    its gradient, the logits' gradient), 4 when the model itself returns fp32 logits that
    stay referenced (torchtune 0.1), 5 when the loss also makes a shifted contiguous fp32
    copy (transformers 4.31-4.44's LlamaForCausalLM).
    ``loss``: ``standard`` (the full logits and their fp32 copies, above), ``chunked``
    (the full 16-bit logits, upcast and reduced one chunk at a time: torchtune's
    ``CEWithChunkedOutputLoss``), ``fused`` (the lm_head and the loss run chunk by chunk, so
    the full logits never exist: Liger's fused linear cross-entropy, TRL's ``chunked_nll``,
    Unsloth, torchtune's ``LinearCrossEntropyLoss``). ``compiled``: the loss is compiled
    with torch.compile (changes only ``chunked``: the fused kernel keeps no fp32 chunk).
    ``offload_checkpoints``: checkpointed layer inputs go to host memory (Unsloth's
    ``use_gradient_checkpointing="unsloth"``). ``adapter_fp32``: adapters in fp32 (peft's
    default) or in the 16-bit compute dtype (torchtune). ``framework`` names whose
    behaviour these fields describe (see :mod:`planner.frameworks`) and ``speed_factor``
    is that framework's claimed speed over transformers (divides the hours).

    DeepSpeed ZeRO-2's gradient reduction buckets (charged only with ``sharding`` ``zero2``):
    ``zero_reduce_bucket_size`` is the ``zero_optimization.reduce_bucket_size`` of the
    DeepSpeed config, in elements, and ``zero_overlap_comm`` its ``overlap_comm``. With
    ``contiguous_gradients`` (DeepSpeed's default) ``DeepSpeedZeroOptimizer.backward``
    allocates one buffer of that many elements in the parameters' 16-bit dtype, two with
    ``overlap_comm``, and frees them after the backward (DeepSpeed v0.16.4,
    deepspeed/runtime/zero/stage_1_and_2.py, unchanged since v0.3). The defaults are
    DeepSpeed's own for a config that leaves the keys out (deepspeed/runtime/zero/config.py:
    ``reduce_bucket_size`` 5e8, ``overlap_comm`` true only for stage 3), which
    LLaMA-Factory's examples/deepspeed/ds_z2_config.json also sets: ``zero2`` is a DeepSpeed
    run in practice, and leaving the buffers out would predict below every such run. Set
    the bucket to 0 for a ZeRO-2 without them (``contiguous_gradients`` false is not
    modelled). ZeRO-1 runs through the same ``DeepSpeedZeroOptimizer`` and allocates the
    same buffers.

    ``optimizer_offload``: DeepSpeed's ``zero_optimization.offload_optimizer`` (ZeRO-Offload,
    Ren et al. 2021): the optimizer states, the fp32 master weights and the step live in
    host memory, and each gradient goes to host memory from the reduction bucket, so the GPU
    keeps neither (only the buckets). It needs ZeRO (``sharding`` zero1, zero2 or zero3).
    """

    kind: MethodKind = "lora"
    rank: int = 16
    alpha: float = 32.0
    targets: str | tuple[str, ...] = "all"
    optimizer: Optimizer = "adamw"
    precision: Precision = "bf16"
    grad_checkpointing: bool = True
    attention: Attention = "sdpa"
    gpus: int = 1
    sharding: Sharding = "none"
    freeze_layers: int = 2
    lora_dropout: float = 0.0
    optimizer_in_backward: bool = False
    unquantized_fp32: bool = False
    logit_copies: int = 3
    loss: Loss = "standard"
    compiled: bool = False
    offload_checkpoints: bool = False
    adapter_fp32: bool = True
    framework: FrameworkName = "hf"
    speed_factor: float = 1.0
    zero_reduce_bucket_size: int = 500_000_000
    zero_overlap_comm: bool = False
    optimizer_offload: bool = False

    def __post_init__(self) -> None:
        _choice("method", "method", self.kind, METHODS)
        _choice("method", "optimizer", self.optimizer, OPTIMIZERS)
        _choice("method", "precision", self.precision, PRECISIONS)
        _choice("method", "attention", self.attention, ATTENTIONS)
        _choice("method", "sharding", self.sharding, SHARDINGS)
        _choice("method", "loss", self.loss, LOSSES)
        _choice("method", "framework", self.framework, FRAMEWORKS)
        _positive_number("method", "speed_factor", self.speed_factor)
        _positive_int("method", "rank", self.rank)
        _positive_number("method", "alpha", self.alpha)
        _positive_int("method", "gpus", self.gpus)
        _positive_int("method", "freeze_layers", self.freeze_layers)
        for flag in (
            "grad_checkpointing",
            "optimizer_in_backward",
            "unquantized_fp32",
            "compiled",
            "offload_checkpoints",
            "adapter_fp32",
            "zero_overlap_comm",
            "optimizer_offload",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidSpecError(
                    f"method: `{flag}` must be true or false, got {getattr(self, flag)!r}"
                )
        _positive_int("method", "logit_copies", self.logit_copies)
        _non_negative_int("method", "zero_reduce_bucket_size", self.zero_reduce_bucket_size)
        if isinstance(self.lora_dropout, bool) or not 0 <= self.lora_dropout < 1:
            raise InvalidSpecError(
                f"method: `lora_dropout` must be in [0, 1), got {self.lora_dropout!r}"
            )
        targets = self.targets
        if isinstance(targets, str):
            if "," in targets:
                targets = tuple(t.strip() for t in targets.split(",") if t.strip())
            elif targets not in TARGET_GROUPS:
                targets = (targets,)
        elif isinstance(targets, list):
            targets = tuple(targets)
        if isinstance(targets, tuple) and (
            not targets or not all(isinstance(t, str) and t for t in targets)
        ):
            raise InvalidSpecError(
                f"method: `targets` must be attn, mlp, all or module names, got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)
        if self.optimizer_offload and self.sharding == "none":
            raise InvalidSpecError(
                "method: `optimizer_offload` is DeepSpeed's ZeRO-Offload, which needs ZeRO; "
                "`sharding` is none",
                "Use --sharding zero1, zero2 or zero3 with --optimizer-offload.",
            )
        if self.kind == "qlora" and self.precision == "fp32":
            raise InvalidSpecError(
                "method: qlora computes in 16-bit; `precision` fp32 is not supported with it",
                "Use --precision bf16 (or fp16 on GPUs without bf16).",
            )

    @property
    def uses_adapters(self) -> bool:
        return self.kind in ADAPTER_METHODS

    @property
    def scaling(self) -> float:
        """LoRA's alpha / rank (changes the update size, not memory)."""
        return self.alpha / self.rank

    def with_(self, **changes: Any) -> MethodSpec:
        return replace(self, **changes)

    def label(self) -> str:
        if self.uses_adapters:
            return f"{self.kind} r={self.rank}"
        if self.kind == "freeze":
            return f"freeze top {self.freeze_layers}"
        return self.kind
