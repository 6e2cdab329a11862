"""Shared fixtures: the bundled demo (built once per machine, then read from the cache)."""

from __future__ import annotations

import os

import pytest

# The test models are tiny: torch gains nothing from more than one CPU thread on them, and on a
# 2-core machine running a test process plus trial child processes, extra OpenMP threads only
# spin against each other (trials measured several times slower). Child processes inherit it.
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A user's own settings (a calibration profile written by `paretune calibrate`, which sweeps
# and plans apply by default; price files) must not change what the tests measure: the user
# config directory is an empty temporary one for the whole test run. Tests that write there
# set their own.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="paretune-test-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)

from sweeps.trial.demo import DemoAssets, ensure_demo  # noqa: E402


@pytest.fixture(scope="session")
def demo() -> DemoAssets:
    """The demo world and its pretrained tiny Llama (``PARETUNE_CACHE_DIR`` or the user cache)."""
    return ensure_demo()


# --- a user's own small checkpoint (not the demo, not Llama) -------------------------------------

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402


@dataclass(frozen=True)
class OwnModel:
    """A small local checkpoint as a user would bring one: folder, task and eval files."""

    model_dir: Path
    train: Path
    eval: Path


@pytest.fixture(scope="session")
def own_model(tmp_path_factory) -> OwnModel:
    """A tiny Qwen2 (random weights) with a byte-level BPE tokenizer trained here on a few
    lines of text, saved with ``save_pretrained``, and a prompt/completion arithmetic task."""
    from own_checkpoint import build_own_checkpoint

    paths = build_own_checkpoint(tmp_path_factory.mktemp("own-model"))
    return OwnModel(Path(paths["model"]), Path(paths["train"]), Path(paths["eval"]))


# --- helpers several test modules share: the command line, demo sweeps, results files -----------

import contextlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402

ROOT = Path(__file__).parent.parent


def cli_env() -> dict[str, str]:
    """This environment, with the repository on ``PYTHONPATH`` (for ``python -m tui.cli``)."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def paretune(
    *args: str, cwd: Path | None = None, **popen: object
) -> subprocess.CompletedProcess[str]:
    """Run ``paretune ARGS`` to the end; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=cli_env(),
        **popen,
    )


def start(*args: str) -> subprocess.Popen[str]:
    """Start ``paretune ARGS`` in a process group of its own (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )


def write_demo_spec(
    folder: Path,
    name: str,
    *,
    trials: int,
    save: str = "frontier",
    storage: str | None = None,
    extra_run: str = "",
    max_steps: int = 2,
    sampler: str = "tpe",
) -> Path:
    """A tiny demo spec: LoRA (two ranks) and freeze, 2 optimizer steps per trial. Its sampler
    is TPE unless asked: the tests on it are about what trials leave, not about which points a
    sampler draws, and keep the points they were written with (``tests/test_cost_aware.py``
    runs the default sampler's sweeps)."""
    spec = folder / f"{name}.toml"
    storage_line = f'storage = "{storage}"' if storage else ""
    spec.write_text(f"""
name = "{name}"
model = "demo"
seed = 0
sampler = "{sampler}"
[hardware]
device = "cpu"
usd_per_hour = 0.10
[search]
methods = ["lora", "freeze"]
rank = [2, 8]
lr = {{ low = 1e-4, high = 1e-2, log = true }}
max_steps = {max_steps}
[trial]
batch = 4
eval_every = 2
max_seq_len = 64
[budget]
trials = {trials}
[run]
dir = "{folder / "runs"}"
results = "{folder / "results.duckdb"}"
save = "{save}"
timeout_s = 300
{storage_line}
{extra_run}
""")
    return spec


def load_spec_study(spec_path: Path):
    """The Optuna study of the spec at ``spec_path``, from the spec's storage."""
    import optuna

    from sweeps.spec import load_spec
    from sweeps.study import open_storage

    spec = load_spec(spec_path)
    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url))


def wait_for_running_trial(
    spec_path: Path, process: subprocess.Popen[str], timeout: float = 240
) -> int:
    """The number of a trial that is RUNNING and whose own process has started: a
    descendant of ``process`` that leads a session, as a trial's process does (it calls
    setsid; the warm fork server, also a child, does not)."""
    import optuna
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            study = load_spec_study(spec_path)
        except KeyError:
            time.sleep(0.5)
            continue
        running = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.RUNNING and "config" in t.user_attrs
        ]
        children = psutil.Process(process.pid).children(recursive=True)
        if running and any(_leads_session(child.pid) for child in children):
            return running[0].number
        time.sleep(0.3)
    raise AssertionError("no trial started running in time")


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def hold_children(process: subprocess.Popen[str]) -> list:
    """SIGSTOP every descendant of ``process`` and return them.

    A warm trial server may fork the trial's child between one listing and the stop, so
    the listing is repeated until a pass, taken with every process already stopped, finds
    none new: a stopped process cannot fork, and the set is complete."""
    import psutil

    held: dict[int, psutil.Process] = {}
    while True:
        new = [c for c in psutil.Process(process.pid).children(recursive=True) if c.pid not in held]
        if not new:
            return list(held.values())
        for child in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGSTOP)
            held[child.pid] = child
        time.sleep(0.2)


def journal_study(tmp_path: Path, name: str = "s"):
    """A journal-file study of three complete trials (trial 2 dominated by 0) and an oom one,
    recorded as a sweep records them."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.trial.types import (
        Forgetting,
        Hardware,
        Measured,
        Quality,
        StepLog,
        TrialConfig,
        TrialResult,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / f"{name}.journal")))
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize"] * 3)
    study.set_user_attr("objectives", ["eval_nll", "retain_delta_nll", "dollars"])
    study.set_user_attr("spec", {"model": "demo", "sampler": "tpe", "budget": {"trials": 3}})
    for number, (q, f, c, method) in enumerate(
        [(1.0, 0.5, 0.01, "lora"), (0.8, 0.9, 0.02, "full"), (1.3, 0.95, 0.03, "lora")]
    ):
        trial = study.ask(
            {"method": optuna.distributions.CategoricalDistribution(["lora", "full"])}
        )
        config = TrialConfig(method=method, rank=4, study=name, trial_number=number)
        result = TrialResult(
            state="complete",
            method=method,
            config=config,
            dollars=c,
            quality=Quality(eval_nll=q),
            forgetting=Forgetting(retain_delta_nll=f),
            measured=Measured(peak_gb=0.1, wall_s=12.0, steps=2),
            hardware=Hardware(versions={"torch": "2.13.0"}),
            steps=[
                StepLog(
                    step=s, epoch=0.1 * s, loss=2.0 - s, lr=1e-3, tokens_per_s=100.0, peak_gb=0.1
                )
                for s in (1, 2)
            ],
            command=f"paretune trial --method {method}",
        )
        trial.set_user_attr("result", result.model_dump(mode="json"))
        study.tell(trial, [q, f, c])
    oom = study.ask()
    oom.set_user_attr("state", "oom")
    oom.set_user_attr("error", "CUDA out of memory")
    study.tell(oom, state=optuna.trial.TrialState.FAIL)
    return study


RESULTS_STUDY = "demo-frontier"
# (method, rank, lr, eval_nll, retain_delta_nll, dollars, state)
RESULTS_TRIALS = [
    ("lora", 8, 2e-4, 1.10, 0.05, 0.010, "complete"),
    ("lora", 16, 5e-4, 0.95, 0.12, 0.012, "complete"),
    ("dora", 8, 3e-4, 1.00, 0.04, 0.020, "complete"),
    ("full", None, 5e-5, 0.80, 0.40, 0.050, "complete"),
    ("freeze", None, 1e-4, 1.30, 0.30, 0.030, "complete"),  # dominated by trial 0
    ("qlora", 8, 2e-4, None, None, 0.001, "oom"),
]


def write_study(
    db: Path,
    study: str = RESULTS_STUDY,
    created: datetime = datetime(2026, 1, 2, 3, 4, 5),
    fingerprints: dict[int, str] | None = None,
) -> None:
    """A results file holding one study of :data:`RESULTS_TRIALS`, written through the store;
    ``fingerprints``: the data fingerprint of trials by number (none recorded otherwise)."""
    from sweeps.results.store import ResultsStore

    store = ResultsStore(db)
    store.write_study(
        {
            "study": study,
            "model": "demo",
            "sampler": "tpe",
            "quality_metric": "eval_nll",
            "forgetting_metric": "retain_delta_nll",
            "cost_metric": "dollars",
            "budget_dollars": 1.0,
            "budget_trials": 8,
            "created_at": created,
        }
    )
    rows, steps = [], []
    for number, (method, rank, lr, nll, forget, dollars, state) in enumerate(RESULTS_TRIALS):
        rows.append(
            {
                "study": study,
                "number": number,
                "state": state,
                "method": method,
                "rank": rank,
                "lr": lr,
                "eval_nll": nll,
                "retain_delta_nll": forget,
                "dollars": dollars,
                "objective_quality": nll,
                "objective_forgetting": forget,
                "objective_cost": dollars,
                "predicted_peak_gb": 0.5,
                "measured_peak_gb": 0.4 if state == "complete" else None,
                "error": "CUDA out of memory (simulated budget)" if state == "oom" else None,
                "command": f"paretune trial --method {method}",
                "artifact": f"runs/{study}/trial-{number}" if state == "complete" else None,
                "data_fingerprint": (fingerprints or {}).get(number),
            }
        )
        if state == "complete":
            steps += [
                {
                    "study": study,
                    "number": number,
                    "step": s,
                    "loss": 3.0 / s,
                    "eval_nll": 2.0 / s if s % 5 == 0 else None,
                }
                for s in range(1, 21)
            ]
    store.write_trials(rows, steps)


class OutputWatcher:
    """Reads a started process's output in a thread, so a test can wait for a line while the
    process runs; :meth:`text` is everything read so far (all of it once the process ended)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        import threading

        self.process = process
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 900) -> bool:
        """Until ``needle`` is in the output (True) or the process has ended (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Joined output: a long line is wrapped at the terminal width.
            if needle in " ".join(self.text().split()):
                return True
            if self.process.poll() is not None:
                self.thread.join(timeout=10)
                return needle in " ".join(self.text().split())
            time.sleep(0.5)
        raise AssertionError(f"neither {needle!r} nor an exit in time:\n{self.text()}")

    def finish(self, timeout: float = 900) -> str:
        """Wait for the process to end; its whole output."""
        self.process.wait(timeout=timeout)
        self.thread.join(timeout=10)
        return self.text()


# --- the PostgreSQL server of the distributed-sweep tests -------------------------------------

POSTGRES_URL = os.environ.get(
    "PARETUNE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

# Every connection these tests and the workers they start open carries this name (libpq reads
# PGAPPNAME), so the fixture can tell this suite's connections from anyone else's.
APPLICATION = "paretune-tests"
os.environ["PGAPPNAME"] = APPLICATION
# The most connections the tests here hold at once (three workers and the test itself, each with
# a pool of at most 2 + 4, as sweeps.study.open_storage sets), with a margin.
NEEDED_CONNECTIONS = 30
# A connection of this suite idle for longer than this belongs to a run that was killed (a test
# process or a SIGSTOPped worker never cleaned up): no test here leaves one idle for minutes.
ABANDONED_AFTER = "15 minutes"


@pytest.fixture(scope="module")
def postgres_url() -> str:
    try:
        import psycopg

        with psycopg.connect(
            POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5
        ) as connection:
            _make_room(connection)
    except pytest.fail.Exception:
        raise
    except Exception as error:  # no driver, no server, refused: all mean "cannot run this"
        reason = (
            f"PostgreSQL at {POSTGRES_URL} does not answer ({type(error).__name__}: {error}); "
            "the distributed-sweep test did NOT run"
        )
        if os.environ.get("PARETUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and PARETUNE_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(reason)
    return POSTGRES_URL


def _make_room(connection: object) -> None:
    """End this suite's abandoned connections; fail, naming who holds the server's connection
    slots, when fewer than NEEDED_CONNECTIONS are free (not a vague failure three tests later)."""
    execute = connection.execute  # type: ignore[attr-defined]
    execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
        " AND state = 'idle' AND state_change < now() - %s::interval AND pid <> pg_backend_pid()",
        (APPLICATION, ABANDONED_AFTER),
    )
    limit = int(execute("SHOW max_connections").fetchone()[0])
    holders = execute(
        "SELECT coalesce(nullif(application_name, ''), '(unnamed)'), count(*)"
        " FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    used = sum(count for _, count in holders)
    if limit - used < NEEDED_CONNECTIONS:
        held = ", ".join(f"{name}: {count}" for name, count in holders)
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} has {limit - used} of {limit} connection slots free and these "
            f"tests need {NEEDED_CONNECTIONS} ({held}); stop the processes holding them"
        )
