"""The plan screen's inputs as plain values, and what the screen shows for them.

Nothing here imports textual: the screen reads its widgets into a :class:`PlanForm` of
strings, :meth:`PlanForm.parse` checks them (a :class:`BadInput` names the field), and
:func:`plan_view` asks the planner for every method. The planner is pure and takes about
a millisecond per method, so the screen recomputes on every keystroke.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import Any

from planner.specs import Workload
from pricing.errors import UserError

__all__ = [
    "PLAN_METHODS",
    "BadInput",
    "MethodRow",
    "PlanForm",
    "PlanRequest",
    "PlanView",
    "parse_tokens",
    "plan_command",
    "plan_view",
    "planner_inputs",
]

PLAN_METHODS = ("full", "lora", "qlora", "dora", "freeze")


class BadInput(UserError):
    """A plan screen field that cannot be read."""

    title = "Bad input"


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def _number(field_name: str, text: str) -> float:
    cleaned = text.strip().lower().replace(",", "").replace("_", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgt]?)", cleaned)
    if not match:
        raise BadInput(
            f"{field_name}: cannot read {text.strip()!r} as a number",
            "Write e.g. 2048, 1.5e6, 20M or 2B.",
        )
    return float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0)


def _positive_int(field_name: str, text: str) -> int:
    value = _number(field_name, text)
    if value < 1 or not float(value).is_integer():
        raise BadInput(f"{field_name} must be a whole number of at least 1, got {text.strip()!r}")
    return int(value)


def parse_tokens(text: str) -> int:
    """Dataset size in tokens: ``20M``, ``1.5e7``, or examples × average tokens (``50k x 400``)."""
    parts = re.split(r"\s*[x×*]\s*", text.strip().lower())
    if len(parts) == 2:
        examples = _number("dataset size (examples)", parts[0])
        average = _number("dataset size (tokens per example)", parts[1])
        tokens = examples * average
    elif len(parts) == 1:
        tokens = _number("dataset size", parts[0])
    else:
        raise BadInput(
            f"dataset size: cannot read {text.strip()!r}",
            "Write tokens (20M) or examples × average tokens (50k x 400).",
        )
    if tokens < 1:
        raise BadInput(f"dataset size must be at least one token, got {text.strip()!r}")
    return int(round(tokens))


def _seq_len(text: str) -> int:
    """A sequence length; ``4k`` is 4096 tokens (context lengths are powers of two)."""
    cleaned = text.strip().lower()
    if cleaned.endswith("k"):
        value = _number("sequence length", cleaned[:-1]) * 1024
        if value < 1 or not value.is_integer():
            raise BadInput(f"sequence length must be a whole number of tokens, got {text!r}")
        return int(value)
    return _positive_int("sequence length", text)


# One set of defaults with `paretune plan`: the planner's Workload (the GPU differs: the
# command line picks the cheapest that fits, the screen starts on one).
_WORKLOAD_DEFAULTS = {f.name: f.default for f in fields(Workload)}


def _default_tokens() -> str:
    tokens = int(_WORKLOAD_DEFAULTS["dataset_tokens"])  # type: ignore[call-overload]
    return f"{tokens // 1_000_000}M" if tokens % 1_000_000 == 0 else str(tokens)


@dataclass(frozen=True)
class PlanForm:
    """The plan screen's fields exactly as typed (strings), or chosen (select values)."""

    model: str = "llama-3.1-8b"
    seq_len: str = str(_WORKLOAD_DEFAULTS["seq_len"])
    batch: str = str(_WORKLOAD_DEFAULTS["batch"])
    grad_accum: str = str(_WORKLOAD_DEFAULTS["grad_accum"])
    dataset: str = _default_tokens()
    epochs: str = "1"
    gpu: str = "h100-sxm"
    gpus: str = "1"
    sharding: str = "none"  # with several GPUs: zero2, or zero3 (FSDP) to split the weights
    provider: str = ""  # "" = the cheapest provider renting the GPU
    rank: str = "16"
    targets: str = "all"
    optimizer: str = "adamw"
    grad_checkpointing: bool = True
    # Framework behaviours (the planner's MethodSpec fields of the same names).
    framework: str = "hf"
    loss: str = ""  # "" = the framework's own loss
    optimizer_in_backward: bool = False
    unquantized_fp32: bool = False
    logit_copies: str = "3"

    def parse(self) -> PlanRequest:
        """Check every field; raises :class:`BadInput` naming the first bad one."""
        if not self.model.strip():
            raise BadInput("model: type a catalogue name, a Hugging Face id or a local folder")
        seq_len = _seq_len(self.seq_len)
        batch = _positive_int("micro-batch", self.batch)
        grad_accum = _positive_int("gradient accumulation", self.grad_accum)
        if self.optimizer_in_backward and grad_accum > 1:
            # The planner refuses it too; said here in the form's words.
            raise BadInput(
                "optimizer in backward steps the optimizer on every micro-batch, so it cannot "
                f"accumulate gradients: grad accum must be 1, got {grad_accum}",
                "Set grad accum to 1, or untick optimizer in backward.",
            )
        dataset_tokens = parse_tokens(self.dataset)
        epochs = _number("epochs", self.epochs)
        if epochs <= 0 or math.isinf(epochs):
            raise BadInput(f"epochs must be more than 0, got {self.epochs.strip()!r}")
        return PlanRequest(
            model=self.model.strip(),
            seq_len=seq_len,
            batch=batch,
            grad_accum=grad_accum,
            dataset_tokens=dataset_tokens,
            epochs=epochs,
            gpu=self.gpu,
            gpus=_positive_int("GPU count", self.gpus),
            sharding=self.sharding or "none",
            provider=self.provider or None,
            rank=_positive_int("LoRA rank", self.rank),
            targets=self.targets.strip() or "all",
            optimizer=self.optimizer,
            grad_checkpointing=self.grad_checkpointing,
            optimizer_in_backward=self.optimizer_in_backward,
            unquantized_fp32=self.unquantized_fp32,
            logit_copies=_positive_int("logit copies", self.logit_copies),
            framework=self.framework or "hf",
            loss=self.loss or None,
        )


@dataclass(frozen=True)
class PlanRequest:
    """Checked plan inputs: what the planner is asked."""

    model: str
    seq_len: int
    batch: int
    grad_accum: int
    dataset_tokens: int
    epochs: float
    gpu: str
    gpus: int
    sharding: str
    provider: str | None
    rank: int
    targets: str
    optimizer: str
    grad_checkpointing: bool
    optimizer_in_backward: bool = False
    unquantized_fp32: bool = False
    logit_copies: int = 3
    framework: str = "hf"
    loss: str | None = None  # None: the framework's own

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MethodRow:
    method: str
    label: str
    peak_gb: float
    fits: bool
    min_gpus: int | None
    hours: float | None
    dollars: float | None
    provider: str | None  # whose price the dollars use
    breakdown_gb: dict[str, float] = field(default_factory=dict)
    term_notes: dict[str, str] = field(default_factory=dict)  # what the framework changed
    calibration: str = ""  # "calibrated from N runs on ..." or why not; "" without a profile
    calibration_warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanView:
    """Everything the plan screen shows for one request."""

    request: PlanRequest
    rows: tuple[MethodRow, ...]
    cheapest: MethodRow | None
    api_prices: tuple[tuple[str, str, float], ...]  # (provider, model bracket, dollars)
    prices_checked: date | None
    total_params_b: float

    def row(self, method: str) -> MethodRow | None:
        return next((r for r in self.rows if r.method == method), None)


def _fnum(value: Any) -> float | None:
    return None if value is None else float(value)


def planner_inputs(request: PlanRequest, kind: str) -> tuple[Any, Any]:
    """The planner's ``Workload`` and ``MethodSpec`` for ``request`` and method ``kind``,
    as ``request.framework`` runs it. A setting counts as the user's own choice (and wins
    over the framework's preset) when it differs from the planner's default, as a flag
    given on the command line does."""
    from planner import MethodSpec, Workload
    from planner.frameworks import framework_method

    workload = Workload(
        seq_len=request.seq_len,
        batch=request.batch,
        grad_accum=request.grad_accum,
        dataset_tokens=request.dataset_tokens,
        epochs=request.epochs,
    )
    settings: dict[str, Any] = dict(
        rank=request.rank,
        alpha=2.0 * request.rank,  # the common alpha = 2 x rank; alpha does not change memory
        targets=request.targets,
        optimizer=request.optimizer,
        grad_checkpointing=request.grad_checkpointing,
        gpus=request.gpus,
        sharding=request.sharding,
        optimizer_in_backward=request.optimizer_in_backward,
        unquantized_fp32=request.unquantized_fp32,
        logit_copies=request.logit_copies,
    )
    if request.loss:
        settings["loss"] = request.loss
    default = MethodSpec(kind=kind)  # type: ignore[arg-type]
    explicit = {name for name, value in settings.items() if getattr(default, name) != value}
    if request.loss:
        explicit.add("loss")  # chosen on the form, even when it is transformers' own
    chosen = framework_method(
        request.framework,
        kind,
        settings=settings,
        explicit=explicit,
        grad_accum=request.grad_accum,
    )
    return workload, chosen.method


def plan_view(request: PlanRequest, arch: Any, catalog: Any, profile: Any = None) -> PlanView:
    """Estimate every method for ``request`` on ``arch``, corrected by the calibration
    ``profile`` where it has runs like it (as ``paretune plan`` does); the cheapest that
    fits is marked."""
    from planner import estimate
    from planner.calibration import apply
    from planner.frameworks import term_notes

    rows = []
    prices_checked = None
    for kind in PLAN_METHODS:
        workload, method = planner_inputs(request, kind)
        est = estimate(
            arch, workload, method, gpu=request.gpu, provider=request.provider, catalog=catalog
        )
        calibrated = apply(est, profile, request.framework) if profile is not None else None
        if calibrated is not None:
            est = calibrated.estimate
        rows.append(
            MethodRow(
                method=kind,
                label=method.label(),
                peak_gb=float(est.peak_gb),
                fits=bool(est.fits),
                min_gpus=est.min_gpus,
                # A run that does not fit has no price: "—" (est.price_note says why).
                hours=_fnum(est.hours) if est.fits else None,
                dollars=_fnum(est.dollars) if est.fits else None,
                provider=est.provider,
                breakdown_gb={term: float(b) / 1e9 for term, b in est.breakdown.items() if b},
                term_notes=term_notes(method),
                calibration=calibrated.label if calibrated else "",
                calibration_warnings=calibrated.warnings if calibrated else (),
            )
        )
        if est.provider is not None and prices_checked is None:
            offers = catalog.offers(request.gpu, est.provider)
            prices_checked = offers[0].checked if offers else None
    affordable = [r for r in rows if r.fits and r.dollars is not None]
    cheapest = min(affordable, key=lambda r: r.dollars) if affordable else None
    total_params_b = arch.total_params / 1e9
    api_prices = tuple(
        (price.provider, price.model_bracket, float(dollars))
        for price, dollars in catalog.api_cost(
            total_params_b, int(round(request.dataset_tokens * request.epochs)), "lora"
        )
    )
    return PlanView(request, tuple(rows), cheapest, api_prices, prices_checked, total_params_b)


def plan_command(request: PlanRequest) -> str:
    """The ``paretune plan ...`` command line that prints the same estimates."""
    words = [
        "paretune",
        "plan",
        request.model,
        "--seq-len",
        str(request.seq_len),
        "--batch",
        str(request.batch),
        "--grad-accum",
        str(request.grad_accum),
        "--dataset-tokens",
        str(request.dataset_tokens),
        "--epochs",
        f"{request.epochs:g}",
        "--gpu",
        request.gpu,
        "--gpus",
        str(request.gpus),
    ]
    if request.sharding != "none":
        words += ["--sharding", request.sharding]
    if request.provider:
        words += ["--provider", request.provider]
    words += ["--rank", str(request.rank), "--alpha", f"{2.0 * request.rank:g}"]
    words += ["--targets", request.targets]
    if request.optimizer != "adamw":  # a default the framework's preset may replace
        words += ["--optimizer", request.optimizer]
    if request.framework != "hf":
        words += ["--framework", request.framework]
    if request.loss:
        words += ["--loss", request.loss]
    if not request.grad_checkpointing:
        words.append("--no-grad-checkpointing")
    # The framework options, where they differ from the command's defaults.
    if request.optimizer_in_backward:
        words.append("--optimizer-in-backward")
    if request.unquantized_fp32:
        words.append("--unquantized-fp32")
    if request.logit_copies != 3:
        words += ["--logit-copies", str(request.logit_copies)]
    return shlex.join(words)
