"""An Axolotl YAML (its pydantic schema, axolotl.utils.schemas, 0.19)."""

from __future__ import annotations

from typing import Any

from planner.frameworks.exports._common import (
    Export,
    Notes,
    RunToExport,
    as_comment,
    data_note,
    header_lines,
    hf_dataset,
    precision_flags,
    schedule,
    target_names,
    to_yaml,
)

_AXOLOTL_OPTIMIZERS = {
    "adamw": "adamw_torch",
    "adamw8bit": "adamw_bnb_8bit",
    "paged_adamw8bit": "paged_adamw_8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}


def _axolotl_dataset(run: RunToExport, path: str) -> dict[str, Any]:
    entry: dict[str, Any]
    if path.startswith("hf:"):
        name, split = hf_dataset(path)
        entry = {"path": name}
        if split:
            entry["split"] = split
    else:
        entry = {"path": path, "ds_type": "json", "split": "train"}
    if run.data_format == "messages":
        entry["type"] = "chat_template"
        entry["field_messages"] = "messages"
    else:  # the prompt as written, the loss on the completion only (as the trial trained)
        entry["type"] = {
            "field_instruction": "prompt",
            "field_output": "completion",
            "format": "{instruction}",
            "no_input_format": "{instruction}",
        }
    return entry


def write_axolotl(run: RunToExport) -> Export:
    notes = Notes()
    data: dict[str, Any] = {"base_model": run.model}
    if run.adapter:
        data["adapter"] = "qlora" if run.method == "qlora" else "lora"
        if run.method == "qlora":
            data["load_in_4bit"] = True
        if run.method == "dora":
            data["peft_use_dora"] = True
        if run.use_rslora:
            data["peft_use_rslora"] = True
        data["lora_r"] = run.rank
        data["lora_alpha"] = run.alpha
        data["lora_dropout"] = run.dropout
        targets = target_names(run, notes)
        if targets == "all":
            data["lora_target_linear"] = True
        else:
            data["lora_target_modules"] = list(targets)
    elif run.method == "freeze":
        if run.layers:
            first = max(run.layers - run.freeze_trainable_layers, 0)
            chosen = "|".join(str(i) for i in range(first, run.layers))
            data["unfrozen_parameters"] = [rf"^model\.layers\.({chosen})\."]
        else:
            notes.add(
                f"freeze: train the top {run.freeze_trainable_layers} decoder layers; the "
                "model's layer count was not known, so set unfrozen_parameters to their names"
            )
            data["unfrozen_parameters"] = [r"^model\.layers\.(LAST_LAYERS)\."]
    data["sequence_len"] = run.seq_len
    data["sample_packing"] = run.packing
    data["micro_batch_size"] = run.batch
    data["gradient_accumulation_steps"] = run.grad_accum
    data["num_epochs"] = run.epochs
    if run.max_steps:
        data["max_steps"] = run.max_steps
    data["learning_rate"] = run.lr
    data["lr_scheduler"] = schedule(run)
    data["warmup_ratio"] = run.warmup_ratio
    data["weight_decay"] = run.weight_decay
    data["optimizer"] = _AXOLOTL_OPTIMIZERS[run.optimizer]
    data["gradient_checkpointing"] = run.grad_checkpointing
    data.update(precision_flags(run, notes))
    if run.loss == "chunked":
        data["chunked_cross_entropy"] = True
    elif run.loss == "fused":
        data["plugins"] = ["axolotl.integrations.liger.LigerPlugin"]
        data["liger_fused_linear_cross_entropy"] = True
    data["seed"] = run.seed
    data_note(run, notes)
    data["datasets"] = [_axolotl_dataset(run, run.train or "TRAIN.jsonl")]
    if run.eval:
        data["test_datasets"] = [_axolotl_dataset(run, run.eval)]
    else:
        notes.add("eval data: the trial split its eval rows off the train file; val_set_size 0.1")
        data["val_set_size"] = 0.1
    data["output_dir"] = "./outputs/axolotl"
    header = header_lines(run, "Axolotl (0.19)", "axolotl train THIS_FILE.yml", notes.items)
    return Export("axolotl", as_comment(header) + to_yaml(data), ".yml", tuple(notes.items))
