"""When a sweep asks for a CUDA GPU the machine does not have: offer the CPU, or say why not.

"Sweep this plan" writes a spec for the GPU that was planned. Launched on a machine without
CUDA, the preflight check refuses it (no trial would run). For a model small enough to
fine-tune on a CPU, the app offers to switch the spec to the CPU; for a larger one it says
why it does not, and where to run the spec instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tui.widgets import ChoiceScreen

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

__all__ = ["CPU_MAX_PARAMS_B", "CpuOffer", "CpuOfferScreen", "cpu_offer", "on_the_cpu"]

CPU_MAX_PARAMS_B = 1.5
"""Largest model (billions of parameters) offered the CPU. A LoRA step costs about 6·N FLOPs
per token; at the ~0.1-0.5 TFLOP/s a many-core CPU sustains in fp32, a 1.5B model trains a
few hundred tokens a second, so a small trial still ends within hours. A 7B model would take
days per trial."""

NO_CUDA = "asks for a CUDA GPU"
"""The words of the preflight's device problem (sweeps.preflight._check_device)."""


@dataclass(frozen=True)
class CpuOffer:
    """What to tell the user: ``allowed`` is whether the CPU is offered."""

    allowed: bool
    text: str


def cpu_offer(error: str, spec: SweepSpec, params_b: float | None) -> CpuOffer | None:
    """The offer for a failed preflight, or None when its failure is not a missing GPU."""
    if NO_CUDA not in error or spec.hardware.device == "cpu":
        return None
    size = f"{params_b:,.2f}B parameters" if params_b is not None else "an unknown size"
    if params_b is not None and params_b > CPU_MAX_PARAMS_B:
        return CpuOffer(
            False,
            f"No CUDA GPU is visible on this machine, and {spec.model} ({size}) is too large "
            f"to fine-tune on a CPU (one trial would take days; the CPU is offered up to "
            f"{CPU_MAX_PARAMS_B}B). Copy the spec to a machine with a GPU and run "
            f"`paretune sweep run {spec.name}.toml` there, or plan a smaller model.",
        )
    return CpuOffer(
        True,
        f"No CUDA GPU is visible on this machine. {spec.model} ({size}) can be fine-tuned on "
        "the CPU instead: slower than the planned GPU, priced as local CPU time ($0 unless "
        "[hardware] cpu_instance or usd_per_hour says otherwise). Switch the spec to the CPU "
        "and launch it?",
    )


def on_the_cpu(spec: SweepSpec) -> SweepSpec:
    """``spec`` run on the CPU: device cpu, no GPU indices, no GPU price or memory."""
    hardware = spec.hardware.model_copy(
        update={"device": "cpu", "gpus": [], "gpu": None, "provider": None, "memory_gb": None}
    )
    return spec.model_copy(update={"hardware": hardware})


class CpuOfferScreen(ChoiceScreen):
    """The offer, with "Use the CPU" when it is allowed; dismissed True to switch."""

    def __init__(self, offer: CpuOffer) -> None:
        buttons = [("Use the CPU", "primary", "use-cpu")] if offer.allowed else []
        buttons.append(("Cancel" if offer.allowed else "Close", "default", "cancel"))
        super().__init__(
            "No CUDA GPU here", offer.text, buttons, yes="use-cpu", text_id="cpu-offer-text"
        )
        self.offer = offer
