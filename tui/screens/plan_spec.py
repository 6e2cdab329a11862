"""Turn the plan screen's inputs into a sweep spec ("sweep this plan").

The spec keeps what the user planned (model, GPU, provider, sequence length, batch,
optimizer) fixed and searches around it: the methods that fit, the rank from half to
twice the planned one, alpha as 1x or 2x the rank, a log-uniform learning rate, and
the target modules. The dollar budget defaults to ten trials at the cheapest planned
cost. The plan's framework becomes the spec's ``framework``: the trials are gated and
predicted as that framework runs, with its loss. The user edits the written TOML before launching.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["PLAN_SWEEP_TRIALS", "spec_from_plan"]

PLAN_SWEEP_TRIALS = 10
"""Trials in a spec made from a plan; the dollar budget is this many planned runs."""


def _study_name(model: str, gpu: str) -> str:
    stem = model.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{gpu}").strip("-") or "plan"


def _planned_loss(inputs: dict[str, Any]) -> dict[str, str]:
    """The loss the user chose over the framework's own (the framework's own comes with
    the spec's ``framework`` key)."""
    loss = inputs.get("loss")
    return {"loss": loss} if loss else {}


def spec_from_plan(inputs: dict[str, Any], *, run_dir: Path, db: Path):
    """A :class:`sweeps.spec.SweepSpec` searching around the planned configuration."""
    from sweeps.spec import SweepSpec

    methods = list(inputs.get("methods") or ["lora"])
    rank = int(inputs["rank"])
    search: dict[str, Any] = {"methods": methods}
    if any(m in ("lora", "qlora", "dora") for m in methods):
        low, high = max(1, rank // 2), rank * 2
        search["rank"] = {"low": low, "high": high, "log": True} if high > low else rank
        search["alpha_ratio"] = [1.0, 2.0]
        targets = inputs.get("targets") or "all"
        search["targets"] = ["attn", "mlp", "all"] if targets == "all" else [targets]
    search["lr"] = {"low": 1e-5, "high": 1e-3, "log": True}
    search["epochs"] = float(inputs["epochs"])
    search["batch"] = int(inputs["batch"])
    search["grad_accum"] = int(inputs["grad_accum"])
    search["optimizer"] = inputs["optimizer"] if inputs["optimizer"] != "adamw_bf16" else "adamw"

    budget: dict[str, Any] = {"trials": PLAN_SWEEP_TRIALS}
    planned = inputs.get("cheapest_dollars")
    if planned:
        budget["dollars"] = round(float(planned) * PLAN_SWEEP_TRIALS, 2)

    name = _study_name(str(inputs["model"]), str(inputs["gpu"]))
    raw = {
        "name": name,
        "model": inputs["model"],
        "framework": inputs.get("framework") or "hf",
        "hardware": {
            "device": "cuda",
            "gpu": inputs["gpu"],
            **({"provider": inputs["provider"]} if inputs.get("provider") else {}),
        },
        "search": search,
        "trial": {
            "max_seq_len": int(inputs["seq_len"]),
            "grad_checkpointing": bool(inputs["grad_checkpointing"]),
            **_planned_loss(inputs),
        },
        "budget": budget,
        "run": {"dir": str(run_dir), "results": str(db)},
    }
    return SweepSpec.model_validate(raw)
