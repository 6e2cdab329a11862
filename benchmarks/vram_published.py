"""paretune's predicted peak VRAM against published measurements, side by side.

    python benchmarks/vram_published.py

Each row is a measurement published with its settings (research notes, "Published
measured peaks usable for calibration"). Settings the source leaves implicit are
filled in with that framework's defaults of the time, written next to the row.
Allocator-based measurements (torch.cuda.max_memory_allocated and friends) do not
see the CUDA context nor the caching allocator's reserve (reserved minus allocated:
the planner's ``allocator_fragmentation`` share of the short-lived terms), so for those
rows both are left out of the prediction.
Every row is planned through its framework's preset (``framework_method``); the row's
own settings (its config, what that version of the framework did) win over the preset.
Rows the planner cannot model (encoder-decoder T5 models) and rows whose settings are
contradicted or not stated are listed, not scored, each with the reason (with the
prediction where the row can be planned at all).

Sources considered and not added (no row):
- Unsloth (README, docs "Unsloth Benchmarks", blog posts on Llama 3.1 / 3.3): speed and
  "VRAM reduction" percentages against Hugging Face + FA2 and the longest context that fits
  (used by ``context_anchors``), no peak with its settings.
- Liger-Kernel (README, examples/huggingface/README.md): memory shown as plots, not
  figures; its Trainer example pads each Alpaca batch to its longest example
  (DataCollatorForCompletionOnlyLM, pad_to_multiple_of=16), so no step length is fixed.
- Axolotl: no peak published with its config. Issue threads quote the callback's "GPU
  memory usage while training" (allocated after the step, not the peak; axolotl#814), or
  whole gigabytes measured by an unnamed tool (axolotl#602, OpenLLaMA 3B, not in the
  catalogue).
- torchtune README, Llama 3.1 8B on an A6000 (full 37.4 GiB, LoRA 30.3 GiB): no config
  named, and twice the RTX 4090 rows of the same method, so not those configs; Llama 3.1
  70B full (13.9 GiB): "CPU offload with fused optimizer" (fsdp_cpu_offload: parameters,
  gradients and states in host memory), which the planner does not model; Llama 3.2 3B
  "Baseline" (25.5 GiB): pads each batch to its longest Alpaca example.
Prints, per row, the measured peak and each prediction as a ratio to it (ours, the two
rules of thumb users quote, and the PyPI peer planners) and the median error of each;
rows off by more than 5% carry the reason in their note. A peer's column is filled only
where its formula is documented with a source (see ``PEERS``); the others are empty, with
the reason and their documented aggregate figure under the table.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import MethodSpec, Workload, memory_terms, resolve_model
from planner.frameworks import framework_method

GIB = 2**30
_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Row:
    label: str
    model: str | None
    workload: Workload | None
    method: MethodSpec | None
    measured_bytes: float
    source: str
    allocator_peak: bool = True  # measured by the caching allocator: no CUDA context
    weights_only: bool = False
    # Paged optimizer states live in CUDA unified memory (cudaMallocManaged by bitsandbytes),
    # which torch.cuda.max_memory_allocated does not count.
    paged_outside_allocator: bool = False
    note: str = ""
    skip: str = ""  # why the planner cannot predict this row
    peers: dict[str, float] = field(default_factory=dict)


def _preset(framework: str, kind: str, **settings: Any) -> MethodSpec:
    """``kind`` as ``framework`` runs it: the row's own ``settings`` (its config, or the
    framework's behaviour at the version measured) win over the preset, which fills the
    rest (``framework_method``'s ``explicit``)."""
    return framework_method(framework, kind, settings=settings, explicit=set(settings)).method


# torchtune's README table of pytorch/torchtune#955 (May 2024, in v0.2.0; kept until #1664).
# Each row's recipe config of that commit (recipes/configs/llama2/) fills what the table
# leaves out. What torchtune then did differently from its preset (torchtune 0.6.1):
# the configs' loss was torch.nn.CrossEntropyLoss, and the recipes kept
# `logits = logits[..., :-1, :].contiguous()` of the model's `self.output(h).float()`
# alive through the loss backward: 4 fp32 copies of the logits (logit_copies=4). The
# llama2 LoRA builders defaulted to lora_dropout 0.05 (torchtune/models/llama2/
# _model_builders.py). Its memory log (torchtune/utils/memory.py get_memory_stats)
# divided by 1e9.
_TT_955 = "torchtune README, pytorch/torchtune#955 (v0.2.0)"
_TT_955_LOG = (
    "torchtune's memory log printed the peak active, allocated and reserved memory, and "
    "the README does not say which it gives: read here as allocated, like the later "
    "torchtune rows; read as reserved (the planner's reserve kept) the prediction is "
)
_TT_955_LEGACY = {"loss": "standard", "logit_copies": 4}
# torchtune's README "Optimization flags" table (pytorch/torchtune#2003, Nov 2024, v0.4.0):
# Llama 3.2 3B on an A100, batch 2, max_seq_len 4096, bf16, each technique added to the
# one before; "Peak Memory Active" (torch.cuda.memory_stats active_bytes.all.peak) in GiB.
# From "+ Packed Dataset" on, every sequence is 4096 tokens (the baseline row pads each
# batch to its longest example: not plannable). The baseline is full_finetune_single_device
# with 3B_full_single_device.yaml, its loss, checkpointing, optimizer_in_bwd and optimizer
# turned back to the plain ones the table then adds one by one: torch.nn.CrossEntropyLoss
# (the model's `.float()` logits are deleted before the backward, `del logits`: 3 fp32
# copies, the planner's default), no checkpointing, torch.optim.AdamW on the bf16
# weights (adamw_bf16).
_TT_2003 = "torchtune README 'Optimization flags', pytorch/torchtune#2003 (v0.4.0)"
_TT_3B_BASE = {
    "loss": "standard",
    "grad_checkpointing": False,
    "optimizer": "adamw_bf16",
    "optimizer_in_backward": False,
}
_COMPILED_LAYERS = (
    "torch.compile of each layer changes what the layer saves for its backward (fused "
    "norm, RoPE and SwiGLU kernels); the planner's `compiled` changes only the chunked "
    "loss, so without checkpointing it has no model of this row"
)

ROWS = [
    Row(
        "LLaMA-7B QLoRA base weights (NF4 + double quant)",
        "llama-2-7b",
        Workload(),
        # The paper's code (qlora.py: transformers Trainer + peft) calls peft's
        # prepare_model_for_kbit_training, which upcasts the unquantized parameters to
        # fp32, then, under --bf16 (its scripts), casts lm_head and embed_tokens back to
        # bf16 and keeps only the norms in fp32.
        _preset("hf", "qlora", unquantized_fp32=False),
        5_048e6,
        "QLoRA paper, figure 6",
        weights_only=True,
        note="not explained by the stored weights of the paper's code: NF4 decoder "
        "matrices (3.34 GB) and 16-bit embeddings and head (0.52 GB). Even the fp32 upcast "
        "of prepare_model_for_kbit_training alone (--unquantized-fp32) gives 4.48 GB; the "
        "figure may count more than the weights",
    ),
    Row(
        "Llama2-7B QLoRA, 1x RTX 4090, bs 4, seq 2048 (torchtune)",
        "llama-2-7b",
        # 7B_qlora_single_device: gradient_accumulation_steps 16.
        Workload(seq_len=2048, batch=4, grad_accum=16),
        # q, k, v, output and MLP adapted, rank 8, alpha 16; "** = Uses torch compile".
        _preset(
            "torchtune",
            "qlora",
            rank=8,
            alpha=16,
            targets=_LLAMA_LINEARS,
            lora_dropout=0.05,
            compiled=True,
            **_TT_955_LEGACY,
        ),
        12.3e9,
        _TT_955,
        note="NF4 base, bf16 embeddings and head, bf16 adapters (the recipe builds the "
        "model under set_default_dtype(bf16) and validates the adapters' dtype). The "
        "whole model is compiled (utils.wrap_compile), which the planner does not model "
        "beyond the loss. " + _TT_955_LOG + "11.28 GB (-8.3%)",
    ),
    Row(
        "Llama2-7B LoRA, 1x RTX 4090, bs 4, seq 2048 (torchtune)",
        "llama-2-7b",
        # 7B_lora_single_device: gradient_accumulation_steps 64.
        Workload(seq_len=2048, batch=4, grad_accum=64),
        _preset(
            "torchtune",
            "lora",
            rank=8,
            alpha=16,
            targets=("q_proj", "v_proj"),
            lora_dropout=0.05,
            **_TT_955_LEGACY,
        ),
        21.3e9,
        _TT_955,
        note="torchtune's fp32 logits (logit_copies=4). " + _TT_955_LOG + "20.68 GB (-2.9%)",
    ),
    Row(
        "Llama2-7B LoRA, 2x RTX 4090 FSDP, bs 4, seq 2048 (torchtune)",
        "llama-2-7b",
        # 7B_lora (lora_finetune_distributed): FSDP FULL_SHARD, activation checkpointing
        # off, gradient_accumulation_steps 32.
        Workload(seq_len=2048, batch=4, grad_accum=32),
        _preset(
            "torchtune",
            "lora",
            rank=8,
            alpha=16,
            targets=("q_proj", "v_proj"),
            lora_dropout=0.05,
            grad_checkpointing=False,
            gpus=2,
            sharding="zero3",
            **_TT_955_LEGACY,
        ),
        16.2e9,
        _TT_955,
        skip="not the stated settings: with its config's checkpointing off, 4 x 2048 tokens "
        "keep 45 GB of layer activations, more than a 24 GB card holds",
    ),
    Row(
        "Llama2-7B full, PagedAdamW, 1x RTX 4090, bs 4, seq 2048 (README)",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        _preset("torchtune", "full", **_TT_955_LEGACY),
        24.1e9,
        _TT_955,
        paged_outside_allocator=True,
        skip="not reproduced by torchtune's maintainers with its config: "
        "pytorch/torchtune#961 measured 20.2 GB (scored below) and 22.3 GB on an A100, and "
        "the PR was closed to re-measure the table",
    ),
    Row(
        "Llama2-7B full, PagedAdamW, bs 4, seq 2048 (torchtune#961)",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        # 7B_full_low_memory: bitsandbytes' 32-bit PagedAdamW stepped inside the backward
        # (optimizer_in_bwd: True), checkpointing on. The preset's paged_adamw8bit: paged
        # states are unified memory, outside the allocator's peak, whatever their bits.
        _preset("torchtune", "full", **_TT_955_LEGACY),
        20.2e9,
        "pytorch/torchtune#961 (May 2024): `tune run full_finetune_single_device --config "
        "llama2/7B_full_low_memory batch_size=4`, inputs forced to 2048 tokens; "
        "'20.2 peak memory allocated (and similar for reserved)'",
        paged_outside_allocator=True,
    ),
    Row(
        "Llama2-7B full, 4x RTX 4090 FSDP, bs 4, seq 2048 (torchtune)",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        # 7B_full (full_finetune_distributed): FSDP FULL_SHARD of the bf16 weights
        # (mixed_precision=None), torch.optim.AdamW (states in bf16), checkpointing on.
        _preset(
            "torchtune",
            "full",
            optimizer="adamw_bf16",
            optimizer_in_backward=False,
            gpus=4,
            sharding="zero3",
            **_TT_955_LEGACY,
        ),
        24.1e9,
        _TT_955,
        skip="the figure repeats the single-GPU full row's 24.1 GB, which the maintainers "
        "could not reproduce (pytorch/torchtune#961, closed: 'we need to get new numbers "
        "for this in general')",
    ),
    Row(
        "Llama2-70B LoRA, 8x A100 FSDP, bs 4, seq 4096 (data <=512)",
        "llama-2-70b",
        # The recipe's default data is torchtune's alpaca_dataset, whose max_seq_len
        # defaults to 512 ("as set by Stanford Alpaca", its docstring), padded per batch:
        # 4096 is the model's context, not what the step saw. batch_size is per GPU (each
        # rank's DataLoader). FSDP shards the frozen base over the 8 GPUs.
        Workload(seq_len=512, batch=4),
        # 70B_lora: q, k and v adapted, rank 16, alpha 32, checkpointing on.
        _preset(
            "torchtune",
            "lora",
            rank=16,
            alpha=32,
            targets=("q_proj", "k_proj", "v_proj"),
            lora_dropout=0.05,
            gpus=8,
            sharding="zero3",
            **_TT_955_LEGACY,
        ),
        26.4e9,
        _TT_955,
        note="sequences are at most 512 tokens (the default data's truncation), an upper "
        "bound: shorter batches need less. At the stated 4096 the prediction is 54 GB: the "
        "checkpointed layer inputs alone would be 21.5 GB. Not modelled: FSDP keeps the "
        "root unit's parameters (embeddings, final norm, lm_head: 1.05 GB) gathered from "
        "the forward through the backward (torch/distributed/fsdp/_runtime_utils.py, "
        "_post_forward_reshard: 'Do not free the root's parameters'), 0.92 GB more here "
        "(-3.5%); on the Llama 3.1 70B row below the same rule would add 3.7 GB (+8.6%), so "
        "the planner's zero3 leaves it out until a measurement settles it",
    ),
    Row(
        "Llama2-70B full, PagedAdamW, 8x A100 FSDP, bs 4, seq 4096",
        None,
        None,
        None,
        70.4e9,
        _TT_955,
        skip="no config for this run: recipes/configs/llama2 at that commit has no 70B full "
        "config, so its optimizer bits, data and FSDP options are unknown",
    ),
    Row(
        "Llama2-7B LoRA, ctx 8192, bs 1, FA2, ZeRO-2, 8x A100",
        "llama-2-7b",
        Workload(seq_len=8192, batch=1),
        # transformers of 2023 (4.31-4.34) upcast the logits to fp32 inside the model,
        # returned them, and made a shifted contiguous fp32 copy for the loss: 5 fp32
        # copies alive at the loss backward (logit_copies=5).
        _preset(
            "hf",
            "lora",
            rank=8,
            alpha=16,
            targets="attn",
            attention="flash",
            gpus=8,
            sharding="zero2",
            logit_copies=5,
            # LongLoRA's ds_configs/stage2.json: reduce_bucket_size 1e9, overlap_comm true,
            # contiguous_gradients true.
            zero_reduce_bucket_size=1_000_000_000,
            zero_overlap_comm=True,
            # DeepSpeed's engine casts the module, adapters included, to bf16.
            adapter_fp32=False,
        ),
        25.7e9,
        "LongLoRA (Chen et al. 2023), table 12",
        allocator_peak=False,
        note="DeepSpeed's ZeRO-2 gradient buckets as LongLoRA's ds_configs/stage2.json sets "
        "them (reduce_bucket_size 1e9, overlap_comm, contiguous_gradients): "
        "DeepSpeedZeroOptimizer.backward (deepspeed/runtime/zero/stage_1_and_2.py) allocates "
        "two buffers of 1e9 16-bit elements, 4.0 GB; with DeepSpeed's defaults (one bucket "
        "of 5e8) the row would be 3.0 GB lower",
    ),
    Row(
        "bloomz-7b1 LoRA, A100-80GB, fp32, bs 8, seq 64",
        "bloomz-7b1",
        Workload(seq_len=64, batch=8),
        _preset(
            "hf",
            "lora",
            rank=8,
            alpha=32,
            targets=("query_key_value",),
            lora_dropout=0.1,
            precision="fp32",
            grad_checkpointing=False,
        ),
        32e9,
        "PEFT README, with the settings of its twitter_complaints causal-LM example (model "
        "loaded in fp32, max_length 64, batch 8); peak by torch.cuda.max_memory_allocated",
    ),
    # torchtune README (since pytorch/torchtune#1664, v0.3): "batch size 2 (without gradient
    # accumulation), a dataset packed to sequence length 2048, and torch compile enabled";
    # peaks from its log_memory_stats (torch.cuda.max_memory_allocated), in GiB. Each row is
    # its recipe config of that commit (recipes/configs/llama3_1/*.yaml) through the
    # torchtune preset.
    Row(
        "Llama3.1-8B QLoRA, 1x RTX 4090, bs 2, seq 2048 (torchtune)",
        "llama-3.1-8b",
        Workload(seq_len=2048, batch=2),
        _preset("torchtune", "qlora", rank=8, alpha=16, targets=_LLAMA_LINEARS, compiled=True),
        7.4 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        note="chunked CE compiled; q, k, v, output and MLP adapted (8B_qlora_single_device). "
        "The figure equals the floor of that config: NF4 weights with 16-bit embeddings and "
        "head (5.82 GB), the 32 checkpointed layer inputs (1.07 GB) and the 16-bit logits "
        "(1.05 GB; TransformerDecoder.chunked_output returns all 8 chunks at once) = 7.94 GB. "
        "The planner adds one chunk's 16-bit gradient, one layer's recomputed activations "
        "and the cuBLAS workspace, which the published run did not show",
    ),
    Row(
        "Llama3.1-8B LoRA, 1x RTX 4090, bs 2, seq 2048 (torchtune)",
        "llama-3.1-8b",
        Workload(seq_len=2048, batch=2),
        _preset("torchtune", "lora", rank=8, alpha=16, targets=("q_proj", "v_proj"), compiled=True),
        16.2 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        note="below the floor of the config it names (8B_lora_single_device at "
        "pytorch/torchtune#1664: activation checkpointing on, offloading off): bf16 "
        "weights (16.06 GB), the 32 checkpointed layer inputs (1.07 GB) and the 16-bit "
        "logits of chunked_output (1.05 GB) alone are 18.18 GB, 0.8 GB above the published "
        "17.39 GB. Only a setting the README does not state (activation offloading, added "
        "to torchtune about then) would explain it; it is not assumed",
    ),
    Row(
        "Llama3.1-8B full, 1x RTX 4090, bs 2, seq 2048 (torchtune)",
        "llama-3.1-8b",
        Workload(seq_len=2048, batch=2),
        _preset("torchtune", "full", compiled=True),
        18.9 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        paged_outside_allocator=True,
        note="PagedAdamW8bit with optimizer_in_bwd (8B_full_single_device); its paged "
        "states are unified memory, outside the allocator's peak",
    ),
    Row(
        "Llama3.1-70B LoRA, 8x A100 FSDP, bs 2, seq 2048 (torchtune)",
        "llama-3.1-70b",
        Workload(seq_len=2048, batch=2),
        # 70B_lora (lora_finetune_distributed, FSDP2 fully_shard per layer): q, k and v
        # adapted, rank 16, alpha 32, dropout 0, chunked CE, checkpointing on.
        _preset(
            "torchtune",
            "lora",
            rank=16,
            alpha=32,
            targets=("q_proj", "k_proj", "v_proj"),
            compiled=True,
            gpus=8,
            sharding="zero3",
        ),
        27.6 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
    ),
    Row(
        "Llama3.1-405B QLoRA, 8x A100 FSDP, bs 2, seq 2048 (torchtune)",
        "llama-3.1-405b",
        Workload(seq_len=2048, batch=2),
        # 405B_qlora: q, k, v, output and MLP adapted, rank 16, alpha 32, loss
        # torch.nn.CrossEntropyLoss (not chunked), checkpointing on, no CPU offload.
        _preset(
            "torchtune",
            "qlora",
            rank=16,
            alpha=32,
            targets=_LLAMA_LINEARS,
            loss="standard",
            compiled=True,
            gpus=8,
            sharding="zero3",
        ),
        44.8 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        note="the README writes '44.8 GB' where every other row says GiB; read as GiB, the "
        "unit torchtune's memory log prints (as GB the row is off by 7% more). The config's "
        "batch_size 1 and gradient_accumulation_steps 16 are overridden by the README's "
        "common settings, under which the 126 checkpointed layer inputs alone are 16.9 GB "
        "and the three fp32 logit copies of the unchunked loss 6.3 GB",
    ),
    Row(
        "Llama3.2-3B full, A100, bs 2, packed 4096 (torchtune flags)",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        _preset("torchtune", "full", **_TT_3B_BASE),
        60.0 * GIB,
        _TT_2003 + ", '+ Packed Dataset'",
    ),
    Row(
        "  + compile",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        _preset("torchtune", "full", **{**_TT_3B_BASE, "compiled": True}),
        51.0 * GIB,
        _TT_2003 + ", '+ Compile'",
        skip=_COMPILED_LAYERS,
    ),
    Row(
        "  + chunked cross-entropy",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        _preset("torchtune", "full", **{**_TT_3B_BASE, "compiled": True, "loss": "chunked"}),
        42.9 * GIB,
        _TT_2003 + ", '+ Chunked Cross Entropy'",
        skip=_COMPILED_LAYERS,
    ),
    Row(
        "  + activation checkpointing",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        _preset(
            "torchtune",
            "full",
            **{**_TT_3B_BASE, "compiled": True, "loss": "chunked", "grad_checkpointing": True},
        ),
        24.9 * GIB,
        _TT_2003 + ", '+ Activation Checkpointing'",
        skip="the step holds this row's peak (all gradients and AdamW states), and the "
        "table does not say which torch.optim.AdamW ran: the default foreach implementation "
        "makes a temporary of the parameters' size in the step (torch._foreach_sqrt of the "
        "second moments, 6.4 GB here), fused=True none, which the planner assumes",
    ),
    Row(
        "  + optimizer in backward",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        _preset("torchtune", "full", compiled=True, optimizer="adamw_bf16"),
        23.1 * GIB,
        _TT_2003 + ", '+ Fuse optimizer step into backward'",
    ),
    Row(
        "  + activation offloading",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        # torchtune's OffloadActivations (torchtune/training/_activation_offloading.py)
        # moves the checkpointed layer inputs to host memory and brings each back on a
        # side stream for its layer's backward.
        _preset(
            "torchtune", "full", compiled=True, optimizer="adamw_bf16", offload_checkpoints=True
        ),
        21.8 * GIB,
        _TT_2003 + ", '+ Activation Offloading'",
    ),
    Row(
        "  + 8-bit AdamW",
        None,
        None,
        None,
        17.6 * GIB,
        _TT_2003 + ", '+ 8-bit AdamW'",
        skip="which 8-bit optimizer is not stated: the linked tutorial section "
        "(memory_optimizations.rst, 'Lower precision optimizers') offers torchao's AdamW8bit "
        "and bitsandbytes' PagedAdamW8bit, whose paged states the allocator does not count",
    ),
    Row(
        "Llama3.2-3B LoRA, A100, bs 2, packed 4096 (torchtune flags)",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        # 3B_lora_single_device with the final row's overrides (packed, compile, chunked
        # CE, checkpointing and offloading on, AdamW fused as the config sets it): q, v and
        # output and the MLP adapted, rank 64, alpha 128, dropout 0.
        _preset(
            "torchtune",
            "lora",
            rank=64,
            alpha=128,
            targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            compiled=True,
            offload_checkpoints=True,
        ),
        8.5 * GIB,
        _TT_2003 + ", 'LoRA'",
    ),
    Row(
        "Llama3.2-3B QLoRA, A100, bs 2, packed 4096 (torchtune flags)",
        "llama-3.2-3b",
        Workload(seq_len=4096, batch=2),
        # The README's command: 3B_qlora_single_device, dataset.packed=True compile=True
        # loss=CEWithChunkedOutputLoss enable_activation_checkpointing=True
        # optimizer_in_bwd=False enable_activation_offloading=True
        # optimizer._component_=torch.optim.AdamW tokenizer.max_seq_len=4096 batch_size=2.
        _preset(
            "torchtune",
            "qlora",
            rank=64,
            alpha=128,
            targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            compiled=True,
            offload_checkpoints=True,
        ),
        4.6 * GIB,
        _TT_2003 + ", 'QLoRA'",
        note="the figure is the floor of that config: NF4 weights with the tied 16-bit "
        "embedding (2.24 GB), bf16 adapters and their AdamW moments (0.54 GB) and the "
        "16-bit logits of chunked_output (2.10 GB) = 4.88 GB. The planner adds one chunk's "
        "logit gradient (0.26 GB), the final norm's fp32 input, the two layer inputs "
        "offloading keeps on the GPU and the dequantized weight of a matmul",
    ),
    Row(
        "T0_3B full, A100-80GB",
        None,
        None,
        None,
        47.14e9,
        "PEFT README",
        skip="encoder-decoder (T5): the planner models decoder-only transformers",
    ),
    Row(
        "T0_3B LoRA, A100-80GB",
        None,
        None,
        None,
        14.4e9,
        "PEFT README",
        skip="encoder-decoder (T5)",
    ),
    Row(
        "mt0-xxl (12B) LoRA, A100-80GB",
        None,
        None,
        None,
        56e9,
        "PEFT README",
        skip="encoder-decoder (mT5)",
    ),
]


def predict(row: Row) -> float:
    assert row.model and row.workload and row.method
    terms = memory_terms(resolve_model(row.model), row.workload, row.method, on_gpu=True)
    if row.weights_only:
        return float(terms.breakdown["weights"])
    peak = float(terms.peak_bytes)
    if row.allocator_peak:
        # The allocator's peak counts neither the context nor the blocks it holds in
        # reserve beyond the allocated ones (the planner's reserve term).
        peak -= terms.context_bytes + terms.reserve_bytes
    if row.paged_outside_allocator and row.method.optimizer.startswith("paged_"):
        peak -= terms.breakdown["optimizer_states"]
    return peak


def rule_of_thumb(row: Row, rule: str) -> float | None:
    """The two rules of thumb users quote, per GPU (None for the weights-only row).

    LLaMA-Factory's README table: full (AMP) 18·x GB, LoRA 2·x, QLoRA (4-bit) x/2 for a
    model of x billion parameters. accelerate's estimate-memory: training ≈ 4 × the
    model's size in its dtype (2 B/param in bf16, 4 in fp32).
    """
    if row.weights_only or row.method is None or row.model is None:
        return None
    billions = resolve_model(row.model).total_params / 1e9
    # Neither rule knows about sharding; read them generously: full sharding divides all.
    shards = row.method.gpus if row.method.sharding == "zero3" else 1
    if rule == "llamafactory":
        factor = {"full": 18.0, "freeze": 18.0, "lora": 2.0, "dora": 2.0, "qlora": 0.5}
        return factor[row.method.kind] * billions * 1e9 / shards
    dtype_bytes = 4 if row.method.precision == "fp32" else 2
    return 4 * dtype_bytes * billions * 1e9 / shards


# Unsloth README ("context length" table): Llama 3.1 8B Instruct, 4-bit QLoRA on all
# linear layers (q, k, v, o, gate, up, down), rank 32, batch 1, sequences padded to the
# length; the longest that fits in each card's memory. Read as GiB cards.
# https://github.com/unslothai/unsloth README (2024-2026).
UNSLOTH_CONTEXT = [  # (card GiB, Unsloth, Hugging Face + FA2)
    (12, 21_848, 932),
    (16, 40_724, 2_551),
    (24, 78_475, 5_789),
    (48, 191_728, 15_502),
]


def context_anchors() -> None:
    """The longest sequence that fits, ours with each preset, against Unsloth's table."""
    from planner import max_fit

    arch = resolve_model("llama-3.1-8b")
    settings = {"rank": 32, "alpha": 32, "targets": _LLAMA_LINEARS}
    methods = {
        name: framework_method(name, "qlora", settings=settings).method
        for name in ("unsloth", "hf")
    }
    print("\nlongest sequence, Llama 3.1 8B QLoRA r=32 all linear, batch 1 (Unsloth README)")
    print(f"{'card':>6} {'Unsloth':>9} {'ours':>9} {'HF+FA2':>9} {'ours hf':>9}")
    for gib, unsloth, hf in UNSLOTH_CONTEXT:
        ours = {
            name: max_fit(arch, Workload(seq_len=2048, batch=1), m, gib * GIB)[0]
            for name, m in methods.items()
        }
        print(f"{gib:>4}GiB {unsloth:>9,} {ours['unsloth']:>9,} {hf:>9,} {ours['hf']:>9,}")
    print(
        "ours caps at max_position_embeddings (131,072). Unsloth's own LoRA kernels keep "
        "no fp32 copy of each adapted module's input, which the planner charges (peft's "
        "path); HF+FA2 ran an older transformers with fp32 logits copies"
    )


# The peer planners on PyPI (research notes, "How the PyPI peers compute it" and
# "What the peers measured on our held-out cases"). A column is filled only from a formula
# the notes document in full; none is, so each says why it is empty and what is documented.
PEERS = {
    "fitcheck-llm": "its overhead and fragmentation constants are least-squares fits to its "
    "own runs (one GPU type), not published; median 11.5% on the notes' held-out peaks "
    "(2026-11-30)",
    "ftuneai": "the notes document only its activation term (b*s*h*L*bytes x 4 with "
    "checkpointing or x 10, x 0.5 with flash, x 2 for QLoRA, + 20% CUDA overhead), not its "
    "weights or optimizer terms; median 14.2% with flash on (2026-11-30)",
    "peft-doctor": "no formula in the notes; median 18.2% (2026-11-30)",
    "tinyforge": "no formula in the notes; median 11.4% with its chunked-CE switch set by "
    "hand per trainer, 23.1% on its default (2026-11-30)",
}
"""Peer planner -> why its column is empty, and its documented aggregate figure."""


def _ratio(predicted: float | None, measured: float) -> str:
    return f"{'':>7}" if predicted is None else f"{predicted / measured:>6.2f}x"


def main() -> None:
    rules = {"LLaMA-F.": "llamafactory", "accel.": "accelerate"}
    peer_heads = {
        "fitcheck-llm": "fitcheck",
        "ftuneai": "ftuneai",
        "peft-doctor": "peft-doc",
        "tinyforge": "tinyforge",
    }
    header = f"{'row':<58} {'measured':>9} {'paretune':>9} {'ours':>7} " + " ".join(
        f"{h:>8}" for h in [*rules, *peer_heads.values()]
    )
    print("GB = 10^9 bytes per GPU; ratios are predicted / measured (1.00x = exact)")
    print(header)
    print("-" * len(header))
    errors: list[float] = []
    peer_errors: dict[str, list[float]] = {rule: [] for rule in rules.values()}
    notes = []
    for row in ROWS:
        measured = row.measured_bytes
        if row.skip:
            # Shown when the row can be planned at all, but left out of the medians.
            ours_cell = f"{'n/a':>9}"
            if row.method is not None:
                unscored = predict(row)
                ours_cell = f"{unscored / 1e9:>9.2f} {_ratio(unscored, measured)} (not scored)"
            print(f"{row.label:<58} {measured / 1e9:>9.2f} {ours_cell}")
            notes.append(f"  {row.label}: not scored ({row.skip})")
            continue
        ours = predict(row)
        error = (ours - measured) / measured
        errors.append(abs(error))
        cells = [f"{row.label:<58} {measured / 1e9:>9.2f} {ours / 1e9:>9.2f} "]
        cells.append(_ratio(ours, measured))
        for rule in rules.values():
            theirs = rule_of_thumb(row, rule)
            if theirs is not None:
                peer_errors[rule].append(abs(theirs - measured) / measured)
            cells.append(f" {_ratio(theirs, measured)}")
        cells += [f" {'':>7}" for _ in peer_heads]
        print("".join(cells) + (" *" if abs(error) > 0.20 else ""))
        if row.note and abs(error) > 0.05:
            notes.append(f"  {row.label}: {row.note}")
    print("-" * len(header))
    print(
        f"median absolute error, {len(errors)} scored rows: "
        f"paretune {statistics.median(errors):.1%}"
        f" (mean {statistics.mean(errors):.1%}); on the same rows LLaMA-Factory's table "
        f"{statistics.median(peer_errors['llamafactory']):.1%}, accelerate's 4x rule "
        f"{statistics.median(peer_errors['accelerate']):.1%} (rule rows exclude the "
        f"weights-only row)"
    )
    print("target: median <= 5%")
    print("\nempty peer columns (no per-row figure is invented):")
    for peer, why in PEERS.items():
        print(f"  {peer}: {why}")
    if notes:
        print("\nnotes (* = off by more than 20%):")
        print("\n".join(notes))


if __name__ == "__main__":
    main()
    context_anchors()
