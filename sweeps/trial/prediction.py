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

__all__ = ["SHARDING", "planner_method", "rank_batch"]

SHARDING = {"fsdp": "zero3", "zero2": "zero2", "zero3": "zero3"}
"""The planner's sharding for a trial's: FSDP2's ``fully_shard`` partitions as ZeRO-3."""


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
        # A sharded trial: FSDP's full shard is ZeRO stage 3's partitioning, per rank.
        gpus=config.gpus,
        sharding=SHARDING[config.sharding] if config.gpus > 1 else "none",
    )


def rank_batch(config: TrialConfig) -> int:
    """The micro-batch one rank runs: a sharded trial splits each micro-batch's rows over
    its ranks (the planner's ``Workload.batch`` is per GPU)."""
    return -(-config.batch // config.gpus)
