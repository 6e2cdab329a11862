"""paretune's predicted peak VRAM against published measurements, side by side.

    python benchmarks/vram_published.py

Each row is a measurement published with its settings (research notes, "Published
measured peaks usable for calibration"). Settings the source leaves implicit are
filled in with that framework's defaults of the time, written next to the row.
Allocator-based measurements (torch.cuda.max_memory_allocated and friends) do not
see the CUDA context nor the caching allocator's reserve (reserved minus allocated:
the planner's ``allocator_fragmentation`` share of the short-lived terms), so for those
rows both are left out of the prediction.
Rows the planner cannot model (encoder-decoder T5 models) are listed, not scored.
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


_V01_LOG = (
    "torchtune v0.1's memory log (torchtune/utils/memory.py memory_stats_log) printed the "
    "peak active, allocated and reserved memory, and the README does not say which it "
    "gives: read here as allocated, like the later torchtune rows; read as reserved "
    "(the planner's reserve kept) the prediction is "
)

ROWS = [
    Row(
        "LLaMA-7B QLoRA base weights (NF4 + double quant)",
        "llama-2-7b",
        Workload(),
        # The paper's code (qlora.py) calls peft's prepare_model_for_kbit_training, which
        # upcasts the unquantized parameters to fp32, then, under --bf16 (its scripts),
        # casts lm_head and embed_tokens back to bf16 and keeps only the norms in fp32.
        MethodSpec(kind="qlora", unquantized_fp32=False),
        5_048e6,
        "QLoRA paper, figure 6",
        weights_only=True,
        note="not explained by the stored weights of the paper's code: NF4 decoder "
        "matrices (3.34 GB) and 16-bit embeddings and head (0.52 GB). Even the fp32 upcast "
        "of prepare_model_for_kbit_training alone (--unquantized-fp32) gives 4.48 GB; the "
        "figure may count more than the weights",
    ),
    Row(
        "Llama2-7B QLoRA, 1x RTX 4090, bs 4, seq 2048",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        MethodSpec(
            kind="qlora",
            rank=8,
            alpha=16,
            targets="all",
            optimizer="adamw",
            lora_dropout=0.05,
            logit_copies=4,
        ),
        12.3e9,
        "torchtune README (v0.1); its memory log divided by 1e9 then",
        # torchtune v0.1's TransformerDecoder returns `self.output(h).float()`, alive
        # through the loss backward: 4 fp32 copies of the logits (logit_copies=4);
        # its configs used lora_dropout 0.05.
        note="NF4 base, bf16 embeddings and head (torchtune does not upcast them). "
        + _V01_LOG
        + "12.21 GB (-0.8%)",
    ),
    Row(
        "Llama2-7B LoRA, 1x RTX 4090, bs 4, seq 2048",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        MethodSpec(kind="lora", rank=8, alpha=16, targets=("q_proj", "v_proj"), logit_copies=4),
        21.3e9,
        "torchtune README (v0.1)",
        note="torchtune v0.1's fp32 logits (logit_copies=4, see above). "
        + _V01_LOG
        + "20.69 GB (-2.9%)",
    ),
    Row(
        "Llama2-7B full, PagedAdamW, 1x RTX 4090",
        "llama-2-7b",
        Workload(seq_len=2048, batch=4),
        MethodSpec(
            kind="full", optimizer="paged_adamw8bit", optimizer_in_backward=True, logit_copies=4
        ),
        24.1e9,
        "torchtune README (v0.1)",
        note="torchtune's low-memory recipe steps the optimizer inside the backward "
        "(optimizer_in_bwd, modelled: optimizer_in_backward=True), so the 13.5 GB of "
        "gradients never exist at once. Its optimizer is bitsandbytes' 32-bit PagedAdamW "
        "(8 B/param, 54 GB for 6.7B parameters: most of it lives in host memory), modelled "
        "as paged_adamw8bit, the closest the planner has. The figure is the whole 24 GB "
        "card: the pages left resident fill whatever the card has",
    ),
    Row(
        "Llama2-70B LoRA, 8x A100 FSDP, bs 4, seq 4096 (data <=512)",
        "llama-2-70b",
        # The recipe's default data is torchtune's alpaca_dataset, whose max_seq_len
        # defaults to 512 ("as set by Stanford Alpaca", its docstring), padded per batch:
        # 4096 is the model's context, not what the step saw. batch_size is per GPU (each
        # rank's DataLoader). FSDP shards the frozen base over the 8 GPUs, activation
        # checkpointing on.
        Workload(seq_len=512, batch=4),
        MethodSpec(
            kind="lora",
            rank=8,
            alpha=16,
            targets=("q_proj", "v_proj"),
            gpus=8,
            sharding="zero3",
            logit_copies=4,
        ),
        26.4e9,
        "torchtune README (v0.1)",
        note="sequences are at most 512 tokens (the default data's truncation), an upper "
        "bound: shorter batches need less. At the stated 4096 the prediction is 54 GB: the "
        "checkpointed layer inputs alone would be 21.5 GB",
    ),
    Row(
        "Llama2-70B full, PagedAdamW, 8x A100 FSDP, bs 4, seq 4096",
        "llama-2-70b",
        Workload(seq_len=4096, batch=4),
        MethodSpec(
            kind="full", optimizer="paged_adamw8bit", gpus=8, sharding="zero3", logit_copies=4
        ),
        70.4e9,
        "torchtune README (v0.1)",
        note="not explained: the source gives no config for this run (optimizer bits, data, "
        "FSDP options); torchtune's 7B low-memory recipe uses 32-bit PagedAdamW, whose "
        "resident pages the planner cannot predict",
    ),
    Row(
        "Llama2-7B LoRA, ctx 8192, bs 1, FA2, ZeRO-2, 8x A100",
        "llama-2-7b",
        Workload(seq_len=8192, batch=1),
        MethodSpec(
            kind="lora",
            rank=8,
            alpha=16,
            targets="attn",
            attention="flash",
            gpus=8,
            sharding="zero2",
            logit_copies=5,
        ),
        25.7e9,
        "LongLoRA (Chen et al. 2023), table 12",
        allocator_peak=False,
        # transformers of 2023 (4.31-4.34) upcast the logits to fp32 inside the model,
        # returned them, and made a shifted contiguous fp32 copy for the loss: 5 fp32
        # copies alive at the loss backward (logit_copies=5).
        note="DeepSpeed's ZeRO-2 gradient buckets are not modelled: LongLoRA's "
        "ds_configs/stage2.json sets reduce_bucket_size 1e9 with overlap_comm and "
        "contiguous_gradients, and DeepSpeedZeroOptimizer.backward "
        "(deepspeed/runtime/zero/stage_1_and_2.py) then allocates two buffers of that many "
        "16-bit elements: 4.0 GB more, which would put the row at +2.5%. The planner's "
        "zero2 is the stage's partitioning, not one implementation's bucket settings, so the "
        "buffers are not added here",
    ),
    Row(
        "bloomz-7b1 LoRA, A100-80GB, fp32, bs 8, seq 64",
        "bloomz-7b1",
        Workload(seq_len=64, batch=8),
        MethodSpec(
            kind="lora",
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
    # its recipe config of that commit (recipes/configs/llama3_1/8B_*_single_device.yaml)
    # through the torchtune preset.
    Row(
        "Llama3.1-8B QLoRA, 1x RTX 4090, bs 2, seq 2048 (torchtune)",
        "llama-3.1-8b",
        Workload(seq_len=2048, batch=2),
        framework_method(
            "torchtune",
            "qlora",
            settings={"rank": 8, "alpha": 16, "targets": _LLAMA_LINEARS, "compiled": True},
            explicit={"compiled"},
        ).method,
        7.4 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        note="chunked CE compiled; q, k, v, output and MLP adapted (8B_qlora_single_device). "
        "The figure equals the floor of that config: NF4 weights with 16-bit embeddings and "
        "head (5.82 GB), the 32 checkpointed layer inputs (1.07 GB) and the 16-bit logits "
        "(1.05 GB; TransformerDecoder.chunked_output returns all 8 chunks at once) = 7.94 GB. "
        "The planner adds one chunk's 16-bit gradient, one layer's recomputed activations "
        "and the cuBLAS workspace (0.6 GB), which the published run did not show",
    ),
    Row(
        "Llama3.1-8B LoRA, 1x RTX 4090, bs 2, seq 2048 (torchtune)",
        "llama-3.1-8b",
        Workload(seq_len=2048, batch=2),
        framework_method(
            "torchtune",
            "lora",
            settings={"rank": 8, "alpha": 16, "targets": ("q_proj", "v_proj"), "compiled": True},
            explicit={"compiled"},
        ).method,
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
        framework_method(
            "torchtune", "full", settings={"compiled": True}, explicit={"compiled"}
        ).method,
        18.9 * GIB,
        "torchtune README, 'Memory and training speed' (v0.3-v0.6)",
        paged_outside_allocator=True,
        note="PagedAdamW8bit with optimizer_in_bwd (8B_full_single_device); its paged "
        "states are unified memory, outside the allocator's peak",
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
            print(f"{row.label:<58} {measured / 1e9:>9.2f} {'n/a':>9}")
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
