"""Trials as MLflow runs and offline W&B runs: where teams already look at experiments.

A sweep with ``[run] mlflow = "URI"`` (or ``[run] wandb = "offline"``) logs each finished trial
from a thread of its own (:class:`TrialLogger`); ``paretune results export --to mlflow URI``
logs a study already in a results file (:func:`export_study`). Both log the same thing, built
from the trial's row of the results file (:func:`trial_content`), so a live sweep and a later
export give the same runs:

- **parameters**: the trial's settings (method, rank, lr, batch, ...), the model and any other
  parameter Optuna sampled;
- **metrics**: the three objectives (``objective_quality``, ``objective_forgetting``,
  ``objective_cost``, each as minimised) and every other number of the row (eval NLL, retain
  scores, measured and predicted memory, time, tokens, dollars, ...);
- **the step curve**: ``step/loss``, ``step/lr``, ``step/eval_nll``, ... at each logged step;
- **hardware**: tags ``hardware.device``, ``hardware.gpu``, ``hardware.provider``, ... and the
  package versions (``version.torch``, ...);
- **the whole row** as the artifact ``trial.json``; the adapter as the artifact folder
  ``adapter`` when the trial kept one (adapter methods only: a full model is not copied);
- MLflow: one parent run per study (tag ``paretune.role = study``; its parameters the study's
  settings, the spec as ``spec.json``) and one child run per trial (tags ``paretune.study``,
  ``paretune.trial``). W&B: one run per trial, grouped by study.

A trial is logged once: runs are found by their study and trial number (MLflow tags, the W&B
run id), so exporting twice, or exporting after a sweep logged, adds only what is missing.
MLflow and W&B are optional extras (``pip install 'paretune[mlflow]'``, ``'paretune[wandb]'``);
without them a clear :class:`TrackingError`, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from pricing.errors import UserError
from sweeps.results.schema import STUDIES, TRIAL_PARAMETERS, TRIALS

__all__ = [
    "ADAPTER_METHODS",
    "MlflowTarget",
    "Target",
    "TrackingError",
    "TrialContent",
    "TrialLogger",
    "WandbOfflineTarget",
    "export_study",
    "file_store_path",
    "is_file_store",
    "is_final",
    "mlflow_client",
    "mlflow_problem",
    "sqlite_path",
    "trial_content",
    "wandb_problem",
]

ADAPTER_METHODS = ("lora", "qlora", "dora")
"""Methods whose kept artifact is an adapter (logged as an artifact; a full model is not)."""

PARAM_COLUMNS = (*TRIAL_PARAMETERS, "repeats")
"""``trials`` columns logged as the run's parameters (what the trial was asked to do)."""

TAG_COLUMNS = {
    "state": "paretune.state",
    "error": "paretune.error",
    "retry_of": "paretune.retry_of",
    "command": "paretune.command",
    "artifact": "paretune.artifact",
    "data_fingerprint": "paretune.data_fingerprint",
    "retain_source": "paretune.retain_source",
    "worker_host": "paretune.worker_host",
    "cuda_visible_devices": "paretune.cuda_visible_devices",
    "device": "hardware.device",
    "device_name": "hardware.device_name",
    "devices": "hardware.devices",
    "gpu": "hardware.gpu",
    "provider": "hardware.provider",
    "cpu_instance": "hardware.cpu_instance",
    "usd_per_hour": "hardware.usd_per_hour",
    "started_at": "paretune.started_at",
    "finished_at": "paretune.finished_at",
}
"""``trials`` columns logged as tags (``usd_per_hour`` is a metric too), by tag name."""

NOT_METRICS = {"number", "worker_pid", *PARAM_COLUMNS, *TAG_COLUMNS}
"""Numeric columns that are not metrics (identifiers, settings, hardware)."""

STEP_METRICS = ("loss", "lr", "epoch", "tokens_per_s", "peak_gb", "eval_nll")
"""``steps`` columns logged as the step curve, each as ``step/<name>``."""

STUDY_PARAMS = (
    "model",
    "sampler",
    "quality_metric",
    "forgetting_metric",
    "cost_metric",
    "gpu",
    "provider",
    "budget_dollars",
    "budget_hours",
    "budget_trials",
    "storage",
)
"""``studies`` columns logged as the parameters of the study's parent run."""

_ADAPTER_GONE = "deleted by the artifact policy before it was logged"
_NUMERIC = ("DOUBLE", "INTEGER", "BIGINT")
_FINAL_STATES_EXCLUDED = ("running", "waiting")
_TAG_LIMIT = 5000  # MLflow's tag value limit in its oldest supported stores
_PARAM_LIMIT = 500  # MLflow's parameter value limit before 2.x stores raised it
_LOG = logging.getLogger(__name__)


class TrackingError(UserError):
    """MLflow or W&B is not installed, or cannot be written."""

    title = "Experiment tracking"


# ---------------------------------------------------------------- what a trial logs


@dataclass
class TrialContent:
    """What one trial logs, the same for MLflow and W&B (see the module's docstring)."""

    study: str
    number: int
    state: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    curve: list[tuple[int, dict[str, float]]]
    record: dict[str, Any]
    adapter: Path | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def name(self) -> str:
        return f"trial-{self.number}"

    @property
    def ok(self) -> bool:
        return self.state in ("complete", "artifact_lost")


def is_final(row: dict[str, Any]) -> bool:
    """Whether a ``trials`` row is of a trial that ended (only those are logged)."""
    return row.get("state") not in _FINAL_STATES_EXCLUDED


def trial_content(
    row: dict[str, Any],
    steps: Sequence[dict[str, Any]] = (),
    *,
    study: dict[str, Any] | None = None,
    base: Path | None = None,
) -> TrialContent:
    """What trial ``row`` (a ``trials`` row, as written or as read back) logs, with its
    ``steps`` rows and its ``study``'s row (for the model). A relative artifact path is
    looked up under ``base`` (default: the current folder)."""
    record = {name: _plain(name, row.get(name)) for name in TRIALS.names}
    params: dict[str, str] = {}
    if study and study.get("model") is not None:
        params["model"] = str(study["model"])
    for name in PARAM_COLUMNS:
        if record.get(name) is not None:
            params[name] = _text(record[name], _PARAM_LIMIT)
    for name, value in (record.get("params") or {}).items():
        if name not in params and value is not None:  # e.g. lr_lora: an lr per method
            params[_key(name)] = _text(value, _PARAM_LIMIT)
    metrics = {
        column.name: float(value)
        for column in TRIALS.columns
        if column.type in _NUMERIC and column.name not in NOT_METRICS
        for value in [record.get(column.name)]
        if _finite(value)
    }
    if _finite(record.get("usd_per_hour")):
        metrics["usd_per_hour"] = float(record["usd_per_hour"])
    tags = {
        tag: _text(record[name], _TAG_LIMIT)
        for name, tag in TAG_COLUMNS.items()
        if record.get(name) is not None
    }
    for package, version in (record.get("versions") or {}).items():
        if version is not None:
            tags[f"version.{_key(str(package))}"] = _text(version, _TAG_LIMIT)
    curve = []
    for step in sorted(steps, key=lambda s: s["step"]):
        values = {
            f"step/{name}": float(step[name]) for name in STEP_METRICS if _finite(step.get(name))
        }
        if values:
            curve.append((int(step["step"]), values))
    return TrialContent(
        study=str(row["study"]),
        number=int(row["number"]),
        state=str(row.get("state") or "unknown"),
        params=params,
        metrics=metrics,
        tags=tags,
        curve=curve,
        record=record,
        adapter=_adapter(record, base),
        start_ms=_ms(row.get("started_at")),
        end_ms=_ms(row.get("finished_at")),
    )


def _plain(name: str, value: Any) -> Any:
    """A row's value as JSON-ready data (JSON columns read back from DuckDB are text)."""
    if isinstance(value, str) and name in _JSON_COLUMNS:
        with contextlib.suppress(ValueError):
            return json.loads(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


_JSON_COLUMNS = {column.name for column in TRIALS.columns if column.type == "JSON"}


def _adapter(record: dict[str, Any], base: Path | None) -> Path | None:
    artifact = record.get("artifact")
    if not artifact or record.get("method") not in ADAPTER_METHODS:
        return None
    path = Path(artifact)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path if path.is_dir() else None


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key(name: str) -> str:
    """A name MLflow accepts as a key (letters, digits, ``_ - . / space``)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _ms(value: Any) -> int | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else None


def study_params(study: dict[str, Any]) -> dict[str, str]:
    """The parameters of a study's parent run, from its ``studies`` row."""
    return {
        name: _text(study[name], _PARAM_LIMIT)
        for name in STUDY_PARAMS
        if study.get(name) is not None
    }


def _study_spec(study: dict[str, Any]) -> dict[str, Any] | None:
    spec = study.get("spec")
    if isinstance(spec, str):
        with contextlib.suppress(ValueError):
            spec = json.loads(spec)
    return spec if isinstance(spec, dict) else None


# ---------------------------------------------------------------- the optional extras

_EXTRAS = {
    "mlflow": ("mlflow", "MLflow", "mlflow"),
    "wandb": ("wandb", "Weights & Biases", "wandb"),
}


def _import_extra(kind: str) -> Any:
    """Import MLflow or W&B, or raise a one-paragraph :class:`TrackingError` saying how to
    install it."""
    module, name, extra = _EXTRAS[kind]
    try:
        if kind == "mlflow":
            from mlflow.tracking import MlflowClient  # noqa: F401 - the client is what is used

            _quiet_mlflow()
        return __import__(module)
    except ImportError as error:
        raise TrackingError(
            f"{name} is not installed, so trials cannot be logged to it ({error}).",
            f"Install it with `pip install 'paretune[{extra}]'` (or `pip install {module}`), "
            f"or leave {name} out of the spec's [run] section.",
        ) from None


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (a new database's migrations) are not paretune's output."""
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
            logger.setLevel(logging.WARNING)


def is_file_store(uri: str) -> bool:
    """Whether ``uri`` names an MLflow file store (``file:`` or a plain path)."""
    return uri.startswith("file:") or "://" not in uri and not uri.startswith("databricks")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None: another kind, or in memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def file_store_path(uri: str) -> Path:
    """The folder of an MLflow file store URI."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return Path(uri[len("file:") :] if uri.startswith("file:") else uri)


@contextlib.contextmanager
def _no_retries() -> Iterator[None]:
    """A tracking server that does not answer fails in seconds, not after MLflow's minutes
    of retries."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: value for name, value in names.items() if saved[name] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def mlflow_problem(uri: str, *, unwritable: Callable[[Path, bool], str | None]) -> str | None:
    """Why trials cannot be logged to MLflow at ``uri``; None when they can. Nothing is
    created: a local store's folder must be writable, an existing database must open, a
    tracking server must answer. ``unwritable(path, folder)`` says why a path is not writable.
    Raises :class:`TrackingError` when MLflow is not installed."""
    _import_extra("mlflow")
    database = sqlite_path(uri)
    if database is not None:
        problem = unwritable(database, False)
        if problem or not database.is_file():
            return problem
    elif uri.startswith("sqlite:"):
        return None  # in memory: nothing to check
    elif is_file_store(uri):
        return unwritable(file_store_path(uri), True)
    try:
        with _no_retries():
            mlflow_client(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot log there"
        return _first_line(error)
    return None


def wandb_problem(folder: Path, *, unwritable: Callable[[Path, bool], str | None]) -> str | None:
    """Why offline W&B runs cannot be written in ``folder``; None when they can. Raises
    :class:`TrackingError` when wandb is not installed."""
    _import_extra("wandb")
    return unwritable(folder, True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:299].rstrip(". ") + "…"


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` of ``uri`` (the extra checked; a file store allowed)."""
    _import_extra("mlflow")
    if is_file_store(uri):
        # MLflow 3 keeps its file store in maintenance mode behind this switch; a spec that
        # names a file: store asks for one.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    # A tracking server's client prints two links per finished run to stdout: in a sweep,
    # through the progress display. paretune says where the runs went once.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# ---------------------------------------------------------------- targets


class Target(Protocol):
    """Where trials are logged: MLflow or offline W&B."""

    label: str
    """How messages name it (``MLflow sqlite:///mlflow.db``)."""

    def open_study(self, study: dict[str, Any]) -> None: ...

    def has(self, number: int) -> bool: ...

    def log(self, content: TrialContent) -> None: ...

    def close(self) -> None: ...


@dataclass
class MlflowTarget:
    """An MLflow tracking store: one experiment (default: the study's name), one parent run
    per study, one child run per trial."""

    uri: str
    experiment: str | None = None
    label: str = ""
    client: Any = None
    experiment_id: str | None = None
    parent_id: str | None = None
    logged: set[int] = field(default_factory=set)
    study: str | None = None

    def __post_init__(self) -> None:
        self.label = self.label or f"MLflow {self.uri}"
        self.client = mlflow_client(self.uri)

    def open_study(self, study: dict[str, Any]) -> None:
        """Find or create the experiment and the study's parent run; note the trials logged."""
        name = str(study["study"])
        self.study = name
        self.experiment_id = self._experiment(self.experiment or name)
        self.parent_id = self._parent(study)
        self.logged = self._logged_trials(name)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"the MLflow experiment {name!r} at {self.uri} is deleted.",
                    "Restore it (`mlflow experiments restore`) or set [run] mlflow_experiment "
                    "(or --experiment) to another name.",
                )
            return str(found.experiment_id)
        database = sqlite_path(self.uri)
        location = None
        if database is not None:  # beside the database, not in whatever folder runs the sweep
            folder = database.resolve().parent / "mlartifacts" / _key(name).replace("/", "_")
            location = folder.as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    def _search(self, where: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=where, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _parent(self, study: dict[str, Any]) -> str:
        from mlflow.entities import Param

        name = str(study["study"])
        found = self._search(
            f"tags.`paretune.study` = {_quote(name)} AND tags.`paretune.role` = 'study'"
        )
        if found:
            run_id = str(found[0].info.run_id)
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            start_time=_ms(study.get("created_at")),
            run_name=name,
            tags={"paretune.study": name, "paretune.role": "study"},
        )
        run_id = str(run.info.run_id)
        params = [Param(key, value) for key, value in study_params(study).items()]
        self.client.log_batch(run_id, params=params)
        spec = _study_spec(study)
        if spec is not None:
            self.client.log_dict(run_id, spec, "spec.json")
        return run_id

    def _logged_trials(self, study: str) -> set[int]:
        runs = self._search(f"tags.`paretune.study` = {_quote(study)}")
        numbers = set()
        for run in runs:
            number = run.data.tags.get("paretune.trial")
            if number is not None and number.isdigit():
                numbers.add(int(number))
        return numbers

    def has(self, number: int) -> bool:
        return number in self.logged

    def log(self, content: TrialContent) -> None:
        """One child run for the trial. Its ``paretune.trial`` tag is set last, so a run left
        half-logged by a failure is not taken for a logged trial (it is deleted if it can be)."""
        from mlflow.entities import Metric, Param, RunStatus, RunTag

        now = int(time.time() * 1000)
        started = content.start_ms or content.end_ms or now
        run = self.client.create_run(
            self.experiment_id,
            start_time=started,
            run_name=content.name,
            tags={
                "mlflow.parentRunId": self.parent_id,
                "paretune.study": content.study,
                **content.tags,
            },
        )
        run_id = run.info.run_id
        try:
            ended = content.end_ms or now
            metrics = [Metric(k, v, ended, 0) for k, v in content.metrics.items()]
            for step, values in content.curve:
                metrics += [Metric(k, v, started, step) for k, v in values.items()]
            params = [Param(k, v) for k, v in content.params.items()]
            for start in range(0, len(params), 100):  # MLflow's limits per batch
                self.client.log_batch(run_id, params=params[start : start + 100])
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
            self.client.log_dict(run_id, content.record, "trial.json")
            if content.adapter is not None:
                try:
                    if not content.adapter.is_dir():  # MLflow would log an empty folder
                        raise FileNotFoundError(content.adapter)
                    self.client.log_artifacts(run_id, str(content.adapter), "adapter")
                except OSError:
                    if content.adapter.is_dir():
                        raise
                    # a later trial took it off the frontier (and deleted it) meanwhile
                    self.client.set_tag(run_id, "paretune.adapter", _ADAPTER_GONE)
            status = (
                RunStatus.FINISHED
                if content.ok
                else RunStatus.KILLED
                if content.state == "interrupted"
                else RunStatus.FAILED
            )
            self.client.set_terminated(run_id, RunStatus.to_string(status), end_time=ended)
            self.client.log_batch(run_id, tags=[RunTag("paretune.trial", str(content.number))])
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_run(run_id)
            raise
        self.logged.add(content.number)

    def close(self) -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, "FINISHED")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class WandbOfflineTarget:
    """Offline W&B runs in ``folder`` (``folder/wandb/offline-run-*``): one per trial, in
    project and group the study's name, with a fixed run id (``<study>-<number>``), so
    ``wandb sync`` uploads each trial once."""

    folder: Path
    label: str = ""
    study: str | None = None
    model: str | None = None
    logged: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.label = self.label or f"W&B offline runs in {self.folder}"
        _import_extra("wandb")

    def open_study(self, study: dict[str, Any]) -> None:
        self.study = str(study["study"])
        self.logged = set()
        prefix = wandb_run_id(self.study, 0)[:-1]
        for run in (self.folder / "wandb").glob("offline-run-*"):
            parts = run.name.split("-", 3)  # offline, run, <date>_<time>, <run id>
            number = parts[3][len(prefix) :] if len(parts) == 4 else ""
            logged = parts[3:] and parts[3].startswith(prefix) and number.isdigit()
            if logged and any(run.glob("*.wandb")):
                self.logged.add(int(number))

    def has(self, number: int) -> bool:
        return number in self.logged

    def log(self, content: TrialContent) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        config = {**content.params, **content.tags, "paretune.trial": content.number}
        run = wandb.init(
            mode="offline",
            dir=str(self.folder),
            project=_wandb_name(content.study),
            group=content.study,
            job_type="trial",
            name=content.name,
            id=wandb_run_id(content.study, content.number),
            config=config,
            tags=[content.state],
            reinit="create_new",
            settings=wandb.Settings(
                silent=True, console="off", save_code=False, x_disable_stats=True
            ),
        )
        try:
            for step, values in content.curve:
                run.log(values, step=step)
            run.summary.update({**content.metrics, "state": content.state})
            record = Path(run.dir) / "trial.json"
            record.write_text(json.dumps(content.record, indent=1, default=str), encoding="utf-8")
            run.save(str(record), base_path=run.dir, policy="now")
            if content.adapter is not None:
                artifact = wandb.Artifact(
                    f"{wandb_run_id(content.study, content.number)}-adapter", type="model"
                )
                try:
                    if not content.adapter.is_dir():
                        raise FileNotFoundError(content.adapter)
                    artifact.add_dir(str(content.adapter))
                except OSError:
                    if content.adapter.is_dir():
                        raise
                    run.summary["adapter"] = _ADAPTER_GONE  # taken off the frontier meanwhile
                else:
                    run.log_artifact(artifact)
        finally:
            run.finish(exit_code=0 if content.ok else 1)
        self.logged.add(content.number)

    def close(self) -> None:
        pass


def _wandb_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", name)[:128]


def wandb_run_id(study: str, number: int) -> str:
    """The fixed W&B run id of a trial: ``<study>-<number>`` (characters W&B allows)."""
    return f"{_wandb_name(study)[:100]}-{number}"


# ---------------------------------------------------------------- export, and the sweep's logger


@dataclass
class Exported:
    """What :func:`export_study` did, per target label."""

    logged: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def export_study(
    store: Any,
    study: str,
    targets: Sequence[Target],
    *,
    base: Path | None = None,
) -> Exported:
    """Log every ended trial of ``study`` in the results ``store`` (a
    :class:`~sweeps.results.store.ResultsStore`) to each target, skipping trials a target
    already has. A relative artifact path is looked up under ``base`` (default: the current
    folder)."""
    rows = [row for row in store.trials(study) if is_final(row)]
    study_row = next((s for s in _study_rows(store, study)), {"study": study})
    done = Exported()
    for target in targets:
        logged: list[int] = []
        try:
            with _no_retries():  # a server that does not answer: said in seconds
                target.open_study(study_row)
            for row in rows:
                if target.has(int(row["number"])):
                    continue
                steps = store.steps(study, int(row["number"]))
                target.log(trial_content(row, steps, study=study_row, base=base))
                logged.append(int(row["number"]))
            target.close()
        except UserError:
            raise
        except Exception as error:
            raise TrackingError(
                f"study {study} could not be logged to {target.label}: {_first_line(error)}. "
                + (
                    f"Trial(s) {logged} were logged before it stopped."
                    if logged
                    else "Nothing was logged."
                ),
                "Check the address and that the store can be written, then rerun: trials "
                "already logged are skipped.",
            ) from None
        done.logged[target.label] = logged
        done.skipped[target.label] = len(rows) - len(logged)
    return done


def _study_rows(store: Any, study: str) -> list[dict[str, Any]]:
    names = ", ".join(STUDIES.names)
    columns, rows = store.query(f"SELECT {names} FROM studies WHERE study = ?", [study])
    return [dict(zip(columns, row, strict=False)) for row in rows]


class TrialLogger:
    """Logs a sweep's finished trials to its targets from a thread of its own, so a slow or
    unreachable tracking server never holds up a trial. A target that fails is warned about
    once (``on_event``) and left alone for the rest of the sweep: the trials stay in the
    study and the results file, and ``paretune results export`` logs them later."""

    def __init__(
        self,
        targets: Sequence[tuple[str, Callable[[], Target]]],
        study: dict[str, Any],
        *,
        on_event: Callable[[str], None],
        export_hint: Callable[[str], str],
    ) -> None:
        self._factories = list(targets)
        self._study = study
        self._warn = on_event
        self._hint = export_hint
        self._queue: queue.Queue[tuple[dict[str, Any], list[dict[str, Any]]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failed: dict[str, str] = {}
        """Targets that stopped, and why."""
        self.logged: dict[str, list[int]] = {}

    def put(self, row: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        """Queue one ended trial's row and steps (rows of trials still running are ignored)."""
        if not is_final(row):
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="trial-logger", daemon=True)
                self._thread.start()
        self._queue.put((row, steps))

    def close(self, timeout_s: float = 600.0) -> None:
        """Log what is queued (waiting up to ``timeout_s``), then close the targets."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout_s)
        if thread.is_alive():
            self._warn(
                f"experiment tracking: still logging after {timeout_s:.0f} s; the trials not yet "
                "logged stay in the results file. " + self._hint("")
            )
            return
        with self._lock:
            self._thread = None  # a later trial (the sweep run again) starts a new one
        for label, numbers in self.logged.items():
            if label not in self.failed:
                count = len(numbers)
                self._warn(f"{count} trial{'s' if count != 1 else ''} logged to {label}")
        self.logged = {}

    def _loop(self) -> None:
        # A tracking server that stops answering fails a log in about a minute, not after
        # MLflow's default retries (several minutes that the end of the sweep would wait for).
        # Settings of the user's own win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        targets: list[Target] = []
        for name, factory in self._factories:
            try:
                target = factory()
                target.open_study(self._study)
            except Exception as error:  # noqa: BLE001 - never lose a trial over it
                self._fail(name, error)
                continue
            targets.append(target)
        while True:
            item = self._queue.get()
            if item is None:
                break
            row, steps = item
            for target in list(targets):
                if target.has(int(row["number"])):
                    continue
                try:
                    target.log(trial_content(row, steps, study=self._study))
                except Exception as error:  # noqa: BLE001 - never lose a trial over it
                    self._fail(target.label, error)
                    targets.remove(target)
                    continue
                self.logged.setdefault(target.label, []).append(int(row["number"]))
        for target in targets:
            try:
                target.close()
            except Exception as error:  # noqa: BLE001
                self._fail(target.label, error)

    def _fail(self, label: str, error: BaseException) -> None:
        reason = error.message if isinstance(error, UserError) else _first_line(error)
        self.failed[label] = reason
        _LOG.debug("logging to %s failed", label, exc_info=error)
        self._warn(
            f"{label}: logging stopped ({reason}). The sweep goes on and every trial stays in "
            f"the study and the results file; {self._hint(label)}"
        )
