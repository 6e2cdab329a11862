"""The planner's view of a trial: one translation from TrialConfig to planner specs, and
one correction of it by the sweep's calibration profile.

The sweep's feasibility gate (before a trial runs) and the trial's own ``predicted``
figures (after it ran) must describe the same method to the planner, and be corrected by
the same profile, or the gate and the calibration view would disagree about what was
predicted. The planner's memory terms and FLOPs a trial records stay uncorrected: they are
what ``paretune calibrate`` fits from, whichever profile the sweep used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.trial.types import TrialConfig

if TYPE_CHECKING:
    from planner import MethodSpec
    from planner.calibration import Profile
    from planner.estimation.estimate import Estimate

__all__ = [
    "SHARDING",
    "SweepProfile",
    "TRIAL_TAKES",
    "calibrated_prediction",
    "framework_trial_values",
    "framework_untaken",
    "planner_method",
    "rank_batch",
    "sweep_profile",
    "trainer_method",
]

SHARDING = {"fsdp": "zero3", "zero2": "zero2", "zero3": "zero3"}
"""The planner's sharding for a trial's: FSDP2's ``fully_shard`` partitions as ZeRO-3."""


TRIAL_TAKES = {"loss": "loss", "lora_dropout": "dropout"}
"""Framework preset fields (``MethodSpec``) the trial runs as the framework does, and the
``TrialConfig`` setting that carries each: the loss (standard, chunked or fused CE) and
the adapters' dropout. A preset's offloaded checkpoints turn the trial's (on-device)
gradient checkpointing on; every other preset field is only predicted."""


def framework_trial_values(framework: str, kind: str, given: set[str]) -> dict[str, object]:
    """The ``TrialConfig`` settings a trial of ``kind`` takes from ``framework``'s preset
    (:data:`TRIAL_TAKES`), leaving out those the spec sets itself (``given``)."""
    from planner.frameworks import preset

    values: dict[str, object] = {}
    for setting in preset(framework).settings:
        if not setting.applies_to(kind):
            continue
        target = TRIAL_TAKES.get(setting.field)
        if target is not None and target not in given and target not in values:
            values[target] = setting.value
        offloads = setting.field == "offload_checkpoints" and setting.value
        if offloads and "grad_checkpointing" not in given:
            values["grad_checkpointing"] = True
    return values


def framework_untaken(framework: str, kind: str) -> list[str]:
    """What ``framework``'s preset changes for ``kind`` that paretune's trainer does not do
    (the prediction has it, the measurement does not): each as the preset says why."""
    from planner.frameworks import preset

    default = trainer_method(TrialConfig(method=kind), precision="bf16")  # type: ignore[arg-type]
    seen: set[str] = set()
    untaken = []
    for setting in preset(framework).settings:
        if not setting.applies_to(kind) or setting.field in seen:
            continue
        seen.add(setting.field)
        if setting.field in TRIAL_TAKES or getattr(default, setting.field) == setting.value:
            continue
        untaken.append(setting.why)
    return untaken


def planner_method(config: TrialConfig, *, precision: str) -> MethodSpec:
    """The planner's ``MethodSpec`` for ``config`` at ``precision``: what paretune's trainer
    runs (:func:`trainer_method`), planned as ``config.framework`` runs it.

    The framework's preset fills the fields the trial does not carry (offloaded
    checkpoints, attention kernel, k-bit preparation, adapter dtype, optimizer in
    backward) and the optimizer when the trial leaves it at its default; the trial's own
    settings (loss, dropout, checkpointing, rank ...) stay as the trial runs them."""
    method = trainer_method(config, precision=precision)
    if config.framework == "hf":
        return method
    from dataclasses import asdict

    from planner.frameworks import framework_method

    settings = {
        k: v for k, v in asdict(method).items() if k not in ("kind", "framework", "speed_factor")
    }
    explicit = {"loss", "lora_dropout", "grad_checkpointing", "rank", "alpha", "targets"}
    if config.optimizer != TrialConfig.model_fields["optimizer"].default:
        explicit.add("optimizer")
    return framework_method(
        config.framework,
        config.method,
        settings=settings,
        explicit=explicit,
        grad_accum=config.grad_accum,
    ).method


def trainer_method(config: TrialConfig, *, precision: str) -> MethodSpec:
    """The planner's ``MethodSpec`` for what paretune's trainer runs for ``config`` at
    ``precision`` (transformers + peft, whatever ``config.framework`` says)."""
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


# -- the calibration profile a sweep's predictions are corrected by -------------------------


@dataclass(frozen=True)
class SweepProfile:
    """The calibration profile a sweep's gate and trials correct the planner with."""

    path: Path
    profile: Profile

    def record(self) -> dict[str, Any]:
        """What the study records of it: path, content hash, format version, runs, devices."""
        return self.profile.record(self.path)

    def correct(self, estimate: Estimate) -> tuple[Estimate, dict[str, Any]]:
        """``estimate`` corrected by the profile's group for paretune's own trials, and what
        a trial records of it: the profile's record, whether a group applied, why (or why
        not), and any extrapolation."""
        from planner.calibration import FRAMEWORK, apply

        calibrated = apply(estimate, self.profile, FRAMEWORK)
        return calibrated.estimate, {**self.record(), **calibrated.to_json()}


def sweep_profile(choice: str | None) -> SweepProfile | None:
    """The profile of ``[run] calibration``: a path, ``"none"``, or (None) the user's active
    profile where ``paretune calibrate`` wrote one. A profile that cannot be read raises
    :class:`~planner.errors.InvalidSpecError` saying what to fix."""
    from planner.calibration import active_profile
    from planner.errors import InvalidSpecError

    try:
        active = active_profile(choice)
    except InvalidSpecError as error:
        raise InvalidSpecError(
            error.message,
            "Write it with `paretune calibrate --out FILE`, or set [run] calibration = "
            '"none" in the sweep spec to predict with the planner\'s defaults.',
        ) from None
    return None if active is None else SweepProfile(*active)


def calibrated_prediction(
    estimate: Estimate, calibration: str | None
) -> tuple[Estimate, dict[str, Any] | None]:
    """A trial's own prediction corrected by the profile its sweep passed it (``calibration``:
    the profile's path; None: the planner's defaults). A profile that cannot be read leaves
    the prediction uncorrected and says why."""
    if calibration is None:
        return estimate, None
    from pricing.errors import UserError

    try:
        profile = sweep_profile(calibration)
    except UserError as error:
        return estimate, {"path": calibration, "calibrated": False, "label": error.message}
    if profile is None:
        return estimate, None
    return profile.correct(estimate)
