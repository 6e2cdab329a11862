"""Real demo sweeps end to end: the command line, real trials in child processes, a real
journal file and DuckDB file; OOM in the middle, kill -9 and resume, Ctrl-C, parallel workers.

Trials are kept tiny (a few optimizer steps of the bundled demo model) so the whole file
runs in a few minutes on two CPU cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import (
    hold_children,
    load_spec_study,
    paretune,
    start,
    wait_for_running_trial,
    write_demo_spec,
)

from sweeps.results.store import ResultsStore

pytestmark = pytest.mark.slow  # real demo sweeps: 20 s to a minute each


def states(study: optuna.Study) -> list[str]:
    return [
        t.user_attrs.get("state", t.state.name.lower()) for t in study.get_trials(deepcopy=False)
    ]


def spec_states(spec: Path) -> list[str]:
    """The states of the spec's trials; none while the sweep has not yet written its study
    (the journal file can exist a moment before the study's record is in it)."""
    try:
        return states(load_spec_study(spec))
    except KeyError:
        return []


def test_demo_sweep_end_to_end_with_an_oom_trial_in_the_middle(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "e2e", trials=4)
    # Create the study without launching, then queue an out-of-memory trial as trial 1.
    created = paretune("sweep", "run", str(spec), "--max-trials", "0", "--no-check")
    assert created.returncode == 0, created.stdout + created.stderr
    study = load_spec_study(spec)
    study.enqueue_trial({"method": "lora"})
    study.enqueue_trial({"method": "lora"}, user_attrs={"overrides": {"memory_limit_gb": 0.05}})

    done = paretune("sweep", "run", str(spec), "--gpus", "0,1")  # pinned, though trials run on CPU
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial budget reached (4 of 4)" in done.stdout
    study = load_spec_study(spec)
    assert states(study) == ["complete", "oom", "complete", "complete"]
    assert study.trials[1].state == optuna.trial.TrialState.FAIL
    assert study.trials[1].user_attrs["error"]

    store = ResultsStore(tmp_path / "results.duckdb")
    rows = store.trials("e2e")
    assert [r["state"] for r in rows] == states(study)
    complete = [r for r in rows if r["state"] == "complete"]
    assert all(
        r["eval_nll"] is not None and r["retain_delta_nll"] is not None and r["dollars"] > 0
        for r in complete
    )
    assert all(r["command"] and r["command"].startswith("paretune trial") for r in complete)
    assert store.steps("e2e", complete[0]["number"])  # the loss curve is stored
    # Artifact policy "frontier": exactly the Pareto-optimal trials keep their artifacts.
    front = {r["number"] for r in store.frontier("e2e")}
    assert front
    for row in complete:
        if row["number"] in front:
            assert row["artifact"] and Path(row["artifact"]).exists()
        else:
            assert row["artifact"] is None
    status = paretune("sweep", "status", "e2e", "--db", str(tmp_path / "results.duckdb"))
    assert "oom 1" in status.stdout and "3 complete of 4" in status.stdout
    assert {r["cuda_visible_devices"] for r in rows} == {"0", "1"}


def test_kill_9_mid_trial_then_resume(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "killed", trials=2, save="none")
    first = start("sweep", "run", str(spec), "--no-check")
    # Let one trial complete, then kill the worker while the next one trains.
    deadline = time.monotonic() + 240
    while not (tmp_path / "runs" / "killed.journal").exists() or "complete" not in spec_states(
        spec
    ):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.3)
    victim = wait_for_running_trial(spec, first)
    store = ResultsStore(tmp_path / "results.duckdb")
    while not any(
        r["number"] == victim and r["state"] == "running" for r in store.trials("killed")
    ):
        assert time.monotonic() < deadline, "the running trial never reached the results file"
        time.sleep(0.2)
    children = hold_children(first)  # every descendant, even one forked just now
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    for child in children:  # a trial process in its own session survives its parent's group
        if child.is_running():
            child.kill()
    completed_before = {
        t.number for t in load_spec_study(spec).trials if t.user_attrs.get("state") == "complete"
    }
    assert (
        load_spec_study(spec).trials[victim].state == optuna.trial.TrialState.RUNNING
    )  # the zombie

    resumed = paretune("sweep", "run", str(spec), "--no-check")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load_spec_study(spec)
    trials = study.trials
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    assert trials[victim].user_attrs["state"] == "lost"
    assert completed_before <= {t.number for t in trials if t.user_attrs.get("state") == "complete"}
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim]
    assert len(retries) == 1 and retries[0].user_attrs["state"] == "complete"
    assert retries[0].params == trials[victim].params
    assert sum(t.user_attrs.get("state") == "complete" for t in trials) == 2  # the study finished
    rows = store.trials("killed")
    assert [r["state"] for r in rows] == states(study)  # the dead trial's "running" row is "lost"


def _exited_unreaped(process: subprocess.Popen[str], timeout: float) -> bool:
    """Wait until ``process`` exits, without reaping it: until it is waited for, its pid and
    process group id cannot be reused, so what is left in its group is what it left behind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
            return True
        time.sleep(0.1)
    return False


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _in_group(pgid: int, but: int) -> list[psutil.Process]:
    """Live processes of process group ``pgid``, other than ``but``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != but and os.getpgid(process.pid) == pgid:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return _alive(found)


def test_ctrl_c_leaves_nothing_running_and_rerun_resumes(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "ctrlc", trials=1, save="none")
    first = start("sweep", "run", str(spec), "--no-check")
    victim = wait_for_running_trial(spec, first)
    # While the trial trains: its own process (in a session of its own, which a Ctrl-C of the
    # terminal does not reach) and the warm-start server's (in the sweep's process group).
    descendants = psutil.Process(first.pid).children(recursive=True)
    assert descendants
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(first.stdout.read()), daemon=True)
    reader.start()
    os.killpg(first.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert _exited_unreaped(first, timeout=120), "the sweep did not stop after Ctrl-C"
    try:
        left = {p.pid: p for p in _alive(descendants) + _in_group(first.pid, but=first.pid)}
        assert not left, f"left running after Ctrl-C: processes {sorted(left)}"
    finally:
        for process in _alive(descendants):  # a failed check must not leak a training process
            process.kill()
        first.wait()
    reader.join(timeout=30)
    assert first.returncode == 130, output
    assert "no trial left running" in output[0]
    study = load_spec_study(spec)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    assert study.trials[victim].user_attrs["state"] == "interrupted"

    resumed = paretune("sweep", "run", str(spec), "--no-check")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = load_spec_study(spec).trials
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim)
    assert retry.number == victim + 1 and retry.params == trials[victim].params  # run first
    assert sum(t.user_attrs.get("state") == "complete" for t in trials) == 1


def test_two_journal_workers_share_one_study(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "pair", trials=2, save="none")
    journal = str(tmp_path / "runs" / "pair.journal")
    workers = [
        start("sweep", "worker", str(spec), "--storage", journal, "--no-check") for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = load_spec_study(spec).trials
    assert [t.user_attrs["state"] for t in trials] == ["complete"] * 2  # exactly the budget
    pids = {t.user_attrs["worker_pid"] for t in trials}
    assert pids == {w.pid for w in workers}  # both took part
