"""The one way paretune opens DuckDB, and what "read-only" promises for SQL a person types.

Read-only means nothing on disk changes and nothing is fetched. Two layers keep that promise:

- **DuckDB's own settings** (:data:`READ_ONLY_SETTINGS`): the results file opens with
  ``read_only=True`` and ``enable_external_access = false``, so a query reaches no file but
  that database (no ``read_csv('/etc/...')``, ``COPY ... TO``, ``EXPORT``, ``ATTACH``, URL or
  ``INSTALL``), autoinstall and autoload of extensions are off, and ``lock_configuration``
  makes every ``SET``/``RESET``/``PRAGMA`` of an option fail, so a query cannot undo any of it.
  The in-memory database used when there is no results file gets the same settings.
- **A statement check** (:func:`check_read_only`) for what the settings allow: folders named
  with ``allowed_dirs`` (``paretune sql --allow-files DIR``) are readable *and writable* for
  DuckDB, so statements that write files or open other databases (``COPY``, ``EXPORT``,
  ``ATTACH``, ``PREPARE``/``EXECUTE`` of them, ``EXPLAIN ANALYZE`` of them) are refused before
  they run; ``CHECKPOINT`` and ``VACUUM``, which DuckDB accepts on a read-only file, are refused
  too, so nothing suggests the file was rewritten.

With ``write=True`` the file opens writable: full SQL, as before. A file created that way is
stored in the format of :data:`STORAGE_COMPATIBILITY`, so DuckDB 1.x clients (the command-line
client, DBeaver, ...) open it too; DuckDB's default would be 2.x's own format, which they refuse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError

STORAGE_COMPATIBILITY = "v1.0.0"
"""DuckDB's ``storage_compatibility_version`` for the files paretune creates: DuckDB 1.0 and
every later release read them (checked in the tests with the 1.x command-line client). It
applies when a file is created; a file created in 2.x's format keeps it."""

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "READ_ONLY_SETTINGS",
    "ReadOnlyError",
    "check_read_only",
    "open_connection",
    "sql_error",
]

READ_ONLY_SETTINGS: dict[str, Any] = {
    # No file but the database itself (and its temporary folder), no URL, no ATTACH, no INSTALL.
    "enable_external_access": False,
    # A query naming an extension's function must not download or load that extension.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # Last: SET / RESET / PRAGMA cannot change any option after this.
    "lock_configuration": True,
}
"""DuckDB settings of every read-only connection (applied in this order)."""

_WRITE_HINT = "`paretune sql --write` runs it with DuckDB's full SQL."
_FILES_HINT = (
    "Read-only SQL sees the results file only: pass `paretune sql --allow-files DIR` to read "
    "Parquet/CSV/JSON files in DIR, `--out FILE` to save the rows, or `--write` for full access."
)
_UNPREPARED_HINT = "Run the statement itself, or with `paretune sql --write`."

# Leading keywords refused whatever statement type DuckDB files them under (CHECKPOINT is a
# CALL, IMPORT DATABASE and COPY FROM DATABASE are PRAGMAs): what it does, what to do instead.
_REFUSED_KEYWORDS: dict[str, tuple[str, str]] = {
    "COPY": ("COPY reads or writes files", "Save the rows with `paretune sql QUERY --out FILE`."),
    "EXPORT": ("EXPORT DATABASE writes files", "Save rows with `paretune sql QUERY --out FILE`."),
    "IMPORT": ("IMPORT DATABASE loads files into a database", _WRITE_HINT),
    "ATTACH": ("ATTACH opens another database file", _FILES_HINT),
    "DETACH": ("DETACH changes the attached databases", _WRITE_HINT),
    "INSTALL": ("INSTALL downloads an extension", _WRITE_HINT),
    "LOAD": ("LOAD loads an extension", _WRITE_HINT),
    "FORCE": ("FORCE INSTALL / FORCE CHECKPOINT download or rewrite files", _WRITE_HINT),
    "CHECKPOINT": ("CHECKPOINT rewrites the database file", _WRITE_HINT),
    "VACUUM": ("VACUUM rewrites the database file", _WRITE_HINT),
    "ANALYZE": ("ANALYZE updates the database's statistics", _WRITE_HINT),
    "PREPARE": ("PREPARE/EXECUTE runs a statement unchecked", _UNPREPARED_HINT),
    "EXECUTE": ("PREPARE/EXECUTE runs a statement unchecked", _UNPREPARED_HINT),
}

# CHECKPOINT is also a table function; on a read-only file it does nothing, still refused.
_CHECKPOINT_CALL = re.compile(r"(?<![\w.\"'])(force_)?checkpoint\s*\(", re.IGNORECASE)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN_PREFIX = re.compile(r"^EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


class ReadOnlyError(UserError):
    """A statement read-only SQL refuses: it would change a file, read one not allowed, or
    fetch something. The message names the statement; the hint says what to run instead."""

    title = "Read-only SQL"


def open_connection(
    path: str | Path | None, *, write: bool = False, allowed_dirs: Sequence[str | Path] = ()
) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (an in-memory database when None) read-only unless ``write``.

    Read-only connections carry :data:`READ_ONLY_SETTINGS`; ``allowed_dirs`` are folders whose
    files (and subfolders') SQL may read, DuckDB's ``allowed_directories``. DuckDB's own errors
    (a lock held by another process, a file that is not a database) propagate unchanged, so a
    caller can retry on them.
    """
    import duckdb

    database = ":memory:" if path is None else str(path)
    if write:
        return duckdb.connect(
            database, config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
        )
    read_only = path is not None  # DuckDB cannot open an in-memory database read-only
    if not allowed_dirs:
        return duckdb.connect(database, read_only=read_only, config=READ_ONLY_SETTINGS)
    # DuckDB takes allowed_directories only once the database has started and only while
    # external access is on: open without the lock, set the folders, then lock down.
    settings = {k: v for k, v in READ_ONLY_SETTINGS.items() if k.startswith("auto")}
    connection = duckdb.connect(database, read_only=read_only, config=settings)
    try:
        connection.execute("SET allowed_directories = ?", [_folders(allowed_dirs)])
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def _folders(allowed_dirs: Sequence[str | Path]) -> list[str]:
    # Both the path as given (as SQL will name it) and with links resolved, each once.
    folders: list[str] = []
    for folder in allowed_dirs:
        for form in (Path(folder).absolute(), Path(folder).resolve()):
            if str(form) not in folders:
                folders.append(str(form))
    return folders


def check_read_only(sql: str) -> None:
    """Raise :class:`ReadOnlyError` if any statement of ``sql`` is one read-only SQL refuses.

    A statement DuckDB cannot parse raises :class:`~sweeps.results.store.SqlError` with
    DuckDB's message, as running it would.
    """
    import duckdb

    try:
        statements = [(s.query, s.type) for s in duckdb.extract_statements(sql)]
    except duckdb.Error as error:
        raise sql_error(error) from None
    except ValueError:  # a statement type this duckdb's Python API cannot name (UPDATE EXTENSIONS)
        raise ReadOnlyError(
            "read-only SQL refuses a statement of a type it does not know.", _WRITE_HINT
        ) from None
    for text, kind in statements:
        _check_statement(text, kind)


def _check_statement(text: str, kind: Any) -> None:
    import duckdb

    text = _LEADING_NOISE.sub("", text)
    keyword = (text.split(None, 1) or [""])[0].upper().rstrip(";")
    if keyword in _REFUSED_KEYWORDS:
        what, hint = _REFUSED_KEYWORDS[keyword]
        raise ReadOnlyError(f"read-only SQL refuses this statement: {what}.", hint)
    if _CHECKPOINT_CALL.search(text):
        what, hint = _REFUSED_KEYWORDS["CHECKPOINT"]
        raise ReadOnlyError(f"read-only SQL refuses this statement: {what}.", hint)
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs what it explains: check that statement as if it stood alone.
        explained = _EXPLAIN_PREFIX.sub("", text, count=1)
        if explained == text:
            raise ReadOnlyError("read-only SQL cannot tell what this EXPLAIN runs.", _WRITE_HINT)
        check_read_only(explained)
        return
    if kind not in _allowed_types():
        name = getattr(kind, "name", str(kind))
        raise ReadOnlyError(f"read-only SQL refuses statements of type {name}.", _WRITE_HINT)


@functools.cache
def _allowed_types() -> frozenset[Any]:
    import duckdb

    kinds = duckdb.StatementType
    # Changes to the read-only file itself fail in DuckDB ("attached in read-only mode") and
    # temporary tables live in memory, so data statements may run; SET fails on the lock.
    return frozenset(
        {
            kinds.SELECT,
            kinds.PRAGMA,
            kinds.CALL,
            kinds.SET,
            kinds.VARIABLE_SET,
            kinds.TRANSACTION,
            kinds.CREATE,
            kinds.CREATE_FUNC,
            kinds.DROP,
            kinds.ALTER,
            kinds.INSERT,
            kinds.UPDATE,
            kinds.DELETE,
            kinds.MERGE_INTO,
            kinds.MULTI,
        }
    )


def sql_error(error: duckdb.Error) -> UserError:
    """The user error to raise for a DuckDB error from a read-only query: DuckDB's message and
    a hint.

    Refusals of the read-only settings (a file outside the allowed folders, an extension, a
    locked option) become :class:`ReadOnlyError`; anything else
    :class:`~sweeps.results.store.SqlError`.
    """
    from sweeps.results.store import SqlError

    message = str(error).strip()
    refusal = _refusal(message)
    if refusal is not None:
        # DuckDB's first line names the file or option; the query excerpt under it adds nothing.
        return ReadOnlyError(message.splitlines()[0], refusal)
    if "does not exist" in message and ("Table" in message or "table" in message):
        return SqlError(
            message,
            "Tables: studies, trials, steps; views: frontier, calibration "
            "(docs/reference/schema.md lists every column).",
        )
    return SqlError(message)


def _refusal(message: str) -> str | None:
    """The hint for a DuckDB error that is a read-only refusal, else None."""
    lowered = message.lower()
    if "file system operations are disabled" in lowered:
        return _FILES_HINT
    if "extensions is disabled" in lowered or "not in the catalog, but it exists" in lowered:
        return "Read-only SQL loads no extension. " + _WRITE_HINT
    if "configuration has been locked" in lowered:
        return "Read-only SQL cannot change settings. " + _WRITE_HINT
    if "read-only" in lowered:
        return "Read-only SQL does not change the file. " + _WRITE_HINT
    return None
