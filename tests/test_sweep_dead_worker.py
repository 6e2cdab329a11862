"""A worker that reaches the budget while another worker's trial runs waits for it, on a
journal file: the other worker, on the same machine, is killed mid-trial and found dead by
its pid, and the waiting worker runs the lost trial, so the study ends with exactly its budget.

The PostgreSQL case, with the dying worker under another host name so that only its
heartbeat can show its death, is in test_sweep_postgres.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import psutil
import pytest
from conftest import (
    OutputWatcher,
    hold_children,
    load_spec_study,
    start,
    wait_for_running_trial,
    write_demo_spec,
)

pytestmark = pytest.mark.slow


def test_a_worker_at_the_budget_waits_for_a_dead_local_workers_trial_and_runs_it(
    demo, tmp_path: Path
) -> None:
    spec = write_demo_spec(tmp_path, "wait", trials=4, save="none")
    # The victim's trial is held (SIGSTOP) while the survivor runs its three: a long limit.
    spec.write_text(spec.read_text().replace("timeout_s = 300", "timeout_s = 1800"))
    journal = str(tmp_path / "runs" / "wait.journal")
    victim = survivor = None
    try:
        victim = start("sweep", "worker", str(spec), "--storage", journal, "--no-check")
        lost = wait_for_running_trial(spec, victim)
        held = hold_children(victim)  # its worker lives on; the trial cannot finish

        survivor = start("sweep", "worker", str(spec), "--storage", journal, "--no-check")
        watcher = OutputWatcher(survivor)
        # The survivor runs its three and reaches the budget with the held trial running.
        waited = watcher.wait_for("waiting for 1 running trial")
        os.killpg(victim.pid, signal.SIGKILL)  # dies mid-trial
        for child in held:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        victim.wait()

        output = watcher.finish()
        flat = " ".join(output.split())  # lines wrap at the terminal width
        assert survivor.returncode == 0, output
        trials = load_spec_study(spec).get_trials(deepcopy=False)
        states = [t.user_attrs.get("state") for t in trials]
        assert states.count("complete") == 4, states
        assert states[lost] == "lost"
        assert "running" not in states and None not in states
        rerun = [t for t in trials if t.user_attrs.get("retry_of") == lost]
        assert len(rerun) == 1 and rerun[0].user_attrs["state"] == "complete"
        assert rerun[0].params == trials[lost].params
        assert rerun[0].user_attrs["worker_pid"] == survivor.pid

        assert waited, output  # it did not conclude at "4 of 4" with the trial still running
        assert "trial budget reached (4 of 4); waiting for 1 running trial" in flat, output
        assert f"#{lost} on host {socket.gethostname()}, pid {victim.pid}" in flat, output
        assert f"re-queued trial(s) [{lost}] left running by a dead worker" in flat, output
    finally:
        for process in (victim, survivor):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
