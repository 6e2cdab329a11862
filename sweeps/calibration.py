"""Measured runs for ``paretune calibrate``: from a results file, from
``benchmarks/gpu_check.py`` output, and from imported CSV/JSON tables.

Each reader returns :class:`planner.calibration.Run` objects (the planner's memory terms
and FLOPs of the run next to what was measured) or raises a :class:`CalibrationInputError`
that says, in one paragraph, what to fix. Peak memory is compared as the planner means it:
on a CPU the resident set above the process's baseline (what a trial records), on a GPU
the caching allocator's reserved bytes plus the CUDA context, where both are known.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError

if TYPE_CHECKING:
    from planner.calibration import Run

__all__ = [
    "IMPORT_COLUMNS",
    "TRIAL_FIELDS",
    "CalibrationInputError",
    "planned_run",
    "runs_from_gpu_check",
    "runs_from_import",
    "runs_from_results",
    "trial_run",
]

GB = 1_000_000_000

IMPORT_COLUMNS = {
    "model": "catalogue name, Hub id or config.json path (required)",
    "method": "full, lora, qlora, dora or freeze (required)",
    "gpu": "catalogue GPU id, or cpu (required)",
    "batch": "micro-batch (required)",
    "seq_len": "tokens per sequence (required)",
    "peak_gb": "measured peak memory per device in GB = 10^9 bytes",
    "tokens_per_s": "measured training tokens per second, all devices together",
    "gpus": "devices the run used (default 1)",
    "framework": "what trained it (default transformers)",
    "source": "a name for the run (default: file and row)",
}
"""The columns an imported table may have; one of peak_gb and tokens_per_s is needed."""

_REQUIRED = ("model", "method", "gpu", "batch", "seq_len")


class CalibrationInputError(UserError):
    """Runs that cannot be read: a missing or empty file, unknown columns or units."""

    title = "Calibration input"


# -- shared: the planner's view of one run -------------------------------------------------


def _peak_flops(gpu: str | None) -> float | None:
    if gpu is None or gpu == "cpu":
        return None
    from pricing import load_catalog

    return load_catalog().gpu(gpu).matmul_tflops * 1e12


def planned_run(
    source: str,
    model: str,
    method: str,
    gpu: str,
    batch: int,
    seq_len: int,
    *,
    framework: str,
    gpus: int,
    peak_bytes: float | None,
    tokens_per_s: float | None,
) -> Run:
    """A run known by its shape: the planner's terms and per-token FLOPs are computed here,
    and an imported throughput becomes the FLOPs and seconds of one token."""
    from planner import MethodSpec, Workload, estimate, resolve_model
    from planner.calibration import Run

    arch = resolve_model(model)
    workload = Workload(seq_len=seq_len, batch=batch)
    device = None if gpu == "cpu" else gpu
    found = estimate(arch, workload, MethodSpec(kind=method, gpus=gpus), gpu=device)  # type: ignore[arg-type]
    per_token = found.flops / max(1, workload.tokens)
    return Run(
        source=source,
        device=found.gpu or "cpu",
        method=method,
        framework=framework,
        model=arch.name,
        seq_len=seq_len,
        batch=batch,
        breakdown=dict(found.breakdown),
        measured_peak_bytes=peak_bytes,
        flops=per_token if tokens_per_s else None,
        seconds=1 / tokens_per_s if tokens_per_s else None,
        peak_flops=_peak_flops(found.gpu),
        devices=gpus,
    )


def _cuda_context() -> float:
    from planner.estimation.memory import constants

    return float(constants()["cuda_context_bytes"])


def _not_empty(path: Path, what: str) -> str:
    if not path.is_file():
        raise CalibrationInputError(
            f"{what} {path}: no such file", "Check the path, or leave the option out."
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise CalibrationInputError(
            f"{what} {path} is empty: there are no runs to calibrate from",
            "Point it at a file with measured runs.",
        )
    return text


# -- the results file --------------------------------------------------------------------

_RESULT_COLUMNS = (
    "study",
    "number",
    "method",
    "device",
    "gpu",
    "devices",
    "batch",
    "predicted_seq_len",
    "predicted_flops",
    "measured_peak_gb",
    "measured_peak_reserved_gb",
    "train_s",
    "steps_done",
)


def runs_from_results(path: Path) -> tuple[list[Run], int]:
    """Every complete trial of every study that recorded the planner's terms; and how many
    complete trials were left out: run before the terms were recorded, or predicted for
    another framework (a sweep's ``framework``) than the trainer that measured them."""
    from sweeps.results.schema import PREDICTED_TERMS
    from sweeps.results.store import ResultsStore

    store = ResultsStore(path)
    names, _ = store.query("SELECT * FROM trials LIMIT 0")
    terms = [f"predicted_{term}_bytes" for term in PREDICTED_TERMS]
    if "predicted_flops" not in names:
        raise CalibrationInputError(
            f"the results file {path} was written before trials recorded the planner's "
            "memory terms and FLOPs, so it has nothing to calibrate from",
            "Run trials with this paretune (a sweep adds the columns to the file on its "
            "first write), or import measured runs with --import.",
        )
    selected = ", ".join([*_RESULT_COLUMNS, *terms])
    _, rows = store.query(
        f"SELECT {selected}, json_extract_string(config, '$.model') AS model, "
        "json_extract_string(config, '$.framework') AS framework FROM trials "
        "WHERE state = 'complete' ORDER BY study, number"
    )
    runs, skipped = [], 0
    for row in rows:
        record = dict(zip([*_RESULT_COLUMNS, *terms, "model", "framework"], row, strict=True))
        found = trial_run(record, f"{path.name}: study {record['study']} trial {record['number']}")
        if found is None:
            skipped += 1
        else:
            runs.append(found)
    return runs, skipped


TRIAL_FIELDS = (*_RESULT_COLUMNS, "model", "framework")
"""What :func:`trial_run` reads of a trial, beside its ``predicted_<term>_bytes``."""


def trial_run(record: Mapping[str, Any], source: str) -> Run | None:
    """A complete trial of paretune's as a run, from its ``trials`` columns (``record``:
    :data:`TRIAL_FIELDS` and the planner's terms, ``model`` the trial's); None when it
    recorded no planner terms, or was predicted for another framework (a sweep's
    ``framework``) than the trainer that measured it. A results file, an MLflow store and W&B runs that paretune
    logged all come through here, so each gives the same fit."""
    from planner.calibration import FRAMEWORK, Run
    from sweeps.results.schema import PREDICTED_TERMS

    if record.get("predicted_flops") is None or record.get("predicted_weights_bytes") is None:
        return None
    if (record.get("framework") or "hf") != "hf":
        # Predicted as another framework runs it, measured on paretune's trainer: the two
        # describe different allocations, so their difference is no correction.
        return None
    on_gpu = (record.get("device") or "cpu") != "cpu"
    device = "cpu" if not on_gpu else (record.get("gpu") or str(record["device"]))
    return Run(
        source=source,
        device=device,
        method=str(record["method"]),
        framework=FRAMEWORK,
        model=str(record.get("model") or "demo"),
        seq_len=int(record.get("predicted_seq_len") or 0),
        batch=int(record.get("batch") or 1),
        breakdown={t: int(record.get(f"predicted_{t}_bytes") or 0) for t in PREDICTED_TERMS},
        measured_peak_bytes=_trial_peak(record, on_gpu),
        flops=float(record["predicted_flops"]),
        seconds=record.get("train_s"),
        peak_flops=_peak_flops(device) if on_gpu and record.get("gpu") else None,
        devices=int(record.get("devices") or 1),
        steps=int(record["steps_done"]) if record.get("steps_done") else None,
    )


def _trial_peak(record: Mapping[str, Any], on_gpu: bool) -> float | None:
    if not on_gpu:
        peak = record.get("measured_peak_gb")
        return None if peak is None else peak * GB
    reserved = record.get("measured_peak_reserved_gb") or record.get("measured_peak_gb")
    return None if reserved is None else reserved * GB + _cuda_context()


# -- gpu_check output --------------------------------------------------------------------


def _argv_value(header: Mapping[str, Any], option: str) -> str | None:
    """The value of ``option`` on the command line gpu_check recorded (None if absent)."""
    argv = header.get("argv") or []
    if isinstance(argv, str):
        argv = shlex.split(argv)
    found = None
    for i, word in enumerate(argv):
        name, _, value = str(word).partition("=")
        if name == option:
            found = value or (str(argv[i + 1]) if i + 1 < len(argv) else None)
    return found


def _run_settings(header: Mapping[str, Any]) -> tuple[int, int]:
    """(seq_len, batch) of a gpu_check run (its defaults where its command line has none)."""
    seq_len = _argv_value(header, "--seq-len") or "1024"
    batch = _argv_value(header, "--batch") or "4"
    return int(seq_len), int(batch)


def _row_model(header: Mapping[str, Any], name: str) -> str:
    """What to resolve a row's model by: the --models entry it came from (a config path
    is recorded by its architecture's name), else the name itself."""
    from planner import resolve_model

    for given in (_argv_value(header, "--models") or "").split(","):
        if given and given != name:
            try:
                if resolve_model(given).name == name:
                    return given
            except UserError:
                continue
    return name


def runs_from_gpu_check(path: Path) -> list[Run]:
    """The measured rows of a ``benchmarks/gpu_check.py --out`` file (JSON lines: one
    ``run`` line, then its ``row`` lines; several runs may be appended to one file)."""
    text = _not_empty(path, "gpu_check output")
    runs: list[Run] = []
    header: dict[str, Any] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CalibrationInputError(
                f"{path} line {number} is not JSON: gpu_check writes one JSON object per line",
                "Pass the file benchmarks/gpu_check.py wrote with --out.",
            ) from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "run":
            header = record
        elif kind == "row":
            if header is None:
                raise CalibrationInputError(
                    f"{path} line {number}: a row before any 'run' line",
                    "Pass the whole file benchmarks/gpu_check.py wrote with --out.",
                )
            found = _gpu_check_run(path, number, header, record)
            if found is not None:
                runs.append(found)
        else:
            raise CalibrationInputError(
                f"{path} line {number}: kind {kind!r}; gpu_check output has 'run' and 'row' lines",
                "Pass the file benchmarks/gpu_check.py wrote with --out.",
            )
    return runs


def _gpu_check_run(
    path: Path, number: int, header: Mapping[str, Any], row: Mapping[str, Any]
) -> Run | None:
    reserved, tokens_per_s = row.get("reserved_bytes"), row.get("tokens_per_s")
    if reserved is None and tokens_per_s is None:
        return None  # a dry run, or a row that failed to measure
    # Without a CUDA device name the row was measured on the CPU (--device cpu): a CPU run.
    device = str(header["gpu"]) if header.get("device") else "cpu"
    seq_len, batch = _run_settings(header)
    return planned_run(
        f"{path.name} line {number}",
        _row_model(header, str(row["model"])),
        str(row["method"]),
        device,
        batch,
        seq_len,
        framework="transformers",
        gpus=1,
        peak_bytes=None if reserved is None else float(reserved) + _cuda_context(),
        tokens_per_s=tokens_per_s,
    )


# -- imported tables ---------------------------------------------------------------------


def _import_rows(path: Path) -> list[dict[str, Any]]:
    text = _not_empty(path, "imported runs")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CalibrationInputError(
                f"{path} is not valid JSON ({error})",
                "Give a list of objects, one per run, with the columns of the calibrate guide.",
            ) from None
        rows = data.get("runs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CalibrationInputError(
                f"{path} is not a list of runs",
                'Give a JSON list of objects (or {"runs": [...]}), one per run.',
            )
        return rows
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    raise CalibrationInputError(
        f"imported runs {path}: a {path.suffix or 'suffix-less'} file; calibrate imports .csv "
        "and .json tables",
        "Export the runs as CSV or JSON with the columns of the calibrate guide.",
    )


def _check_columns(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for row in rows:
        seen |= set(row)
    unknown = sorted(seen - set(IMPORT_COLUMNS))
    missing = [name for name in _REQUIRED if name not in seen]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        raise CalibrationInputError(
            f"imported runs {path}: {'; '.join(problems)}",
            "The columns are: "
            + "; ".join(f"{name}: {meaning}" for name, meaning in IMPORT_COLUMNS.items())
            + ". Units are in the names (peak_gb in GB = 10^9 bytes); convert other units.",
        )


def _number(path: Path, index: int, row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        found = float(value)
    except (TypeError, ValueError):
        raise CalibrationInputError(
            f"imported runs {path} row {index}: {name} {value!r} is not a plain number",
            f"Write {name} as a number without a unit ({IMPORT_COLUMNS[name]}).",
        ) from None
    if not math.isfinite(found) or found <= 0:
        raise CalibrationInputError(
            f"imported runs {path} row {index}: {name} {value!r} is not a positive number",
            f"Give {name} as a positive number ({IMPORT_COLUMNS[name]}).",
        )
    return found


def runs_from_import(path: Path) -> list[Run]:
    """Runs measured elsewhere: a CSV or JSON table with :data:`IMPORT_COLUMNS`."""
    rows = _import_rows(path)
    if not rows:
        raise CalibrationInputError(
            f"imported runs {path} has a header but no runs", "Add one row per measured run."
        )
    _check_columns(path, rows)
    runs = []
    for index, row in enumerate(rows, start=1):
        numbers = {
            name: _number(path, index, row, name)
            for name in ("batch", "seq_len", "peak_gb", "tokens_per_s", "gpus")
        }
        if numbers["batch"] is None or numbers["seq_len"] is None:
            raise CalibrationInputError(
                f"imported runs {path} row {index}: batch and seq_len are required",
                "Give each run's micro-batch and sequence length.",
            )
        if numbers["peak_gb"] is None and numbers["tokens_per_s"] is None:
            raise CalibrationInputError(
                f"imported runs {path} row {index}: neither peak_gb nor tokens_per_s",
                "Give the measured peak memory (GB), the tokens per second, or both.",
            )
        peak = numbers["peak_gb"]
        gpu = str(row["gpu"]).strip().lower()
        try:
            runs.append(
                planned_run(
                    str(row.get("source") or f"{path.name} row {index}"),
                    str(row["model"]).strip(),
                    str(row["method"]).strip().lower(),
                    gpu,
                    int(numbers["batch"]),
                    int(numbers["seq_len"]),
                    framework=str(row.get("framework") or "transformers").strip(),
                    gpus=int(numbers["gpus"] or 1),
                    peak_bytes=None if peak is None else peak * GB,
                    tokens_per_s=numbers["tokens_per_s"],
                )
            )
        except UserError as error:
            raise CalibrationInputError(
                f"imported runs {path} row {index}: {error.message}", error.hint
            ) from None
        except ValueError as error:  # an unknown method kind
            raise CalibrationInputError(
                f"imported runs {path} row {index}: {error}",
                "method is one of full, lora, qlora, dora, freeze.",
            ) from None
    return runs
