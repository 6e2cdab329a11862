"""Read the run a user already wrote: an Axolotl YAML, a torchtune recipe config, a
LLaMA-Factory YAML, or a TRL ``SFTConfig`` / PEFT ``LoraConfig`` JSON.

    from planner.frameworks.configs import read_run_config
    run = read_run_config("qlora.yml")
    run.framework, run.model, run.method, run.workload, run.unmodelled

``method`` and ``workload`` hold ``MethodSpec`` / ``Workload`` field values for what the
file sets; every key the planner does not model is listed in ``unmodelled``, never
dropped silently. A file that cannot be read, or a key with a value of the wrong kind,
raises :class:`ConfigFileError` naming the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import ConfigFileError
from planner.frameworks.distributed import deepspeed_fields, fsdp_fields, torchtune_fsdp_fields

__all__ = ["FORMATS", "ConfigFileError", "RunConfig", "read_run_config"]

FORMATS = ("axolotl", "torchtune", "llama-factory", "trl")


@dataclass(frozen=True)
class RunConfig:
    """What a framework config says about the run, in the planner's terms."""

    path: str
    framework: str
    model: str | None
    method: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    unmodelled: tuple[str, ...] = ()


# -- reading values, naming the key on a bad one ------------------------------------------


class _Reader:
    """Takes keys out of a config mapping, checking each value's kind."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path, self.data = path, data
        self.used: set[str] = set()
        self.also_unmodelled: list[str] = []  # inside files the config names (DeepSpeed)

    def _fail(self, key: str, expected: str, value: Any) -> ConfigFileError:
        return ConfigFileError(
            f"{self.path}: `{key}` must be {expected}, got {value!r}",
            f"Fix `{key}` in the file, or leave it out to use the default.",
        )

    def raw(self, key: str) -> Any:
        self.used.add(key)
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def integer(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._fail(key, "a positive whole number", value)
        return value

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self._fail(key, "a number", value)
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string", value)
        return value.strip()

    def names(self, key: str) -> tuple[str, ...] | None:
        """A list of module names, or a comma-separated string of them."""
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of module names", value)
        return tuple(value)

    def unmodelled(self) -> tuple[str, ...]:
        """Every key (dotted, down to the leaves) that no rule read."""

        def leaves(value: Any, prefix: str) -> list[str]:
            if isinstance(value, dict) and value:
                return [leaf for k, v in value.items() for leaf in leaves(v, f"{prefix}{k}.")]
            return [prefix[:-1]]

        def read(key: str) -> bool:
            parts = key.split(".")
            return any(".".join(parts[: i + 1]) in self.used for i in range(len(parts)))

        own = sorted(k for k in leaves(self.data, "") if not read(k))
        return (*own, *self.also_unmodelled)


def _put(target: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        target[name] = value


# -- optimizer names of each framework -----------------------------------------------------

_HF_OPTIMIZERS = {  # transformers OptimizerNames (TrainingArguments.optim)
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw",
    "adamw_hf": "adamw",
    "adamw_8bit": "adamw8bit",
    "adamw_bnb_8bit": "adamw8bit",
    "paged_adamw_8bit": "paged_adamw8bit",
    "paged_adamw_32bit": "paged_adamw8bit",  # the planner's closest paged optimizer
    "adafactor": "adafactor",
    "sgd": "sgd",
}
_TORCHTUNE_OPTIMIZERS = {  # torchtune trains in pure bf16: moments in the parameters' dtype
    "torch.optim.AdamW": "adamw_bf16",
    "torch.optim.Adam": "adamw_bf16",
    "torch.optim.SGD": "sgd",
    "bitsandbytes.optim.PagedAdamW8bit": "paged_adamw8bit",
    "bitsandbytes.optim.PagedAdamW": "paged_adamw8bit",
    "bitsandbytes.optim.AdamW8bit": "adamw8bit",
    "torch.optim.Adafactor": "adafactor",
}


def _optimizer(reader: _Reader, key: str, names: dict[str, str]) -> str | None:
    name = reader.text(key)
    if name is None:
        return None
    if name not in names:
        raise ConfigFileError(
            f"{reader.path}: `{key}` {name!r} is not an optimizer the planner models",
            f"Known: {', '.join(sorted(names))}; or pass --optimizer to plan with another.",
        )
    return names[name]


def _targets(modules: tuple[str, ...]) -> tuple[str, ...] | str:
    if modules in (("all-linear",), ("all",)):
        return "all"
    return modules


def _merge(
    reader: _Reader, method: dict[str, Any], found: tuple[dict[str, Any], tuple[str, ...]]
) -> None:
    """Fields read from a file the config names into ``method``; what it sets that the
    planner does not model into the reader's list."""
    fields, unread = found
    method.update(fields)
    reader.also_unmodelled.extend(unread)


def _sharding(reader: _Reader, method: dict[str, Any], *, fsdp: bool) -> None:
    """A DeepSpeed config named by ``deepspeed`` and, with ``fsdp``, transformers' FSDP
    keys (``fsdp``, ``fsdp_config``), into ``method``."""
    config = Path(reader.path)
    deepspeed = reader.raw("deepspeed")
    if deepspeed is not None:
        _merge(reader, method, deepspeed_fields(deepspeed, config=config))
    if fsdp:
        options, settings = reader.raw("fsdp"), reader.raw("fsdp_config")
        if options or settings:
            _merge(reader, method, fsdp_fields(options or None, settings, config=config))


# -- one reader per format -----------------------------------------------------------------


def _axolotl(reader: _Reader) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Axolotl's YAML (its pydantic schema, axolotl.utils.schemas, v0.18)."""
    method: dict[str, Any] = {}
    work: dict[str, Any] = {}
    adapter = reader.text("adapter")
    four_bit = reader.flag("load_in_4bit")
    if reader.flag("load_in_8bit"):  # an 8-bit base is not modelled: listed, not dropped
        reader.used.discard("load_in_8bit")
    if adapter is None:
        method["kind"] = "full"
    elif adapter in ("lora", "qlora"):
        method["kind"] = "qlora" if adapter == "qlora" or four_bit else "lora"
    else:
        raise reader._fail("adapter", "lora, qlora or left out (full fine-tuning)", adapter)
    if reader.flag("peft_use_dora"):
        method["kind"] = "dora"
    unfrozen = reader.names("unfrozen_parameters")
    if unfrozen is not None and method["kind"] == "full":
        method["kind"] = "freeze"
        _put(method, "freeze_layers", _unfrozen_layers(unfrozen))
    _put(method, "rank", reader.integer("lora_r"))
    _put(method, "alpha", reader.number("lora_alpha"))
    _put(method, "lora_dropout", reader.number("lora_dropout"))
    if reader.flag("lora_target_linear"):
        method["targets"] = "all"
    modules = reader.names("lora_target_modules")
    if modules and "targets" not in method:
        method["targets"] = _targets(modules)
    _put(work, "seq_len", reader.integer("sequence_len"))
    _put(work, "batch", reader.integer("micro_batch_size"))
    _put(work, "grad_accum", reader.integer("gradient_accumulation_steps"))
    _put(work, "epochs", reader.number("num_epochs"))
    _put(work, "packing", reader.flag("sample_packing"))
    _put(method, "optimizer", _optimizer(reader, "optimizer", _HF_OPTIMIZERS))
    checkpointing = reader.raw("gradient_checkpointing")
    if checkpointing == "unsloth" or checkpointing == "offload":
        method["grad_checkpointing"] = True
        method["offload_checkpoints"] = True
    elif checkpointing is not None:
        method["grad_checkpointing"] = reader.flag("gradient_checkpointing")
    if reader.flag("flash_attention"):
        method["attention"] = "flash"
    elif reader.flag("sdp_attention"):
        method["attention"] = "sdpa"
    plugins = reader.names("plugins") or ()
    if reader.flag("liger_fused_linear_cross_entropy") or (
        any("liger" in p.lower() for p in plugins)
        and reader.raw("liger_fused_linear_cross_entropy")
    ):
        method["loss"] = "fused"
    elif reader.flag("chunked_cross_entropy"):
        method["loss"] = "chunked"
    _precision(reader, method, "bf16", "fp16")
    reader.integer("fsdp_version")  # 1 or 2: the sharding is read from fsdp / fsdp_config
    _sharding(reader, method, fsdp=True)
    return reader.text("base_model"), method, work


def _unfrozen_layers(patterns: tuple[str, ...]) -> int | None:
    """How many decoder layers ``unfrozen_parameters`` patterns such as
    ``^model\\.layers\\.(22|23)\\.`` train (None when they name no layer numbers)."""
    import re

    layers: set[int] = set()
    for pattern in patterns:
        found = re.search(r"layers\\?\.\(?([0-9|]+)\)?", pattern)
        if found:
            layers.update(int(n) for n in found.group(1).split("|") if n)
    return len(layers) or None


def _precision(reader: _Reader, method: dict[str, Any], bf16_key: str, fp16_key: str) -> None:
    bf16 = reader.raw(bf16_key)
    if bf16 is True or bf16 == "auto":
        method["precision"] = "bf16"
    elif reader.flag(fp16_key):
        method["precision"] = "fp16"


_TORCHTUNE_MODELS = {  # builder stem (torchtune/models/*/_model_builders.py) -> catalogue
    "llama3_1_8b": "llama-3.1-8b",
    "llama3_1_70b": "llama-3.1-70b",
    "llama3_1_405b": "llama-3.1-405b",
    "llama3_2_1b": "llama-3.2-1b",
    "llama3_2_3b": "llama-3.2-3b",
    "llama3_3_70b": "llama-3.3-70b",
    "llama2_7b": "llama-2-7b",
    "llama2_13b": "llama-2-13b",
    "llama2_70b": "llama-2-70b",
    "mistral_7b": "mistral-7b",
    "qwen2_5_0_5b": "qwen2.5-0.5b",
    "qwen2_5_1_5b": "qwen2.5-1.5b",
    "qwen2_5_1_5b_base": "qwen2.5-1.5b",
    "qwen2_5_3b": "qwen2.5-3b",
    "qwen2_5_7b_base": "qwen2.5-7b",
    "qwen2_5_14b_base": "qwen2.5-14b",
    "qwen3_0_6b_base": "qwen3-0.6b",
    "qwen3_8b_base": "qwen3-8b",
    "gemma2_2b": "gemma-2-2b",
    "gemma2_9b": "gemma-2-9b",
    "phi3_mini": "phi-3-mini",
    "phi4_14b": "phi-4",
}
_TORCHTUNE_ATTN = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj"}
_TORCHTUNE_ATTN["output_proj"] = "o_proj"


def _torchtune(reader: _Reader) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """A torchtune recipe config (recipes/configs/*, v0.6)."""
    method: dict[str, Any] = {}
    work: dict[str, Any] = {}
    builder = reader.text("model._component_") or ""
    stem = builder.rsplit(".", 1)[-1]
    kind = "full"
    for prefix, named in (("qlora_", "qlora"), ("lora_", "lora")):
        if stem.startswith(prefix):
            kind, stem = named, stem[len(prefix) :]
    method["kind"] = "dora" if reader.flag("model.use_dora") else kind
    model = _TORCHTUNE_MODELS.get(stem)
    _put(method, "rank", reader.integer("model.lora_rank"))
    _put(method, "alpha", reader.number("model.lora_alpha"))
    _put(method, "lora_dropout", reader.number("model.lora_dropout"))
    attn = reader.names("model.lora_attn_modules")
    if attn is not None:
        unknown = [m for m in attn if m not in _TORCHTUNE_ATTN]
        if unknown:
            raise reader._fail(
                "model.lora_attn_modules", "q_proj, k_proj, v_proj, output_proj", unknown[0]
            )
        targets = [_TORCHTUNE_ATTN[m] for m in attn]
        if reader.flag("model.apply_lora_to_mlp"):
            targets += ["gate_proj", "up_proj", "down_proj"]
        method["targets"] = tuple(targets)
    model_section = reader.data.get("model")
    if isinstance(model_section, dict) and model_section.get("apply_lora_to_output") is False:
        reader.flag("model.apply_lora_to_output")  # the default; True (an adapted head) is not
    _put(work, "seq_len", reader.integer("tokenizer.max_seq_len"))
    _put(work, "batch", reader.integer("batch_size"))
    _put(work, "grad_accum", reader.integer("gradient_accumulation_steps"))
    _put(work, "epochs", reader.number("epochs"))
    _put(work, "packing", reader.flag("dataset.packed"))
    _put(method, "optimizer", _optimizer(reader, "optimizer._component_", _TORCHTUNE_OPTIMIZERS))
    loss = reader.text("loss._component_") or ""
    if loss.endswith("CEWithChunkedOutputLoss"):
        method["loss"] = "chunked"
    elif loss.endswith("LinearCrossEntropyLoss"):
        method["loss"] = "fused"
    elif loss:
        method["loss"] = "standard"
    _put(method, "grad_checkpointing", reader.flag("enable_activation_checkpointing"))
    if reader.flag("enable_activation_offloading"):
        method["offload_checkpoints"] = True
    _put(method, "optimizer_in_backward", reader.flag("optimizer_in_bwd"))
    _put(method, "compiled", reader.flag("compile"))
    dtype = reader.text("dtype")
    if dtype is not None:
        method["precision"] = {"bf16": "bf16", "fp32": "fp32", "fp16": "fp16"}.get(dtype, dtype)
    if "fsdp_reshard_after_forward" in reader.data or "fsdp_cpu_offload" in reader.data:
        found = torchtune_fsdp_fields(
            reader.flag("fsdp_reshard_after_forward"), reader.flag("fsdp_cpu_offload")
        )
        _merge(reader, method, found)
    return model, method, work


def _llama_factory(reader: _Reader) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """A LLaMA-Factory YAML (hparams/model_args.py, finetuning_args.py; 0.9.6)."""
    method: dict[str, Any] = {}
    work: dict[str, Any] = {}
    kind = reader.text("finetuning_type") or "lora"
    if kind not in ("lora", "full", "freeze"):
        raise reader._fail("finetuning_type", "lora, full or freeze", kind)
    bits = reader.integer("quantization_bit")
    if kind == "lora" and bits == 4:
        kind = "qlora"
    elif bits is not None and bits != 4:  # 8-bit (or HQQ/EETQ) bases are not modelled
        reader.used.discard("quantization_bit")
    if kind == "lora" and reader.flag("use_dora"):
        kind = "dora"
    method["kind"] = kind
    _put(method, "rank", reader.integer("lora_rank"))
    _put(method, "alpha", reader.number("lora_alpha"))
    _put(method, "lora_dropout", reader.number("lora_dropout"))
    _put(method, "freeze_layers", reader.integer("freeze_trainable_layers"))
    modules = reader.names("lora_target")
    if modules:
        method["targets"] = _targets(modules)
    _put(work, "seq_len", reader.integer("cutoff_len"))
    _put(work, "batch", reader.integer("per_device_train_batch_size"))
    _put(work, "grad_accum", reader.integer("gradient_accumulation_steps"))
    _put(work, "epochs", reader.number("num_train_epochs"))
    _put(work, "packing", reader.flag("packing"))
    _put(method, "optimizer", _optimizer(reader, "optim", _HF_OPTIMIZERS))
    if reader.flag("enable_liger_kernel"):
        method["loss"] = "fused"
    if reader.flag("use_unsloth_gc"):
        method["offload_checkpoints"] = True
    if reader.flag("disable_gradient_checkpointing"):
        method["grad_checkpointing"] = False
    attention = reader.text("flash_attn")
    if attention is not None:
        method["attention"] = {"fa2": "flash", "sdpa": "sdpa", "disabled": "eager"}.get(
            attention, "sdpa"
        )
    _precision(reader, method, "bf16", "fp16")
    _sharding(reader, method, fsdp=False)  # FSDP goes through accelerate's own config
    return reader.text("model_name_or_path"), method, work


def _trl(reader: _Reader) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """TRL ``SFTConfig`` fields and PEFT ``LoraConfig`` fields, in one JSON object (or
    the LoraConfig under ``peft_config``)."""
    method: dict[str, Any] = {"kind": "lora" if reader.raw("r") is not None else "full"}
    if reader.flag("use_dora"):
        method["kind"] = "dora"
    if reader.raw("load_in_4bit") is True or reader.raw("quantization_bit") == 4:
        reader.used.update({"load_in_4bit", "quantization_bit"})
        method["kind"] = "qlora"
    freeze = reader.integer("freeze_trainable_layers")  # paretune's export of method freeze
    if freeze is not None and method["kind"] == "full":
        method["kind"] = "freeze"
        method["freeze_layers"] = freeze
    reader.text("peft_type")
    reader.text("task_type")
    _put(method, "rank", reader.integer("r"))
    _put(method, "alpha", reader.number("lora_alpha"))
    _put(method, "lora_dropout", reader.number("lora_dropout"))
    modules = reader.names("target_modules")
    if modules:
        method["targets"] = _targets(modules)
    work: dict[str, Any] = {}
    _put(work, "seq_len", reader.integer("max_length") or reader.integer("max_seq_length"))
    _put(work, "batch", reader.integer("per_device_train_batch_size"))
    _put(work, "grad_accum", reader.integer("gradient_accumulation_steps"))
    _put(work, "epochs", reader.number("num_train_epochs"))
    _put(work, "packing", reader.flag("packing"))
    _put(method, "optimizer", _optimizer(reader, "optim", _HF_OPTIMIZERS))
    _put(method, "grad_checkpointing", reader.flag("gradient_checkpointing"))
    if reader.flag("use_liger_kernel"):
        method["loss"] = "fused"
    loss_type = reader.text("loss_type")
    if loss_type is not None:
        method["loss"] = "fused" if loss_type == "chunked_nll" else "standard"
    _precision(reader, method, "bf16", "fp16")
    _sharding(reader, method, fsdp=True)
    return reader.text("model_name_or_path"), method, work


_FORMAT_READERS: dict[
    str, Callable[[_Reader], tuple[str | None, dict[str, Any], dict[str, Any]]]
] = {
    "axolotl": _axolotl,
    "torchtune": _torchtune,
    "llama-factory": _llama_factory,
    "trl": _trl,
}


# -- the file ------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigFileError(
            f"{path}: cannot read the config file ({error.strerror or error})",
            "Give the path of an Axolotl, torchtune or LLaMA-Factory YAML, or a TRL/PEFT JSON.",
        ) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigFileError(
                f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
                "Fix the JSON syntax there.",
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "cannot be parsed"
            raise ConfigFileError(
                f"{path}: not valid YAML{where}: {problem}", "Fix the YAML syntax there."
            ) from None
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}: a run config is a mapping of keys to values, got {type(data).__name__}",
            "Give an Axolotl, torchtune or LLaMA-Factory YAML, or a TRL/PEFT JSON object.",
        )
    return data


def detect_format(data: dict[str, Any], suffix: str) -> str | None:
    """Which framework wrote ``data`` (None when it matches none)."""
    if isinstance(data.get("model"), dict) and "_component_" in data["model"]:
        return "torchtune"
    if "base_model" in data:
        return "axolotl"
    if "model_name_or_path" in data and ("finetuning_type" in data or "stage" in data):
        return "llama-factory"
    trl_keys = {"r", "target_modules", "peft_type", "per_device_train_batch_size", "max_length"}
    if suffix == ".json" and trl_keys & set(data):
        return "trl"
    return None


def read_run_config(path: str | Path, *, framework: str | None = None) -> RunConfig:
    """The run ``path`` describes. ``framework`` forces the format (one of
    :data:`FORMATS`) instead of detecting it from the keys."""
    file = Path(path)
    data = _load(file)
    if isinstance(data.get("peft_config"), dict):  # a TRL JSON with its LoraConfig inside
        data = {**{k: v for k, v in data.items() if k != "peft_config"}, **data["peft_config"]}
    found = framework if framework in FORMATS else detect_format(data, file.suffix.lower())
    if found is None:
        raise ConfigFileError(
            f"{file}: cannot tell which framework wrote this config (no `base_model` "
            "(Axolotl), `model._component_` (torchtune), `model_name_or_path` with "
            "`finetuning_type` (LLaMA-Factory), nor SFTConfig/LoraConfig keys in a .json)",
            "Pass --framework to say which it is.",
        )
    reader = _Reader(str(file), data)
    model, method, workload = _FORMAT_READERS[found](reader)
    return RunConfig(
        path=str(file),
        framework=found,
        model=model,
        method=method,
        workload=workload,
        unmodelled=reader.unmodelled(),
    )
