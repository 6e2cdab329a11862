"""Read-only access to the DuckDB results file, for the screens' background workers.

DuckDB lets one process write a file at a time, and while a running sweep holds it even
a read-only open fails ("Could not set lock"). The sweep's writers hold short-lived
connections, so a reader retries for a moment before saying the database is busy.
Every function here blocks: call it from a thread worker, never from the UI thread.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa

from pricing.errors import UserError

__all__ = ["QueryError", "DatabaseBusy", "connect", "query_arrow", "query_rows"]

_LOCK_RETRIES = 20
_LOCK_WAIT_S = 0.1


class QueryError(UserError):
    """A query DuckDB rejected (syntax, unknown table or column, ...)."""

    title = "SQL error"


class DatabaseBusy(UserError):
    """Another process (a running sweep) holds the results file's write lock."""

    title = "Database busy"


def connect(db: Path | None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``db``, or an in-memory one when the file does not exist."""
    if db is None or not Path(db).exists():
        return duckdb.connect()
    for attempt in range(_LOCK_RETRIES):
        try:
            return duckdb.connect(str(db), read_only=True)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise QueryError(f"cannot open {db}: {error}") from error
            if attempt == _LOCK_RETRIES - 1:
                raise DatabaseBusy(
                    f"{db} is being written by another process (a running sweep?)",
                    "Try again in a moment; the sweep releases the file between trials.",
                ) from error
            time.sleep(_LOCK_WAIT_S)
    raise AssertionError("unreachable")


def _run(db: Path | None, sql: str, params: list | None = None) -> pa.Table:
    connection = connect(db)
    try:
        relation = connection.sql(sql, params=params or None)
        # Statements without a result set (SET, CREATE ...) return no relation.
        if relation is None:
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as error:
        message = str(error).strip()
        hint = None
        if isinstance(error, duckdb.CatalogException) and (db is None or not Path(db).exists()):
            hint = f"There is no results database at {db}; run a sweep first or pass --db."
        raise QueryError(message, hint) from error
    finally:
        connection.close()


def query_arrow(db: Path | None, sql: str, params: list | None = None) -> pa.Table:
    """Run ``sql`` on ``db`` read-only and return the whole result as an Arrow table."""
    return _run(db, sql, params)


def query_rows(db: Path | None, sql: str, params: list | None = None) -> list[dict]:
    """Run ``sql`` and return its rows as dicts (for small results: studies, one trial)."""
    return _run(db, sql, params).to_pylist()
