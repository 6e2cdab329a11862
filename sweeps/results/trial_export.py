"""A trial of a results file, written as a ready config for a framework: ``paretune export``.

    from sweeps.results.trial_export import export_trial
    done = export_trial(Path("runs/results.duckdb"), "axolotl", number=3)
    done.path, done.notes

The trial's settings come from its ``config`` column (the whole ``TrialConfig`` it ran);
the data files from the config, else from the files its data check recorded
(``data_provenance``). Beside the config goes the trial's card, ``NAME.card.md``: the
same layout as the model card of a saved adapter (:mod:`sweeps.datacheck.card`), from the
trial's row: its settings and metrics, the data files with their hashes and rows, what the
data check found (counts, never matches), the base model's licence where its card or config
says, the retain source and the measured forgetting. The config's header carries the card's
provenance section too. :func:`pick_trial` chooses the frontier's recommended trial for a
preference, with the report's rule (:func:`sweeps.results.report.recommend`). The writers
themselves are pure (:mod:`planner.frameworks.exports`).

Raises :class:`TrialExportError` (one paragraph, exit 2 on the command line) for an unknown
study or trial, a trial that recorded no config, an output that exists (without
``force``) or cannot be written, and a format the trial's model cannot be written in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.frameworks.exports import SUFFIXES, Export, RunToExport, export_run
from pricing.errors import UserError, did_you_mean
from sweeps.results.schema import json_value

if TYPE_CHECKING:
    from sweeps.datacheck.card import Card

__all__ = [
    "TrialExportError",
    "WrittenExport",
    "card_from_row",
    "card_path",
    "default_export_path",
    "export_trial",
    "pick_trial",
    "run_from_row",
]


class TrialExportError(UserError):
    title = "Cannot export the trial"


@dataclass(frozen=True)
class WrittenExport:
    study: str
    number: int
    framework: str
    path: Path
    notes: tuple[str, ...]
    script: Path | None = None
    card: Path | None = None


# -- reading the trial -----------------------------------------------------------------------


def _store(db: Path) -> Any:
    from sweeps.results.store import ResultsStore

    if not Path(db).exists():
        raise TrialExportError(
            f"there is no results file at {db}", "Run a sweep first, or pass --db with the file."
        )
    return ResultsStore(db, lock_timeout_s=5.0)


def _study(store: Any, db: Path, study: str | None) -> str:
    names = [s["study"] for s in store.studies()]
    if study is None:
        if len(names) == 1:
            return str(names[0])
        if not names:
            raise TrialExportError(f"{db} holds no study", "Run a sweep first, or pass --db.")
        raise TrialExportError(
            f"{db} holds {len(names)} studies ({', '.join(names)})",
            "Say which with --study NAME.",
        )
    if study not in names:
        raise TrialExportError(f"no study {study!r} in {db}", did_you_mean(study, names))
    return study


def _trial_row(store: Any, db: Path, study: str, number: int) -> dict[str, Any]:
    columns, rows = store.query(
        "SELECT * FROM trials WHERE study = ? AND number = ?", [study, number]
    )
    if not rows:
        _, numbers = store.query(
            "SELECT min(number), max(number), count(*) FROM trials WHERE study = ?", [study]
        )
        low, high, count = numbers[0]
        held = f"trials {low} to {high}" if count else "no trials"
        raise TrialExportError(
            f"study {study!r} in {db} has no trial {number} (it holds {held})",
            "Give a trial number the study holds (`paretune sql` lists them).",
        )
    return dict(zip(columns, rows[0], strict=True))


def pick_trial(db: Path, *, study: str | None = None, prefer: str = "balanced") -> tuple[str, int]:
    """The study and number of the frontier trial recommended for ``prefer`` (the report's
    rule: the Pareto-optimal complete trial with the lowest weighted scaled objectives)."""
    from sweeps.results.report import ReportError, parse_preference, recommend

    store = _store(db)
    name = _study(store, db, study)
    try:
        weights = parse_preference(prefer)
    except ReportError as error:
        raise TrialExportError(error.message, error.hint) from None
    pick = recommend(store.trials(name), weights)
    if pick is None:
        raise TrialExportError(
            f"study {name!r} has no complete trial to recommend",
            "Export a trial by its number, or wait until one completes.",
        )
    return name, int(pick.trial["number"])


def _data_file(config: dict[str, Any], provenance: Any, role: str) -> str | None:
    """The ``role`` (train/eval) file as the trial recorded it."""
    if config.get(role):
        return str(config[role])
    files = provenance.get("files") if isinstance(provenance, dict) else None
    for entry in files or []:
        if isinstance(entry, dict) and entry.get("role") == role and entry.get("path"):
            return str(entry["path"])
    return None


def _data_format(train: str | None) -> str:
    """``messages`` when the train file's first row is a conversation, else prompt/completion."""
    if not train or train.startswith("hf:"):
        return "prompt_completion"
    try:
        with Path(train).open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    return (
                        "messages"
                        if isinstance(row, dict) and "messages" in row
                        else ("prompt_completion")
                    )
    except (OSError, ValueError):
        pass
    return "prompt_completion"


def _model_shape(model: str) -> tuple[tuple[tuple[str, str], ...], int | None]:
    """The model's Linear modules (name, group) and decoder layers, when its config is at hand
    (the planner's catalogue or a local folder; never the network)."""
    from planner.errors import ModelConfigError, UnknownModelError
    from planner.estimation.catalog import list_models, resolve_model

    key = model.strip().lower()
    known = any(key in {a.name.lower(), (a.hf_id or "").lower()} for a in list_models())
    if not known and not Path(model).expanduser().exists():
        return (), None
    try:
        arch = resolve_model(model)
    except (UnknownModelError, ModelConfigError):
        return (), None
    modules: dict[str, str] = {}
    for shape in arch.linear_shapes():
        modules.setdefault(shape.name, shape.group)
    return tuple(modules.items()), arch.layers


def card_from_row(row: dict[str, Any]) -> Card:
    """The card of a ``trials`` row: what the adapter's model card says, from the columns."""
    from sweeps.datacheck.card import Card, fmt

    config = json_value(row.get("config")) or {}
    data = json_value(row.get("data_provenance"))

    def value(name: str, digits: int = 4) -> str:
        number = row.get(name)
        return fmt(float(number), digits) if isinstance(number, int | float) else "-"

    source = row.get("retain_source")
    metrics = [
        ("eval NLL (completion tokens)", value("eval_nll"), value("base_eval_nll")),
        ("exact match", value("exact_match", 3), value("base_exact_match", 3)),
        ("overfit gap", value("overfit_gap"), ""),
        (f"retain ΔNLL ({source})", value("retain_delta_nll"), ""),
        (f"retain KL(base ‖ fine-tuned) ({source})", value("retain_kl"), ""),
    ]
    if row.get("self_retain_delta_nll") is not None:
        metrics += [
            ("retain ΔNLL (self-samples)", value("self_retain_delta_nll"), ""),
            ("retain KL (self-samples)", value("self_retain_kl"), ""),
        ]
    metrics.append(("fact recall drop", value("fact_recall_drop", 3), ""))
    method = str(config.get("method") or row.get("method") or "-")
    return Card(
        model=str(config.get("model") or "demo"),
        method=method,
        summary=(
            f"trial {row.get('number')} of study {row.get('study')}: {row.get('state') or '-'}",
            f"method: {method}; rank {config.get('rank')}, alpha {config.get('alpha')}, "
            f"targets {config.get('targets')}, lr {config.get('lr')} "
            f"({config.get('lr_schedule')}), batch {config.get('batch')} x "
            f"{config.get('grad_accum')}, seed {config.get('seed')}",
            f"steps: {row.get('steps_done') or '-'}; tokens: {row.get('tokens') or '-'}; "
            f"wall {value('wall_s', 1)} s (train {value('train_s', 1)} s); peak "
            f"{value('measured_peak_gb', 3)} GB on {row.get('device') or '-'}",
        ),
        metrics=metrics,
        data=data if isinstance(data, dict) else None,
        retain_source=source,
        retain_delta_nll=row.get("retain_delta_nll"),
        retain_kl=row.get("retain_kl"),
        command=row.get("command"),
    )


def run_from_row(row: dict[str, Any], *, source: str = "") -> RunToExport:
    """The run a ``trials`` row recorded (its ``config`` column), as plain values."""
    config = json_value(row.get("config"))
    if not isinstance(config, dict) or not config.get("method"):
        state = row.get("state") or "unknown"
        raise TrialExportError(
            f"trial {row.get('number')} of study {row.get('study')!r} ({state}) recorded no "
            "config to export",
            "Export a trial that started (its config is written when it starts), e.g. a "
            "complete one.",
        )
    train = _data_file(config, json_value(row.get("data_provenance")), "train")
    evaluation = _data_file(config, json_value(row.get("data_provenance")), "eval")
    model = str(config.get("model") or "demo")
    modules, layers = _model_shape(model)
    values = {
        name: config[name]
        for name in (
            "method", "rank", "alpha", "dropout", "use_rslora", "targets",
            "freeze_trainable_layers", "lr", "lr_schedule", "warmup_ratio", "weight_decay",
            "optimizer", "epochs", "max_steps", "batch", "grad_accum", "packing",
            "grad_checkpointing", "loss", "precision", "seed",
        )
        if config.get(name) is not None
    }  # fmt: skip
    if config.get("max_seq_len"):
        values["seq_len"] = config["max_seq_len"]
    from sweeps.datacheck.card import provenance_lines

    card = card_from_row(row)
    provenance = provenance_lines(
        model,
        card.data,
        retain_source=card.retain_source,
        retain_delta_nll=card.retain_delta_nll,
        retain_kl=card.retain_kl,
    )
    return RunToExport(
        model=model,
        provenance=tuple(provenance),
        train=train,
        eval=evaluation,
        data_format=_data_format(train),
        source=source,
        steps=row.get("steps_done") if row.get("state") == "complete" else None,
        layers=layers,
        modules=modules,
        **values,
    )


# -- writing ---------------------------------------------------------------------------------


def default_export_path(db: Path, study: str, number: int, to: str) -> Path:
    """Beside the results file: ``STUDY-trial-N-FRAMEWORK.SUFFIX``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study)
    return Path(db).parent / f"{safe}-trial-{number}-{to}{SUFFIXES[to][0]}"


def card_path(out: Path) -> Path:
    """The card written beside an export: ``NAME.card.md``."""
    return out.with_suffix(".card.md")


def _free_path(path: Path) -> Path:
    """``path``, or ``NAME-2.SUFFIX``, ``NAME-3.SUFFIX`` ... the first that does not exist
    (nor its card, nor a TRL export's script)."""
    candidate, n = path, 1
    while (
        candidate.exists()
        or card_path(candidate).exists()
        or (path.suffix == ".json" and candidate.with_suffix(".py").exists())
    ):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _check_out(out: Path, to: str, *, force: bool) -> Path | None:
    """Refuse an output with the wrong suffix, in a missing folder, or that exists; the
    script path beside a TRL JSON."""
    suffixes = SUFFIXES[to]
    if out.suffix.lower() not in suffixes:
        raise TrialExportError(
            f"--out {out}: a {to} export is a {' or '.join(suffixes)} file",
            f"End the file name with {suffixes[0]}.",
        )
    if not out.parent.is_dir():
        raise TrialExportError(
            f"--out {out}: folder {out.parent} does not exist",
            f"Create it first (mkdir -p {out.parent}) or pick another path.",
        )
    script = out.with_suffix(".py") if to == "trl" else None
    for path in (out, script, card_path(out)):
        if path is not None and path.exists() and not force:
            raise TrialExportError(
                f"{path} already exists",
                "Pick another --out, or pass --force to overwrite it.",
            )
        if path is not None and path.is_dir():
            raise TrialExportError(f"{path} is a folder", "Give --out a file name.")
    return script


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise TrialExportError(
            f"cannot write {path}: {error.strerror or error}",
            "Pick a folder you can write to with --out.",
        ) from None


def export_trial(
    db: Path,
    to: str,
    *,
    number: int | None = None,
    study: str | None = None,
    prefer: str | None = None,
    out: Path | None = None,
    force: bool = False,
    unique: bool = False,
) -> WrittenExport:
    """Write trial ``number`` (or, without one, the frontier's pick for ``prefer``) of
    ``study`` in ``db`` as a ``to`` config to ``out`` (default: beside ``db``).

    ``unique``: instead of refusing an existing default path, write ``NAME-2`` ... (the
    terminal UI's choice). A TRL export also writes its script beside the JSON (``.py``);
    every export writes the trial's card beside it (:func:`card_path`).
    """
    from planner.errors import InvalidSpecError
    from sweeps.datacheck.card import card_lines

    if number is None:
        study, number = pick_trial(db, study=study, prefer=prefer or "balanced")
    store = _store(db)
    study = _study(store, db, study)
    row = _trial_row(store, db, study, number)
    state = row.get("state")
    ended = "" if state in (None, "complete") else f"; it ended {state}"
    run = run_from_row(row, source=f"trial {number} of study {study} ({Path(db).name}{ended})")
    try:
        written: Export = export_run(run, to)
    except InvalidSpecError as error:
        raise TrialExportError(error.message, error.hint) from None
    path = Path(out) if out is not None else default_export_path(db, study, number, to)
    if unique and out is None:
        path = _free_path(path)
    script = _check_out(path, to, force=force)
    _write(path, written.text)
    if script is not None and written.script is not None:
        _write(script, written.script)
    card = card_path(path)
    _write(card, "\n".join(card_lines(card_from_row(row))))
    return WrittenExport(study, number, to, path, written.notes, script, card)
