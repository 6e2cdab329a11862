"""Read-only SQL on the results file for the SQL screen (blocking: call it from a worker).

Connections come from :class:`sweeps.results.store.ResultsStore`, which opens the file through
:func:`sweeps.results.readonly.open_connection` (read-only, no other file, no extension, settings
locked) and waits while a running sweep holds the write lock (it holds it only between trials),
then raises :class:`~sweeps.results.store.ResultsLockedError`. Without a results file, queries run
on an empty in-memory database with the same settings, so the console still answers ``SELECT 1``
and still cannot touch a file. Statements read-only SQL refuses (``COPY``, ``ATTACH``,
``CHECKPOINT``, ...) raise :class:`~sweeps.results.readonly.ReadOnlyError` before anything runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from sweeps.results.readonly import check_read_only, open_connection, sql_error
from sweeps.results.store import ResultsStore, SqlError

__all__ = ["LOCK_WAIT_S", "query_arrow"]

LOCK_WAIT_S = 5.0
"""How long a read waits for a sweep's write lock before saying the file is busy."""


@contextmanager
def _connection(db: Path | None):
    if db is None or not Path(db).exists():
        connection = open_connection(None)
        try:
            yield connection
        finally:
            connection.close()
    else:
        with ResultsStore(db, lock_timeout_s=LOCK_WAIT_S).connect() as connection:
            yield connection


def query_arrow(db: Path | None, sql: str) -> pa.Table:
    """Run ``sql`` read-only on ``db`` and return the whole result as an Arrow table."""
    check_read_only(sql)
    with _connection(db) as connection:
        try:
            relation = connection.sql(sql)
            # Statements without a result set (CREATE TEMP ...) return no relation.
            return pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.Error as error:
            missing = db is None or not Path(db).exists()
            if missing and isinstance(error, duckdb.CatalogException) and "exist" in str(error):
                raise SqlError(
                    str(error).strip(),
                    f"There is no results file at {db}: run a sweep first, or pass --db.",
                ) from None
            raise sql_error(error) from None
