"""Write a run as a ready config for the framework that will train it at full scale.

    from planner.frameworks.exports import RunToExport, export_run
    run = RunToExport(model="Qwen/Qwen2.5-0.5B", method="lora", rank=16, ...)
    done = export_run(run, "axolotl")
    done.text          # the Axolotl YAML
    done.notes         # what Axolotl cannot say as the trial ran it, and what to fill in

Formats (:data:`EXPORT_FORMATS`):

- ``axolotl``: an Axolotl YAML (its pydantic schema, ``axolotl.utils.schemas``, 0.19);
  ``axolotl train FILE.yml``.
- ``torchtune``: a recipe config for ``tune run lora_finetune_single_device`` (or
  ``full_finetune_single_device``), torchtune 0.6; only for models torchtune has builders for.
- ``trl``: a JSON of TRL ``SFTConfig`` fields with the PEFT ``LoraConfig`` under
  ``peft_config`` (the shape ``paretune plan --config`` reads), and a script that runs it
  (:attr:`Export.script`).
- ``unsloth``: a runnable Python script (``FastLanguageModel`` + TRL's ``SFTTrainer``).

Every value a format cannot express as the trial ran it is named in :attr:`Export.notes`
(and as a comment in the file), never dropped silently. Nothing here reads a file: the
caller passes plain values (see ``sweeps.results.trial_export`` for a trial's).
"""

from __future__ import annotations

from collections.abc import Callable

from planner.frameworks.exports._axolotl import write_axolotl
from planner.frameworks.exports._common import Export, ExportError, RunToExport
from planner.frameworks.exports._hf import TRL_EXTRA_KEYS, write_trl, write_unsloth
from planner.frameworks.exports._torchtune import write_torchtune

__all__ = [
    "EXPORT_FORMATS",
    "SUFFIXES",
    "TRL_EXTRA_KEYS",
    "Export",
    "ExportError",
    "RunToExport",
    "export_run",
]

EXPORT_FORMATS = ("axolotl", "trl", "unsloth", "torchtune")
SUFFIXES: dict[str, tuple[str, ...]] = {
    "axolotl": (".yml", ".yaml"),
    "torchtune": (".yaml", ".yml"),
    "trl": (".json",),
    "unsloth": (".py",),
}
"""The file suffixes each format is written with (the first is the default)."""


_WRITERS: dict[str, Callable[[RunToExport], Export]] = {
    "axolotl": write_axolotl,
    "torchtune": write_torchtune,
    "trl": write_trl,
    "unsloth": write_unsloth,
}


def export_run(run: RunToExport, to: str) -> Export:
    """``run`` as a ready config of framework ``to`` (one of :data:`EXPORT_FORMATS`)."""
    if to not in _WRITERS:
        from pricing.errors import did_you_mean

        raise ExportError(
            f"cannot export to {to!r}: paretune writes {', '.join(EXPORT_FORMATS)}",
            did_you_mean(to, EXPORT_FORMATS),
        )
    if run.method not in ("full", "lora", "qlora", "dora", "freeze"):
        raise ExportError(
            f"unknown method {run.method!r}",
            "A trial's method is full, lora, qlora, dora or freeze.",
        )
    return _WRITERS[to](run)
