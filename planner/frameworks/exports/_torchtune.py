"""A torchtune 0.6 recipe config (recipes/configs/*), for models torchtune has builders for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from planner.frameworks.exports._common import (
    ATTENTION,
    MLP,
    Export,
    ExportError,
    Notes,
    RunToExport,
    as_comment,
    data_note,
    header_lines,
    hf_dataset,
    target_names,
    to_yaml,
)


@dataclass(frozen=True)
class _TorchtuneModel:
    module: str
    stem: str
    model_type: str
    tokenizer: str
    tokenizer_files: dict[str, str]
    qlora: bool = True


def _llama3(module: str, stem: str, model_type: str = "LLAMA3") -> _TorchtuneModel:
    return _TorchtuneModel(
        module, stem, model_type, "torchtune.models.llama3.llama3_tokenizer",
        {"path": "original/tokenizer.model"},
    )  # fmt: skip


def _qwen2_5(stem: str) -> _TorchtuneModel:
    return _TorchtuneModel(
        "qwen2_5", stem, "QWEN2", "torchtune.models.qwen2_5.qwen2_5_tokenizer",
        {"path": "vocab.json", "merges_file": "merges.txt"}, qlora=False,
    )  # fmt: skip


# catalogue name (planner/data/models.json) -> torchtune 0.6 builder (torchtune/models/*)
TORCHTUNE_MODELS: dict[str, _TorchtuneModel] = {
    "llama-3.1-8b": _llama3("llama3_1", "llama3_1_8b"),
    "llama-3.1-70b": _llama3("llama3_1", "llama3_1_70b"),
    "llama-3.1-405b": _llama3("llama3_1", "llama3_1_405b"),
    "llama-3.2-1b": _llama3("llama3_2", "llama3_2_1b", "LLAMA3_2"),
    "llama-3.2-3b": _llama3("llama3_2", "llama3_2_3b", "LLAMA3_2"),
    "llama-3.3-70b": _llama3("llama3_3", "llama3_3_70b"),
    "llama-2-7b": _TorchtuneModel(
        "llama2",
        "llama2_7b",
        "LLAMA2",
        "torchtune.models.llama2.llama2_tokenizer",
        {"path": "tokenizer.model"},
    ),  # fmt: skip
    "mistral-7b": _TorchtuneModel(
        "mistral",
        "mistral_7b",
        "MISTRAL",
        "torchtune.models.mistral.mistral_tokenizer",
        {"path": "tokenizer.model"},
    ),  # fmt: skip
    "qwen2.5-0.5b": _qwen2_5("qwen2_5_0_5b"),
    "qwen2.5-1.5b": _qwen2_5("qwen2_5_1_5b_base"),
    "qwen2.5-3b": _qwen2_5("qwen2_5_3b"),
    "qwen2.5-7b": _qwen2_5("qwen2_5_7b_base"),
    "qwen2.5-14b": _qwen2_5("qwen2_5_14b_base"),
    "gemma-2-2b": _TorchtuneModel(
        "gemma2",
        "gemma2_2b",
        "GEMMA2",
        "torchtune.models.gemma.gemma_tokenizer",
        {"path": "tokenizer.model"},
    ),  # fmt: skip
    "gemma-2-9b": _TorchtuneModel(
        "gemma2",
        "gemma2_9b",
        "GEMMA2",
        "torchtune.models.gemma.gemma_tokenizer",
        {"path": "tokenizer.model"},
    ),  # fmt: skip
    "phi-3-mini": _TorchtuneModel(
        "phi3",
        "phi3_mini",
        "PHI3_MINI",
        "torchtune.models.phi3.phi3_mini_tokenizer",
        {"path": "tokenizer.model"},
    ),  # fmt: skip
    "phi-4": _TorchtuneModel(
        "phi4",
        "phi4_14b",
        "PHI4",
        "torchtune.models.phi4.phi4_tokenizer",
        {"vocab_path": "vocab.json", "merges_path": "merges.txt"},
    ),  # fmt: skip
}

_TORCHTUNE_OPTIMIZERS = {
    "adamw": "torch.optim.AdamW",
    "adamw8bit": "bitsandbytes.optim.AdamW8bit",
    "paged_adamw8bit": "bitsandbytes.optim.PagedAdamW8bit",
    "adafactor": "torch.optim.Adafactor",
    "sgd": "torch.optim.SGD",
}


def _torchtune_model(model: str) -> tuple[str, _TorchtuneModel]:
    from planner.estimation.catalog import list_models

    key = model.strip().lower()
    for arch in list_models():
        names = {arch.name.lower(), *(a.lower() for a in arch.aliases), (arch.hf_id or "").lower()}
        if key in names and arch.name in TORCHTUNE_MODELS:
            return arch.hf_id or arch.name, TORCHTUNE_MODELS[arch.name]
    raise ExportError(
        f"torchtune builds its models from its own builders, and has none for {model!r}",
        "torchtune 0.6 builds "
        + ", ".join(sorted(TORCHTUNE_MODELS))
        + "; export this trial --to axolotl, trl or unsloth instead.",
    )


def _torchtune_dataset(run: RunToExport, path: str) -> dict[str, Any]:
    messages = run.data_format == "messages"
    entry: dict[str, Any] = {
        "_component_": "torchtune.datasets." + ("chat_dataset" if messages else "instruct_dataset"),
    }
    if path.startswith("hf:"):
        name, split = hf_dataset(path)
        entry.update(source=name, split=split or "train")
    else:
        entry.update(source="json", data_files=path, split="train")
    if messages:
        entry.update(conversation_column="messages", conversation_style="openai")
    else:
        entry["column_map"] = {"input": "prompt", "output": "completion"}
    entry["train_on_input"] = False
    entry["packed"] = run.packing
    return entry


def write_torchtune(run: RunToExport) -> Export:
    notes = Notes()
    hf_id, builder = _torchtune_model(run.model)
    folder = "models/" + hf_id.rsplit("/", 1)[-1]
    method = run.method
    if method == "freeze":
        notes.add(
            f"freeze (train the top {run.freeze_trainable_layers} layers): torchtune's recipes "
            "have no frozen layers; written as a full fine-tune"
        )
        method = "full"
    if method == "qlora" and not builder.qlora:
        notes.add(f"qlora: torchtune 0.6 has no QLoRA builder for {hf_id}; written as LoRA")
        method = "lora"
    prefix = {"lora": "lora_", "dora": "lora_", "qlora": "qlora_"}.get(method, "")
    model: dict[str, Any] = {
        "_component_": f"torchtune.models.{builder.module}.{prefix}{builder.stem}"
    }
    if prefix:
        targets = target_names(run, notes)
        names = (*ATTENTION, *MLP) if targets == "all" else targets
        unknown = [n for n in names if n not in ATTENTION and n not in MLP]
        if unknown:
            notes.add(f"targets {', '.join(unknown)}: torchtune adapts only attention and MLP")
        mlp = [n for n in names if n in MLP]
        if mlp and len(mlp) < len(MLP):
            notes.add(
                f"targets {', '.join(mlp)}: torchtune adapts all three MLP projections or none"
            )
        attention = ["output_proj" if n == "o_proj" else n for n in ATTENTION if n in names] or [
            "q_proj",
            "v_proj",
        ]
        if not any(n in names for n in ATTENTION):
            notes.add("torchtune needs at least one attention module adapted: q_proj, v_proj")
        model.update(
            lora_attn_modules=attention,
            apply_lora_to_mlp=bool(mlp),
            lora_rank=run.rank,
            lora_alpha=run.alpha,
            lora_dropout=run.dropout,
        )
        if method == "dora":
            model["use_dora"] = True
        if run.use_rslora:
            notes.add("use_rslora: torchtune has no rsLoRA scaling (alpha/rank is used)")
    recipe = "lora_finetune_single_device" if prefix else "full_finetune_single_device"
    data: dict[str, Any] = {"output_dir": "outputs/torchtune", "model": model}
    data["tokenizer"] = {
        "_component_": builder.tokenizer,
        **{k: f"{folder}/{v}" for k, v in builder.tokenizer_files.items()},
        "max_seq_len": run.seq_len,
    }
    data["checkpointer"] = {
        "_component_": "torchtune.training.FullModelHFCheckpointer",
        "checkpoint_dir": folder,
        "checkpoint_files": ["model.safetensors"],
        "recipe_checkpoint": None,
        "output_dir": "${output_dir}",
        "model_type": builder.model_type,
    }
    notes.add(
        "checkpointer.checkpoint_files: list the safetensors shards `tune download` wrote "
        "(model.safetensors is a single-file checkpoint)"
    )
    data["resume_from_checkpoint"] = False
    data_note(run, notes)
    data["dataset"] = _torchtune_dataset(run, run.train or "TRAIN.jsonl")
    if run.eval:
        notes.add(f"eval data {run.eval}: torchtune 0.6's single-device recipes do not evaluate")
    data["seed"] = run.seed
    data["shuffle"] = True
    epochs = math.ceil(run.epochs)
    if epochs != run.epochs:
        notes.add(f"epochs {run.epochs:g}: torchtune runs whole epochs; written as {epochs}")
    data["epochs"] = epochs
    max_per_epoch = None
    if run.max_steps:
        if epochs == 1:
            max_per_epoch = run.max_steps
        else:
            notes.add(
                f"max_steps {run.max_steps}: torchtune caps steps per epoch only; the cap over "
                f"{epochs} epochs is not written"
            )
    data["max_steps_per_epoch"] = max_per_epoch
    data["batch_size"] = run.batch
    data["gradient_accumulation_steps"] = run.grad_accum
    data["optimizer"] = {
        "_component_": _TORCHTUNE_OPTIMIZERS[run.optimizer],
        "lr": run.lr,
        "weight_decay": run.weight_decay,
    }
    if run.lr_schedule != "cosine":
        notes.add(
            f"lr_schedule {run.lr_schedule}: torchtune 0.6 ships a cosine schedule with warm-up "
            "only; written as cosine"
        )
    steps = run.max_steps or run.steps
    warmup = math.ceil(run.warmup_ratio * steps) if steps else 0
    if not steps and run.warmup_ratio > 0:
        notes.add(
            f"warmup_ratio {run.warmup_ratio:g}: torchtune counts warm-up in steps and the "
            "run's step count is not known; num_warmup_steps 0 written"
        )
    data["lr_scheduler"] = {
        "_component_": "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
        "num_warmup_steps": warmup,
    }
    if run.loss == "chunked":
        data["loss"] = {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"}
    else:
        if run.loss == "fused":
            notes.add("loss fused: torchtune 0.6 has no fused linear cross-entropy; standard")
        data["loss"] = {"_component_": "torch.nn.CrossEntropyLoss", "ignore_index": -100}
    data["device"] = "cuda"
    dtype = {"auto": "bf16", "bf16": "bf16", "fp32": "fp32", "fp16": "bf16"}[run.precision]
    if run.precision == "fp16":
        notes.add("precision fp16: torchtune trains in bf16 or fp32; written as bf16")
    data["dtype"] = dtype
    data["enable_activation_checkpointing"] = run.grad_checkpointing
    data["enable_activation_offloading"] = False
    data["compile"] = False
    data["clip_grad_norm"] = None
    data["metric_logger"] = {
        "_component_": "torchtune.training.metric_logging.DiskLogger",
        "log_dir": "${output_dir}/logs",
    }
    data["log_every_n_steps"] = 1
    data["log_peak_memory_stats"] = True
    command = (
        f"tune download {hf_id} --output-dir {folder}; tune run {recipe} --config THIS_FILE.yaml"
    )
    header = header_lines(run, "torchtune (0.6)", command, notes.items)
    return Export("torchtune", as_comment(header) + to_yaml(data), ".yaml", tuple(notes.items))
