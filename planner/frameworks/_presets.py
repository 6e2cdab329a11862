"""What each framework does by default, as the planner's ``MethodSpec`` fields.

Every value cites where the framework says or does it (docs or code, with the version
read). A value that depends on the method is a dict by method kind (``"*"`` for the
rest). Fields left out keep the transformers + peft behaviour (the ``hf`` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PRESETS", "Preset", "Setting"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One preset value: the ``MethodSpec`` field, its value, and why."""

    field: str
    value: Any
    why: str
    source: str
    kinds: tuple[str, ...] = ()  # the method kinds it applies to; () = all

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds


@dataclass(frozen=True, slots=True)
class Preset:
    """A framework's documented behaviour for the planner.

    ``settings``: :class:`Setting` values; for a field the first that applies to the
    method kind wins. ``speed_factor`` is
    the framework's own claim of its speed over transformers, with ``speed_source``; it is
    a vendor claim until measured runs calibrate it. ``packing`` is the default of the
    framework's data pipeline (shown; padding is not modelled).
    """

    name: str
    title: str
    version: str
    settings: tuple[Setting, ...] = ()
    speed_factor: float = 1.0
    speed_source: str = ""
    packing: bool = False
    packing_source: str = ""


_PEFT_ADAPTERS = (
    "peft get_peft_model(autocast_adapter_dtype=True) keeps LoRA weights in fp32 "
    "(peft >= 0.12, src/peft/peft_model.py)"
)

PRESETS: dict[str, Preset] = {
    # transformers 5 Trainer + peft: the planner's own defaults. The loss is
    # ForCausalLMLoss (src/transformers/loss/loss_utils.py): fp32 logits, 3 copies alive
    # at the backward. https://github.com/huggingface/transformers (v5.x)
    "hf": Preset(
        name="hf",
        title="transformers Trainer + peft",
        version="transformers 5, peft 0.17",
        packing_source="Trainer has no packing; the collator pads each batch",
    ),
    # TRL SFTTrainer, https://github.com/huggingface/trl v1.9.0.
    "trl": Preset(
        name="trl",
        title="TRL SFTTrainer",
        version="trl 1.9.0",
        settings=(
            Setting(
                "loss",
                "fused",
                "chunked_nll: lm_head + CE in 256-token chunks",
                "trl/trainer/sft_config.py: loss_type defaults to 'chunked_nll' (since "
                "v1.4.0, huggingface/trl#5575) unless use_liger_kernel=True",
            ),
            Setting(
                "unquantized_fp32",
                False,
                "no prepare_model_for_kbit_training",
                "trl/trainer/sft_trainer.py v1.9.0 calls enable_input_require_grads() on a "
                "k-bit model, not peft's prepare_model_for_kbit_training (removed in "
                "huggingface/trl#3882)",
                kinds=("qlora",),
            ),
        ),
        packing_source="SFTConfig.packing defaults to False (trl/trainer/sft_config.py)",
    ),
    # Unsloth, https://github.com/unslothai/unsloth 2026.8.19.
    "unsloth": Preset(
        name="unsloth",
        title="Unsloth",
        version="unsloth 2026.8.19",
        settings=(
            Setting(
                "loss",
                "fused",
                "fused CE: logits never materialised",
                "unsloth/models/llama.py: CausalLM forward calls unsloth_fused_ce_loss "
                "unless UNSLOTH_RETURN_LOGITS=1",
            ),
            Setting(
                "offload_checkpoints",
                True,
                "checkpoints offloaded to host memory",
                "unsloth/models/llama.py get_peft_model(use_gradient_checkpointing="
                "'unsloth') by default; README: 'uses 30% less VRAM'",
            ),
            Setting(
                "attention",
                "flash",
                "FlashAttention-2 / xformers kernels",
                "unsloth/models/llama.py LlamaAttention_fast_forward: flash_attn if "
                "installed, else xformers, else SDPA",
            ),
            Setting(
                "unquantized_fp32",
                False,
                "its own k-bit preparation keeps embeddings and head 16-bit",
                "unsloth/models/_utils.py prepare_model_for_kbit_training -> "
                "prepare_model_for_training(train_embedding=False, train_lm_head=False)",
                kinds=("qlora",),
            ),
            Setting(
                "lora_dropout",
                0.0,
                "lora_dropout 0 (its fast path)",
                "unsloth/models/llama.py get_peft_model(lora_dropout=0): other values "
                "fall back to slower peft layers",
                kinds=("lora", "qlora", "dora"),
            ),
        ),
        speed_factor=2.0,
        speed_source="Unsloth README: '2x faster with 70% less VRAM'; TRL's "
        "Unsloth page measures 1.87x for Llama-2-7B on one A100 40GB",
        packing_source="uses TRL's SFTConfig: packing False by default",
    ),
    # Axolotl, https://github.com/axolotl-ai-cloud/axolotl v0.18.0.
    "axolotl": Preset(
        name="axolotl",
        title="Axolotl",
        version="axolotl 0.18.0",
        settings=(
            Setting(
                "attention",
                "flash",
                "flash_attention: true",
                "every Llama/Qwen example config under examples/ sets flash_attention: true",
            ),
            Setting(
                "unquantized_fp32",
                True,
                "prepare_model_for_kbit_training (fp32 embeddings, head, norms)",
                "src/axolotl/loaders/model.py calls peft's prepare_model_for_kbit_training "
                "for adapter qlora with load_in_4bit",
                kinds=("qlora",),
            ),
        ),
        packing=True,
        packing_source="example configs set sample_packing: true",
    ),
    # torchtune, https://github.com/pytorch/torchtune v0.6.1, recipes/configs/llama3_1/.
    "torchtune": Preset(
        name="torchtune",
        title="torchtune",
        version="torchtune 0.6.1",
        settings=(
            Setting(
                "loss",
                "chunked",
                "chunked CE (CEWithChunkedOutputLoss, 8 chunks)",
                "recipes/configs/llama3_1/8B_{lora,qlora,full}_single_device.yaml: loss "
                "torchtune.modules.loss.CEWithChunkedOutputLoss",
            ),
            Setting(
                "optimizer_in_backward",
                True,
                "optimizer_in_bwd: True",
                "recipes/configs/llama3_1/8B_full_single_device.yaml: optimizer_in_bwd: True "
                "('Requires gradient_accumulation_steps=1')",
                kinds=("full",),
            ),
            Setting(
                "adapter_fp32",
                False,
                "LoRA weights in bf16",
                "recipes/lora_finetune_single_device.py builds the model, adapters included, "
                "under training.set_default_dtype(dtype=bf16)",
                kinds=("lora", "qlora", "dora"),
            ),
            Setting(
                "optimizer",
                "paged_adamw8bit",
                "bitsandbytes PagedAdamW8bit",
                "recipes/configs/llama3_1/8B_full_single_device.yaml: optimizer "
                "bitsandbytes.optim.PagedAdamW8bit",
                kinds=("full",),
            ),
            Setting(
                "optimizer",
                "adamw_bf16",
                "pure bf16 AdamW (no fp32 master copy)",
                "recipes train in dtype: bf16 with torch.optim.AdamW, whose moments take the "
                "parameters' dtype",
            ),
            Setting(
                "unquantized_fp32",
                False,
                "embeddings and output stay bf16",
                "torchtune/models/llama3_1/_component_builders.py: only the decoder Linears "
                "are NF4 (FrozenNF4Linear); tok_embeddings and output are bf16",
                kinds=("qlora",),
            ),
        ),
        packing_source="recipes/configs/llama3_1/*.yaml: dataset packed: False",
    ),
    # LLaMA-Factory, https://github.com/hiyouga/LLaMA-Factory 0.9.6.dev0.
    "llama-factory": Preset(
        name="llama-factory",
        title="LLaMA-Factory",
        version="llamafactory 0.9.6.dev0",
        settings=(
            Setting(
                "unquantized_fp32",
                False,
                "embeddings and head stay 16-bit (upcast_layernorm: false)",
                "src/llamafactory/model/model_utils/checkpointing.py prepare_model_for_training "
                "upcasts only norms and only with upcast_layernorm (default False, "
                "hparams/model_args.py)",
                kinds=("qlora",),
            ),
        ),
        packing_source="data_args.packing defaults to False except for pre-training",
    ),
}
"""The presets by name; ``hf`` is the default."""
