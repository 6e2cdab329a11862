"""The feasibility gate and the budget: what a trial will need, before anyone pays for it.

Before a trial is launched the planner predicts its peak memory on the spec's target GPU
and its hours and dollars there. A trial whose predicted peak exceeds the GPU's memory is
*infeasible*: it is recorded with the predicted numbers (as an Optuna constraint, so the
samplers learn to avoid the region) and never run. The budget stops the sweep from
launching a trial whose predicted cost exceeds what is left; where the planner cannot
price a trial (the CPU demo has no target GPU), the mean measured cost of the trials run
so far stands in for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.trial.types import TrialConfig

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

__all__ = ["Gate", "Prediction", "Spend", "budget_refusal"]


@dataclass(frozen=True)
class Prediction:
    """The planner's figures for one trial on the target GPU (None: not predicted)."""

    peak_gb: float | None = None
    gpu_memory_gb: float | None = None
    hours: float | None = None
    dollars: float | None = None
    note: str | None = None
    framework: str = "hf"  # whose behaviour the figures are for (the spec's framework)
    calibration: dict[str, Any] | None = None
    """The calibration profile the figures were corrected by (its record, whether a group
    applied, why, extrapolation warnings); None: the planner's defaults."""

    @property
    def fits(self) -> bool:
        if self.peak_gb is None or self.gpu_memory_gb is None:
            return True
        return self.peak_gb <= self.gpu_memory_gb

    @property
    def overflow_gb(self) -> float:
        """Predicted peak minus GPU memory: the Optuna constraint (feasible when <= 0)."""
        if self.peak_gb is None or self.gpu_memory_gb is None:
            return 0.0
        return self.peak_gb - self.gpu_memory_gb

    def reason(self) -> str:
        planned = "" if self.framework == "hf" else f" (as {self.framework} runs it)"
        return (
            f"predicted peak {self.peak_gb:.1f} GB{planned} > {self.gpu_memory_gb:.1f} GB on "
            "the target GPU; not launched"
        )


class Gate:
    """Predicts each trial on the spec's target GPU (``[hardware] gpu``), corrected by the
    spec's calibration profile (``[run] calibration``, default the active one).

    Without a target GPU (CPU runs) every trial is feasible; it is priced by the planner only
    where the profile has a fitted CPU throughput for its method. Bad catalogue ids, and a
    profile that cannot be read, raise a :class:`~pricing.errors.UserError` at construction,
    before anything is launched (``calibrate=False``: the profile is not read).
    """

    def __init__(self, spec: SweepSpec, *, calibrate: bool = True) -> None:
        from sweeps.trial.prediction import sweep_profile

        self.spec = spec
        hw = spec.hardware
        self.gpu_memory_gb: float | None = hw.memory_gb
        self.usd_per_hour: float | None = hw.usd_per_hour
        self._arch: Any = None
        self._planner_error: str | None = None
        self.profile = sweep_profile(spec.run.calibration) if calibrate else None
        """The calibration profile the predictions are corrected by (None: the defaults)."""
        if hw.gpu is None and hw.provider is None and hw.cpu_instance is None:
            return
        from pricing import load_catalog

        catalog = load_catalog()
        if hw.provider is not None:
            catalog.check_provider(hw.provider)
        if hw.cpu_instance is not None and self.usd_per_hour is None and hw.gpu is None:
            self.usd_per_hour = float(catalog.cpu_instance(hw.cpu_instance).usd_per_hour)
        if hw.gpu is not None:
            gpu = catalog.gpu(hw.gpu)
            if self.gpu_memory_gb is None:
                self.gpu_memory_gb = float(gpu.memory_gb)

    def _resolve_arch(self) -> Any:
        if self._arch is not None or self._planner_error is not None:
            return self._arch
        try:
            from planner import resolve_model

            model = self.spec.model
            if model == "demo":
                from sweeps.trial.demo import ensure_demo

                model = str(ensure_demo().model_dir)
            self._arch = resolve_model(model)
        except (ImportError, UserError, OSError) as error:
            self._planner_error = f"no planner prediction: {error}"
        return self._arch

    @property
    def calibration_path(self) -> str | None:
        """The profile's path, as each trial is given it (None: no profile)."""
        return None if self.profile is None else str(self.profile.path.resolve())

    def predict(self, config: TrialConfig) -> Prediction:
        """Predicted peak memory, hours and dollars of ``config`` on the target GPU."""
        hw = self.spec.hardware
        if hw.gpu is None:
            return self._predict_cpu(config)
        arch = self._resolve_arch()
        if arch is None:
            return Prediction(gpu_memory_gb=self.gpu_memory_gb, note=self._planner_error)
        try:
            est = self._estimate(arch, config, gpu=hw.gpu)
        except (ImportError, TypeError, UserError, ValueError) as error:
            return Prediction(
                gpu_memory_gb=self.gpu_memory_gb, note=f"no planner prediction: {error}"
            )
        calibration = None
        if self.profile is not None:
            est, calibration = self.profile.correct(est)
        dollars = float(est.dollars) if est.dollars is not None else None
        if est.hours is not None and getattr(est, "usd_per_gpu_hour", None) is not None:
            # est.dollars is rounded to cents; small trials need the unrounded figure.
            dollars = est.hours * float(est.usd_per_gpu_hour) * est.gpus
        if self.usd_per_hour is not None and est.hours is not None:
            # usd_per_hour is per device, as a trial charges it (hours x devices x price)
            dollars = est.hours * self.usd_per_hour * est.gpus
        return Prediction(
            peak_gb=float(est.peak_gb),
            gpu_memory_gb=self.gpu_memory_gb,
            hours=float(est.hours) if est.hours is not None else None,
            dollars=dollars,
            framework=self.spec.framework,
            calibration=calibration,
        )

    def _predict_cpu(self, config: TrialConfig) -> Prediction:
        """A trial without a target GPU: feasible, and priced only where the profile has a
        fitted CPU throughput for its method (hours at it, dollars at the hourly price)."""
        unpriced = Prediction(gpu_memory_gb=self.gpu_memory_gb, framework=self.spec.framework)
        if self.profile is None:
            return unpriced
        arch = self._resolve_arch()
        if arch is None:
            return unpriced
        try:
            est, calibration = self.profile.correct(self._estimate(arch, config, gpu=None))
        except (ImportError, TypeError, UserError, ValueError):
            return unpriced
        if not calibration.get("calibrated") or est.hours is None:
            return replace(unpriced, calibration=calibration)
        return Prediction(
            peak_gb=float(est.peak_gb),
            gpu_memory_gb=self.gpu_memory_gb,
            hours=float(est.hours),
            dollars=None if self.usd_per_hour is None else est.hours * self.usd_per_hour,
            calibration=calibration,
            framework=self.spec.framework,
        )

    def training_flops(self, config: TrialConfig) -> float | None:
        """The planner's training FLOPs of ``config`` (None: the planner cannot size it).

        Needs no target GPU: where a trial is not priced (CPU runs), its FLOPs still say how
        much more one configuration computes than another."""
        arch = self._resolve_arch()
        if arch is None:
            return None
        try:
            return float(self._estimate(arch, config, gpu=None).flops)
        except (ImportError, TypeError, UserError, ValueError):
            return None

    def estimate_on(self, arch: Any, config: TrialConfig, *, gpu: str) -> Any:
        """The planner's :class:`~planner.Estimate` of ``config`` on ``gpu`` (a catalogue
        id) instead of the spec's target GPU, at its cheapest offer: how cloud workers pick
        the GPU they rent (:mod:`sweeps.cloud`)."""
        return self._estimate(arch, config, gpu=gpu, provider=None)

    def _estimate(
        self, arch: Any, config: TrialConfig, *, gpu: str | None, provider: str | None = ""
    ) -> Any:
        from planner import Workload, estimate
        from sweeps.trial.prediction import planner_method, rank_batch

        workload = Workload(
            seq_len=config.max_seq_len,
            batch=rank_batch(config),
            grad_accum=config.grad_accum,
            dataset_tokens=_dataset_tokens(config),
            epochs=config.epochs,
            packing=config.packing,
        )
        method = planner_method(
            config, precision="bf16" if config.precision == "auto" else config.precision
        )
        if provider == "":
            provider = self.spec.hardware.provider
        return estimate(arch, workload, method, gpu=gpu, provider=provider if gpu else None)


def _dataset_tokens(config: TrialConfig) -> int:
    """Training tokens the trial will process (an upper bound: full-length sequences)."""
    if config.max_steps is not None:
        return config.max_steps * config.batch * config.grad_accum * config.max_seq_len
    rows = 1000
    if config.train and config.train.endswith(".jsonl"):
        try:
            with open(config.train, encoding="utf-8") as handle:
                rows = sum(1 for line in handle if line.strip())
        except OSError:
            pass
    return int(rows * config.max_seq_len)


@dataclass(frozen=True)
class Spend:
    """What the study has used so far (launched trials, finished and running)."""

    trials: int = 0
    dollars: float = 0.0
    hours: float = 0.0
    mean_dollars: float | None = None
    mean_hours: float | None = None


def budget_refusal(spec: SweepSpec, spend: Spend, prediction: Prediction) -> str | None:
    """Why the next trial must not be launched (None: launch it)."""
    budget = spec.budget
    if budget.trials is not None and spend.trials >= budget.trials:
        return f"trial budget reached ({spend.trials} of {budget.trials})"
    next_dollars = prediction.dollars if prediction.dollars is not None else spend.mean_dollars
    if budget.dollars is not None:
        left = budget.dollars - spend.dollars
        if left <= 0 or (next_dollars is not None and next_dollars > left):
            return (
                f"dollar budget: ${spend.dollars:.4f} of ${budget.dollars:.2f} spent, "
                f"next trial predicted ${next_dollars or 0:.4f} > ${max(left, 0):.4f} left"
            )
    next_hours = prediction.hours if prediction.hours is not None else spend.mean_hours
    if budget.hours is not None:
        left_h = budget.hours - spend.hours
        if left_h <= 0 or (next_hours is not None and next_hours > left_h):
            return (
                f"hour budget: {spend.hours:.3f} of {budget.hours:g} h used, "
                f"next trial predicted {next_hours or 0:.3f} h > {max(left_h, 0):.3f} h left"
            )
    return None
