"""Read-only SQL on the results file for the SQL screen (blocking: call it from a worker).

Connections come from :class:`sweeps.results.store.ResultsStore`, which opens the file read-only and
waits while a running sweep holds the write lock (it holds it only between trials), then
raises :class:`~sweeps.results.store.ResultsLockedError`. Without a results file, queries run on an
empty in-memory database, so the console still answers ``SELECT 1``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from sweeps.results.store import ResultsStore, SqlError

__all__ = ["LOCK_WAIT_S", "query_arrow"]

LOCK_WAIT_S = 5.0
"""How long a read waits for a sweep's write lock before saying the file is busy."""


@contextmanager
def _connection(db: Path | None):
    if db is None or not Path(db).exists():
        connection = duckdb.connect()
        try:
            yield connection
        finally:
            connection.close()
    else:
        with ResultsStore(db, lock_timeout_s=LOCK_WAIT_S).connect() as connection:
            yield connection


def query_arrow(db: Path | None, sql: str) -> pa.Table:
    """Run ``sql`` read-only on ``db`` and return the whole result as an Arrow table."""
    with _connection(db) as connection:
        try:
            relation = connection.sql(sql)
            # Statements without a result set (SET, CREATE ...) return no relation.
            return pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.Error as error:
            hint = None
            if isinstance(error, duckdb.CatalogException) and (db is None or not Path(db).exists()):
                hint = f"There is no results file at {db}: run a sweep first, or pass --db."
            elif isinstance(error, duckdb.CatalogException):
                hint = (
                    "Tables: studies, trials, steps; views: frontier, calibration "
                    "(the README's `sweep` section lists every column)."
                )
            elif "read-only" in str(error).lower():
                hint = "The SQL screen only reads; change the file with `paretune sql --write`."
            raise SqlError(str(error).strip(), hint) from None
