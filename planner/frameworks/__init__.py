"""Plan a run as the framework the user trains with runs it.

    from planner.frameworks import framework_method
    chosen = framework_method("torchtune", "qlora", settings={"rank": 8})
    chosen.method      # a MethodSpec with torchtune's loss, optimizer, adapter dtype ...
    chosen.changes     # what torchtune changed against transformers + peft, and why

Explicit settings always win over the preset: a preset only fills the fields the user
left at their defaults. Sources of every preset value are in ``_presets.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import InvalidSpecError
from planner.frameworks._presets import PRESETS, Preset, Setting
from planner.specs import FRAMEWORKS, MethodSpec
from pricing.errors import did_you_mean

__all__ = [
    "PRESETS",
    "TERM_FIELDS",
    "FrameworkMethod",
    "Preset",
    "Setting",
    "framework_method",
    "preset",
    "term_notes",
]

TERM_FIELDS: dict[str, tuple[str, ...]] = {
    "weights": ("unquantized_fp32",),
    "adapter_weights": ("adapter_fp32",),
    "gradients": ("optimizer_in_backward", "adapter_fp32"),
    "optimizer_states": ("optimizer", "adapter_fp32"),
    "activations": ("offload_checkpoints", "lora_dropout"),
    "logits_loss": ("loss", "compiled", "logit_copies"),
}
"""Which ``MethodSpec`` fields change which memory term (to name them in a breakdown)."""


def preset(name: str) -> Preset:
    """The preset called ``name``; raises :class:`InvalidSpecError` for an unknown one."""
    key = name.strip().lower().replace("_", "-")
    key = {"llamafactory": "llama-factory", "transformers": "hf", "peft": "hf"}.get(key, key)
    if key not in PRESETS:
        raise InvalidSpecError(
            f"--framework: unknown framework {name!r}; the planner knows {', '.join(FRAMEWORKS)}",
            did_you_mean(key, FRAMEWORKS),
        )
    return PRESETS[key]


@dataclass(frozen=True, slots=True)
class FrameworkMethod:
    """A method as a framework runs it, and the preset values that made it so.

    ``changes`` holds only what the preset set (not overridden by the user) and what
    differs from the transformers + peft defaults.
    """

    method: MethodSpec
    preset: Preset
    changes: tuple[Setting, ...]

    @property
    def speed_note(self) -> str:
        if self.preset.speed_factor == 1.0:
            return ""
        return (
            f"{self.preset.title} speed x{self.preset.speed_factor:g} over transformers: "
            f"vendor claim, not measured ({self.preset.speed_source})"
        )


def _applicable(chosen: Preset, kind: str) -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for setting in chosen.settings:
        if setting.applies_to(kind) and setting.field not in found:
            found[setting.field] = setting
    return found


def framework_method(
    framework: str,
    kind: str,
    *,
    settings: Mapping[str, Any] | None = None,
    explicit: frozenset[str] | set[str] = frozenset(),
    grad_accum: int = 1,
) -> FrameworkMethod:
    """The :class:`MethodSpec` of ``kind`` as ``framework`` runs it.

    ``settings`` are ``MethodSpec`` fields (defaults and user choices alike); those named
    in ``explicit`` were chosen by the user and win over the preset. Optimizer in backward
    is left off when ``grad_accum`` > 1 (the frameworks refuse that combination).
    """
    chosen = preset(framework)
    values = dict(settings or {})
    default = MethodSpec(kind=kind)  # type: ignore[arg-type]
    changes = []
    for name, setting in _applicable(chosen, kind).items():
        if name in explicit:
            continue
        if name == "optimizer_in_backward" and grad_accum > 1:
            continue
        values[name] = setting.value
        if getattr(default, name) != setting.value:
            changes.append(setting)
    values["framework"] = chosen.name
    values["speed_factor"] = chosen.speed_factor
    method = MethodSpec(kind=kind, **values)  # type: ignore[arg-type]
    return FrameworkMethod(method=method, preset=chosen, changes=tuple(changes))


def term_notes(method: MethodSpec) -> dict[str, str]:
    """Per memory term, what the framework changed in it ("chunked CE, torchtune")."""
    chosen = PRESETS[method.framework]
    applied = _applicable(chosen, method.kind)
    notes: dict[str, str] = {}
    for term, fields in TERM_FIELDS.items():
        whys = [
            applied[f].why
            for f in fields
            if f in applied
            and getattr(method, f) == applied[f].value
            and getattr(MethodSpec(kind=method.kind), f) != applied[f].value
        ]
        if whys:
            notes[term] = f"{'; '.join(whys)}, {chosen.name}"
    return notes
