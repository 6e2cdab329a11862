"""Warm start: the trials of an earlier study that a new study's sampler learns from.

``[search] warm_start = "first-sweep"`` names a study on the same model, data and objectives.
Its trials are looked up in the new study's own storage first (a journal file or PostgreSQL
holding both studies), then in the results file (``[run] results``), which keeps every study
synced to it even after its journal is gone. Only the sampler sees them: they are not added
to the new study, so they count in neither its budget nor its frontier.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sweeps.cost_aware import Observation
from sweeps.results.schema import json_value
from sweeps.spec import SweepSpec

if TYPE_CHECKING:
    import optuna

__all__ = ["warm_observations"]


def warm_observations(spec: SweepSpec, storage: Any) -> list[Observation]:
    """The warm-start study's trials (empty when the spec names none).

    Raises :class:`~sweeps.study.SweepError` when that study is in neither the storage nor
    the results file, or was run on another model, data or objectives."""
    name = spec.search.warm_start
    if name is None:
        return []
    from sweeps.study import SweepError

    if name == spec.name:
        raise SweepError(
            f"[search] warm_start names this study itself ({name!r})",
            "Name an earlier study; a study resumed under its own name keeps its trials anyway.",
        )
    found = _from_storage(name, storage)
    if found is None:
        found = _from_results(name, spec)
    if found is None:
        raise SweepError(
            f"[search] warm_start = {name!r}: no study of that name in the study storage "
            f"or in the results file {spec.run.results}",
            "Check the name with `paretune sweep status` or `paretune results list`, or remove "
            "warm_start to start from nothing.",
        )
    other_spec, observations, hashes = found
    _check_same_task(spec, name, other_spec, hashes)
    return observations


_Found = tuple[dict[str, Any], list[Observation], dict[str, set[str]]]
"""An earlier study: its spec, its trials as observations, and the sha256 of each data file
its trials read, by role (train, eval, retain; empty where none was recorded)."""


def _from_storage(name: str, storage: Any) -> _Found | None:
    import optuna

    if storage is None:
        return None
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=None)
    except KeyError:
        return None
    usable = _usable(study)
    hashes = _file_hashes((t.user_attrs.get("result") or {}).get("data") for t in usable)
    return study.user_attrs.get("spec") or {}, [_from_trial(t) for t in usable], hashes


def _file_hashes(provenances: Any) -> dict[str, set[str]]:
    """The recorded sha256 of each data file by role, from trials' data provenance."""
    hashes: dict[str, set[str]] = {}
    for provenance in provenances:
        for entry in (provenance or {}).get("files") or ():
            if entry.get("sha256"):
                hashes.setdefault(entry["role"], set()).add(entry["sha256"])
    return hashes


def _usable(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.params and t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    ]


def _from_trial(trial: optuna.trial.FrozenTrial) -> Observation:
    from sweeps.cost_aware import _observation

    return _observation(trial)


def _from_results(name: str, spec: SweepSpec) -> _Found | None:
    from sweeps.results.store import ResultsStore

    store = ResultsStore(spec.run.results)
    if not store.path.exists():
        return None
    columns, found = store.query("SELECT spec, quality_metric FROM studies WHERE study = ?", [name])
    rows = [dict(zip(columns, row, strict=True)) for row in found]
    if not rows:
        return None
    other_spec = json_value(rows[0]["spec"])
    negate = rows[0]["quality_metric"] == "exact_match"  # stored negated, smaller is better
    observations = []
    trials = store.trials(name)
    hashes = _file_hashes(json_value(row.get("data_provenance")) for row in trials)
    for row in trials:
        params = json_value(row.get("params"))
        if not params:
            continue
        values: tuple[float, ...] | None = None
        quality, forgetting, cost = (
            row.get("objective_quality"),
            row.get("objective_forgetting"),
            row.get("objective_cost"),
        )
        if row.get("state") == "complete" and None not in (quality, forgetting, cost):
            values = (-quality if negate else quality, forgetting, cost)
            if not all(math.isfinite(v) for v in values):
                values = None
        dollars = row.get("dollars") if values is not None else None
        observations.append(Observation(params, values, dollars))
    return other_spec, observations, hashes


def _check_same_task(
    spec: SweepSpec, name: str, other: dict[str, Any], hashes: dict[str, set[str]]
) -> None:
    """Refuse a study on another model, data or objectives: its results say nothing here.

    A data file is compared by its bytes where the earlier trials recorded their hash: a copy
    or a moved file is the same data, and a file edited in place since is not. Without a
    recorded hash (results of an older paretune), by its path."""
    from sweeps.datacheck.check import file_sha256
    from sweeps.study import SweepError

    mine = spec.to_raw()
    same_bytes = set()
    for role, recorded in hashes.items():
        here = _at(mine, ("data", role))
        now = file_sha256(here) if isinstance(here, str) else None
        if now is None:
            continue
        if now not in recorded:
            raise SweepError(
                f"[search] warm_start = {name!r}: that study's {role} data had sha256 "
                f"{sorted(recorded)[0][:12]}..., this one's {here} has {now[:12]}...; the data "
                "differ (edited since, or another file), so its results do not carry over",
                "Warm-start only from a study on the same data, or remove warm_start.",
            )
        same_bytes.add(("data", role))
    for path in (
        ("model",),
        ("data", "train"),
        ("data", "eval"),
        ("data", "retain"),
        ("objectives", "quality"),
        ("objectives", "forgetting"),
        ("objectives", "cost"),
    ):
        here, there = _at(mine, path), _at(other, path)
        if path not in same_bytes and not _same(here, there):
            key = ".".join(path)
            raise SweepError(
                f"[search] warm_start = {name!r}: that study ran with {key} = {there!r}, "
                f"this one with {key} = {here!r}; its results do not carry over",
                "Warm-start only from a study on the same model, data and objectives, or "
                "remove warm_start.",
            )


def _same(here: Any, there: Any) -> bool:
    """Equal values, or two spellings of one file or folder (a model folder written as
    ``./ckpt`` and as its absolute path, a data file behind a symlink)."""
    import os

    if here == there:
        return True
    if not isinstance(here, str) or not isinstance(there, str):
        return False
    try:
        return os.path.samefile(os.path.expanduser(here), os.path.expanduser(there))
    except OSError:  # either is not there (or is a hub id): only equal text is the same
        return False


def _at(raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    """A value of a spec's raw form, with the spec's default where it is not written."""
    value: Any = raw
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        defaults = SweepSpec(name="defaults").to_raw()
        value = defaults
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
    return value
