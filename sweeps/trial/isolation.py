"""Run one trial in a child process, so a crash, an out-of-memory error or a hang ends that
trial only, and its memory (GPU memory included) goes back with the process.

    result = run_trial_isolated(config, on_step=print, env={"CUDA_VISIBLE_DEVICES": "1"})

The child is ``python -m sweeps.trial.isolation``: it reads the :class:`TrialConfig` as JSON on
stdin and writes JSON lines on a dedicated pipe (``{"step": ...}`` per optimizer step, then
one ``{"result": ...}``, or ``{"user_error": ...}`` for bad input). At a rung of the sweep's
early stopping it writes ``{"rung": ...}`` and waits for the parent's answer, one line
``{"continue": true}`` or ``false`` on a second pipe (the parent answers at once, asking
``on_rung`` if it was given one, else going on). Its stdout goes to the
parent's stderr (library chatter must not mix with results) and its stderr is kept so that
a crash can be reported with its last lines.

Outcomes: ``complete``; ``oom`` for CUDA out-of-memory or ``MemoryError`` (the child caps its
own memory at ``config.memory_limit_gb`` once its libraries are loaded: its share of the
GPU on CUDA, its address space (``RLIMIT_AS``) on CPU); ``timeout`` when ``timeout_s`` (or
``config.time_limit_s``) passes, after which the child's whole process group is killed;
``failed`` for anything else, with the end of its stderr. :func:`run_trial_isolated` never raises for a trial's failure.

How the child starts: a CPU trial (``device = "cpu"``) forks from a warm server process that
has torch, transformers and peft imported already (``multiprocessing`` "forkserver"), which
saves the ~2-5 s each fresh interpreter spends importing them. The forked child first makes
itself a new session (so a timeout still kills its whole process group), takes the trial's
environment, sends its stdout to the parent's stderr and its stderr to the kept file, then
runs exactly what a fresh child runs. GPU and ``auto`` trials, and sharded ones (``gpus`` > 1,
:mod:`sweeps.trial.sharded`: this child is then torchrun's launcher, and its ranks report
through it), always start a fresh
interpreter: ``CUDA_VISIBLE_DEVICES`` must be in place before CUDA is initialised, and the
libraries the server imports may initialise it (bitsandbytes probes the GPU on import), after
which a forked child could not use CUDA at all. As with any ``multiprocessing`` start but
"fork", the child imports the parent's main script (the ``paretune`` command, a benchmark), so
a script of your own that runs CPU trials needs the ``if __name__ == "__main__":`` guard, or
``start="fresh"``.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pricing.errors import UserError
from sweeps.outcome import Outcome
from sweeps.trial.types import RungReport, StepLog, TrialConfig, TrialResult

__all__ = ["TrialInputError", "run_trial_isolated"]

_STDERR_TAIL_LINES = 20
_OOM_MARKERS = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "MemoryError",
    "Cannot allocate memory",
    "std::bad_alloc",
    "DefaultCPUAllocator: can't allocate",
    "memory allocation of",  # Rust's allocator (the tokenizers): "memory allocation of N bytes failed"
)
_CAPPED_OOM_MARKERS = (
    "Resource temporarily unavailable",
    "can't start new thread",
    "failed to map segment from shared object",  # a library loaded past the address-space cap
)


class TrialInputError(UserError):
    """Bad input found by the trial's child process (re-raised in the parent on request)."""

    title = "Cannot run this trial"


def _tail(path: str, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _ended(config: TrialConfig, state: Outcome, error: str) -> TrialResult:
    return TrialResult(state=state, method=config.method, error=error, config=config)


def run_trial_isolated(
    config: TrialConfig,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    raise_user_errors: bool = False,
    start: str | None = None,
    on_rung: Callable[[RungReport], bool] | None = None,
) -> TrialResult:
    """Run :func:`sweeps.trial.recipe.run_trial` in a child process; see the module docstring.

    ``env`` is added to the child's environment (e.g. ``CUDA_VISIBLE_DEVICES``).
    ``timeout_s`` defaults to ``config.time_limit_s``. With ``raise_user_errors`` a bad
    configuration found by the child raises :class:`TrialInputError` here (the command
    line's exit code 2); otherwise it is a ``failed`` trial like any other. ``start`` is
    ``"warm"`` (fork from the preloaded server) or ``"fresh"`` (a new interpreter); by default
    warm for CPU trials and fresh for the rest. ``on_rung(report)`` answers whether the trial
    goes on at a rung (``config.rung_min_steps``); without it, it always does.
    """
    # A sharded trial's child is torchrun's launcher: a fresh interpreter, like its ranks.
    default = "warm" if config.device == "cpu" and config.gpus == 1 else "fresh"
    warm = (start or default) == "warm"
    limit = timeout_s if timeout_s is not None else config.time_limit_s
    started = time.monotonic()
    try:
        child = _start_child(config, env, warm=warm)
    except OSError as error:
        return _ended(config, Outcome.FAILED, f"could not start the trial process: {error}")
    try:
        received = _receive(child, on_step, on_rung, None if limit is None else started + limit)
    finally:
        tail = _reap(child, kill=child.timed_out)
    return _classify(config, received, tail, child, limit, raise_user_errors)


@dataclass
class _Child:
    """A started trial process, the read end of its channel, and the file its stderr goes to."""

    process: subprocess.Popen | _WarmChild
    read_fd: int
    stderr_path: str
    decision_fd: int  # the write end of the pipe the child reads its rung decisions from
    timed_out: bool = False


@dataclass
class _Received:
    """What the child sent on its channel besides its steps."""

    result: TrialResult | None = None
    user_error: dict | None = None


def _start_child(config: TrialConfig, env: Mapping[str, str] | None, *, warm: bool) -> _Child:
    """Start the trial's process (forked warm, or a fresh interpreter) and hand it the config."""
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    stderr_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed once the child ends
        prefix="paretune-trial-", suffix=".stderr", delete=False
    )
    stderr_file.close()  # the child appends to it by name; the parent reads it at the end
    try:
        if warm:
            process, read_fd, decision_fd = _start_warm(config, child_env, stderr_file.name)
        else:
            process, read_fd, decision_fd = _start_fresh(child_env, stderr_file.name)
    except OSError:
        os.unlink(stderr_file.name)
        raise
    if not warm:
        assert process.stdin is not None
        process.stdin.write(config.model_dump_json().encode())
        process.stdin.close()
    return _Child(process, read_fd, stderr_file.name, decision_fd)


def _start_fresh(env: dict[str, str], stderr_path: str) -> tuple[subprocess.Popen, int, int]:
    """``python -m sweeps.trial.isolation WRITE_FD DECISION_FD`` in its own session; the read
    end of its channel and the write end of its decisions. The caller writes the config on its
    stdin."""
    read_fd, write_fd = os.pipe()
    decision_read, decision_write = os.pipe()
    try:
        with open(stderr_path, "ab") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", __spec__.name, str(write_fd), str(decision_read)],
                stdin=subprocess.PIPE,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(write_fd, decision_read),
                env=env,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
    except OSError:
        os.close(read_fd)
        os.close(decision_write)
        raise
    finally:
        os.close(write_fd)
        os.close(decision_read)
    return process, read_fd, decision_write


def _receive(
    child: _Child,
    on_step: Callable[[StepLog], None] | None,
    on_rung: Callable[[RungReport], bool] | None,
    deadline: float | None,
) -> _Received:
    """Read the child's channel until it closes or ``deadline`` passes (``child.timed_out``),
    passing each step to ``on_step`` and answering each rung with ``on_rung``'s decision."""
    received = _Received()
    buffer = b""
    selector = selectors.DefaultSelector()
    reader = os.fdopen(child.read_fd, "rb", buffering=0)
    selector.register(reader, selectors.EVENT_READ)
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                child.timed_out = True
                return received
            if not selector.select(timeout=remaining):
                continue
            chunk = reader.read(65536)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "step" in message and on_step is not None:
                    on_step(StepLog.model_validate(message["step"]))
                elif "rung" in message:
                    report = RungReport.model_validate(message["rung"])
                    _answer(child, True if on_rung is None else on_rung(report))
                elif "result" in message:
                    received.result = TrialResult.model_validate(message["result"])
                elif "user_error" in message:
                    received.user_error = message["user_error"]
            if not chunk:
                return received
    finally:
        selector.close()
        reader.close()


def _answer(child: _Child, goes_on: bool) -> None:
    """Tell the child waiting at a rung whether it goes on (a child gone meanwhile is ignored)."""
    try:
        os.write(child.decision_fd, (json.dumps({"continue": bool(goes_on)}) + "\n").encode())
    except OSError:
        pass


def _reap(child: _Child, *, kill: bool) -> str:
    """Wait for the child (killing its process group first if ``kill`` or it still runs);
    return the last lines of its stderr."""
    try:
        os.close(child.decision_fd)
    except OSError:
        pass
    try:
        if kill or child.process.poll() is None:
            _kill_group(child.process)
        child.process.wait()
    finally:
        tail = _tail(child.stderr_path)
        os.unlink(child.stderr_path)
    return tail


def _classify(
    config: TrialConfig,
    received: _Received,
    tail: str,
    child: _Child,
    limit: float | None,
    raise_user_errors: bool,
) -> TrialResult:
    """The trial's result: what the child sent, or why it sent none."""
    if child.timed_out:
        return _ended(config, Outcome.TIMEOUT, f"the trial ran past its time limit of {limit:g} s")
    if received.result is not None:
        return received.result
    user_error = received.user_error
    if user_error is not None:
        if raise_user_errors:
            raise TrialInputError(user_error["message"], user_error.get("hint"))
        hint = f" ({user_error['hint']})" if user_error.get("hint") else ""
        return _ended(config, Outcome.FAILED, user_error["message"] + hint)
    if any(marker in tail for marker in _oom_markers(config)):
        return _ended(config, Outcome.OOM, _oom_message(tail, config))
    code = child.process.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return _ended(
        config, Outcome.FAILED, f"the trial process ended without a result ({how})\n{tail}"
    )


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _kill_group(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        # A warm child killed before it made its own session: only the process itself.
        try:
            os.kill(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- warm start: fork from a server with the libraries imported ---------------------------------

# Imported once in the fork server; a module that fails to import there is skipped (and
# imported by the child as usual).
_TRIAL_MODULES = (
    "pyarrow",  # the data check's exact duplicates
    "planner",
    "planner.methods",
    "pricing",
    "safetensors.torch",
    "sweeps.datacheck.card",
    "sweeps.datacheck.clean",
    "sweeps.early_stopping",
    *(f"{__package__}.{name}" for name in ("data", "demo", "metrics", "prediction", "retain")),
)
"""What ``run_trial`` imports as it goes, imported before the memory cap (:func:`_load_trial_code`)."""
_WARM_MODULES = [
    "torch",
    "transformers",
    "peft",
    "transformers.models.llama.modeling_llama",
    f"{__package__}.recipe",
    *_TRIAL_MODULES,
]
_WARM_LOCK = threading.Lock()
_warm_context = None


class _WarmChild:
    """A forked trial process with the part of ``subprocess.Popen`` the parent uses."""

    def __init__(self, process) -> None:
        self._process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self) -> int:
        self._process.join()
        return self._process.exitcode

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode


def _start_warm(
    config: TrialConfig, env: dict[str, str], stderr_path: str
) -> tuple[_WarmChild, int, int]:
    """Fork the trial from the warm server; return the child, the read end of its channel and
    the write end of its decisions."""
    global _warm_context
    import multiprocessing

    with _WARM_LOCK:
        if _warm_context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_WARM_MODULES)
            _warm_context = context
            atexit.register(_stop_warm_server)
        context = _warm_context
    reader, writer = context.Pipe(duplex=False)
    decisions_in, decisions_out = context.Pipe(duplex=False)
    try:
        process = context.Process(
            target=_warm_child,
            args=(config.model_dump_json(), writer, env, stderr_path, decisions_in),
            name=f"paretune-trial-{config.trial_number}",
            daemon=False,
        )
        process.start()
    except Exception as error:  # the server could not fork: reported as OSError
        for end in (reader, writer, decisions_in, decisions_out):
            end.close()
        raise OSError(str(error)) from error
    writer.close()
    decisions_in.close()
    read_fd = os.dup(reader.fileno())
    reader.close()
    decision_fd = os.dup(decisions_out.fileno())
    decisions_out.close()
    return _WarmChild(process), read_fd, decision_fd


def _stop_warm_server() -> None:
    """Stop and reap the warm server and multiprocessing's resource tracker at exit, so that a
    stopped sweep leaves no process (not even a zombie) in its process group."""
    from multiprocessing import forkserver, resource_tracker

    for helper in (
        getattr(forkserver, "_forkserver", None),
        getattr(resource_tracker, "_resource_tracker", None),
    ):
        stop = getattr(helper, "_stop", None)  # private in CPython 3.8+; absent: exit reaps them
        if stop is not None:
            try:
                stop()
            except (OSError, ChildProcessError):
                pass


def _warm_child(config_json: str, writer, env: dict[str, str], stderr_path: str, decisions) -> None:
    """In the forked child: the same isolation a fresh interpreter gets, then the trial."""
    import multiprocessing

    os.setsid()  # its own process group: a timeout kills all of it
    # Locks the libraries make (tqdm's) are then plain, not named semaphores registered with
    # the server's resource tracker, which would report them as leaked when the child exits.
    multiprocessing.set_start_method("fork", force=True)
    os.environ.clear()
    os.environ.update(env)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))  # torch read the variable in the server already
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(2, 1)  # library chatter on stdout goes to the parent's stderr
    kept = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(kept, 2)
    os.close(kept)
    write_fd = os.dup(writer.fileno())
    writer.close()
    decision_fd = os.dup(decisions.fileno())
    decisions.close()
    sys.exit(_child(write_fd, config_json, decision_fd))


def _oom_markers(config: TrialConfig) -> tuple[str, ...]:
    """What an out-of-memory death looks like in the child's stderr. Under an address-space
    cap, running out also shows as a thread that cannot be created (EAGAIN), for example in
    the tokenizers' thread pool."""
    if config.memory_limit_gb is None:
        return _OOM_MARKERS
    return _OOM_MARKERS + _CAPPED_OOM_MARKERS


def _oom_message(tail: str, config: TrialConfig) -> str:
    markers = _oom_markers(config)
    lines = [line for line in tail.splitlines() if any(m in line for m in markers)]
    found = lines[-1].strip() if lines else tail.splitlines()[-1]
    if config.memory_limit_gb is not None:
        found += f" (memory limit {config.memory_limit_gb:g} GB)"
    return found


# --- the child ----------------------------------------------------------------------------------


def _load_trial_code() -> None:
    """Import what the trial will import as it runs, before its memory cap: on CPU the cap is
    the address space, and Python code parsed under a cap it has reached fails to compile
    (a ``SyntaxError`` or ``ValueError`` from the compiler, not a ``MemoryError``), which would
    end an out-of-memory trial as ``failed``. transformers loads its classes on first use."""
    import importlib

    import transformers

    for name in _TRIAL_MODULES:
        importlib.import_module(name)
    for name in ("AutoModelForCausalLM", "AutoTokenizer", "get_scheduler"):
        getattr(transformers, name)


def _limit_memory(limit_gb: float | None, device: str) -> None:
    """Cap the trial's memory at ``limit_gb`` GB, once torch and friends are imported.

    On a GPU, the CUDA caching allocator's share of the device (an address-space cap would
    break CUDA, which maps far more virtual memory than it uses); on CPU, the address space
    (``RLIMIT_AS``), so the cap bounds what the trial allocates on top of the libraries.
    """
    if limit_gb is None:
        return
    import torch

    if device != "cpu" and torch.cuda.is_available():
        index = torch.cuda.current_device()  # a sharded trial's rank: its own GPU
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gb * 1e9 / total), index)
        return
    import resource

    cap = int(limit_gb * 1e9)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _child(write_fd: int, config_json: str | None = None, decision_fd: int | None = None) -> int:
    channel = os.fdopen(write_fd, "w", buffering=1)
    decisions = os.fdopen(decision_fd, "r") if decision_fd is not None else None

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")

    def at_rung(report: RungReport) -> bool:
        """Report the rung and wait for the parent's decision (no answer: go on)."""
        send({"rung": report.model_dump(mode="json")})
        line = decisions.readline() if decisions is not None else ""
        return bool(json.loads(line)["continue"]) if line.strip() else True

    config = TrialConfig.model_validate_json(
        config_json if config_json is not None else sys.stdin.read()
    )
    if config.gpus > 1:  # torchrun's ranks; this process launches them and reports
        from sweeps.trial.sharded import run_sharded

        code = run_sharded(config, send)
        channel.close()
        return code
    from planner.methods import quiet_bitsandbytes

    quiet_bitsandbytes()  # before peft or bitsandbytes load
    try:
        import torch  # noqa: F401 - loaded before the memory cap, see _limit_memory
        import transformers  # noqa: F401

        from sweeps.trial.recipe import run_trial

        if config.method in ("qlora",) or config.optimizer.endswith("8bit"):
            import bitsandbytes  # noqa: F401
        if config.method != "full":
            import peft  # noqa: F401
        _load_trial_code()
        _limit_memory(config.memory_limit_gb, config.device)
        result = run_trial(
            config,
            on_step=lambda step: send({"step": step.model_dump(mode="json")}),
            on_rung=at_rung if decisions is not None and config.rung_min_steps else None,
        )
    except UserError as error:
        send({"user_error": {"message": error.message, "hint": error.hint}})
        return 2
    except MemoryError as error:
        result = _ended(
            config,
            Outcome.OOM,
            f"MemoryError: {error or 'out of memory'}"
            + (f" (memory limit {config.memory_limit_gb:g} GB)" if config.memory_limit_gb else ""),
        )
    except Exception as error:  # noqa: BLE001 - classified, then reported to the parent
        import traceback

        text = traceback.format_exc()
        tail = "\n".join(text.strip().splitlines()[-_STDERR_TAIL_LINES:])
        if _is_oom(error, config):
            result = _ended(
                config, Outcome.OOM, _oom_message(f"{type(error).__name__}: {error}", config)
            )
        else:
            result = _ended(config, Outcome.FAILED, tail)
    send({"result": result.model_dump(mode="json")})
    channel.close()
    return 0


def _is_oom(error: BaseException, config: TrialConfig) -> bool:
    """An exception that means the trial ran out of memory: CUDA's or torch's allocator, or,
    under the trial's memory cap, anything the cap shows up as (``OSError`` ENOMEM from an
    mmap, a thread that cannot start: EAGAIN, a shared library that cannot be mapped)."""
    import errno

    name = type(error).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    return any(marker in f"{name}: {error}" for marker in _oom_markers(config))


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1]), decision_fd=int(sys.argv[2]) if len(sys.argv) > 2 else None))
