"""Start, find and stop sweeps that run detached from the terminal UI.

A sweep launched from the app is a ``paretune sweep run SPEC`` process in a new session
(``start_new_session=True``): closing the app does not stop it, so an overnight sweep
survives the terminal. Its output goes to a log file, and a small JSON record under
``RUN_DIR/launched/`` lets a later app session find it again and stop it. Stopping sends
SIGINT to the whole process group, which the sweep handles like Ctrl-C: the running trial
is failed cleanly and the results so far are kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "LaunchedSweep",
    "check_sweep",
    "launch_sweep",
    "launched_sweeps",
    "stop_sweep",
    "sweep_command",
]

# The app keeps the handles of the processes it started, so their exit status is read
# (and they do not linger as zombies) while it runs.
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class LaunchedSweep:
    """A sweep process started from the app."""

    pid: int
    spec: str
    log: str
    command: list[str]
    started: float

    @property
    def record(self) -> Path:
        return Path(self.log).with_suffix(".json")

    def exit_code(self) -> int | None:
        """The process's exit status, or None while it runs (or when it is not ours to know)."""
        child = _children.get(self.pid)
        if child is not None:
            return child.poll()
        return None if _alive(self.pid) else 0

    @property
    def running(self) -> bool:
        child = _children.get(self.pid)
        if child is not None:
            return child.poll() is None
        return _alive(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        # A recycled pid belongs to some other program: only a sweep command counts.
        return process.status() != psutil.STATUS_ZOMBIE and "sweep" in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def sweep_command(spec: Path, *, check: bool = True) -> list[str]:
    """The command line that runs ``spec`` (``paretune sweep run SPEC``; ``--no-check`` when
    the caller ran the preflight checks already)."""
    command = [sys.executable, "-m", __package__, "sweep", "run", str(spec)]  # tui/__main__.py
    return command if check else [*command, "--no-check"]


def check_sweep(spec: Path) -> str | None:
    """Run ``paretune sweep check SPEC``; None when every check passes, else its error text.

    The checks run in a process of their own, as the sweep will: the libraries they load and
    the trial process of their dry step stay out of the app (whose standard streams are not
    real files)."""
    done = subprocess.run(
        [sys.executable, "-m", __package__, "sweep", "check", str(spec)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Error: ")), None)
    if start is None:  # not a user error: its last lines say what happened
        return "\n".join(lines[-20:]) or f"`paretune sweep check` exited with {done.returncode}"
    return "\n".join(lines[start:]).removeprefix("Error: ").strip()


def launch_sweep(spec: Path, run_dir: Path, *, check: bool = True) -> LaunchedSweep:
    """Start ``paretune sweep run SPEC`` detached; its log goes under ``run_dir/launched``.
    ``check=False``: the caller ran the preflight checks (``sweeps.preflight``) already."""
    spec = Path(spec)
    folder = Path(run_dir) / "launched"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = folder / f"{spec.stem}-{stamp}.log"
    command = sweep_command(spec, check=check)
    with open(log, "ab") as output:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    launched = LaunchedSweep(child.pid, str(spec), str(log), command, time.time())
    launched.record.write_text(json.dumps(asdict(launched), indent=2))
    return launched


def launched_sweeps(run_dir: Path) -> list[LaunchedSweep]:
    """Sweeps started from the app under ``run_dir``, newest first (running or not)."""
    found = []
    for record in (Path(run_dir) / "launched").glob("*.json"):
        try:
            found.append(LaunchedSweep(**json.loads(record.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a half-written or foreign file: not ours to show
    return sorted(found, key=lambda sweep: sweep.started, reverse=True)


def stop_sweep(sweep: LaunchedSweep) -> bool:
    """Send SIGINT (Ctrl-C) to the sweep's process group; False if it had already ended."""
    if not sweep.running:
        return False
    try:
        # start_new_session made the sweep its group's leader: pgid == pid.
        os.killpg(sweep.pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True
