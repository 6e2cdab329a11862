"""The DuckDB results store: every study, trial and logged step, typed, for SQL.

Optuna's storage (journal file or PostgreSQL) is the source of truth for the search; this
file is the copy people query. Each finished trial is written here by the worker that ran
it, and ``paretune results sync`` rebuilds any study from its Optuna storage, so a lost or
locked results file never loses a result.

Schema (documented for users in the README, generated from :data:`TRIAL_COLUMNS`):

- ``studies``: one row per study (name, storage, sampler, objectives, budget, spec).
- ``trials``: one row per Optuna trial, ``(study, number)`` unique; typed columns for every
  hyperparameter, objective, predicted and measured figure, hardware, package versions,
  state, error, timestamps, artifact path and the ``paretune trial ...`` command.
- ``steps``: one row per logged optimizer step of a trial.
- view ``frontier``: the Pareto-optimal completed trials of each study (all three
  objectives, as ``objective_*`` columns where smaller is better).
- view ``calibration``: predicted vs measured peak memory, hours and dollars.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.results.readonly import open_connection

if TYPE_CHECKING:
    import duckdb
    import optuna
    import pyarrow

__all__ = [
    "DEFAULT_RESULTS",
    "STEP_COLUMNS",
    "STUDY_COLUMNS",
    "TRIAL_COLUMNS",
    "ResultsLockedError",
    "ResultsStore",
    "SqlError",
    "StoreError",
    "study_row",
    "trial_rows",
]

DEFAULT_RESULTS = Path("runs") / "results.duckdb"


class StoreError(UserError):
    """The results file is missing, corrupt, or cannot be written."""

    title = "Results file"


class ResultsLockedError(StoreError):
    """Another process holds the results file's write lock for longer than we wait."""


class SqlError(UserError):
    """A query DuckDB rejected; the message is DuckDB's own."""

    title = "SQL error"


# (name, DuckDB type, what it holds) -- the README's schema table is generated from these.
STUDY_COLUMNS: list[tuple[str, str, str]] = [
    ("study", "VARCHAR PRIMARY KEY", "study name"),
    ("storage", "VARCHAR", "Optuna storage it lives in (journal path or URL without password)"),
    ("model", "VARCHAR", "model fine-tuned"),
    ("sampler", "VARCHAR", "tpe, nsga2, gp or random"),
    ("quality_metric", "VARCHAR", "objective 1: eval_nll or exact_match"),
    (
        "forgetting_metric",
        "VARCHAR",
        "objective 2: retain_delta_nll, retain_kl or fact_recall_drop",
    ),
    ("cost_metric", "VARCHAR", "objective 3: dollars or hours"),
    ("directions", "VARCHAR[]", "Optuna direction of each objective"),
    ("gpu", "VARCHAR", "target GPU id (feasibility gate, price)"),
    ("provider", "VARCHAR", "provider whose price is used"),
    ("budget_dollars", "DOUBLE", "dollar budget"),
    ("budget_hours", "DOUBLE", "trial-hour budget"),
    ("budget_trials", "INTEGER", "trial budget (of the spec as last run)"),
    ("created_at", "TIMESTAMP", "when the study was created"),
    ("synced_at", "TIMESTAMP", "when this row was last written"),
    ("spec", "JSON", "the whole sweep spec (as last run: a rerun with a changed spec updates it)"),
]

TRIAL_COLUMNS: list[tuple[str, str, str]] = [
    ("study", "VARCHAR NOT NULL", "study name"),
    ("number", "INTEGER NOT NULL", "Optuna trial number (0, 1, ...)"),
    (
        "state",
        "VARCHAR",
        "complete, oom, failed, timeout, infeasible, interrupted, lost, running, waiting",
    ),
    ("error", "VARCHAR", "why it did not complete (OOM message, exception, gate reason)"),
    (
        "retry_of",
        "INTEGER",
        "number of the trial this one re-runs (its worker died or was stopped)",
    ),
    ("method", "VARCHAR", "full, lora, qlora, dora or freeze"),
    ("rank", "INTEGER", "adapter rank (adapter methods)"),
    ("alpha", "DOUBLE", "LoRA alpha"),
    ("use_rslora", "BOOLEAN", "rsLoRA scaling"),
    ("targets", "VARCHAR", "adapter target modules"),
    ("lr", "DOUBLE", "peak learning rate"),
    ("epochs", "DOUBLE", "passes over the training set"),
    ("max_steps", "INTEGER", "optimizer-step cap"),
    ("batch", "INTEGER", "micro-batch size"),
    ("grad_accum", "INTEGER", "gradient accumulation steps"),
    ("dropout", "DOUBLE", "adapter dropout"),
    ("warmup_ratio", "DOUBLE", "warm-up fraction"),
    ("weight_decay", "DOUBLE", "weight decay"),
    ("optimizer", "VARCHAR", "optimizer"),
    ("lr_schedule", "VARCHAR", "learning-rate schedule"),
    ("freeze_trainable_layers", "INTEGER", "method freeze: layers trained"),
    ("max_seq_len", "INTEGER", "sequence length"),
    ("seed", "INTEGER", "trial seed"),
    ("params", "JSON", "the parameters Optuna sampled, by Optuna name"),
    ("objective_quality", "DOUBLE", "objective 1, smaller is better (exact_match negated)"),
    ("objective_forgetting", "DOUBLE", "objective 2, smaller is better"),
    ("objective_cost", "DOUBLE", "objective 3, smaller is better"),
    ("eval_nll", "DOUBLE", "mean completion NLL on the held-out task set"),
    ("base_eval_nll", "DOUBLE", "the same for the base model"),
    ("exact_match", "DOUBLE", "greedy exact-match accuracy on the task"),
    ("base_exact_match", "DOUBLE", "the same for the base model"),
    ("train_nll", "DOUBLE", "final training NLL"),
    ("overfit_gap", "DOUBLE", "final eval NLL - best eval NLL seen"),
    ("generalization_gap", "DOUBLE", "eval NLL - train NLL"),
    ("best_step", "INTEGER", "step with the best eval NLL"),
    ("retain_delta_nll", "DOUBLE", "retain-set NLL(fine-tuned) - NLL(base)"),
    ("retain_kl", "DOUBLE", "mean per-token KL(base || fine-tuned) on the retain set"),
    ("fact_recall_drop", "DOUBLE", "drop in exact-match recall of facts the base knew"),
    ("base_retain_nll", "DOUBLE", "retain-set NLL of the base model"),
    ("predicted_peak_gb", "DOUBLE", "planner: peak memory on the target GPU (GB = 1e9 bytes)"),
    ("predicted_hours", "DOUBLE", "planner: hours on the target GPU"),
    ("predicted_dollars", "DOUBLE", "planner: dollars on the target GPU"),
    ("gpu_memory_gb", "DOUBLE", "memory of the target GPU the gate compared with"),
    (
        "measured_peak_gb",
        "DOUBLE",
        "measured peak memory of the trial: CUDA allocated, or CPU resident above the baseline",
    ),
    ("measured_peak_reserved_gb", "DOUBLE", "measured peak reserved memory (CUDA)"),
    ("measured_process_peak_gb", "DOUBLE", "peak resident memory of the trial process"),
    ("wall_s", "DOUBLE", "trial wall-clock seconds"),
    ("load_s", "DOUBLE", "model and data loading seconds"),
    ("train_s", "DOUBLE", "training seconds"),
    ("eval_s", "DOUBLE", "evaluation seconds"),
    ("tokens", "BIGINT", "training tokens processed"),
    ("tokens_per_s", "DOUBLE", "training throughput"),
    ("mfu", "DOUBLE", "model FLOP utilisation"),
    ("steps_done", "INTEGER", "optimizer steps run (while running: the last step written so far)"),
    ("dollars", "DOUBLE", "measured cost: wall hours x hourly price x devices"),
    ("device", "VARCHAR", "cpu or cuda"),
    ("device_name", "VARCHAR", "device model name"),
    ("devices", "INTEGER", "devices used"),
    ("gpu", "VARCHAR", "catalogue GPU id it was priced as"),
    ("provider", "VARCHAR", "provider it was priced at"),
    ("cpu_instance", "VARCHAR", "catalogue CPU instance (CPU runs)"),
    ("usd_per_hour", "DOUBLE", "hourly price used"),
    ("torch_version", "VARCHAR", "torch version"),
    ("transformers_version", "VARCHAR", "transformers version"),
    ("peft_version", "VARCHAR", "peft version"),
    ("versions", "JSON", "all recorded package versions"),
    ("worker_host", "VARCHAR", "host of the worker that ran it"),
    ("worker_pid", "INTEGER", "process id of that worker"),
    ("cuda_visible_devices", "VARCHAR", "GPU pinning of the trial's process"),
    ("started_at", "TIMESTAMP", "when the trial started"),
    ("finished_at", "TIMESTAMP", "when it finished"),
    ("artifact", "VARCHAR", "saved adapter/model folder (NULL: none kept)"),
    ("command", "VARCHAR", "the `paretune trial ...` command that reproduces it"),
    ("config", "JSON", "the full TrialConfig"),
]

STEP_COLUMNS: list[tuple[str, str, str]] = [
    ("study", "VARCHAR NOT NULL", "study name"),
    ("number", "INTEGER NOT NULL", "trial number"),
    ("step", "INTEGER NOT NULL", "optimizer step"),
    ("epoch", "DOUBLE", "fractional epoch"),
    ("loss", "DOUBLE", "training loss"),
    ("lr", "DOUBLE", "learning rate at this step"),
    ("tokens_per_s", "DOUBLE", "throughput"),
    ("peak_gb", "DOUBLE", "peak memory so far"),
    ("eval_nll", "DOUBLE", "eval NLL when scored at this step"),
]

_CONFIG_FIELDS = (
    "method",
    "rank",
    "alpha",
    "use_rslora",
    "targets",
    "lr",
    "epochs",
    "max_steps",
    "batch",
    "grad_accum",
    "dropout",
    "warmup_ratio",
    "weight_decay",
    "optimizer",
    "lr_schedule",
    "freeze_trainable_layers",
    "max_seq_len",
    "seed",
)
_ADAPTER_ONLY = ("rank", "alpha", "use_rslora", "targets")

_FRONTIER_SQL = """
CREATE OR REPLACE VIEW frontier AS
SELECT t.* FROM trials t
WHERE t.state = 'complete'
  AND t.objective_quality IS NOT NULL
  AND t.objective_forgetting IS NOT NULL
  AND t.objective_cost IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM trials o
    WHERE o.study = t.study AND o.state = 'complete' AND o.number <> t.number
      AND o.objective_quality <= t.objective_quality
      AND o.objective_forgetting <= t.objective_forgetting
      AND o.objective_cost <= t.objective_cost
      AND (o.objective_quality < t.objective_quality
           OR o.objective_forgetting < t.objective_forgetting
           OR o.objective_cost < t.objective_cost))
"""

_CALIBRATION_SQL = """
CREATE OR REPLACE VIEW calibration AS
SELECT study, number, method, rank, batch, max_seq_len, gpu, device, device_name,
       predicted_peak_gb, measured_peak_gb,
       measured_peak_gb / NULLIF(predicted_peak_gb, 0) AS peak_ratio,
       predicted_hours, wall_s / 3600.0 AS measured_hours,
       (wall_s / 3600.0) / NULLIF(predicted_hours, 0) AS hours_ratio,
       predicted_dollars, dollars,
       dollars / NULLIF(predicted_dollars, 0) AS dollars_ratio
FROM trials
WHERE state = 'complete' AND (predicted_peak_gb IS NOT NULL OR predicted_hours IS NOT NULL)
"""

_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _create_sql() -> list[str]:
    def table(name: str, columns: list[tuple[str, str, str]], key: str = "") -> str:
        body = ",\n  ".join(f"{c} {t}" for c, t, _ in columns)
        return f"CREATE TABLE IF NOT EXISTS {name} (\n  {body}{key}\n)"

    return [
        table("studies", STUDY_COLUMNS),
        table("trials", TRIAL_COLUMNS, ",\n  PRIMARY KEY (study, number)"),
        table("steps", STEP_COLUMNS, ",\n  PRIMARY KEY (study, number, step)"),
        # Added after the first release: results files written before it gain the column.
        "ALTER TABLE trials ADD COLUMN IF NOT EXISTS measured_process_peak_gb DOUBLE",
        _FRONTIER_SQL,
        _CALIBRATION_SQL,
    ]


class ResultsStore:
    """One DuckDB results file: typed tables of studies, trials and steps.

    Contract:

    - **Who writes.** Any process may write through this class; DuckDB allows one writing
      process at a time, so every call opens a short-lived connection and closes it, and
      an open that meets another process's lock ("Could not set lock on file") is retried
      for up to ``lock_timeout_s`` seconds. Writes are idempotent upserts keyed by
      ``(study, number)``: writing a trial twice leaves one row.
    - **Who reads.** :meth:`query`, :meth:`arrow`, :meth:`studies`, :meth:`trials`,
      :meth:`steps` and :meth:`frontier` open the file read-only (retrying the same way),
      so they work while a sweep writes between its trials.
    - **Raises.** :class:`StoreError` when the file is missing (reads), is not a DuckDB
      file, or cannot be created; :class:`ResultsLockedError` when the lock is still held
      after the wait; :class:`SqlError` with DuckDB's own message for a bad query. A corrupt
      file is never overwritten: its results are still in the Optuna storage and
      ``paretune results sync`` rebuilds them into a new file.
    - **Thread safety.** Safe to share between threads; writes from one process are
      serialised.
    """

    def __init__(self, path: str | Path = DEFAULT_RESULTS, *, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        with _WRITE_LOCKS_GUARD:
            self._write_lock = _WRITE_LOCKS.setdefault(str(self.path.resolve()), threading.Lock())

    # ------------------------------------------------------------ connections

    @contextmanager
    def connect(
        self, *, write: bool = False, allowed_dirs: Sequence[Path] = ()
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (read-only unless ``write``), retried on lock conflicts."""
        import duckdb

        if not write and not self.path.exists():
            raise StoreError(
                f"no results file at {self.path}",
                "Run a sweep first (`paretune sweep run SPEC`), or pass --db with the file.",
            )
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"cannot create the folder of {self.path}: {error}") from None
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                connection = open_connection(self.path, write=write, allowed_dirs=allowed_dirs)
                break
            except duckdb.IOException as error:
                text = str(error)
                if "Could not set lock" in text:
                    if time.monotonic() < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.5)
                        continue
                    import re

                    holder = re.search(r"\(PID (\d+)\)", text)
                    raise ResultsLockedError(
                        f"the results file {self.path} is locked by another process "
                        f"({'PID ' + holder.group(1) if holder else 'unknown'}) for more than "
                        f"{self.lock_timeout_s:g} s",
                        "DuckDB allows one writer at a time; wait for it to finish (a sweep "
                        "holds the lock only for a moment between trials) or stop that process.",
                    ) from None
                if "not a valid DuckDB database file" in text or "Corrupt" in text:
                    raise StoreError(
                        f"{self.path} is not a readable DuckDB database (corrupt or another format)",
                        "It was left untouched. Rebuild the results into a new file with "
                        "`paretune results sync --storage STORAGE --db NEW.duckdb`.",
                    ) from None
                raise StoreError(f"cannot open {self.path}: {text}") from None
            except duckdb.Error as error:
                # This process has the file open with the other mode (a writer thread while
                # a reader opens it): wait for that short-lived connection to close.
                if "Can't open a connection to same database" in str(error) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise StoreError(f"cannot open {self.path}: {error}") from None
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._write_lock, self.connect(write=True) as connection:
            for statement in _create_sql():
                connection.execute(statement)
            yield connection

    def ensure_schema(self) -> None:
        """Create the tables and views if the file has none (a no-op otherwise)."""
        with self._writing():
            pass

    # ------------------------------------------------------------ reading

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None, *, write: bool = False
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one SQL statement; return ``(column names, rows)``.

        Read-only unless ``write``; a statement DuckDB rejects raises :class:`SqlError`.
        """
        import duckdb

        context = self._writing() if write else self.connect()
        with context as connection:
            try:
                cursor = (
                    connection.execute(sql, params)
                    if params is not None
                    else connection.execute(sql)
                )
            except duckdb.Error as error:
                raise SqlError(str(error), _sql_hint(str(error), write)) from None
            if cursor.description is None:
                return [], []
            columns = [d[0] for d in cursor.description]
            return columns, cursor.fetchall()

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pyarrow.Table:
        """Run a read-only query and return an Arrow table (for large results and the UI)."""
        import duckdb

        with self.connect() as connection:
            try:
                relation = (
                    connection.execute(sql, params)
                    if params is not None
                    else connection.execute(sql)
                )
                return relation.to_arrow_table()
            except duckdb.Error as error:
                raise SqlError(str(error), _sql_hint(str(error), False)) from None

    def _dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        columns, rows = self.query(sql, params)
        return [dict(zip(columns, row, strict=False)) for row in rows]

    def studies(self) -> list[dict[str, Any]]:
        """One dict per study with counts by state, spend and the frontier size."""
        return self._dicts(
            """
            SELECT s.study, s.model, s.storage, s.sampler, s.gpu, s.provider, s.budget_dollars,
                   s.budget_trials, s.created_at,
                   count(t.number) AS trials,
                   count(t.number) FILTER (WHERE t.state = 'complete') AS complete,
                   count(t.number) FILTER (WHERE t.state IN ('oom', 'failed', 'timeout')) AS failed,
                   count(t.number) FILTER (WHERE t.state = 'infeasible') AS infeasible,
                   coalesce(sum(t.dollars), 0) AS dollars,
                   (SELECT count(*) FROM frontier f WHERE f.study = s.study) AS frontier_size
            FROM studies s LEFT JOIN trials t USING (study)
            GROUP BY ALL ORDER BY s.created_at DESC NULLS LAST, s.study
            """
        )

    def trials(self, study: str) -> list[dict[str, Any]]:
        """Every trial of ``study`` as a dict of its columns, by number."""
        return self._dicts("SELECT * FROM trials WHERE study = ? ORDER BY number", [study])

    def steps(self, study: str, number: int) -> list[dict[str, Any]]:
        """The logged steps of one trial, in order."""
        return self._dicts(
            "SELECT * FROM steps WHERE study = ? AND number = ? ORDER BY step", [study, number]
        )

    def frontier(self, study: str) -> list[dict[str, Any]]:
        """The Pareto-optimal completed trials of ``study`` (the ``frontier`` view)."""
        return self._dicts("SELECT * FROM frontier WHERE study = ? ORDER BY number", [study])

    # ------------------------------------------------------------ writing

    def write_study(self, row: dict[str, Any]) -> None:
        """Insert or replace one ``studies`` row."""
        self._replace("studies", STUDY_COLUMNS, [row], "study = ?", [row["study"]])

    def write_trials(
        self, rows: list[dict[str, Any]], steps: list[dict[str, Any]] | None = None
    ) -> None:
        """Insert or replace trials (and all their steps) in one transaction."""
        if not rows:
            return
        with self._writing() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                for row in rows:
                    key = [row["study"], row["number"]]
                    connection.execute("DELETE FROM trials WHERE study = ? AND number = ?", key)
                    connection.execute("DELETE FROM steps WHERE study = ? AND number = ?", key)
                _insert(connection, "trials", TRIAL_COLUMNS, rows)
                if steps:
                    _insert(connection, "steps", STEP_COLUMNS, steps)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def _replace(
        self,
        table: str,
        columns: list[tuple[str, str, str]],
        rows: list[dict[str, Any]],
        where: str,
        key: list[Any],
    ) -> None:
        with self._writing() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute(f"DELETE FROM {table} WHERE {where}", key)
                _insert(connection, table, columns, rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def sync_study(self, study: optuna.Study, *, storage: str | None = None) -> int:
        """Import one Optuna study (all its trials and steps) idempotently; return trial count."""
        self.write_study(study_row(study, storage=storage))
        rows, steps = trial_rows(study)
        with self._writing() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute("DELETE FROM trials WHERE study = ?", [study.study_name])
                connection.execute("DELETE FROM steps WHERE study = ?", [study.study_name])
                _insert(connection, "trials", TRIAL_COLUMNS, rows)
                _insert(connection, "steps", STEP_COLUMNS, steps)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return len(rows)


def _sql_hint(message: str, write: bool) -> str | None:
    if "read-only" in message.lower() and not write:
        return "The query tried to change the file; pass --write to allow it."
    if "does not exist" in message and "Table" in message:
        return "Tables: studies, trials, steps; views: frontier, calibration (see the README)."
    return None


_ARROW_TYPES = {"VARCHAR": "string", "INTEGER": "int64", "DOUBLE": "float64"}
"""DuckDB column types that :func:`_insert` can send as one Arrow table."""


def _insert(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    columns: list[tuple[str, str, str]],
    rows: list[dict[str, Any]],
) -> None:
    if not rows:
        return
    names = [c for c, _, _ in columns]
    kinds = [_ARROW_TYPES.get(kind.split()[0]) for _, kind, _ in columns]
    if len(rows) > 20 and all(kinds) and _insert_arrow(connection, table, names, kinds, rows):
        return
    placeholders = ", ".join("?" for _ in names)
    connection.executemany(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders})",
        [[_cell(row.get(name)) for name in names] for row in rows],
    )


def _insert_arrow(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    names: list[str],
    kinds: list[str],
    rows: list[dict[str, Any]],
) -> bool:
    """Many rows of plain columns (a trial's steps) as one Arrow table and one INSERT; False
    if a value does not fit its column's type. DuckDB's executemany costs about 2 ms a row:
    10 s for a 5,000-step loss curve."""
    import pyarrow as pa

    try:
        data = pa.table(
            {
                name: pa.array([row.get(name) for row in rows], type=pa.type_for_alias(kind))
                for name, kind in zip(names, kinds, strict=False)
            }
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return False
    connection.register("_paretune_rows", data)
    try:
        listed = ", ".join(names)
        connection.execute(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM _paretune_rows")
    finally:
        connection.unregister("_paretune_rows")
    return True


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True, default=str)
    return value


# ---------------------------------------------------------------- Optuna -> rows


def redact_url(url: str | None) -> str | None:
    """A storage URL without its password."""
    if not url or "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def study_row(study: optuna.Study, *, storage: str | None = None) -> dict[str, Any]:
    """The ``studies`` row of an Optuna study created by paretune (or any other)."""
    attrs = study.user_attrs
    spec = attrs.get("spec") or {}
    objectives = attrs.get("objectives") or [None, None, None]
    budget = spec.get("budget", {}) if isinstance(spec, dict) else {}
    hardware = spec.get("hardware", {}) if isinstance(spec, dict) else {}
    created = attrs.get("created_at")
    return {
        "study": study.study_name,
        "storage": redact_url(storage or attrs.get("storage")),
        "model": spec.get("model"),
        "sampler": spec.get("sampler"),
        "quality_metric": objectives[0],
        "forgetting_metric": objectives[1],
        "cost_metric": objectives[2],
        "directions": [d.name.lower() for d in study.directions],
        "gpu": hardware.get("gpu"),
        "provider": hardware.get("provider"),
        "budget_dollars": budget.get("dollars"),
        "budget_hours": budget.get("hours"),
        "budget_trials": budget.get("trials"),
        "created_at": datetime.fromisoformat(created) if created else None,
        "synced_at": datetime.now(),
        "spec": spec or None,
    }


def _state_of(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    if trial.user_attrs.get("state"):
        return str(trial.user_attrs["state"])
    if trial.state == TrialState.FAIL and "worker_host" in trial.user_attrs:
        return "lost"  # failed by Optuna's heartbeat check: its worker stopped answering
    return {
        TrialState.COMPLETE: "complete",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
        TrialState.PRUNED: "pruned",
    }[trial.state]


def trial_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``trials`` and ``steps`` rows for every trial of an Optuna study."""
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    directions = [d.name.lower() for d in study.directions]
    deleted = study.user_attrs.get("deleted_artifacts")
    for trial in study.get_trials(deepcopy=False):
        row, trial_steps = trial_row(study.study_name, trial, directions, deleted_artifacts=deleted)
        rows.append(row)
        steps.extend(trial_steps)
    return rows, steps


def trial_row(
    study_name: str,
    trial: optuna.trial.FrozenTrial,
    directions: list[str],
    *,
    deleted_artifacts: list[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ``trials`` row and its ``steps`` rows, from the trial's Optuna record.

    paretune keeps the trial's whole :class:`~sweeps.trial.types.TrialResult` in the user
    attribute ``result`` and its config in ``config``, so any storage a sweep wrote to can
    rebuild the row.
    """
    attrs = trial.user_attrs
    result = attrs.get("result") or {}
    config = result.get("config") or attrs.get("config") or {}
    quality = result.get("quality") or {}
    forgetting = result.get("forgetting") or {}
    measured = result.get("measured") or {}
    predicted = result.get("predicted") or {}
    hardware = result.get("hardware") or {}
    versions = hardware.get("versions") or {}
    row: dict[str, Any] = {
        "study": study_name,
        "number": trial.number,
        "state": _state_of(trial),
        "error": attrs.get("error") or result.get("error"),
        "retry_of": attrs.get("retry_of", trial.system_attrs.get("failed_trial")),
        "params": dict(trial.params),
    }
    for name in _CONFIG_FIELDS:
        row[name] = config.get(name)
    if row["method"] is None:
        row["method"] = result.get("method") or trial.params.get("method")
    if row["method"] not in ("lora", "qlora", "dora"):
        for name in _ADAPTER_ONLY:
            row[name] = None
    values = list(trial.values) if trial.values else [None, None, None]
    values += [None] * (3 - len(values))
    for column, value, direction in zip(
        ("objective_quality", "objective_forgetting", "objective_cost"),
        values,
        directions + ["minimize"] * 3,
        strict=False,
    ):
        if value is None or not math.isfinite(value):
            row[column] = None
        else:
            row[column] = -value if direction == "maximize" else value
    for name in (
        "eval_nll",
        "base_eval_nll",
        "exact_match",
        "base_exact_match",
        "train_nll",
        "overfit_gap",
        "generalization_gap",
        "best_step",
    ):
        row[name] = quality.get(name)
    for name in ("retain_delta_nll", "retain_kl", "fact_recall_drop", "base_retain_nll"):
        row[name] = forgetting.get(name)
    row["predicted_peak_gb"] = predicted.get("peak_gb", attrs.get("predicted_peak_gb"))
    row["predicted_hours"] = predicted.get("hours", attrs.get("predicted_hours"))
    row["predicted_dollars"] = predicted.get("dollars", attrs.get("predicted_dollars"))
    row["gpu_memory_gb"] = attrs.get("gpu_memory_gb")
    row["measured_peak_gb"] = measured.get("peak_gb")
    row["measured_peak_reserved_gb"] = measured.get("peak_reserved_gb")
    row["measured_process_peak_gb"] = measured.get("process_peak_gb")
    for name in ("wall_s", "load_s", "train_s", "eval_s", "tokens", "tokens_per_s", "mfu"):
        row[name] = measured.get(name)
    row["steps_done"] = measured.get("steps")
    row["dollars"] = result.get("dollars")
    for name in (
        "device",
        "device_name",
        "devices",
        "gpu",
        "provider",
        "cpu_instance",
        "usd_per_hour",
    ):
        row[name] = hardware.get(name)
    if row["gpu"] is None:
        row["gpu"] = config.get("gpu")
    row["torch_version"] = versions.get("torch")
    row["transformers_version"] = versions.get("transformers")
    row["peft_version"] = versions.get("peft")
    row["versions"] = versions or None
    row["worker_host"] = attrs.get("worker_host")
    row["worker_pid"] = attrs.get("worker_pid")
    row["cuda_visible_devices"] = attrs.get("cuda_visible_devices")
    row["started_at"] = trial.datetime_start
    row["finished_at"] = trial.datetime_complete
    row["artifact"] = attrs.get("artifact", result.get("artifact"))
    if row["artifact"] in (deleted_artifacts or ()):
        row["artifact"] = None  # deleted by the artifact policy (not on the frontier)
    row["command"] = result.get("command") or attrs.get("command")
    row["config"] = config or None
    steps = [
        {"study": study_name, "number": trial.number, **step} for step in result.get("steps") or []
    ]
    return row, steps
