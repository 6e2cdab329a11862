"""Measured runs for ``paretune calibrate`` from experiment trackers: an MLflow store given
by its URI (a ``file:`` folder or a ``sqlite:`` database), W&B offline run folders, and the
CSV/JSON tables of runs (config and summary) a user downloads from W&B.

A run paretune logged itself (a trial: MLflow tag ``paretune.trial``, W&B config key
``paretune.trial``) carries the planner's memory terms and FLOPs as metrics, and comes back
as exactly the run the results file gives (:func:`sweeps.calibration.trial_run`), so a sweep
calibrated from its tracker fits as from its results file. Any other run is read by its
parameters and metrics under the names of :data:`FIELD_NAMES` and sized by the planner as an
imported row is (:func:`sweeps.calibration.planned_run`).

A run that lacks what a fit needs (a trial that did not complete, a run without a batch
size, ...) is skipped and counted; a source where a needed field is in no run at all, or a
memory figure in a unit calibrate does not know, is a :class:`CalibrationInputError`.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.calibration import (
    GB,
    TRIAL_FIELDS,
    CalibrationInputError,
    planned_run,
    trial_run,
)

if TYPE_CHECKING:
    from planner.calibration import Run

__all__ = [
    "FIELD_NAMES",
    "PEAK_UNITS",
    "Imported",
    "runs_from_mlflow",
    "runs_from_wandb",
    "wandb_records",
]

FIELD_NAMES: Mapping[str, tuple[str, ...]] = {
    "model": ("model", "model_name", "model_name_or_path", "base_model", "model_id"),
    "method": ("method", "finetuning_type", "peft_type", "peft_method"),
    "gpu": ("gpu", "hardware.gpu", "gpu_type", "gpu_name"),
    "batch": (
        "batch",
        "batch_size",
        "micro_batch_size",
        "per_device_train_batch_size",
        "train_batch_size",
    ),
    "seq_len": (
        "seq_len",
        "max_seq_len",
        "max_seq_length",
        "sequence_len",
        "max_length",
        "cutoff_len",
    ),
    "tokens_per_s": (
        "tokens_per_s",
        "tokens_per_second",
        "train_tokens_per_second",
        "throughput_tokens_per_s",
    ),
    "gpus": ("gpus", "num_gpus", "n_gpu", "world_size", "hardware.devices"),
    "framework": ("framework",),
}
"""Each field of an imported run, and the parameter, config or metric names it is read from
(the first one a run has; case does not matter). Peak memory: :data:`PEAK_UNITS`. A run
without a GPU name whose ``device`` (or ``hardware.device``) is ``cpu`` ran on the CPU."""

PEAK_UNITS: Mapping[str, float] = {
    **{name: GB for name in ("peak_gb", "peak_memory_gb", "max_memory_gb", "measured_peak_gb")},
    **{name: 2.0**30 for name in ("peak_gib", "peak_memory_gib", "max_memory_gib")},
    **{name: 1e6 for name in ("peak_mb", "peak_memory_mb", "max_memory_mb")},
    **{name: 2.0**20 for name in ("peak_mib", "peak_memory_mib", "max_memory_mib")},
    **{name: 1.0 for name in ("peak_bytes", "peak_memory_bytes", "max_memory_bytes")},
}
"""Names of a run's measured peak memory per device, and bytes per unit of each."""

_NEEDED = ("model", "method", "batch", "seq_len")


@dataclass
class Imported:
    """The runs read from one source, and the runs skipped with why."""

    runs: list[Run] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    read: int = 0

    def note(self, what: str) -> str:
        text = f"{len(self.runs)} of {self.read} {what}"
        if self.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
            text += f" (skipped: {reasons})"
        return text


# -- one run's fields ----------------------------------------------------------------------


def _fields(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """One run's names and values, names in lower case (a later part does not overwrite)."""
    found: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            if isinstance(value, dict) and set(value) == {"value"}:  # W&B's config format
                value = value["value"]
            found.setdefault(str(name).strip().lower(), value)
    return found


def _first(fields: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = fields.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def _number(value: Any) -> float | None:
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return found if found > 0 and found != float("inf") else None


def _peak_bytes(fields: Mapping[str, Any]) -> float | None:
    for name, unit in PEAK_UNITS.items():
        value = _number(fields.get(name))
        if value is not None:
            return value * unit
    return None


def _is_trial(fields: Mapping[str, Any]) -> bool:
    """A run paretune logged as a trial."""
    return "paretune.trial" in fields


def _trial_of(fields: Mapping[str, Any], source: str, imported: Imported) -> Run | None:
    state = fields.get("paretune.state") or fields.get("state")
    if state != "complete":
        imported.skipped[f"trial not complete ({state})"] += 1
        return None
    record = {name: fields.get(name) for name in TRIAL_FIELDS}
    record.update({name: value for name, value in fields.items() if name.startswith("predicted_")})
    record["device"] = fields.get("hardware.device") or "cpu"
    record["gpu"] = fields.get("hardware.gpu")
    record["devices"] = _number(fields.get("hardware.devices"))
    for name in ("batch", "predicted_seq_len", "predicted_flops", "train_s", "steps_done"):
        record[name] = _number(record.get(name))
    for name in ("measured_peak_gb", "measured_peak_reserved_gb"):
        record[name] = _number(fields.get(name))
    found = trial_run(record, source)
    if found is None:
        imported.skipped["trial without the planner's terms"] += 1
    return found


def _in_order(found: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """paretune's trials first, by study and number as the results file gives them (so a fit
    adds them up in the same order), then other runs by name."""

    def key(item: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
        where, fields = item
        number = _number(fields.get("paretune.trial"))
        if number is None and str(fields.get("paretune.trial")) == "0":
            number = 0.0
        if number is not None:
            return (0, str(fields.get("paretune.study") or ""), number, where)
        return (1, "", 0.0, where)

    return sorted(found, key=key)


def _where(fields: Mapping[str, Any], otherwise: str) -> str:
    study, trial = fields.get("paretune.study"), fields.get("paretune.trial")
    return f"study {study} trial {trial}" if study and trial is not None else otherwise


def _run_of(fields: Mapping[str, Any], source: str, imported: Imported) -> Run | None:
    """A run by its fields: paretune's own trial, else sized by the planner from its shape."""
    if "paretune.role" in fields:
        return None  # a study's parent run: its trials are runs of their own
    imported.read += 1
    if _is_trial(fields):
        return _trial_of(fields, source, imported)
    values = {name: _first(fields, names) for name, names in FIELD_NAMES.items()}
    lacking = [name for name in _NEEDED if values[name] is None]
    gpu = values["gpu"]
    if gpu is None and str(fields.get("device") or fields.get("hardware.device")) == "cpu":
        gpu = "cpu"
    if gpu is None:
        lacking.append("gpu")
    peak, speed = _peak_bytes(fields), _number(values["tokens_per_s"])
    if peak is None and speed is None:
        lacking.append("peak memory or tokens/s")
    batch, seq_len = _number(values["batch"]), _number(values["seq_len"])
    if not lacking and (batch is None or seq_len is None):
        lacking.append("a numeric batch and seq_len")
    if lacking:
        imported.skipped[f"no {' and '.join(lacking)}"] += 1
        return None
    try:
        return planned_run(
            source,
            str(values["model"]).strip(),
            str(values["method"]).strip().lower(),
            str(gpu).strip().lower(),
            int(batch or 1),
            int(seq_len or 1),
            framework=str(values["framework"] or "transformers").strip(),
            gpus=int(_number(values["gpus"]) or 1),
            peak_bytes=peak,
            tokens_per_s=speed,
        )
    except (UserError, ValueError) as error:  # a model, GPU or method the planner does not know
        message = error.message if isinstance(error, UserError) else str(error)
        imported.skipped[f"not sized by the planner ({message.splitlines()[0][:80]})"] += 1
        return None


def _check_fields(where: str, rows: list[dict[str, Any]]) -> None:
    """A field no run has at all, or a peak memory in an unknown unit: the one-paragraph
    error (runs of paretune's own are complete by construction)."""
    plain = [row for row in rows if not _is_trial(row) and "paretune.role" not in row]
    if not plain:
        return
    names = set().union(*plain)
    # Named as a peak memory, in a unit not listed (peak_memory_tb, peak_kb); other names
    # with "peak" in them (train_mem_gpu_peaked_delta, peak_flops) are not memory figures.
    odd = sorted(
        name
        for name in names
        if name not in PEAK_UNITS
        and (name.startswith(("peak_mem", "max_mem")) or re.fullmatch(r"peak_[a-z]?i?b", name))
    )
    missing = [f for f in _NEEDED if not any(name in names for name in FIELD_NAMES[f])]
    if not (set(PEAK_UNITS) & names) and not any(n in names for n in FIELD_NAMES["tokens_per_s"]):
        missing.append("peak memory or tokens/s")
    if not odd and not missing:
        return
    problems = []
    if missing:
        problems.append(f"no run has {', '.join(missing)}")
    if odd:
        problems.append(f"peak memory in a unit calibrate does not know: {', '.join(odd)}")
    accepted = "; ".join(f"{name}: {', '.join(names)}" for name, names in FIELD_NAMES.items())
    raise CalibrationInputError(
        f"{where}: {'; '.join(problems)}",
        f"calibrate reads these names (any case) - {accepted}; peak memory per device: "
        f"{', '.join(PEAK_UNITS)}. Log or rename them so, or export a table with "
        "`--import` columns.",
    )


# -- MLflow --------------------------------------------------------------------------------


def _mlflow_store(uri: str) -> str:
    """The URI of an existing local MLflow store (a path is a ``file:`` folder); anything
    else is the one-paragraph error (MLflow would create an empty store)."""
    from sweeps.results.tracking import file_store_path, is_file_store, sqlite_path

    hint = (
        "Give a local MLflow store: its folder (file:./mlruns or the path) or its database "
        "(sqlite:///mlflow.db), as a sweep's [run] mlflow names it."
    )
    database = sqlite_path(uri)
    if database is not None:
        if not database.is_file():
            raise CalibrationInputError(f"MLflow store {uri}: no database at {database}", hint)
        return uri
    if uri.startswith("sqlite:") or not is_file_store(uri):
        raise CalibrationInputError(f"MLflow store {uri}: not a local file: or sqlite: store", hint)
    folder = file_store_path(uri)
    if not folder.is_dir():
        raise CalibrationInputError(f"MLflow store {uri}: no folder {folder}", hint)
    return uri if uri.startswith("file:") else folder.resolve().as_uri()


def _mlflow_runs(uri: str) -> Iterator[tuple[str, dict[str, Any]]]:
    from sweeps.results.tracking import mlflow_client

    client = mlflow_client(uri)
    for experiment in client.search_experiments(max_results=1000):
        token = None
        while True:
            page = client.search_runs(
                [experiment.experiment_id], max_results=1000, page_token=token
            )
            for run in page:
                tags, params = run.data.tags, run.data.params
                name = run.info.run_name or run.info.run_id
                fields = _fields(run.data.metrics, params, tags)
                yield _where(fields, f"experiment {experiment.name} run {name}"), fields
            token = page.token
            if not token:
                break


def runs_from_mlflow(uri: str) -> Imported:
    """Every run of every experiment of a local MLflow store (a study's parent runs aside)."""
    store = _mlflow_store(uri)
    try:
        import mlflow  # noqa: F401 - the client reads the store
    except ImportError:
        raise CalibrationInputError(
            f"MLflow store {uri}: MLflow is not installed, so its runs cannot be read",
            "Install it with `pip install 'paretune[mlflow]'` (mlflow-skinny).",
        ) from None
    try:
        found = list(_mlflow_runs(store))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds; all mean "unreadable"
        raise CalibrationInputError(
            f"MLflow store {uri} cannot be read: {str(error).strip().splitlines()[0][:300]}",
            "Check that it is an MLflow store written by MLflow 2 or later.",
        ) from None
    if not found:
        raise CalibrationInputError(
            f"MLflow store {uri} has no runs", "Point it at a store that runs were logged to."
        )
    _check_fields(f"MLflow store {uri}", [fields for _, fields in found])
    imported = Imported()
    for where, fields in _in_order(found):
        run = _run_of(fields, f"{uri}: {where}", imported)
        if run is not None:
            imported.runs.append(run)
    return imported


# -- W&B -----------------------------------------------------------------------------------


def wandb_records(path: Path) -> list[Any]:
    """The records of one offline ``.wandb`` file, parsed with W&B's own protobuf schema.

    The file is W&B's datastore: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
    LevelDB log blocks of 32 KiB whose records (7-byte header: CRC, length, type full, first,
    middle or last) carry ``wandb_internal_pb2.Record`` messages. wandb 0.31 ships no Python
    reader for it (its reader lives in the wandb-core binary)."""
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError:
        raise CalibrationInputError(
            f"W&B offline runs ({path.parent}) are read with wandb's own record schema, and "
            "wandb is not installed",
            "Install it with `pip install 'paretune[wandb]'`, or export the runs from W&B as "
            "CSV or JSON.",
        ) from None
    data = path.read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<HB", data[4:7]) != (0xBEE1, 0):
        raise CalibrationInputError(
            f"{path} is not a W&B offline run file", "Give the folder of an offline W&B run."
        )
    block, position, records, pending = 32768, 7, [], b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _offline_run(folder: Path) -> dict[str, Any]:
    """An offline run's config and summary (its last values)."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for path in sorted(folder.glob("*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            items: Any = ()
            target = config
            if kind == "run":
                items = record.run.config.update
                if record.run.run_group:  # paretune's trials are grouped by their study
                    summary.setdefault("paretune.study", record.run.run_group)
            elif kind == "config":
                items = record.config.update
            elif kind == "summary":
                items, target = record.summary.update, summary
            for item in items:
                key = item.key or "/".join(item.nested_key)
                try:
                    target[key] = json.loads(item.value_json)
                except ValueError:
                    continue
    return _fields(summary, config)


def _offline_folders(path: Path) -> list[Path]:
    if any(path.glob("*.wandb")):
        return [path]
    for folder in (path, path / "wandb"):
        runs = sorted(p for p in folder.glob("offline-run-*") if p.is_dir())
        if runs:
            return runs
    return []


def _export_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The runs of a table downloaded from W&B: flat columns (the UI's CSV export), or
    ``config`` and ``summary`` objects per run (``api.runs()`` saved as JSON or CSV)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise CalibrationInputError(
            f"W&B export {path} is empty: there are no runs to calibrate from",
            "Download the runs' table (with config and summary) from W&B again.",
        )
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CalibrationInputError(
                f"W&B export {path} is not valid JSON ({error})",
                "Give a list of runs, each an object with config and summary (or flat keys).",
            ) from None
        rows = data.get("runs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CalibrationInputError(
                f"W&B export {path} is not a list of runs",
                'Give a JSON list of runs (or {"runs": [...]}), each with config and summary.',
            )
    elif path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        raise CalibrationInputError(
            f"W&B export {path}: a {path.suffix or 'suffix-less'} file; calibrate reads W&B "
            "runs from .csv or .json exports and offline run folders",
            "Download the runs table as CSV, or save api.runs() as JSON.",
        )
    out = []
    for index, row in enumerate(rows, start=1):
        nested = [_nested(path, index, row.get(key)) for key in ("summary", "config")]
        flat = {k: v for k, v in row.items() if k not in ("summary", "config")}
        name = row.get("name") or row.get("Name") or row.get("id") or f"row {index}"
        out.append((f"run {name}", _fields(*nested, flat)))
    return out


def _nested(path: Path, index: int, value: Any) -> dict[str, Any]:
    """A ``config`` or ``summary`` cell: an object, or its JSON or Python-literal text."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            found = parse(str(value))
        except (ValueError, SyntaxError):
            continue
        if isinstance(found, dict):
            return found
    raise CalibrationInputError(
        f"W&B export {path} row {index}: its config or summary is not an object",
        "Save each run's config and summary as JSON objects (run.config, run.summary._json_dict).",
    )


def runs_from_wandb(path: Path) -> Imported:
    """W&B runs as files: offline run folders (``wandb/offline-run-*``, a folder holding
    them, or one run's folder), or a CSV/JSON export of runs with config and summary."""
    if path.is_dir():
        folders = _offline_folders(path)
        if not folders:
            raise CalibrationInputError(
                f"W&B runs {path}: no offline run folder (offline-run-*) in it",
                "Give the wandb folder of offline runs, one run's folder, or a CSV/JSON export.",
            )
        found = []
        for folder in folders:
            fields = _offline_run(folder)
            found.append((_where(fields, f"run {folder.name}"), fields))
    elif path.is_file():
        found = _export_rows(path)
    else:
        raise CalibrationInputError(
            f"W&B runs {path}: no such file or folder", "Check the path, or leave the option out."
        )
    if not found:
        raise CalibrationInputError(
            f"W&B runs {path} has no runs", "Export (or point at) runs with config and summary."
        )
    _check_fields(f"W&B runs {path}", [fields for _, fields in found])
    imported = Imported()
    for where, fields in _in_order(found):
        run = _run_of(fields, f"{path.name}: {where}", imported)
        if run is not None:
            imported.runs.append(run)
    return imported
