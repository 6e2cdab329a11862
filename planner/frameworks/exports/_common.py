"""What every format's writer shares: the run, the written export, notes, targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.errors import InvalidSpecError

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class ExportError(InvalidSpecError):
    """A run that cannot be written in the asked format (says which format can)."""

    title = "Cannot export"


@dataclass(frozen=True)
class RunToExport:
    """One fine-tune in plain values (a ``TrialConfig``'s names and meanings).

    ``targets``: ``all``, ``attn``, ``mlp`` or comma-separated module names.
    ``modules``: the model's Linear modules as ``(name, group)`` pairs when known, to
    write ``attn``/``mlp`` as the model's own names. ``steps``: optimizer steps of the
    whole run when known (to turn a warm-up ratio into steps). ``layers``: the model's
    decoder layers when known (to name the layers ``freeze`` trains). ``provenance``: the
    trial card's provenance section (Markdown lines: data files and hashes, the data check's
    counts, base model and licence, retain source and forgetting), written into the header.
    """

    model: str
    method: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    targets: str = "all"
    freeze_trainable_layers: int = 2
    lr: float = 2e-4
    lr_schedule: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    epochs: float = 1.0
    max_steps: int | None = None
    batch: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    packing: bool = False
    grad_checkpointing: bool = False
    loss: str = "standard"
    precision: str = "auto"
    train: str | None = None
    eval: str | None = None
    data_format: str = "prompt_completion"
    seed: int = 0
    source: str = ""
    steps: int | None = None
    layers: int | None = None
    modules: tuple[tuple[str, str], ...] = ()
    provenance: tuple[str, ...] = ()

    @property
    def adapter(self) -> bool:
        return self.method in ("lora", "qlora", "dora")


@dataclass(frozen=True)
class Export:
    """A written export: the file's ``text``, its ``suffix``, and what it could not say."""

    framework: str
    text: str
    suffix: str
    notes: tuple[str, ...] = ()
    script: str | None = None
    """TRL only: a Python script that trains with the JSON beside it (same name, ``.py``)."""


# -- shared pieces ---------------------------------------------------------------------------


class Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def target_names(run: RunToExport, notes: Notes) -> tuple[str, ...] | str:
    """``"all"``, or the module names the trial's ``targets`` chose."""
    targets = run.targets.strip()
    if targets == "all":
        return "all"
    if targets in ("attn", "mlp"):
        if run.modules:
            names = tuple(name for name, group in run.modules if group == targets)
            if names:
                return names
        notes.add(
            f"targets {targets!r} written as the Llama-style names "
            f"{', '.join(ATTENTION if targets == 'attn' else MLP)} (the model's own module "
            "names were not known here): check them against the model"
        )
        return ATTENTION if targets == "attn" else MLP
    return tuple(t.strip() for t in targets.split(",") if t.strip())


def header_lines(run: RunToExport, framework: str, command: str, notes: list[str]) -> list[str]:
    lines = [
        f"Exported by paretune for {framework}" + (f" from {run.source}" if run.source else "")
    ]
    lines.append(f"Run: {command}")
    if notes:
        lines.append("Not expressed exactly (check before training):")
        lines += [f"  - {note}" for note in notes]
    if run.provenance:
        lines += ["", *run.provenance]
    return lines


def as_comment(lines: list[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def to_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def schedule(run: RunToExport) -> str:
    if run.lr_schedule == "constant" and run.warmup_ratio > 0:
        return "constant_with_warmup"
    return run.lr_schedule


def precision_flags(run: RunToExport, notes: Notes) -> dict[str, Any]:
    if run.precision == "auto":
        return {"bf16": "auto"}
    if run.precision == "fp32":
        return {"bf16": False, "fp16": False}
    return {run.precision: True}


def data_note(run: RunToExport, notes: Notes) -> None:
    """Notes on the model and data a framework cannot take as the trial named them."""
    if run.model == "demo":
        notes.add(
            "model 'demo' is paretune's bundled demo model (a local folder, not on the Hub): "
            "set the model to train"
        )
    if run.train is None:
        notes.add("train data: the trial recorded no train file; set the dataset path")
    elif run.train.startswith("hf:"):
        notes.add(f"train data {run.train!r} is a Hugging Face dataset: check its split")


def hf_dataset(path: str) -> tuple[str, str | None]:
    """``hf:NAME`` or ``hf:NAME:SPLIT`` -> (NAME, SPLIT)."""
    name, _, split = path.removeprefix("hf:").partition(":")
    return name, split or None
