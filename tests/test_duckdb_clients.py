"""A results file opens in the DuckDB clients users have: the 1.x command-line client
(the ``duckdb-cli`` package of the dev extra) reads the tables and every view."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import journal_study, paretune

from sweeps.results.schema import VIEWS
from sweeps.results.store import ResultsStore


def _cli() -> str:
    found = shutil.which("duckdb", path=str(Path(sys.executable).parent)) or shutil.which("duckdb")
    if found is None:
        pytest.skip("the DuckDB command-line client (pip install duckdb-cli) is not installed")
    return found


def _ask(cli: str, path: Path, sql: str) -> str:
    done = subprocess.run(
        [cli, "-readonly", "-csv", "-noheader", str(path), "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_duckdb_1x_client_reads_the_results_file(tmp_path: Path) -> None:
    cli = _cli()
    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("v1."), version  # the client users have, not 2.x
    path = tmp_path / "results.duckdb"
    store = ResultsStore(path)
    assert store.sync_study(journal_study(tmp_path)) == 4
    before = path.read_bytes()
    assert _ask(cli, path, "SELECT count(*) FROM trials") == "4"
    assert _ask(cli, path, "SELECT state, count(*) FROM trials GROUP BY ALL ORDER BY 1") == (
        "complete,3\noom,1"
    )
    # Trial 2 is dominated by trial 0: the frontier view, as 2.x computes it.
    assert _ask(cli, path, "SELECT list(number ORDER BY number) FROM frontier") == '"[0, 1]"'
    assert _ask(cli, path, "SELECT count(*) FROM calibration") == "0"
    for view in VIEWS:  # every view runs in the 1.x client
        _ask(cli, path, f"SELECT * FROM {view.name}")
    assert path.read_bytes() == before  # read-only: the client changed nothing


def test_results_upgrade_rewrites_a_duckdb2_file_for_1x_clients(tmp_path: Path) -> None:
    """A file made in DuckDB 2's own format (as paretune made them before it chose 1.0's):
    the 1.x client refuses it; `paretune results upgrade` rewrites it, every row and view
    kept, and keeps the original as a backup; a second upgrade changes nothing."""
    import duckdb

    cli = _cli()
    path = tmp_path / "results.duckdb"
    duckdb.connect(str(path)).close()  # DuckDB 2's default storage format
    store = ResultsStore(path)
    assert store.sync_study(journal_study(tmp_path)) == 4
    assert store.storage_format().startswith("v2")
    refused = subprocess.run(
        [cli, "-readonly", str(path), "-c", "SELECT 1"], capture_output=True, text=True
    )
    assert refused.returncode != 0
    before = {view.name: store.query(f"SELECT * FROM {view.name}")[1] for view in VIEWS}
    steps_before = store.query("SELECT * FROM steps ORDER BY ALL")[1]

    done = paretune("results", "upgrade", "--db", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "duckdb2-backup" in done.stdout
    assert ResultsStore(path).storage_format().startswith("v1")
    assert _ask(cli, path, "SELECT count(*) FROM trials") == "4"
    after = ResultsStore(path)
    assert {view.name: after.query(f"SELECT * FROM {view.name}")[1] for view in VIEWS} == before
    assert after.query("SELECT * FROM steps ORDER BY ALL")[1] == steps_before
    backup = path.with_name(path.name + ".duckdb2-backup")
    assert ResultsStore(backup).storage_format().startswith("v2")
    assert ResultsStore(backup).query("SELECT count(*) FROM trials")[1] == [(4,)]
    assert not list(tmp_path.glob("*.upgrading"))

    again = paretune("results", "upgrade", "--db", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "already readable" in again.stdout
    missing = paretune("results", "upgrade", "--db", str(tmp_path / "no.duckdb"), cwd=tmp_path)
    assert missing.returncode == 2 and "no results file" in missing.stderr
