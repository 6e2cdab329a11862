"""A program holding the results file open (a ``duckdb`` shell, a notebook) never stalls a sweep."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import load_spec_study, paretune, start, write_demo_spec

from sweeps.results.store import ResultsStore
from sweeps.spec import load_spec
from sweeps.worker import Sweep

pytestmark = pytest.mark.slow


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process with a read-write connection open on ``path`` until its stdin closes."""
    code = textwrap.dedent(f"""
        import duckdb, sys
        c = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        sys.stdin.read()
        c.close()
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    holder.stdin.close()
    holder.wait(timeout=30)


def _wait_for(condition, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if condition():
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_reader_holding_the_results_file_does_not_stall_the_sweep(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "held", trials=3, save="all")
    results = tmp_path / "results.duckdb"
    holder = _hold_lock(results)  # before the sweep: its study row and first trial meet it
    sweep = start("sweep", "run", str(spec), "--no-check")
    try:

        def second_trial_running() -> bool:
            trials = load_spec_study(spec).get_trials(deepcopy=False)
            return len(trials) >= 2 and "config" in trials[1].user_attrs

        _wait_for(second_trial_running, sweep, timeout=240)
        assert holder.poll() is None  # the lock was held all along
        first, second = load_spec_study(spec).get_trials(deepcopy=False)[:2]
        assert first.state == optuna.trial.TrialState.COMPLETE
        # The first trial's write met the lock and did not wait for it (it would wait 30 s).
        gap = (second.datetime_start - first.datetime_complete).total_seconds()
        assert gap < 10, f"{gap:.1f} s between the first trial's end and the second's start"
    finally:
        _release(holder)
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out

    flat = " ".join(out.split())  # the console wraps long lines at its width
    deferred = re.search(r"(\d+) writes? to the results file \S+ were deferred because", flat)
    assert deferred, out
    assert int(deferred.group(1)) >= 2  # the study row and the first trial's row at least
    assert "held it; the final sync wrote every trial" in flat
    assert flat.count("deferred because another") == 1  # said once
    study = load_spec_study(spec)
    rows = ResultsStore(results).trials("held")
    assert [(r["number"], r["state"]) for r in rows] == [
        (t.number, "complete") for t in study.get_trials(deepcopy=False)
    ]
    assert len(rows) == 3 and all(r["eval_nll"] is not None for r in rows)
    assert [s["study"] for s in ResultsStore(results).studies()] == ["held"]


def test_a_file_still_locked_at_the_end_names_the_sync_command(demo, tmp_path: Path) -> None:
    spec = load_spec(write_demo_spec(tmp_path, "locked", trials=1))
    results = tmp_path / "results.duckdb"
    holder = _hold_lock(results)
    try:
        sweep = Sweep.open(spec, max_trials=0)  # its study row meets the lock: deferred
        sweep.store = ResultsStore(results, lock_timeout_s=1.0)  # the final wait, shortened
        started = time.monotonic()
        sweep.run()
        assert time.monotonic() - started < 20
    finally:
        _release(holder)
    [line] = [e for e in sweep.state.events if "deferred" in e]
    assert line.startswith("2 writes to the results file")  # the study row, the final sync
    assert "still locked at the end of the sweep" in line
    assert f"`paretune results sync --storage {spec.storage_url} --db {results}`" in line
    assert sweep.deferred_writes == 2
    # The command it names imports the study once the file is free.

    synced = paretune("results", "sync", "--storage", spec.storage_url, "--db", str(results))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert [s["study"] for s in ResultsStore(results).studies()] == ["locked"]
