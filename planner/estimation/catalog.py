"""Where architectures come from: the built-in catalogue, local configs, the Hub.

The catalogue (``planner/data/models.json``) holds each model's config.json as
published with its checkpoint, so the planner works offline for popular models.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path

from planner.errors import ModelConfigError, UnknownModelError
from planner.estimation.arch import ModelArch, arch_from_config
from pricing.errors import suggest

__all__ = ["list_models", "resolve_model", "search_models"]


@cache
def _catalogue() -> tuple[ModelArch, ...]:
    text = resources.files("planner").joinpath("data/models.json").read_text(encoding="utf-8")
    return tuple(
        arch_from_config(
            entry["config"],
            name=entry["name"],
            hf_id=entry.get("hf_id"),
            family=entry.get("family", ""),
            aliases=tuple(entry.get("aliases", ())),
        )
        for entry in json.loads(text)["models"]
    )


@cache
def _index() -> dict[str, ModelArch]:
    index: dict[str, ModelArch] = {}
    for arch in _catalogue():
        for key in (arch.name, *arch.aliases, arch.hf_id or ""):
            if key:
                index[key.lower()] = arch
    return index


def list_models() -> tuple[ModelArch, ...]:
    """Every built-in architecture, in catalogue order (family by family, small to large)."""
    return _catalogue()


def search_models(query: str | None = None) -> tuple[ModelArch, ...]:
    """Catalogue entries whose name, alias, Hub id or family contains ``query``
    (case-insensitive; every word of the query must match)."""
    if not query:
        return _catalogue()
    words = query.lower().split()

    def haystack(a: ModelArch) -> str:
        return " ".join((a.name, *a.aliases, a.hf_id or "", a.family, a.model_type)).lower()

    return tuple(a for a in _catalogue() if all(w in haystack(a) for w in words))


def _from_local(path: Path) -> ModelArch:
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise UnknownModelError(
            f"{str(path)!r} is a folder without a config.json",
            "Point at a model folder saved with save_pretrained, or at its config.json.",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelConfigError(
            f"cannot read {str(config_path)!r} as JSON: {error}",
            "A config.json must be a JSON object as written by transformers.",
        ) from None
    name = path.name if path.is_dir() else (path.parent.name or path.stem)
    return arch_from_config(config, name=name)


def _from_hub(repo_id: str, revision: str | None) -> ModelArch | None:
    """The config.json of a Hub repo (downloaded once, then read from the HF cache);
    None when the Hub cannot be reached and nothing is cached."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision)
    except LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE=1 or no network) and not in the cache. A subclass of
        # EntryNotFoundError in huggingface_hub, so it is caught first.
        return None
    except GatedRepoError:
        raise UnknownModelError(
            f"the Hub repo {repo_id!r} is gated: its config.json needs an access token",
            "Accept the licence on the model page and run `hf auth login`, or download "
            "config.json yourself and pass its path.",
        ) from None
    except RepositoryNotFoundError:
        raise UnknownModelError(
            f"no model {repo_id!r} on the Hugging Face Hub",
            _did_you_mean(repo_id),
        ) from None
    except (RevisionNotFoundError, EntryNotFoundError):
        raise UnknownModelError(
            f"the Hub repo {repo_id!r} has no config.json"
            + (f" at revision {revision!r}" if revision else ""),
            "Pass a local config.json instead.",
        ) from None
    except (OSError, ValueError):  # network failures surface as OSError subclasses
        return None
    arch = _from_local(Path(path))
    return arch_from_config(arch.hf_config, name=repo_id.split("/")[-1], hf_id=repo_id)


def _did_you_mean(name: str) -> str:
    keys = list(_index())
    close = suggest(name.split("/")[-1], keys, n=3, cutoff=0.4)
    if close:
        names = sorted({_index()[c].name for c in close})
        return (
            "Did you mean "
            + " or ".join(repr(n) for n in names)
            + "? (`paretune models` lists them all)"
        )
    return "Run `paretune models` for the built-in list, or pass a Hub id or a config.json path."


def resolve_model(name: str, *, revision: str | None = None) -> ModelArch:
    """An architecture by catalogue name or alias, Hub id, or local config.

    Order: the built-in catalogue (names, aliases and Hub ids, case-insensitive, no
    network); a local ``config.json`` or model folder; a Hub id ``org/name`` (config
    only, through huggingface_hub and its cache; ``HF_HUB_OFFLINE=1`` keeps it offline).
    Raises :class:`UnknownModelError` (with close catalogue names) or
    :class:`ModelConfigError` (naming the bad field).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(
            "no model given", "Name a catalogue model, a Hub id or a config.json path."
        )
    key = name.strip()
    found = _index().get(key.lower())
    if found is not None and revision is None:
        return found
    path = Path(os.path.expanduser(key))
    if path.exists():
        return _from_local(path)
    if key.startswith((".", "/", "~")):  # a path, not a Hub id or a catalogue name
        raise UnknownModelError(
            f"no such folder or file: {key!r}",
            "Check the path (a folder saved with save_pretrained, or its config.json), "
            "or name a catalogue model or a Hub id.",
        )
    if key.count("/") == 1 and not key.startswith((".", "/")) and not key.endswith(".json"):
        arch = _hub_cached(key, revision)
        if arch is not None:
            return arch
        if found is not None:
            return found
        raise UnknownModelError(
            f"cannot fetch the config of {key!r}: the Hub is unreachable and it is not cached",
            "Connect to the network once (it is cached afterwards), pass a local config.json, "
            "or use a catalogue model: " + _did_you_mean(key),
        )
    raise UnknownModelError(f"unknown model {key!r}", _did_you_mean(key))


_HUB_ARCHS: dict[tuple[str, str | None], ModelArch] = {}


def _hub_cached(repo_id: str, revision: str | None) -> ModelArch | None:
    """Hub configs read in this process; a failure is not remembered, so a later call
    can succeed once the network is back (huggingface_hub caches the file on disk)."""
    key = (repo_id, revision)
    if key not in _HUB_ARCHS:
        arch = _from_hub(repo_id, revision)
        if arch is None:
            return None
        _HUB_ARCHS[key] = arch
    return _HUB_ARCHS[key]
