"""The planner's view of a trial: one translation from TrialConfig to planner specs.

The sweep's feasibility gate (before a trial runs) and the trial's own ``predicted``
figures (after it ran) must describe the same method to the planner, or the gate and the
calibration view would disagree about what was predicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.trial.types import TrialConfig

if TYPE_CHECKING:
    from planner import MethodSpec

__all__ = ["planner_method"]


def planner_method(config: TrialConfig, *, precision: str) -> MethodSpec:
    """The planner's ``MethodSpec`` for what ``config`` really runs at ``precision``."""
    from planner import MethodSpec

    if config.method == "qlora" and precision == "fp32":
        # The 4-bit base always computes in 16 bits; fp32 only names the adapters' dtype.
        precision = "bf16"
    return MethodSpec(
        kind=config.method,
        rank=config.rank,
        alpha=config.alpha,
        targets=config.targets,
        optimizer=config.optimizer,
        precision=precision,
        grad_checkpointing=config.grad_checkpointing,
        freeze_layers=config.freeze_trainable_layers,
        lora_dropout=config.dropout,
        # QLoRA trials go through peft's prepare_model_for_kbit_training, which leaves the
        # unquantized parameters (embeddings, lm_head, norms) in fp32.
        unquantized_fp32=config.method == "qlora",
        loss=config.loss,
    )
