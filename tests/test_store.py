"""The DuckDB results store on real files: schema, idempotent sync, locks, corruption."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import journal_study

from sweeps.results.schema import TRIALS
from sweeps.results.store import ResultsLockedError, ResultsStore, SqlError, StoreError


def test_sync_is_idempotent_and_typed(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    store = ResultsStore(tmp_path / "r.duckdb")
    assert store.sync_study(study) == 4
    assert store.sync_study(study) == 4
    _, rows = store.query("SELECT count(*), count(DISTINCT number) FROM trials")
    assert rows == [(4, 4)]
    trials = store.trials("s")
    assert [t["state"] for t in trials] == ["complete", "complete", "complete", "oom"]
    assert trials[0]["eval_nll"] == 1.0 and trials[0]["rank"] == 4 and trials[1]["rank"] is None
    assert trials[0]["torch_version"] == "2.13.0"
    assert trials[3]["error"] == "CUDA out of memory"
    assert [s["step"] for s in store.steps("s", 0)] == [1, 2]
    assert [t["number"] for t in store.frontier("s")] == [0, 1]  # trial 2 is dominated by 0
    assert store.studies()[0]["frontier_size"] == 2
    types = dict(
        store.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'trials'"
        )[1]
    )
    assert types["eval_nll"] == "DOUBLE" and types["rank"] == "INTEGER"
    assert set(types) == set(TRIALS.names)
    _, calibration = store.query("SELECT count(*) FROM calibration")
    assert calibration == [(0,)]  # no predictions in these rows


def test_many_trials_go_in_at_once_exactly_as_one_by_one(tmp_path: Path) -> None:
    """A study's trials written as one Arrow insert (more than 20 rows) read back exactly as
    the same rows written the slow way (a parameter per cell): JSON, timestamps, booleans,
    big integers and NULLs included."""
    from datetime import datetime

    from sweeps.results.store import trial_rows

    rows, _ = trial_rows(journal_study(tmp_path))
    many = [
        {
            **rows[i % len(rows)],
            "number": i,
            "use_rslora": [True, False, None][i % 3],
            "tokens": 2**40 + i,
            "finished_at": datetime(2026, 1, 2, 3, 4, 5, 678901),
            "rungs": [{"step": 10, "eval_nll": 1.5, "continues": i % 2 == 0}],
            "params": {"lr": 1e-3 * (i + 1), "method": "lora"},
        }
        for i in range(45)
    ]
    bulk, slow = ResultsStore(tmp_path / "bulk.duckdb"), ResultsStore(tmp_path / "slow.duckdb")
    bulk.write_trials(many)
    for start in range(0, len(many), 15):  # 20 rows or fewer: one parameter per cell
        slow.write_trials(many[start : start + 15])
    query = "SELECT * FROM trials ORDER BY number"
    assert bulk.query(query) == slow.query(query)
    assert bulk.trials("s")[7]["tokens"] == 2**40 + 7


def test_query_is_read_only_unless_write(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    store.sync_study(journal_study(tmp_path))
    with pytest.raises(SqlError) as caught:
        store.query("DELETE FROM trials")
    assert "read-only" in caught.value.message.lower() and "--write" in caught.value.hint
    store.query("DELETE FROM trials WHERE number = 3", write=True)
    assert store.query("SELECT count(*) FROM trials")[1] == [(3,)]
    with pytest.raises(SqlError, match="syntax error"):
        store.query("SELEC 1")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no results file"):
        ResultsStore(tmp_path / "none.duckdb").query("SELECT 1")
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"not a database" * 500)
    before = corrupt.read_bytes()
    for call in (lambda s: s.query("SELECT 1"), lambda s: s.sync_study(journal_study(tmp_path))):
        with pytest.raises(StoreError) as caught:
            call(ResultsStore(corrupt))
        assert "not a readable DuckDB database" in caught.value.message
        assert "results sync" in caught.value.hint
    assert corrupt.read_bytes() == before  # never overwritten


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        c = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
        c.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_reader_waits_for_a_writer_then_reads(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=30)
    store.sync_study(journal_study(tmp_path))
    holder = _hold_lock(store.path, 1.5)
    try:
        assert store.query("SELECT count(*) FROM trials")[1] == [(4,)]
    finally:
        holder.wait()


def test_reader_in_the_writers_process_waits_for_the_write_connection(tmp_path: Path) -> None:
    """DuckDB refuses a read-only connection while the same process holds a writing one (a
    sweep's progress thread writing while its UI reads): the reader waits, then reads."""
    import threading

    import duckdb

    store = ResultsStore(tmp_path / "r.duckdb")
    store.ensure_schema()
    opened, release = threading.Event(), threading.Event()

    def write_for_a_moment() -> None:
        with store.connect(write=True) as connection:
            connection.execute("INSERT INTO studies (study) VALUES ('held')")
            opened.set()
            release.wait(5)

    writer = threading.Thread(target=write_for_a_moment)
    writer.start()
    assert opened.wait(10)
    with pytest.raises(duckdb.Error, match="same database"):  # what the store has to handle
        duckdb.connect(str(store.path), read_only=True)
    threading.Timer(0.3, release.set).start()
    assert store.query("SELECT study FROM studies")[1] == [("held",)]
    writer.join()


def test_a_long_loss_curve_round_trips_exactly(tmp_path: Path) -> None:
    """Thousands of steps go in as one Arrow insert: same values, NULLs kept, ints stay ints."""
    store = ResultsStore(tmp_path / "r.duckdb")
    steps = [
        {
            "study": "s",
            "number": 0,
            "step": i,
            "epoch": i / 3000,
            "loss": 1.0 / i,
            "lr": 2e-4,
            "tokens_per_s": 1234.5,
            "peak_gb": 0.25,
            "eval_nll": 0.5 + 1 / i if i % 100 == 0 else None,
        }
        for i in range(1, 3001)
    ]
    store.write_trials(
        [{"study": "s", "number": 0, "state": "complete", "steps_done": 3000}], steps
    )
    back = store.steps("s", 0)
    assert [(r["step"], r["loss"], r["eval_nll"]) for r in back] == [
        (r["step"], r["loss"], r["eval_nll"]) for r in steps
    ]
    types = dict(
        store.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'steps'"
        )[1]
    )
    assert types["step"] == "INTEGER" and types["eval_nll"] == "DOUBLE"
    # A value that does not fit its column goes the slow way and fails as it always did.
    bad = [{**row, "number": 1} for row in steps[:30]]
    bad[5]["step"] = "five"
    with pytest.raises(Exception, match="five|Could not convert|Conversion"):
        store.write_trials([{"study": "s", "number": 1, "state": "complete"}], bad)
    assert len(store.steps("s", 0)) == 3000  # the earlier trial is untouched


def test_lock_held_too_long_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=0.5)
    store.sync_study(study)
    holder = _hold_lock(store.path, 30)
    try:
        with pytest.raises(ResultsLockedError) as caught:
            store.sync_study(study)
        assert "locked by another process" in caught.value.message
        assert "PID" in caught.value.message
    finally:
        holder.kill()
        holder.wait()
    assert store.sync_study(study) == 4  # the Optuna storage still has every result
    assert store.query("SELECT count(*) FROM trials")[1] == [(4,)]
