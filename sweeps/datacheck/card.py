"""The card of a fine-tune: what it measured and where its data and base model came from.

    lines = card_lines(card)            # Markdown, one string per line
    provenance_lines(model, data, ...)  # the card's "Provenance" section alone

One layout for every artifact that carries a card: the model card (``README.md``) beside a
saved adapter (:mod:`sweeps.trial.recipe`, from the trial's ``TrialResult``) and the card
``paretune export`` writes beside a framework config (:mod:`sweeps.results.trial_export`,
from the trial's row in the results file). The provenance states the base model and its
licence (where its card or config says), the data files with their hashes and rows, what
the data check found (counts, never the matching text) and the retain source with the
measured forgetting. Plain values in, so both callers can pass what they hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Card", "base_licence", "card_lines", "fmt", "provenance_lines"]


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def base_licence(model: str) -> str | None:
    """The base model's licence where its card (README front matter) or config states it:
    a local folder's files, else the Hugging Face cache's card (never the network)."""
    folder = Path(model)
    card: Path | None = folder / "README.md" if folder.is_dir() else None
    config = folder / "config.json" if folder.is_dir() else None
    if card is None and model != "demo":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "README.md")
        except Exception:  # noqa: BLE001 - an id the cache cannot answer for: no licence known
            cached = None
        card = Path(cached) if isinstance(cached, str) else None
    if card is not None and card.is_file():
        for line in card.read_text(encoding="utf-8", errors="replace").splitlines()[1:40]:
            if line.strip() == "---":
                break
            if line.startswith("license:"):
                return line.partition(":")[2].strip().strip("\"'") or None
    if config is not None and config.is_file():
        try:
            licence = json.loads(config.read_text()).get("license")
        except (OSError, ValueError, AttributeError):
            return None
        return str(licence) if licence else None
    return None


def provenance_lines(
    model: str,
    data: Mapping[str, Any] | None,
    *,
    retain_source: str | None,
    retain_delta_nll: float | None,
    retain_kl: float | None,
) -> list[str]:
    """The card's provenance section. ``data``: the trial's ``DataProvenance`` as a mapping
    (``result.data.model_dump()``, or the results file's ``data_provenance`` column)."""
    licence = base_licence(model)
    lines = [
        "## Provenance",
        "",
        f"- base model: `{model}`; licence: {licence or 'not stated in its card or config'}",
        f"- retain source (forgetting): {retain_source or '-'}; retain ΔNLL "
        f"{fmt(retain_delta_nll)}, KL {fmt(retain_kl)}",
    ]
    if not data:
        return [*lines, "- data: no data check recorded for this trial", ""]
    files = [f for f in data.get("files") or [] if isinstance(f, Mapping)]
    personal = data.get("personal_data") or {}
    lines += [
        f"- data fingerprint: `{data.get('fingerprint', '-')}`",
        f"- rows trained on: {data.get('train_rows', '-')}; scored on: "
        f"{data.get('eval_rows', '-')} ("
        + (
            "eval file"
            if data.get("split") == "file"
            else "held out of train, copies kept together"
        )
        + ")",
        f"- leakage ({data.get('leakage', '-')}): {data.get('eval_leaked', 0)} eval rows copied "
        f"train rows, {data.get('eval_dropped', 0)} dropped; retain rows in train: "
        f"{data.get('retain_in_train', 0)}",
        f"- train duplicates: {data.get('train_exact_duplicates', 0)} exact, "
        f"{data.get('train_near_duplicates', 0)} near",
        "- personal data found (counts): "
        + (", ".join(f"{k} {n}" for k, n in personal.items()) or "none"),
        "",
        "| data | file | rows | sha256 |",
        "|---|---|---|---|",
        *(
            f"| {f.get('role', '-')} | `{f.get('path', '-')}` | {f.get('rows', '-')} | "
            f"`{f.get('sha256') or '-'}` |"
            for f in files
        ),
        "",
    ]
    return lines


@dataclass(frozen=True)
class Card:
    """What a card says, in plain values. ``metrics``: (name, value, base value) rows."""

    model: str
    method: str
    summary: Sequence[str] = ()
    metrics: Sequence[tuple[str, str, str]] = ()
    data: Mapping[str, Any] | None = None
    retain_source: str | None = None
    retain_delta_nll: float | None = None
    retain_kl: float | None = None
    command: str | None = None


def card_lines(card: Card) -> list[str]:
    """The card as Markdown lines: title, summary, metrics, provenance, how to reproduce."""
    lines = [f"# {card.method} fine-tune of {card.model}", "", f"- base model: `{card.model}`"]
    lines += [f"- {line}" for line in card.summary]
    lines.append("")
    if card.metrics:
        lines += ["| metric | value | base |", "|---|---|---|"]
        lines += [f"| {name} | {value} | {base} |" for name, value, base in card.metrics]
        lines.append("")
    lines += provenance_lines(
        card.model,
        card.data,
        retain_source=card.retain_source,
        retain_delta_nll=card.retain_delta_nll,
        retain_kl=card.retain_kl,
    )
    lines += ["Reproduce:", "", "```bash", card.command or "", "```", ""]
    return lines
