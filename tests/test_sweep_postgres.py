"""Three `paretune sweep worker` processes on one study in the real PostgreSQL server.

The server is named by PARETUNE_TEST_POSTGRES_URL (default: the local one at 127.0.0.1:5432,
database `test`). Without a server the test skips and says why, unless
PARETUNE_REQUIRE_POSTGRES=1 (set by .ci/run), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import (
    OutputWatcher,
    cli_env,
    hold_children,
    paretune,
    start,
    wait_for_running_trial,
    write_demo_spec,
)
from sqlalchemy import text

from sweeps.results.store import ResultsStore
from sweeps.spec import load_spec
from sweeps.study import open_storage, open_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


_opened: list[optuna.storages.RDBStorage] = []


def _storage(url: str) -> optuna.storages.RDBStorage:
    """The test's own handle on the study database; its connections close when the test ends."""
    storage = open_storage(url)
    _opened.append(storage)
    return storage


@pytest.fixture(autouse=True)
def _close_storages() -> object:
    yield
    while _opened:
        _opened.pop().engine.dispose()


def test_three_workers_run_exactly_the_budget_once_each(
    demo, postgres_url: str, tmp_path: Path
) -> None:
    name = f"pg-{uuid.uuid4().hex[:10]}"
    spec = write_demo_spec(tmp_path, name, trials=3, save="none", storage=postgres_url)
    storage = _storage(postgres_url)
    try:
        workers = [
            start("sweep", "worker", str(spec), "--storage", postgres_url, "--no-check")
            for _ in range(3)
        ]
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 3  # exactly the requested number, no extra asks
        assert [t.user_attrs["state"] for t in trials] == ["complete"] * 3
        assert len({t.number for t in trials}) == 3
        assert len({t.user_attrs["worker_pid"] for t in trials}) >= 2  # shared between workers

        db = tmp_path / "synced.duckdb"
        synced = paretune(
            "results", "sync", "--storage", postgres_url, "--study", name, "--db", str(db)
        )
        assert synced.returncode == 0, synced.stderr
        rows = ResultsStore(db).trials(name)
        assert [r["number"] for r in rows] == [0, 1, 2]
        assert all(r["state"] == "complete" and r["eval_nll"] is not None for r in rows)
        assert ResultsStore(db).studies()[0]["storage"].startswith("postgresql://postgres@")
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


def test_a_worker_that_stops_answering_is_failed_by_heartbeat_and_its_trial_retried(
    demo, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a worker on another machine looks like when it dies: its trial stays RUNNING and
    # only the heartbeat, not a local pid check, can tell. Short heartbeats keep the test quick.
    monkeypatch.setenv("PARETUNE_HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("PARETUNE_HEARTBEAT_GRACE_S", "3")
    name = f"pg-hb-{uuid.uuid4().hex[:10]}"
    spec = write_demo_spec(tmp_path, name, trials=2, save="none", storage=postgres_url)
    storage = _storage(postgres_url)
    try:
        # Create the study, then queue a first trial long enough to be killed mid-training.
        created = paretune(
            "sweep",
            "worker",
            str(spec),
            "--storage",
            postgres_url,
            "--max-trials",
            "0",
            "--no-check",
        )
        assert created.returncode == 0, created.stdout + created.stderr
        optuna.load_study(study_name=name, storage=storage).enqueue_trial(
            {"method": "lora"}, user_attrs={"overrides": {"max_steps": 400}}
        )
        first = start("sweep", "worker", str(spec), "--storage", postgres_url, "--no-check")
        victim = wait_for_running_trial(spec, first)
        children = hold_children(first)  # every descendant, even one forked just now
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        for child in children:
            if child.is_running():
                child.kill()
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.trials[victim].state == optuna.trial.TrialState.RUNNING
        time.sleep(5)  # past the grace period: its heartbeat is now stale

        second = paretune("sweep", "worker", str(spec), "--storage", postgres_url, "--no-check")
        assert second.returncode == 0, second.stdout + second.stderr
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert trials[victim].state == optuna.trial.TrialState.FAIL
        assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
        assert len(retried) == 1 and retried[0].user_attrs["state"] == "complete"
        assert retried[0].params == trials[victim].params
        assert sum(t.user_attrs.get("state") == "complete" for t in trials) == 2

        db = tmp_path / "synced.duckdb"
        synced = paretune(
            "results", "sync", "--storage", postgres_url, "--study", name, "--db", str(db)
        )
        assert synced.returncode == 0, synced.stderr
        states = {r["number"]: r["state"] for r in ResultsStore(db).trials(name)}
        assert states[victim] == "lost"
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)


def _other_host_prefix() -> list[str]:
    """A command prefix that runs a program in a UTS namespace of its own (another host name),
    so that a worker started with it can be found dead only by its heartbeats, not its pid."""
    for prefix in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
        try:
            probe = subprocess.run(
                [*prefix, "hostname", OTHER_HOST], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    pytest.skip(
        "`unshare --uts` (and `unshare --user --map-root-user --uts`) is not permitted here; "
        "the dead-remote-worker test did NOT run"
    )


OTHER_HOST = "paretune-other-host"


def _start_on_other_host(prefix: list[str], *args: str) -> subprocess.Popen[str]:
    """Start ``paretune ARGS`` under the host name OTHER_HOST, in a process group of its own."""
    return subprocess.Popen(
        [*prefix, "sh", "-c", 'hostname "$0" && exec "$@"', OTHER_HOST]
        + [sys.executable, "-m", "tui.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )


def test_a_worker_at_the_budget_waits_for_a_dead_remote_workers_trial_and_runs_it(
    demo, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers, budget 4. One runs under another host name and is killed (-9) mid-trial
    # once the other has finished its three: only the heartbeat can tell it died. The
    # survivor must not stop at "4 of 4" with 3 complete; it waits, re-runs the lost trial,
    # and the study ends with exactly 4 complete trials.
    prefix = _other_host_prefix()
    monkeypatch.setenv("PARETUNE_HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("PARETUNE_HEARTBEAT_GRACE_S", "4")
    name = f"pg-dead-{uuid.uuid4().hex[:10]}"
    spec = write_demo_spec(tmp_path, name, trials=4, save="none", storage=postgres_url)
    # The victim's trial is held (SIGSTOP) while the survivor runs its three: a long limit.
    spec.write_text(spec.read_text().replace("timeout_s = 300", "timeout_s = 1800"))
    storage = _storage(postgres_url)
    victim = survivor = None
    try:
        open_study(load_spec(spec), storage, storage_url=postgres_url)
        victim = _start_on_other_host(
            prefix, "sweep", "worker", str(spec), "--storage", postgres_url, "--no-check"
        )
        lost = wait_for_running_trial(spec, victim)
        held = hold_children(victim)  # its worker keeps beating; the trial cannot finish
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.trials[lost].user_attrs["worker_host"] == OTHER_HOST

        survivor = start("sweep", "worker", str(spec), "--storage", postgres_url, "--no-check")
        watcher = OutputWatcher(survivor)
        # The survivor runs its three and reaches the budget with the held trial running.
        waited = watcher.wait_for("waiting for 1 running trial")
        os.killpg(victim.pid, signal.SIGKILL)  # the other machine dies, mid-trial
        for child in held:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        victim.wait()

        output = watcher.finish()
        flat = " ".join(output.split())  # lines wrap at the terminal width
        assert survivor.returncode == 0, output
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert [t.number for t in trials if t.user_attrs.get("state") == "complete"] == [
            t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE
        ]
        assert sum(t.user_attrs.get("state") == "complete" for t in trials) == 4
        assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
        assert trials[lost].state == optuna.trial.TrialState.FAIL
        rerun = [t for t in trials if t.system_attrs.get("failed_trial") == lost]
        assert len(rerun) == 1 and rerun[0].user_attrs["state"] == "complete"
        assert rerun[0].params == trials[lost].params
        assert rerun[0].user_attrs["worker_host"] != OTHER_HOST  # the survivor ran it

        assert waited, output  # it did not conclude at "4 of 4" with the trial still running
        assert "trial budget reached (4 of 4); waiting for 1 running trial" in flat, output
        assert f"#{lost} on host {OTHER_HOST}, heartbeat" in flat, output
        assert f"trial {lost} on host {OTHER_HOST}: its heartbeat went stale" in flat, output
    finally:
        for process in (victim, survivor):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)


def test_sweep_status_marks_a_running_trial_whose_heartbeat_is_stale(
    postgres_url: str, tmp_path: Path
) -> None:
    # Two trials RUNNING in PostgreSQL, one beating now and one whose last heartbeat is ten
    # minutes old (its worker died): status shows both ages and marks only the old one stale.
    name = f"pg-status-{uuid.uuid4().hex[:10]}"
    spec = load_spec(write_demo_spec(tmp_path, name, trials=4, save="none", storage=postgres_url))
    storage = _storage(postgres_url)
    try:
        study = open_study(spec, storage, storage_url=postgres_url)
        dead, alive = study.ask(), study.ask()
        for trial, host in ((dead, "gone-host"), (alive, "busy-host")):
            trial.set_user_attr("worker_host", host)
            trial.set_user_attr("config", {"method": "lora"})
            storage.record_heartbeat(trial._trial_id)
        with storage.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE trial_heartbeats SET heartbeat = LOCALTIMESTAMP - INTERVAL '10 minutes'"
                    " WHERE trial_id = :id"
                ),
                {"id": dead._trial_id},
            )
        db = tmp_path / "status.duckdb"
        ResultsStore(db).sync_study(study, storage=postgres_url)

        shown = paretune("sweep", "status", name, "--db", str(db))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        flat = " ".join(shown.stdout.split())  # the table output wraps at the terminal width
        lines = {
            int(part.split()[0]): part.split(" not completed:")[0]
            for part in flat.split("running: #")[1:]
        }
        assert ": STALE (none for over 60 s), its worker looks dead" in lines[dead.number], lines
        assert "heartbeat " in lines[alive.number], lines
        assert "STALE" not in lines[alive.number], lines

        report = json.loads(
            paretune("sweep", "status", name, "--db", str(db), "--format", "json").stdout
        )
        running = {t["number"]: t for t in report[0]["running_trials"]}
        assert running[dead.number]["heartbeat_stale"] is True
        assert running[dead.number]["heartbeat_age_s"] >= 600
        assert running[alive.number]["heartbeat_stale"] is False
        assert report[0]["heartbeat_grace_s"] == 60
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
