"""TRL (an SFTConfig + LoraConfig JSON and the script that runs it) and Unsloth (a script)."""

from __future__ import annotations

import json
from typing import Any

from planner.frameworks.exports._common import (
    Export,
    Notes,
    RunToExport,
    as_comment,
    data_note,
    header_lines,
    precision_flags,
    schedule,
    target_names,
)

_HF_OPTIMIZERS = {
    "adamw": "adamw_torch",
    "adamw8bit": "adamw_bnb_8bit",
    "paged_adamw8bit": "paged_adamw_8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}

TRL_EXTRA_KEYS = ("model_name_or_path", "load_in_4bit", "train_file", "eval_file", "peft_config")
"""Keys of the TRL JSON that are not ``SFTConfig`` fields (the script reads them)."""


def _sft_fields(run: RunToExport, notes: Notes, *, output_dir: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"output_dir": output_dir}
    fields["max_length"] = run.seq_len
    fields["packing"] = run.packing
    fields["per_device_train_batch_size"] = run.batch
    fields["gradient_accumulation_steps"] = run.grad_accum
    fields["num_train_epochs"] = run.epochs
    if run.max_steps:
        fields["max_steps"] = run.max_steps
    fields["learning_rate"] = run.lr
    fields["lr_scheduler_type"] = schedule(run)
    fields["warmup_steps"] = run.warmup_ratio  # transformers 5: a float below 1 is a ratio
    fields["weight_decay"] = run.weight_decay
    fields["optim"] = _HF_OPTIMIZERS[run.optimizer]
    fields["gradient_checkpointing"] = run.grad_checkpointing
    flags = precision_flags(run, notes)
    if flags.get("bf16") == "auto":
        notes.add("precision auto: written as bf16 (set fp16 on a GPU without bf16)")
        flags = {"bf16": True}
    fields.update({k: v for k, v in flags.items() if v})
    if run.loss == "fused":
        fields["use_liger_kernel"] = True
    elif run.loss == "chunked":
        notes.add("loss chunked: TRL has no 16-bit chunked cross-entropy; its own loss is written")
    else:  # trl/trainer/sft_config.py, loss_type "nll" (1.16)
        notes.add(
            "loss standard: TRL 1.16 computes its nll loss without building the full logits, "
            "unlike the trial"
        )
    if run.data_format == "messages":
        fields["assistant_only_loss"] = True
    else:
        fields["completion_only_loss"] = True
    fields["seed"] = run.seed
    if run.eval:
        fields["eval_strategy"] = "epoch"
    return fields


def _lora_fields(run: RunToExport, notes: Notes) -> dict[str, Any]:
    targets = target_names(run, notes)
    lora: dict[str, Any] = {
        "r": run.rank,
        "lora_alpha": run.alpha,
        "lora_dropout": run.dropout,
        "target_modules": "all-linear" if targets == "all" else list(targets),
        "task_type": "CAUSAL_LM",
    }
    if run.method == "dora":
        lora["use_dora"] = True
    if run.use_rslora:
        lora["use_rslora"] = True
    return lora


def _freeze_note(run: RunToExport) -> str:
    return (
        f"freeze: the script trains only the top {run.freeze_trainable_layers} decoder layers "
        "(SFTConfig has no such field)"
    )


def write_trl(run: RunToExport) -> Export:
    notes = Notes()
    config: dict[str, Any] = {"model_name_or_path": run.model}
    if run.method == "qlora":
        config["load_in_4bit"] = True
    data_note(run, notes)
    config["train_file"] = run.train or "TRAIN.jsonl"
    if run.eval:
        config["eval_file"] = run.eval
    else:
        notes.add("eval data: the trial split its eval rows off the train file; none written")
    config.update(_sft_fields(run, notes, output_dir="outputs/trl"))
    if run.adapter:
        config["peft_config"] = _lora_fields(run, notes)
    elif run.method == "freeze":
        config["freeze_trainable_layers"] = run.freeze_trainable_layers
        notes.add(_freeze_note(run))
    text = json.dumps(config, indent=2) + "\n"
    header = header_lines(
        run, "TRL", "python THIS_FILE.py (reads the .json of the same name)", notes.items
    )
    return Export("trl", text, ".json", tuple(notes.items), script=_trl_script(header))


_LOAD_DATA = '''
def load_data(train_file, eval_file=None):
    """The train (and eval) rows: a local JSONL file, or hf:NAME[:SPLIT]."""
    from datasets import load_dataset

    def one(path):
        if path.startswith("hf:"):
            name, _, split = path[3:].partition(":")
            return load_dataset(name, split=split or "train")
        return load_dataset("json", data_files=path, split="train")

    return one(train_file), (one(eval_file) if eval_file else None)
'''

_FREEZE = '''

def freeze_all_but_top(model, k):
    """Train only the top ``k`` decoder layers (paretune's method freeze)."""
    layers = model.get_decoder().layers
    for parameter in model.parameters():
        parameter.requires_grad = False
    for layer in layers[len(layers) - k :]:
        for parameter in layer.parameters():
            parameter.requires_grad = True
'''


def _trl_script(header: list[str]) -> str:
    return (
        as_comment(header)
        + """
import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer
"""
        + _LOAD_DATA
        + _FREEZE
        + """

def main(config_path):
    config = json.loads(Path(config_path).read_text())
    model_id = config.pop("model_name_or_path")
    four_bit = config.pop("load_in_4bit", False)
    train, evaluation = load_data(config.pop("train_file"), config.pop("eval_file", None))
    lora = config.pop("peft_config", None)
    freeze = config.pop("freeze_trainable_layers", None)
    args = SFTConfig(**config)
    quantization = None
    if four_bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_id, quantization_config=quantization, dtype="auto"
    )
    if freeze:
        freeze_all_but_top(model, freeze)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        peft_config=LoraConfig(**lora) if lora else None,
    )
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_suffix(".json"))
"""
    )


# -- Unsloth ---------------------------------------------------------------------------------


def write_unsloth(run: RunToExport) -> Export:
    notes = Notes()
    load: dict[str, Any] = {
        "model_name": run.model,
        "max_seq_length": run.seq_len,
        "dtype": None,
        "load_in_4bit": run.method == "qlora",
        "full_finetuning": not run.adapter,
    }
    peft: dict[str, Any] | None = None
    if run.adapter:
        targets = target_names(run, notes)
        peft = {
            "r": run.rank,
            "lora_alpha": run.alpha,
            "lora_dropout": run.dropout,
            "target_modules": "all-linear" if targets == "all" else list(targets),
            "use_rslora": run.use_rslora,
            "use_gradient_checkpointing": "unsloth" if run.grad_checkpointing else False,
            "random_state": run.seed,
        }
        if run.method == "dora":
            peft["use_dora"] = True
    elif run.method == "freeze":
        notes.add(_freeze_note(run))
    data_note(run, notes)
    if not run.eval:
        notes.add("eval data: the trial split its eval rows off the train file; none written")
    sft = _sft_fields(run, notes, output_dir="outputs/unsloth")
    sft.pop("gradient_checkpointing")  # Unsloth sets its own (use_gradient_checkpointing)
    if not run.adapter and run.grad_checkpointing:
        notes.add("full fine-tune: Unsloth chooses gradient checkpointing itself")
    header = header_lines(run, "Unsloth", "python THIS_FILE.py", notes.items)
    body = f"""
from unsloth import FastLanguageModel  # first: it patches transformers and TRL

from trl import SFTConfig, SFTTrainer
{_LOAD_DATA}{_FREEZE if run.method == "freeze" else ""}

def main():
    model, tokenizer = FastLanguageModel.from_pretrained({_kwargs(load)})
"""
    if peft is not None:
        body += f"    model = FastLanguageModel.get_peft_model({_kwargs(peft, 'model')})\n"
    elif run.method == "freeze":
        body += f"    freeze_all_but_top(model, {run.freeze_trainable_layers})\n"
    body += f"""    train, evaluation = load_data({run.train or "TRAIN.jsonl"!r}, {run.eval!r})
    args = SFTConfig({_kwargs(sft)})
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
    )
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
"""
    return Export("unsloth", as_comment(header) + body, ".py", tuple(notes.items))


def _kwargs(values: dict[str, Any], *positional: str) -> str:
    """Call arguments, one a line, indented for a call inside ``main``."""
    inner = "".join(f"        {p},\n" for p in positional)
    inner += "".join(f"        {k}={v!r},\n" for k, v in values.items())
    return "\n" + inner + "    "
