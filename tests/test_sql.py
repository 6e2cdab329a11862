"""`paretune sql`, `results sync`, `sweep status` and `frontier` on real journal studies and DuckDB files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import journal_study as _journal_study


def _paretune(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_env(),
    )


def _env() -> dict[str, str]:
    import os

    root = str(Path(__file__).parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sql")
    _journal_study(folder, "s")
    db = folder / "r.duckdb"
    done = _paretune("results", "sync", "--storage", str(folder / "s.journal"), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "s: 4 trials" in done.stdout
    again = _paretune("results", "sync", "--storage", str(folder / "s.journal"), "--db", str(db))
    assert again.returncode == 0
    return db


def test_sql_formats(synced: Path) -> None:
    query = "SELECT number, state, eval_nll FROM trials ORDER BY number"
    as_json = _paretune("sql", query, "--db", str(synced), "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert rows[0] == {"number": 0, "state": "complete", "eval_nll": 1.0}
    assert len(rows) == 4  # sync twice: still one row per trial
    as_csv = _paretune("sql", query, "--db", str(synced), "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout)))[0] == ["number", "state", "eval_nll"]
    table = _paretune("sql", query, "--db", str(synced))
    assert "complete" in table.stdout and "(4 rows)" in table.stdout


def test_sql_parquet_export(synced: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "x.parquet"
    done = _paretune("sql", "SELECT * FROM frontier", "--db", str(synced), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).column("number").to_pylist() == [0, 1]


def test_sql_errors_exit_2_with_duckdbs_message(synced: Path) -> None:
    bad = _paretune("sql", "SELECT nope FROM trials", "--db", str(synced))
    assert bad.returncode == 2
    assert 'Referenced column "nope" not found' in bad.stderr and "Traceback" not in bad.stderr
    write = _paretune("sql", "DELETE FROM trials", "--db", str(synced))
    assert write.returncode == 2 and "--write" in write.stderr
    missing = _paretune("sql", "SELECT 1", "--db", str(synced.parent / "none.duckdb"))
    assert missing.returncode == 2 and "no results file" in missing.stderr


def test_status_and_frontier(synced: Path, tmp_path: Path) -> None:
    status = _paretune("sweep", "status", "s", "--db", str(synced), "--format", "json")
    assert status.returncode == 0, status.stderr
    [report] = json.loads(status.stdout)
    assert report["complete"] == 3 and report["failures"] == {"oom": 1}
    assert [t["number"] for t in report["frontier"]] == [0, 1] and report["hypervolume"] > 0
    text = _paretune("sweep", "status", "--db", str(synced))
    assert "Pareto-optimal trials" in text.stdout and "oom 1" in text.stdout
    unknown = _paretune("sweep", "status", "z", "--db", str(synced))
    assert unknown.returncode == 2 and "no study 'z'" in unknown.stderr
    out = tmp_path / "f.svg"
    chart = _paretune("frontier", "s", "--db", str(synced), "--out", str(out))
    assert chart.returncode == 0, chart.stderr
    assert "<svg" in out.read_text() and "frontier: trials #0, #1" in chart.stdout
    terminal = _paretune("frontier", "--db", str(synced), "--x", "cost")
    assert terminal.returncode == 0 and "lora" in terminal.stdout
    same = _paretune("frontier", "--db", str(synced), "--x", "quality")
    assert same.returncode == 2


def test_sync_from_a_missing_journal(tmp_path: Path) -> None:
    done = _paretune(
        "results",
        "sync",
        "--storage",
        str(tmp_path / "no.journal"),
        "--db",
        str(tmp_path / "r.duckdb"),
    )
    assert done.returncode == 2 and "no journal file" in done.stderr
