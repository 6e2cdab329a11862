"""The DuckDB results store: every study, trial and logged step, typed, for SQL.

Optuna's storage (journal file or PostgreSQL) is the source of truth for the search; this
file is the copy people query. Each finished trial is written here by the worker that ran
it, and ``paretune results sync`` rebuilds any study from its Optuna storage, so a lost or
locked results file never loses a result.

Schema (one source: :mod:`sweeps.results.schema`, which also renders it for the docs):

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

import contextlib
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError
from sweeps.outcome import Outcome
from sweeps.results.readonly import open_connection
from sweeps.results.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STEPS,
    STUDIES,
    TABLES,
    TRIALS,
    VIEWS,
    Table,
    migration_statements,
)

if TYPE_CHECKING:
    import duckdb
    import optuna
    import pyarrow

__all__ = [
    "DEFAULT_RESULTS",
    "ResultsLockedError",
    "ResultsStore",
    "SqlError",
    "StoreError",
    "file_damage",
    "redact_url",
    "study_row",
    "trial_row",
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


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


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
        self._schema_current = False  # checked on this store's first write
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
        damage = file_damage(self.path)
        if damage is not None:
            raise StoreError(
                f"{self.path} is not a readable DuckDB database: {damage}",
                "It was left untouched. Rebuild the results into a new file with "
                "`paretune results sync --storage STORAGE --db NEW.duckdb`.",
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
                raise StoreError(f"cannot open {self.path}: {_write_problem(error)}") from None
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
        """A write connection with the schema in place. A write the disk refuses (full, or
        read-only) is a :class:`StoreError`; its transaction is rolled back by DuckDB."""
        import duckdb

        with self._write_lock, self.connect(write=True) as connection:
            try:
                if not self._schema_current:
                    self._migrate(connection)
                yield connection
            except (
                duckdb.IOException,
                duckdb.TransactionException,
                duckdb.FatalException,
            ) as error:
                raise StoreError(
                    f"cannot write the results file {self.path}: {_write_problem(error)}",
                    "Free space on that disk (or make the folder writable); the results stay "
                    "in the Optuna storage, and `paretune results sync` writes them later.",
                ) from None

    def ensure_schema(self) -> None:
        """Create the tables and views, or bring an older file's schema up to date (a no-op
        on a current file)."""
        with self._writing():
            pass

    def schema_version(self) -> int | None:
        """The file's schema version (None: a file written before versions, or no tables)."""
        with self.connect() as connection:
            return _schema_version(connection)

    def _migrate(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` in one transaction, recording each
        migration in ``schema_version``; refuse a file from a newer paretune untouched."""

        current = _schema_version(connection)
        if current is not None and current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has results schema version {current}, written by a newer "
                f"paretune; this one writes version {SCHEMA_VERSION} and leaves the file as it is",
                "Upgrade paretune (`pip install -U paretune`) to add results to this file, or "
                "write to another file with --db. Reading it (`paretune sql`, the app) still works.",
            )
        if current != SCHEMA_VERSION:
            from importlib.metadata import version

            now = datetime.now(UTC).replace(tzinfo=None)
            connection.execute("BEGIN TRANSACTION")
            try:
                for statement in migration_statements(current):
                    connection.execute(statement)
                for migration in MIGRATIONS:
                    if current is None or migration.version > current:
                        connection.execute(
                            "INSERT OR REPLACE INTO schema_version VALUES (?, ?, ?, ?)",
                            [migration.version, now, version("paretune"), migration.description],
                        )
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
        self._schema_current = True

    def storage_format(self) -> str:
        """The DuckDB storage format the file is written in, as DuckDB tags it
        (``v1.0.0+``: every DuckDB from 1.0 reads it; ``v2.0.0+``: only DuckDB 2)."""
        with self.connect() as connection:
            return _storage_format(connection)

    def upgrade_format(self) -> Path | None:
        """Rewrite a file in DuckDB 2's storage format into :data:`STORAGE_COMPATIBILITY`'s,
        which DuckDB 1.x clients open; return the backup of the old file (None: the file was
        already readable by 1.x clients, and is left as it is).

        The copy is made under the file's write lock (so no sweep writes meanwhile) into a new
        file beside it, checked table by table against the original, and only then put in its
        place. The original stays, unchanged, as ``<file>.duckdb2-backup``.
        """
        from sweeps.results.readonly import STORAGE_COMPATIBILITY

        if not self.path.is_file():
            raise StoreError(f"no results file at {self.path}", "Pass the file with --db.")
        staged = self.path.with_name(self.path.name + ".upgrading")
        backup = self.path.with_name(self.path.name + ".duckdb2-backup")
        staged.unlink(missing_ok=True)
        with self._write_lock:
            with self.connect(write=True) as connection:
                self._migrate(connection)  # the schema first, then the copy of it
                if not _storage_format(connection).startswith("v2"):
                    return None
                source = connection.execute("SELECT current_database()").fetchone()
                assert source is not None
                counts = _row_counts(connection, source[0])
                connection.execute(
                    f"ATTACH ? AS paretune_upgrade (STORAGE_VERSION '{STORAGE_COMPATIBILITY}')",
                    [str(staged)],
                )
                try:
                    connection.execute(f'COPY FROM DATABASE "{source[0]}" TO paretune_upgrade')
                    copied = _row_counts(connection, "paretune_upgrade")
                finally:
                    connection.execute("DETACH paretune_upgrade")
                connection.execute("CHECKPOINT")  # the original whole in its file, no WAL
            if copied != counts:
                staged.unlink(missing_ok=True)
                raise StoreError(
                    f"the rewritten copy of {self.path} does not hold the same rows "
                    f"({copied} vs {counts}); the file was left as it is"
                )
            # Keep the original as the backup, then put the copy in its place.
            shutil.copy2(self.path, backup)
            os.replace(staged, self.path)
        return backup

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
                # A relation, not a DB-API cursor: Arrow straight from the result, no extra copy
                # (and none of DuckDB's warning about one).
                relation = connection.sql(sql, params=params)
                if relation is None:  # a statement without a result set
                    import pyarrow as pa

                    return pa.table({})
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
                   count(t.number) FILTER (WHERE t.state = 'pruned') AS pruned,
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
        self._replace(STUDIES, [row], "study = ?", [row["study"]])

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
                _insert(connection, TRIALS, rows)
                if steps:
                    _insert(connection, STEPS, steps)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise

    def _replace(
        self, table: Table, rows: list[dict[str, Any]], where: str, key: list[Any]
    ) -> None:
        with self._writing() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute(f"DELETE FROM {table.name} WHERE {where}", key)
                _insert(connection, table, rows)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
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
                _insert(connection, TRIALS, rows)
                _insert(connection, STEPS, steps)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
        return len(rows)


def _rollback(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if a failed write (a full disk) left one: the write's
    own error is the one to report."""
    import duckdb

    with contextlib.suppress(duckdb.Error):
        connection.execute("ROLLBACK")


def _schema_version(connection: duckdb.DuckDBPyConnection) -> int | None:
    found = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not found or not found[0]:
        return None
    latest = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return None if latest is None else latest[0]


def _storage_format(connection: duckdb.DuckDBPyConnection) -> str:
    found = connection.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() "
        "WHERE database_name = current_database()"
    ).fetchone()
    return str(found[0]) if found and found[0] else "unknown"


def _row_counts(connection: duckdb.DuckDBPyConnection, database: str) -> dict[str, int]:
    tables = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1", [database]
    ).fetchall()
    counts: dict[str, int] = {}
    for (table,) in tables:
        found = connection.execute(f'SELECT count(*) FROM "{database}"."{table}"').fetchone()
        counts[table] = int(found[0]) if found else 0
    return counts


_DUCKDB_MAGIC = b"DUCK"
_HEADER_BYTES = 4096
"""A DuckDB file starts with three 4 KiB headers: the main one (``DUCK`` at byte 8) and two
database headers, of which the one with the higher iteration is current. Each database header
holds its checksum, iteration, meta block, free list, block count and block size (8 bytes
each); the file holds at least ``3 * 4096 + block count * block size`` bytes."""


def file_damage(path: Path) -> str | None:
    """Why the existing file at ``path`` cannot be a whole DuckDB database (cut short, or not
    DuckDB at all), from its headers alone; None when it looks whole, is empty or is absent.

    DuckDB itself opens a file cut short and may write into it, so this is checked before any
    connection is opened."""
    import struct

    try:
        size = path.stat().st_size
        if size == 0 or not path.is_file():
            return None
        with path.open("rb") as handle:
            head = handle.read(3 * _HEADER_BYTES)
    except OSError:
        return None  # DuckDB says why it cannot be opened
    if len(head) < 12 or head[8:12] != _DUCKDB_MAGIC:
        return "it is not a DuckDB file (another format, or overwritten)"
    if len(head) < 3 * _HEADER_BYTES:
        return f"it is cut short ({size:,} bytes, less than DuckDB's headers)"
    headers = [struct.unpack_from("<6Q", head, offset) for offset in (4096, 8192)]
    _, _, _, _, blocks, block_size = max(headers, key=lambda header: header[1])
    expected = 3 * _HEADER_BYTES + blocks * block_size
    if blocks > 1 << 40 or not 0 < block_size <= 1 << 30:
        return "its headers are damaged"
    if size >= expected:
        return None
    cut_short = (
        f"it is cut short ({size:,} bytes, where its header counts {blocks} blocks "
        f"of {block_size:,} bytes: {expected:,} bytes)"
    )
    if (size - 3 * _HEADER_BYTES) % block_size:
        return cut_short  # DuckDB writes whole blocks: a cut inside one is damage
    # DuckDB drops free blocks at the end of the file and still counts them: read every table.
    return None if _reads_whole(path) else cut_short


_WHOLE: dict[str, tuple[int, int]] = {}
"""Results files (resolved path) read whole at this size and modification time."""


def _reads_whole(path: Path) -> bool:
    """Whether every row of every table of ``path`` can be read (read-only: nothing is written).
    True too when it cannot be told now (another connection holds the file)."""
    import duckdb

    stat = path.stat()
    key, seen = str(path.resolve()), (stat.st_size, stat.st_mtime_ns)
    if _WHOLE.get(key) == seen:
        return True
    try:
        connection = open_connection(path)
    except duckdb.Error as error:
        text = str(error)
        return "Could not set lock" in text or "same database" in text
    try:
        tables = connection.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal"
        ).fetchall()
        for schema, table in tables:
            connection.execute(
                f'SELECT count(hash(COLUMNS(*))) FROM "{schema}"."{table}"'
            ).fetchall()
    except duckdb.Error:
        return False
    finally:
        connection.close()
    _WHOLE[key] = seen
    return True


def _write_problem(error: Exception) -> str:
    """DuckDB's write error in a few words (the disk full, first of all)."""
    text = str(error).splitlines()[0]
    if "No space left" in text or "disk is full" in text.lower():
        return f"the disk is full ({text})"
    if "Read-only file system" in text:
        return f"the file system is read-only ({text})"
    return text


def _sql_hint(message: str, write: bool) -> str | None:
    if "read-only" in message.lower() and not write:
        return "The query tried to change the file; pass --write to allow it."
    if "does not exist" in message and "Table" in message:
        return (
            f"Tables: {', '.join(t.name for t in TABLES)}; views: {', '.join(v.name for v in VIEWS)} "
            "(see docs/reference/schema.md)."
        )
    return None


_ARROW_TYPES = {
    "VARCHAR": "string",
    "INTEGER": "int64",
    "BIGINT": "int64",
    "DOUBLE": "float64",
    "BOOLEAN": "bool",
    "TIMESTAMP": "timestamp[us]",
    "JSON": "string",
}
"""DuckDB column types that :func:`_insert` can send as one Arrow table (JSON as its text,
cast in the INSERT as a parameter's text is)."""


def _insert(
    connection: duckdb.DuckDBPyConnection, table: Table, rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    names = table.names
    kinds = [column.type for column in table.columns]
    if (
        len(rows) > 20
        and all(kind in _ARROW_TYPES for kind in kinds)
        and _insert_arrow(connection, table.name, names, kinds, rows)
    ):
        return
    placeholders = ", ".join("?" for _ in names)
    connection.executemany(
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({placeholders})",
        [[_cell(row.get(name)) for name in names] for row in rows],
    )


def _insert_arrow(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    names: list[str],
    kinds: list[str],
    rows: list[dict[str, Any]],
) -> bool:
    """Many rows (a trial's steps, a study's trials) as one Arrow table and one INSERT; False
    if a value does not fit its column's type (then the caller inserts them one by one).
    DuckDB's executemany costs about 2 ms a row: 10 s for a 5,000-step loss curve, 2 s for a
    study of 1,000 trials."""
    import datetime

    import pyarrow as pa

    def column(name: str, kind: str) -> list[Any]:
        values = [row.get(name) for row in rows]
        if kind in ("VARCHAR", "JSON"):
            return [_cell(value) for value in values]
        if kind == "TIMESTAMP" and any(
            not isinstance(value, datetime.datetime) or value.tzinfo is not None
            for value in values
            if value is not None
        ):
            raise TypeError("only naive datetimes go as Arrow timestamps")
        return values

    try:
        data = pa.table(
            {
                name: pa.array(column(name, kind), type=pa.type_for_alias(_ARROW_TYPES[kind]))
                for name, kind in zip(names, kinds, strict=False)
            }
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return False
    connection.register("_paretune_rows", data)
    try:
        listed = ", ".join(names)
        selected = ", ".join(
            f"CAST({name} AS JSON)" if kind == "JSON" else name
            for name, kind in zip(names, kinds, strict=False)
        )
        connection.execute(f"INSERT INTO {table} ({listed}) SELECT {selected} FROM _paretune_rows")
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
    created = attrs.get("created_at")
    record = {
        "study": {
            "name": study.study_name,
            "directions": [d.name.lower() for d in study.directions],
        },
        "attrs": attrs,
        "spec": attrs.get("spec") or None,
        "storage": redact_url(storage or attrs.get("storage")),
        "created_at": datetime.fromisoformat(created) if created else None,
        "now": datetime.now(),
    }
    return {column.name: column.value(record) for column in STUDIES.columns}


def _state_of(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    if trial.user_attrs.get("state"):
        return str(trial.user_attrs["state"])  # an Outcome, or a value another tool wrote
    if trial.state == TrialState.FAIL and "worker_host" in trial.user_attrs:
        return Outcome.LOST  # failed by Optuna's heartbeat check: its worker stopped answering
    return {
        TrialState.COMPLETE: Outcome.COMPLETE,
        TrialState.FAIL: Outcome.FAILED,
        TrialState.RUNNING: Outcome.RUNNING,
        TrialState.WAITING: Outcome.WAITING,
        TrialState.PRUNED: Outcome.PRUNED,
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
    rebuild the row. Each column's value is read where :data:`~sweeps.results.schema.TRIALS`
    says it comes from.
    """
    record = trial_record(study_name, trial, directions)
    row = {column.name: column.value(record) for column in TRIALS.columns}
    if row["method"] not in _ADAPTER_METHODS:
        row.update({column.name: None for column in TRIALS.columns if column.adapter_only})
    if row["artifact"] in (deleted_artifacts or ()):
        row["artifact"] = None  # deleted by the artifact policy (not on the frontier)
    result = record["result"] or {}
    return row, step_rows(study_name, trial.number, result.get("steps") or [])


_ADAPTER_METHODS = ("lora", "qlora", "dora")


def trial_record(
    study_name: str, trial: optuna.trial.FrozenTrial, directions: list[str]
) -> dict[str, Any]:
    """What a ``trials`` row is read from: the parts :data:`~sweeps.results.schema.TRIALS`
    names as its sources."""
    attrs = trial.user_attrs
    result = attrs.get("result") or None
    hardware = (result or {}).get("hardware") or {}
    predicted = (result or {}).get("predicted") or {
        **{name: attrs.get(f"predicted_{name}") for name in ("peak_gb", "hours", "dollars")},
        "calibration": attrs.get("calibration"),
    }
    values = list(trial.values) if trial.values else []
    objectives = {}
    for name, value, direction in zip(
        ("quality", "forgetting", "cost"),
        values + [None] * (3 - len(values)),
        directions + ["minimize"] * 3,
        strict=False,
    ):
        finite = value is not None and math.isfinite(value)
        objectives[name] = (-value if direction == "maximize" else value) if finite else None
    return {
        "study": study_name,
        "trial": {
            "number": trial.number,
            "params": dict(trial.params),
            "datetime_start": trial.datetime_start,
            "datetime_complete": trial.datetime_complete,
        },
        "attrs": attrs,
        "system_attrs": trial.system_attrs,
        "result": result,
        "config": (result or {}).get("config") or attrs.get("config") or None,
        "predicted": predicted,
        "versions": hardware.get("versions") or None,
        "state": _state_of(trial),
        "objectives": objectives,
    }


def step_rows(study_name: str, number: int, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``steps`` rows of one trial from its logged steps (``StepLog`` dicts)."""
    record: dict[str, Any] = {"study": study_name, "trial": {"number": number}}
    rows = []
    for step in steps:  # one record, its step replaced: a study has hundreds of thousands
        record["step"] = step
        rows.append({column.name: column.value(record) for column in STEPS.columns})
    return rows
