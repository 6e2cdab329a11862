"""The torch side of a fine-tuning method: how full, LoRA, QLoRA, DoRA and freeze are
applied to a transformers model, with its checkpointing and its optimizer.

One home for it, called by the measured trial (``sweeps.trial.recipe``), the step
simulator (``planner.simulation``) and ``benchmarks/gpu_check.py``, so that a simulated
step and a measured one run the same method by construction::

    setup = MethodSetup.from_spec(method)              # or MethodSetup(kind="lora", ...)
    model = apply_method(model, setup)                 # k-bit prep, checkpointing, peft
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, method.optimizer, lr=2e-4)
    loss_sum, kept = token_loss_sum(model, ids, mask, labels, loss=method.loss)

Decoder layers are the ``nn.ModuleList`` as long as the config's ``num_hidden_layers``,
else the longest one (``decoder_layers``); adapter targets are read off the model
(``resolve_targets``). Bad settings raise :class:`planner.errors.InvalidSpecError`.
torch, transformers, peft and bitsandbytes are imported inside the functions, so
importing this package stays cheap.
"""

from planner.methods._anatomy import (
    ATTENTION_MODULES,
    MLP_MODULES,
    AdapterTargets,
    decoder_layers,
    final_norm,
    quantized_weights,
    resolve_targets,
)
from planner.methods._apply import (
    MethodSetup,
    apply_method,
    enable_checkpointing,
    nf4_quantization_config,
    prepare_for_kbit_training,
    quantize_to_nf4,
)
from planner.methods._loss import LOSS_CHUNK_TOKENS, LOSS_CHUNKS, token_loss_sum
from planner.methods._noise import quiet_bitsandbytes
from planner.methods._optimizers import build_optimizer, master_weight_adamw

# Before any function here imports peft or bitsandbytes (see _noise).
quiet_bitsandbytes()

__all__ = [
    "ATTENTION_MODULES",
    "LOSS_CHUNKS",
    "LOSS_CHUNK_TOKENS",
    "MLP_MODULES",
    "AdapterTargets",
    "MethodSetup",
    "apply_method",
    "build_optimizer",
    "decoder_layers",
    "enable_checkpointing",
    "final_norm",
    "master_weight_adamw",
    "nf4_quantization_config",
    "prepare_for_kbit_training",
    "quantize_to_nf4",
    "quiet_bitsandbytes",
    "quantized_weights",
    "resolve_targets",
    "token_loss_sum",
]
