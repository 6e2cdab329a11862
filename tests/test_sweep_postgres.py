"""Three `paretune sweep worker` processes on one study in the real PostgreSQL server.

The server is named by PARETUNE_TEST_POSTGRES_URL (default: the local one at 127.0.0.1:5432,
database `test`). Without a server the test skips and says why, unless
PARETUNE_REQUIRE_POSTGRES=1 (set by .ci/run), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import paretune, start, wait_for_running_trial, write_demo_spec

from sweeps.results.store import ResultsStore
from sweeps.study import open_storage

URL = os.environ.get("PARETUNE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres_url() -> str:
    try:
        import psycopg

        with psycopg.connect(
            URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5
        ):
            pass
    except Exception as error:  # no driver, no server, refused: all mean "cannot run this"
        reason = (
            f"PostgreSQL at {URL} does not answer ({type(error).__name__}: {error}); "
            "the distributed-sweep test did NOT run"
        )
        if os.environ.get("PARETUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and PARETUNE_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(reason)
    return URL


def test_three_workers_run_exactly_the_budget_once_each(
    demo, postgres_url: str, tmp_path: Path
) -> None:
    name = f"pg-{uuid.uuid4().hex[:10]}"
    spec = write_demo_spec(tmp_path, name, trials=3, save="none", storage=postgres_url)
    storage = open_storage(postgres_url)
    try:
        workers = [start("sweep", "worker", str(spec), "--storage", postgres_url) for _ in range(3)]
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
    storage = open_storage(postgres_url)
    try:
        # Create the study, then queue a first trial long enough to be killed mid-training.
        created = paretune(
            "sweep", "worker", str(spec), "--storage", postgres_url, "--max-trials", "0"
        )
        assert created.returncode == 0, created.stdout + created.stderr
        optuna.load_study(study_name=name, storage=storage).enqueue_trial(
            {"method": "lora"}, user_attrs={"overrides": {"max_steps": 400}}
        )
        first = start("sweep", "worker", str(spec), "--storage", postgres_url)
        victim = wait_for_running_trial(spec, first)
        children = psutil.Process(first.pid).children(recursive=True)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        for child in children:
            if child.is_running():
                child.kill()
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.trials[victim].state == optuna.trial.TrialState.RUNNING
        time.sleep(5)  # past the grace period: its heartbeat is now stale

        second = paretune("sweep", "worker", str(spec), "--storage", postgres_url)
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
