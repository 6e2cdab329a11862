"""A results file opens in the DuckDB clients users have: the 1.x command-line client
(the ``duckdb-cli`` package of the dev extra) reads the tables and every view."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import journal_study

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
