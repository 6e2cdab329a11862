"""Read-only SQL changes nothing on disk and fetches nothing: `paretune sql` and the SQL screen.

A real Optuna journal (JournalStorage), the results file synced from it, an unrelated DuckDB
file, a hard link to the results file and a folder of the user's CSV files live in one folder
with HOME; every statement that could write, read elsewhere or download is run through the
command line (a subprocess) and the SQL screen (the app under ``run_test``), and afterwards
every file in that folder is byte-identical and no file or folder (``~/.duckdb``) appeared.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import journal_study

from sweeps.results.readonly import READ_ONLY_SETTINGS, ReadOnlyError, open_connection
from sweeps.results.store import ResultsStore, SqlError
from tui.app import ParetuneApp
from tui.db import query_arrow
from tui.widgets import ErrorLine

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readonly")
    study = journal_study(folder, "demo")  # demo.journal, written by Optuna's JournalStorage
    ResultsStore(folder / "results.duckdb").sync_study(study, storage=str(folder / "demo.journal"))
    os.link(folder / "results.duckdb", folder / "link.duckdb")
    with duckdb.connect(str(folder / "other.duckdb")) as connection:
        connection.execute("CREATE TABLE t AS SELECT range AS i FROM range(10)")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("a,b\n1,2\n3,4\n")
    with duckdb.connect(str(folder / "data" / "d.duckdb")) as connection:
        connection.execute("CREATE TABLE t AS SELECT 1 AS i")
    (folder / "home").mkdir()
    return folder


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file's SHA-256 and every folder under ``folder``, by relative path."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def unchanged(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the test with HOME in ``folder`` and cwd ``folder``; then nothing there has changed."""
    monkeypatch.setenv("HOME", str(folder / "home"))
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    yield folder
    assert _snapshot(folder) == before
    assert not (folder / "home" / ".duckdb").exists()


# (statement, words the error must contain). {f} is the folder, relative paths start there.
REFUSED: list[tuple[str, str]] = [
    ("COPY (SELECT 'garbage') TO '{f}/demo.journal' (FORMAT csv, HEADER false)", "COPY"),
    ("COPY trials TO 'trials.csv'", "COPY"),
    ("EXPORT DATABASE '{f}/exported'", "EXPORT DATABASE"),
    ("IMPORT DATABASE '{f}/data'", "IMPORT DATABASE"),
    ("ATTACH '{f}/other.duckdb' AS o (READ_WRITE); DELETE FROM o.t", "ATTACH"),
    ("ATTACH '{f}/link.duckdb' AS l (READ_WRITE); DELETE FROM l.trials", "ATTACH"),
    ("ATTACH '{f}/new.duckdb' AS n; CREATE TABLE n.t (i INT)", "ATTACH"),
    ("DETACH results", "DETACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("FORCE INSTALL httpfs", "FORCE INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("UPDATE EXTENSIONS", "does not know"),
    ("SET threads = 1", "locked"),
    ("SET enable_external_access = true", "locked"),
    ("RESET lock_configuration", "locked"),
    ("PRAGMA enable_profiling", "locked"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("FORCE CHECKPOINT", "CHECKPOINT"),
    ("CALL checkpoint()", "CHECKPOINT"),
    ("SELECT * FROM checkpoint()", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("ANALYZE", "ANALYZE"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_text('/proc/self/environ')", "file system operations are disabled"),
    ("SELECT * FROM read_csv('{f}/data/x.csv')", "file system operations are disabled"),
    ("SELECT * FROM glob('{f}/*')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('https://example.com/a.parquet')", "file system operations"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{f}/explained.csv'", "COPY"),
    ("PREPARE p AS COPY (SELECT 1) TO '{f}/prepared.csv'; EXECUTE p", "PREPARE"),
    ("SELECT 1; COPY (SELECT 1) TO '{f}/second.csv'", "COPY"),
    ("/* a comment */ -- and another\nCOPY (SELECT 1) TO '{f}/commented.csv'", "COPY"),
    ("DELETE FROM trials", "read-only"),
    ("CREATE TABLE notes (i INT)", "read-only"),
]

# Statements refused even with --allow-files data: writing there or opening a database there.
REFUSED_WITH_FILES: list[tuple[str, str]] = [
    ("COPY (SELECT 1) TO '{f}/data/y.csv'", "COPY"),
    ("COPY (SELECT 'garbage') TO '{f}/data/x.csv' (FORMAT csv)", "COPY"),
    ("EXPORT DATABASE '{f}/data/exported'", "EXPORT DATABASE"),
    ("ATTACH '{f}/data/d.duckdb' AS d (READ_WRITE); DELETE FROM d.t", "ATTACH"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{f}/data/e.csv'", "COPY"),
    ("PREPARE p AS COPY (SELECT 1) TO '{f}/data/p.csv'; EXECUTE p", "PREPARE"),
    ("SELECT * FROM read_text('{f}/data/../demo.journal')", "file system operations"),
    ("SELECT * FROM read_text('{f}/other.duckdb')", "file system operations"),
    ("SELECT * FROM read_text('/etc/passwd')", "file system operations"),
]


def _paretune(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(folder / "home"),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "sql", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env=env,
    )


@pytest.mark.parametrize(("statement", "words"), REFUSED, ids=[s for s, _ in REFUSED])
def test_cli_refuses(unchanged: Path, statement: str, words: str) -> None:
    done = _paretune(unchanged, statement.format(f=unchanged), "--db", "results.duckdb")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert words.lower() in done.stderr.lower()
    # One paragraph: the error, then the hint that says what to run instead.
    assert done.stderr.startswith("Error: ") and "paretune sql" in done.stderr


@pytest.mark.parametrize(
    ("statement", "words"), REFUSED_WITH_FILES, ids=[s for s, _ in REFUSED_WITH_FILES]
)
def test_cli_allow_files_only_reads_that_folder(
    unchanged: Path, statement: str, words: str
) -> None:
    query = statement.format(f=unchanged)
    done = _paretune(unchanged, query, "--db", "results.duckdb", "--allow-files", "data")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and words.lower() in done.stderr.lower()


def test_cli_allow_files_reads_csv_beside_the_results(unchanged: Path) -> None:
    query = "SELECT sum(b) AS total FROM read_csv('data/*.csv')"
    refused = _paretune(unchanged, query, "--db", "results.duckdb", "--format", "csv")
    assert refused.returncode == 2 and "--allow-files" in refused.stderr
    for folder in ("data", str(unchanged / "data")):
        done = _paretune(
            unchanged, query, "--db", "results.duckdb", "--format", "csv", "--allow-files", folder
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["total", "6"]
    joined = _paretune(
        unchanged,
        "SELECT t.number, x.a FROM trials t JOIN read_csv('data/x.csv') x ON t.number + 1 = x.a "
        "ORDER BY 1",
        "--db",
        "results.duckdb",
        "--format",
        "csv",
        "--allow-files",
        "data",
    )
    assert joined.returncode == 0 and joined.stdout.splitlines() == ["number,a", "0,1", "2,3"]


def test_cli_selects_and_views_still_work(unchanged: Path) -> None:
    trials = _paretune(
        unchanged, "SELECT count(*) AS n FROM trials", "--format", "csv", "--db", "results.duckdb"
    )
    assert trials.returncode == 0 and trials.stdout.splitlines() == ["n", "4"]
    frontier = _paretune(
        unchanged,
        "SELECT number FROM frontier ORDER BY number",
        "--db",
        "results.duckdb",
        "--format",
        "csv",
    )
    assert frontier.returncode == 0 and frontier.stdout.splitlines() == ["number", "0", "1"]
    calibration = _paretune(unchanged, "SELECT * FROM calibration", "--db", "results.duckdb")
    assert calibration.returncode == 0, calibration.stderr
    for query in ("EXPLAIN ANALYZE SELECT count(*) FROM trials", "DESCRIBE trials", "SHOW TABLES"):
        done = _paretune(unchanged, query, "--db", "results.duckdb")
        assert done.returncode == 0, (query, done.stderr)
    temp = _paretune(
        unchanged,
        "CREATE TEMP TABLE m AS SELECT max(number) AS top FROM trials; SELECT top FROM m",
        "--db",
        "results.duckdb",
        "--format",
        "csv",
    )
    assert temp.returncode == 0 and temp.stdout.splitlines() == ["top", "3"]


def test_cli_out_is_written_by_paretune(folder: Path, tmp_path: Path) -> None:
    before = _snapshot(folder)
    out = tmp_path / "rows.json"
    done = _paretune(
        folder,
        "SELECT number FROM frontier ORDER BY number",
        "--db",
        "results.duckdb",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().count('"number"') == 2 and f"wrote 2 rows to {out}" in done.stderr
    assert _snapshot(folder) == before


def test_cli_write_keeps_full_sql(folder: Path, tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "copy.duckdb"
    shutil.copy(folder / "results.duckdb", db)
    done = _paretune(
        folder, "CREATE TABLE notes AS SELECT 'kept' AS note", "--db", str(db), "--write"
    )
    assert done.returncode == 0, done.stderr
    copied = _paretune(
        folder, f"COPY notes TO '{tmp_path / 'notes.csv'}'", "--db", str(db), "--write"
    )
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "notes.csv").read_text().splitlines() == ["note", "kept"]
    both = _paretune(folder, "SELECT 1", "--db", str(db), "--write", "--allow-files", "data")
    assert both.returncode == 2 and "--allow-files" in both.stderr


def test_the_settings_are_on_every_read_only_connection(folder: Path) -> None:
    names = ", ".join(f"current_setting('{name}')" for name in READ_ONLY_SETTINGS)
    for path, dirs in (
        (folder / "results.duckdb", ()),
        (None, ()),
        (folder / "results.duckdb", [folder / "data"]),
    ):
        connection = open_connection(path, allowed_dirs=dirs)
        try:
            assert connection.execute(f"SELECT {names}").fetchone() == tuple(
                READ_ONLY_SETTINGS.values()
            )
            allowed = connection.execute(
                "SELECT current_setting('allowed_directories')"
            ).fetchone()[0]
            assert (str(folder / "data") + "/" in allowed) == bool(dirs)
        finally:
            connection.close()


# -- the SQL screen (the app, on the results file and on its in-memory fallback) ----------------


async def _run_sql(pilot, sql: str) -> None:
    pilot.app.screen.query_one("#editor").text = sql
    await pilot.press("ctrl+r")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize(
    "db", ["results.duckdb", "missing.duckdb"], ids=["results-file", "in-memory"]
)
async def test_sql_screen_refuses_inline(unchanged: Path, db: str) -> None:
    app = ParetuneApp(db=unchanged / db, start="sql")
    async with app.run_test(size=(120, 40)) as pilot:
        error = app.screen.query_one("#sql-error", ErrorLine)
        for statement, words in REFUSED:
            if db == "missing.duckdb" and words == "read-only":
                continue  # the in-memory database has no results to protect: CREATE may run there
            await _run_sql(pilot, statement.format(f=unchanged))
            shown = str(error.render())
            assert error.shown, statement
            assert words.lower() in shown.lower() and "Traceback" not in shown, (statement, shown)
        await _run_sql(pilot, "SELECT 42 AS answer")
        assert not error.shown and app.screen.result.to_pylist() == [{"answer": 42}]
        if db == "results.duckdb":
            await _run_sql(pilot, "SELECT number FROM frontier ORDER BY number")
            assert app.screen.result.to_pylist() == [{"number": 0}, {"number": 1}]
            await _run_sql(pilot, "SELECT * FROM calibration")
            assert not error.shown


def test_query_arrow_raises_user_errors(unchanged: Path) -> None:
    for db in (unchanged / "results.duckdb", None):
        with pytest.raises(ReadOnlyError, match="COPY"):
            query_arrow(db, f"COPY (SELECT 1) TO '{unchanged}/demo.journal'")
        with pytest.raises(ReadOnlyError, match="file system operations"):
            query_arrow(db, "SELECT * FROM read_text('/etc/passwd')")
        with pytest.raises(SqlError, match="syntax error"):
            query_arrow(db, "SELEC 1")
    assert query_arrow(
        unchanged / "results.duckdb", "SELECT count(*) AS n FROM frontier"
    ).to_pylist() == [{"n": 2}]
