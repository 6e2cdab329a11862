"""The sweep loop: ask Optuna, gate, run one isolated trial, tell, record; per GPU, resumable.

One :class:`Sweep` drives one study from one process with one worker thread per slot (a
GPU index, or ``None`` for an unpinned CPU slot). Each trial runs in its own child process
(:func:`sweeps.trial.isolation.run_trial_isolated`) pinned with ``CUDA_VISIBLE_DEVICES``, so a
crash or an out-of-memory error ends that trial only and frees its memory.

What makes it trustworthy overnight:

- the trial budget is checked and the trial asked under one lock (a file lock for the
  journal, a PostgreSQL advisory lock for a shared database), so any number of workers on
  any number of machines run exactly the requested number of trials;
- a worker that reaches the budget while other workers' trials run waits for them before it
  concludes: one that ends has used its place, but one whose worker died (a stale heartbeat,
  a gone pid) is failed as ``lost``, re-queued and run here, so the study ends with exactly
  its budget of finished trials;
- ``oom`` / ``failed`` / ``timeout`` trials are told to Optuna as failed, with the reason in
  the user attributes ``state`` and ``error``; the sweep goes on;
- stopping (Ctrl-C) ends the running trials' processes, tells them as ``interrupted`` and
  queues their parameters again, so no trial is left RUNNING and a rerun resumes them;
- a trial left RUNNING by a worker that died is found on the next start (journal: the
  worker's host and pid are recorded on each trial; PostgreSQL: Optuna's heartbeats), told
  as ``lost``, and re-queued up to ``run.max_retries`` times;
- with ``[trial] repeats = N`` each trial runs N times with seeds seed, seed+1, ...
  (:mod:`sweeps.trial.repeats`): Optuna is told the mean of each objective, the cost is
  the sum, and the trial's row keeps each run and each objective's standard deviation;
- a program holding the results file open (a ``duckdb`` shell, a notebook) never stalls a
  trial: a write that meets its lock is deferred (:data:`WRITE_WAIT_S`), goes out with the next
  write that gets through, and the final sync writes every trial; the sweep says once how many
  writes were deferred;
- ``run.breaker`` trials in a row that fail with the same error stop the sweep
  (:mod:`sweeps.breaker`): a broken setup does not spend the whole budget;
- with early stopping (``[search.early_stopping]``, on by default where trials have rungs) a
  trial reports at each rung; :meth:`Sweep._at_rung` records the report on the trial (user
  attribute ``rungs``) and decides, under the ask lock, from every trial of the study that
  reached that rung (:func:`sweeps.early_stopping.rung_decision`), so workers on any number of
  machines decide alike; a stopped trial is told ``pruned``.

While a trial runs, its row is in the results file as ``running`` and its logged steps are
written there every :data:`PROGRESS_WRITE_S` seconds (``steps_done`` counts them), so the
terminal UI and SQL see a trial's progress and loss curve before it ends.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.breaker import CircuitBreaker
from sweeps.gate import Gate, Prediction, Spend, budget_refusal
from sweeps.liveness import (
    OtherWorkersTrial,
    requeue,
    this_worker,
    trials_of_dead_workers,
    trials_of_other_workers,
)
from sweeps.outcome import BUDGET_OUTCOMES, RERUN_OUTCOMES, Outcome
from sweeps.pending import (
    StorageWriteError,
    import_pending,
    is_storage_write_error,
    pending_paths,
    pending_record,
    save_pending,
    storage_problem,
)
from sweeps.results.store import (
    ResultsLockedError,
    ResultsStore,
    StoreError,
    redact_url,
    study_row,
    trial_row,
)
from sweeps.results.tracking import MlflowTarget, Target, TrialLogger, WandbOfflineTarget
from sweeps.spec import SweepSpec
from sweeps.study import (
    HEARTBEAT_INTERVAL_S,
    frontier_trials,
    is_postgres,
    make_sampler,
    open_storage,
    open_study,
    suggest,
)
from sweeps.trial.repeats import run_repeats
from sweeps.trial.types import RepeatResult, RungReport, StepLog, TrialConfig, TrialResult

if TYPE_CHECKING:
    import optuna

__all__ = ["PROGRESS_WRITE_S", "WRITE_WAIT_S", "Sweep", "SweepState", "import_kept_results"]

PROGRESS_WRITE_S = float(os.environ.get("PARETUNE_PROGRESS_WRITE_S", "5"))
"""Seconds between writes of a running trial's steps to the results file
(``$PARETUNE_PROGRESS_WRITE_S``). Each write is one short transaction; a write that meets
another process's lock is skipped and the steps go out with the next one."""

RESUME_SEED_STRIDE = 7919
"""Seed offset per trial already in the study when a sweep opens it (a prime, so no
worker index or ``--seed-offset`` of a realistic size lands on another run's seed). A new
study (no trials) is seeded exactly by ``seed``; rerunning a spec on a study that already has
N trials seeds its samplers with ``seed + 7919 N``: reproducible, and not the first run's."""

WRITE_WAIT_S = 0.5
"""Seconds a trial's own write to the results file waits for another program's lock (a
``duckdb`` shell, a notebook, a long ``paretune sql``) before it is deferred: the row is
written with the next write that gets through, or by the final sync at the end of the sweep."""

INFEASIBLE_IN_A_ROW = 20
"""Infeasible trials in a row after which a worker gives up: the space does not fit the GPU."""

WAIT_POLL_S = 1.0
"""Seconds between checks while a worker at the budget waits for other workers' trials."""

WAIT_LOG_S = 15.0
"""Seconds between the lines that say a worker at the budget is still waiting."""

# ---------------------------------------------------------------- the shared state


@dataclass
class RunningTrial:
    number: int
    method: str
    slot: str
    started: float
    step: int | None = None
    loss: float | None = None
    max_steps: int | None = None


@dataclass
class SweepState:
    """What the progress display shows; updated by the worker threads."""

    study: str
    budget_trials: int | None
    budget_dollars: float | None
    budget_hours: float | None
    done: int = 0
    pruned: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    infeasible: int = 0
    dollars: float = 0.0
    hours: float = 0.0
    frontier_size: int = 0
    running: dict[str, RunningTrial] = field(default_factory=dict)
    stop_reason: str | None = None
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, text: str) -> None:
        with self.lock:
            self.events.append(text)


@dataclass(frozen=True)
class _OthersRunning:
    """The budget is reached, but these trials of other workers may yet be lost and re-run."""

    refusal: str
    trials: list[OtherWorkersTrial]


# ---------------------------------------------------------------- the sweep


TrialRunner = Callable[..., TrialResult]


class Sweep:
    """Runs one spec's study from this process: one worker thread per slot.

    Open one with :meth:`open` (it opens the storage and the study, writes the study's row
    and recovers dead workers' trials); the constructor only keeps what it is given.

    ``slots``: GPU indices as strings (each trial pinned with CUDA_VISIBLE_DEVICES) or
    ``None`` entries for unpinned CPU workers. ``max_trials`` caps the trials this process
    launches (the spec's budget caps the study). ``run_trial`` is the isolated trial
    runner (default :func:`sweeps.trial.isolation.run_trial_isolated`).
    """

    def __init__(
        self,
        spec: SweepSpec,
        *,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        storage_url: str,
        store: ResultsStore,
        gate: Gate,
        worker: dict[str, Any],
        trials_before: int = 0,
        slots: list[str | None] | None = None,
        max_trials: int | None = None,
        seed_offset: int = 0,
        run_trial: TrialRunner | None = None,
    ) -> None:
        self.spec = spec
        self.study = study
        self.storage = storage
        self.storage_url = storage_url
        self.store = store
        """The final sync's store: it waits ``store.lock_timeout_s`` for another program's lock."""
        self._trial_store = ResultsStore(store.path, lock_timeout_s=WRITE_WAIT_S)
        """Per-trial writes: a lock held longer than :data:`WRITE_WAIT_S` defers the write."""
        self.deferred_writes = 0
        """Writes to the results file deferred because another program held its lock."""
        self._deferred: set[int] = set()  # trials whose row waits for the next write
        self._deferred_study = False
        self._deferred_lock = threading.Lock()
        self.gate = gate
        self.worker = worker
        """This process's identity (host, pid, start time), recorded on each trial it runs."""
        self._trials_before = trials_before
        """Trials the study held when this sweep opened it: a resumed study's samplers are
        seeded past them, so they do not replay the first run's random draws."""
        self.slots = slots or [None]
        self.max_trials = max_trials
        self.seed_offset = seed_offset
        self._run_trial = run_trial
        self.recovered: list[int] = []
        """Trials of dead workers this sweep re-queued when it opened."""
        self.stop_event = threading.Event()
        self.breaker = CircuitBreaker(spec.run.breaker, results=spec.run.results)
        """Trips on ``run.breaker`` same failures in a row; ``breaker.tripped`` says why."""
        self.state = SweepState(
            spec.name, spec.budget.trials, spec.budget.dollars, spec.budget.hours
        )
        self._launched = 0
        self._launched_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._errors: list[BaseException] = []
        self.storage_failure: BaseException | None = None
        """The first failed write to the study storage: the sweep stops, exit 2."""
        self._stop_reasons: dict[int, str] = {}  # why early stopping stopped a running trial
        self.kept: dict[int, Path | None] = {}
        """Trials that finished while the storage could not be written, and the file that
        keeps each one's result (None: no file could be written either)."""
        self.tracking = _trial_logger(spec, study, storage_url, self.state)
        """Logs each ended trial to MLflow / offline W&B (``[run] mlflow``, ``wandb``); None
        when the spec asks for neither."""
        self.timings: list[dict[str, float]] = []
        """Per launched trial, seconds spent: ask_gate (ask + gate under the lock), run (the
        isolated trial, as seen by the parent), trial_wall (as measured inside the trial),
        tell_write (tell, artifact policy, results write). For benchmarks/sweep_overhead.py."""

    @classmethod
    def open(
        cls,
        spec: SweepSpec,
        *,
        slots: list[str | None] | None = None,
        max_trials: int | None = None,
        storage_url: str | None = None,
        seed_offset: int = 0,
        run_trial: TrialRunner | None = None,
    ) -> Sweep:
        """Open (or create) the spec's study in ``storage_url`` (default: the spec's), write
        its row to the results file and re-queue trials left running by dead workers."""
        url = storage_url or spec.storage_url
        gate = Gate(spec)  # a bad catalogue id fails here, before the study is touched
        try:
            storage = open_storage(url, max_retries=spec.run.max_retries)
            study = open_study(spec, storage, storage_url=url)
            # The profile this run's predictions use (null: the planner's defaults); each
            # trial records its own too, since a rerun may use another.
            study.set_user_attr(
                "calibration", None if gate.profile is None else gate.profile.record()
            )
            imported = import_kept_results(study, storage, url, spec.run.dir)
        except Exception as error:
            if not is_storage_write_error(error):
                raise
            raise StorageWriteError(
                f"cannot write the study storage {redact_url(url)}: {storage_problem(error)}. "
                "Nothing was run.",
                "Free space on that disk (or make the folder writable again), then rerun.",
            ) from None
        sweep = cls(
            spec,
            study=study,
            storage=storage,
            storage_url=url,
            store=ResultsStore(spec.run.results),
            gate=gate,
            worker=this_worker(),
            trials_before=len(study.get_trials(deepcopy=False)),
            slots=slots,
            max_trials=max_trials,
            seed_offset=seed_offset,
            run_trial=run_trial,
        )
        if imported:
            sweep.state.event(imported)
        sweep._write_study_row()
        sweep.recovered = sweep._recover_dead_workers(study)
        sweep._refresh_state()
        return sweep

    # -- public

    def run(self) -> SweepState:
        """Run until the budget, ``max_trials`` or :meth:`stop`; return the final state."""
        threads = [
            threading.Thread(
                target=self._worker, args=(index, slot), name=f"sweep-{slot}", daemon=True
            )
            for index, slot in enumerate(self.slots)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            self.stop("interrupted")
            for thread in threads:
                thread.join()
            raise
        finally:
            self.sync_results()
            if self.tracking is not None:
                self.tracking.close()
        if self.storage_failure is not None:
            raise self._storage_error()
        if self._errors:
            raise self._errors[0]
        return self.state

    def stop(self, reason: str = "stopped") -> None:
        """Stop launching, end the running trials' processes, and wait for them to be told."""
        if not self.stop_event.is_set():
            with self.state.lock:
                self.state.stop_reason = self.state.stop_reason or reason
            self.stop_event.set()
        _end_children()

    def sync_results(self) -> None:
        """Rebuild this study's rows in the results file from the Optuna storage, waiting up to
        ``store.lock_timeout_s`` for another program's lock; say once, in one line, how many
        writes were deferred because another program held the file."""
        try:
            self.store.sync_study(self.study, storage=self.storage_url)
        except ResultsLockedError:
            with self._deferred_lock:
                self.deferred_writes += 1
            self.state.event(self._deferred_line(synced=False))
            return
        except StoreError as error:
            self.state.event(
                f"results file not updated: {error.message} (results are safe in "
                f"{redact_url(self.storage_url)}; `paretune results sync` imports them)"
            )
            return
        with self._deferred_lock:
            self._deferred.clear()
            self._deferred_study = False
        if self.deferred_writes:
            self.state.event(self._deferred_line(synced=True))

    def _storage_error(self) -> StorageWriteError:
        """One paragraph: the storage write that failed, and where finished trials are kept."""
        assert self.storage_failure is not None
        message = (
            f"cannot write the study storage {redact_url(self.storage_url)}: "
            f"{storage_problem(self.storage_failure)}. The sweep stopped."
        )
        kept = {number: path for number, path in self.kept.items() if path is not None}
        for path in sorted(set(kept.values())):
            numbers = sorted(n for n, p in kept.items() if p == path)
            message += (
                f" Finished trial(s) {numbers} are kept in {path}; the next `paretune sweep run` "
                "of this spec (or `paretune results sync`) imports them, so they are not run "
                "again."
            )
        lost = sorted(number for number, path in self.kept.items() if path is None)
        if lost:
            message += f" Trial(s) {lost} finished but could not be kept anywhere."
        return StorageWriteError(
            message, "Free space on that disk (or make the folder writable again), then rerun."
        )

    def _storage_failed(self, error: BaseException) -> None:
        """Remember the first failed storage write and stop launching trials."""
        with self.state.lock:
            if self.storage_failure is None:
                self.storage_failure = error
        self._finish(f"the study storage cannot be written: {storage_problem(error)}")

    def _deferred_line(self, *, synced: bool) -> str:
        count = self.deferred_writes
        line = (
            f"{count} write{'s' if count != 1 else ''} to the results file {self.store.path} "
            f"{'were' if count != 1 else 'was'} deferred because another program held it"
        )
        if synced:
            return line + "; the final sync wrote every trial"
        storage = redact_url(self.storage_url) or ""
        return (
            f"{line}, and it was still locked at the end of the sweep: the results stay in "
            f"{storage}, and `paretune results sync --storage {shlex.quote(storage)} "
            f"--db {shlex.quote(str(self.store.path))}` imports them later"
        )

    # -- the per-slot loop

    def _worker(self, index: int, slot: str | None) -> None:
        try:
            self._worker_loop(index, slot)
        except BaseException as error:  # re-raised by run() in the main thread
            with self.state.lock:
                self._errors.append(error)
            self._finish(f"a worker stopped on an error: {type(error).__name__}: {error}")

    def _worker_loop(self, index: int, slot: str | None) -> None:
        import optuna

        study = optuna.load_study(
            study_name=self.spec.name,
            storage=self.storage,
            sampler=make_sampler(
                self.spec, self.seed_offset + index + RESUME_SEED_STRIDE * self._trials_before
            ),
        )
        infeasible_in_a_row = 0
        # A budget stop found by any worker ends every worker's loop (running trials finish).
        while not self.stop_event.is_set() and self.state.stop_reason is None:
            with self._launched_lock:
                if self.max_trials is not None and self._launched >= self.max_trials:
                    self._finish(f"--max-trials {self.max_trials} reached")
                    return
            started = time.perf_counter()
            try:
                with self._ask_lock():
                    if self.stop_event.is_set():
                        return
                    picked = self._ask_and_gate(study, slot)
            except Exception as error:
                if not is_storage_write_error(error):
                    raise
                self._storage_failed(error)
                return
            ask_gate_s = time.perf_counter() - started
            if isinstance(picked, _OthersRunning):
                self._wait_for_other_workers(study, picked)
                continue
            if picked is None:
                return
            trial, config = picked
            if config is None:  # infeasible: recorded, never run
                infeasible_in_a_row += 1
                if infeasible_in_a_row >= INFEASIBLE_IN_A_ROW:
                    self._finish(
                        f"{INFEASIBLE_IN_A_ROW} infeasible trials in a row: the search space "
                        "does not fit the target GPU; shrink it or pick a larger GPU"
                    )
                    return
                continue
            infeasible_in_a_row = 0
            self._run_and_tell(study, trial, config, slot, ask_gate_s, label=slot or f"cpu{index}")

    # -- ask and gate

    def _ask_and_gate(
        self, study: optuna.Study, slot: str | None
    ) -> tuple[optuna.Trial, TrialConfig | None] | _OthersRunning | None:
        """Under the ask lock: budget check, ask, gate. The trial and its config to run (None:
        not to be run, already recorded), other workers' trials to wait for before the budget
        is final, or None when the sweep must stop."""
        # A worker that died since the last ask (here, or a heartbeat gone stale elsewhere).
        self._recover_dead_workers(study)
        spend = _spend(study)
        refusal = budget_refusal(self.spec, spend, Prediction())
        if refusal:
            others = self._trials_of_other_workers(study)
            if others:
                return _OthersRunning(refusal, others)
            self._finish(refusal)
            return None
        trial = study.ask()
        self._record_heartbeat(trial._trial_id)  # from its first moment, its worker's death shows
        try:
            return self._gate_asked(study, trial, spend, slot)
        except BaseException as error:
            # Never leave an asked trial RUNNING: record why it was not run.
            with contextlib.suppress(Exception):
                self._mark(study, trial, Outcome.FAILED, f"{type(error).__name__}: {error}")
            raise

    def _gate_asked(
        self, study: optuna.Study, trial: optuna.Trial, spend: Spend, slot: str | None
    ) -> tuple[optuna.Trial, TrialConfig | None] | None:
        config = self._trial_config(study, trial)
        if config is None:
            return trial, None
        prediction = _for_repeats(self.gate.predict(config), self.spec.trial.repeats)
        self._record_prediction(trial, config, prediction, slot)
        if not prediction.fits:
            trial.set_constraint("peak_gb_over_gpu_memory", prediction.overflow_gb)
            cost = prediction.dollars if prediction.dollars is not None else math.inf
            self._mark(
                study,
                trial,
                Outcome.INFEASIBLE,
                prediction.reason(),
                values=[math.inf, math.inf, cost],
            )
            with self.state.lock:
                self.state.infeasible += 1
            self.state.event(f"trial {trial.number}: {prediction.reason()}")
            self._record(study, trial.number)
            return trial, None
        trial.set_constraint("peak_gb_over_gpu_memory", min(prediction.overflow_gb, 0.0))
        refusal = budget_refusal(self.spec, spend, prediction)
        if refusal:
            self._mark(study, trial, Outcome.OVER_BUDGET, refusal)
            self._record(study, trial.number)
            self._finish(refusal)
            return None
        with self._launched_lock:
            self._launched += 1
        return trial, config

    def _trial_config(self, study: optuna.Study, trial: optuna.Trial) -> TrialConfig | None:
        """The asked point's config, with a queued trial's own settings (None: they are bad,
        and the trial is recorded as failed)."""
        config = self.spec.trial_config(suggest(trial, self.spec), trial_number=trial.number)
        if self.gate.calibration_path is not None:  # the trial corrects its own prediction too
            config = config.model_copy(update={"calibration": self.gate.calibration_path})
        overrides = trial.user_attrs.get("overrides")
        if not overrides:
            return config
        from pydantic import ValidationError

        try:  # enqueued with settings of its own, e.g. a longer time limit
            return TrialConfig(**{**config.model_dump(), **overrides})
        except (ValidationError, TypeError) as error:
            self._mark(study, trial, Outcome.FAILED, f"bad overrides {overrides}: {error}")
            self._record(study, trial.number)
            return None

    def _record_prediction(
        self, trial: optuna.Trial, config: TrialConfig, prediction: Prediction, slot: str | None
    ) -> None:
        """The worker, config and the gate's prediction, on the trial before it runs."""
        attrs = {
            **self.worker,
            "config": config.model_dump(mode="json"),
            "predicted_peak_gb": prediction.peak_gb,
            "predicted_hours": prediction.hours,
            "predicted_dollars": prediction.dollars,
            "gpu_memory_gb": prediction.gpu_memory_gb,
            "calibration": prediction.calibration,
            "cuda_visible_devices": slot
            if slot is not None
            else os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if prediction.note:
            trial.set_user_attr("gate_note", prediction.note)

    # -- run, tell, record

    def _run_and_tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        config: TrialConfig,
        slot: str | None,
        ask_gate_s: float = 0.0,
        label: str | None = None,
    ) -> None:
        """Run one gated trial, tell Optuna its outcome, apply the artifact policy and write
        its row; in that order, each a step of its own."""
        run_started = time.perf_counter()
        result = self._run(study, trial, config, slot, key=label or slot or "cpu")
        run_s = time.perf_counter() - run_started
        tell_started = time.perf_counter()
        stopping = self.stop_event.is_set()
        if not self._tell(study, trial, config, result, stopping=stopping):
            return  # the storage could not take it: kept on disk, the sweep stops
        if self.spec.run.save == "frontier":
            with self._ask_lock():
                _prune_artifacts(study, Path(self.spec.run.dir))
        self._record(study, trial.number)
        self._refresh_state(study)
        with self.state.lock:
            self.timings.append(
                {
                    "ask_gate": ask_gate_s,
                    "run": run_s,
                    "trial_wall": result.measured.wall_s or 0.0,
                    "tell_write": time.perf_counter() - tell_started,
                }
            )

    def _run(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        config: TrialConfig,
        slot: str | None,
        key: str,
    ) -> TrialResult:
        """Run the trial in its own process, shown as running (progress display, results file,
        heartbeats) until it ends. A runner that breaks gives a ``failed`` result."""
        running = RunningTrial(
            trial.number, config.method, key, time.monotonic(), max_steps=config.max_steps
        )
        with self.state.lock:
            self.state.running[key] = running
        progress = _ProgressWriter(
            self.store, study.study_name, self._running_row(study, trial, config)
        )
        progress.start()

        repeat = [0]

        def on_step(step: StepLog) -> None:
            running.step, running.loss = step.step, step.loss
            if repeat[0] == 0:  # the trial's loss curve is its first run's (later ones restart)
                progress.add(step)

        def on_repeat(k: int) -> None:
            repeat[0] = k

        def on_rung(report: RungReport) -> bool:
            return self._at_rung(study, trial, report)

        env = {"CUDA_VISIBLE_DEVICES": slot} if slot is not None else None
        rungs = {"on_rung": on_rung} if config.rung_min_steps is not None else {}
        heartbeat = self._start_heartbeat(trial._trial_id)
        try:
            return run_repeats(
                self._runner(),
                config,
                self.spec.trial.repeats,
                on_step=on_step,
                on_repeat=on_repeat,
                env=env,
                timeout_s=config.time_limit_s,
                **rungs,
            )
        except Exception as error:  # the runner itself broke: record it, keep the sweep going
            return TrialResult(
                state=Outcome.FAILED,
                method=config.method,
                config=config,
                error=f"{type(error).__name__}: {error}",
            )
        finally:
            heartbeat.set()
            progress.stop()  # before the final row is written: nothing may overwrite it
            with self.state.lock:
                self.state.running.pop(key, None)

    def _at_rung(self, study: optuna.Study, trial: optuna.Trial, report: RungReport) -> bool:
        """A running trial at a rung: record its report on the trial (user attribute
        ``rungs``, a list), then decide from the records of every trial of the study at that
        rung whether it goes on. Under the ask lock, so that two workers reaching a rung at
        once each see the other's record."""
        from sweeps.early_stopping import DEFAULT_ETA, rung_decision

        stopping = self.spec.early_stopping()
        eta = stopping.eta if stopping is not None else DEFAULT_ETA
        record: dict[str, Any] = report.model_dump(mode="json")
        with self._ask_lock():
            on_front = {t.number for t in frontier_trials(study)}
            points: list[list[float | None]] = [_rung_point(self.spec, record)]
            frontier: list[int] = []
            for other in study.get_trials(deepcopy=False):
                found = _rung_record(other, report.step, report.max_steps, eta)
                if other.number == trial.number or found is None:
                    continue
                if other.number in on_front:
                    frontier.append(len(points))
                points.append(_rung_point(self.spec, found))
            # An objective some trial has no rung value for (no retain subset) is left out.
            kept = [m for m in range(3) if all(p[m] is not None for p in points)]
            vectors = [[float(p[m]) for m in kept] for p in points]  # type: ignore[arg-type]
            decision = rung_decision(
                vectors[0], vectors[1:], eta=eta, frontier=[vectors[i] for i in frontier]
            )
            record.update(
                continues=decision.continues,
                reason=decision.reason,
                position=decision.position,
                reached=decision.reached,
            )
            previous = self.storage.get_trial(trial._trial_id).user_attrs.get("rungs") or []
            study._storage.set_trial_user_attr(trial._trial_id, "rungs", [*previous, record])
        if not decision.continues:
            with self.state.lock:
                self._stop_reasons[trial.number] = decision.reason
        return decision.continues

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        config: TrialConfig,
        result: TrialResult,
        *,
        stopping: bool,
    ) -> bool:
        """Keep the result on the trial, tell Optuna its outcome, and count it. False when the
        storage could not be written: the result is kept in a file (:mod:`sweeps.pending`)
        that the next run imports, and the sweep stops."""
        attrs = _result_attrs(self.spec, result)
        values = _objective_values(self.spec, result)
        outcome, error = self._outcome_of(result, values, stopping=stopping)
        if outcome == Outcome.PRUNED:
            with self.state.lock:
                why = self._stop_reasons.pop(trial.number, None)
            error = f"stopped at step {result.stopped_at_step} by early stopping" + (
                f": {why}" if why else ""
            )
        told = values if outcome in (Outcome.COMPLETE, Outcome.ARTIFACT_LOST) else None
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            self._mark(study, trial, outcome, error, values=told)
            if outcome == Outcome.INTERRUPTED:
                requeue(
                    study,
                    study.get_trials(deepcopy=False)[trial.number],
                    self.spec.run.max_retries + 1,
                )
        except Exception as failure:
            if not is_storage_write_error(failure):
                raise
            self._keep(trial, {**attrs, "state": outcome.value, "error": error}, outcome, told)
            self._storage_failed(failure)
            self._count(trial.number, config.method, outcome, values, error)
            return False
        self._count(trial.number, config.method, outcome, values, error)
        trip = self.breaker.observe(trial.number, outcome, error)
        if trip is not None:
            # Running trials of other slots finish and are recorded; nothing new starts.
            with self.state.lock:
                self.state.stop_reason = trip.message
        return True

    def _keep(
        self,
        trial: optuna.Trial,
        attrs: dict[str, Any],
        outcome: Outcome,
        values: list[float] | None,
    ) -> None:
        """Write a finished trial's result to the pending file, since the storage refused it."""
        try:
            record = pending_record(trial, attrs=attrs, outcome=outcome.value, values=values)
        except Exception:  # noqa: BLE001 - the storage cannot even be read: keep what we have
            record = {
                "number": trial.number,
                "params": dict(trial.params),
                "distributions": {},
                "attrs": attrs,
                "outcome": outcome.value,
                "values": values,
            }
        path = save_pending(
            record, pending_paths(self.spec.run.dir, self.spec.name, self.storage_url)
        )
        with self.state.lock:
            self.kept[trial.number] = path
        self.state.event(
            f"trial {trial.number}: the study storage could not be written; its result is kept in "
            f"{path}"
            if path
            else f"trial {trial.number}: its result could not be kept anywhere"
        )

    def _outcome_of(
        self, result: TrialResult, values: list[float] | None, *, stopping: bool
    ) -> tuple[Outcome, str | None]:
        """What a run that ended counts as, and why it did not complete."""
        if result.state == Outcome.COMPLETE and values is not None:
            return Outcome.COMPLETE, None
        if result.state == Outcome.ARTIFACT_LOST and values is not None:
            return Outcome.ARTIFACT_LOST, result.error  # measured: it counts, values and all
        if result.state == Outcome.PRUNED:
            return Outcome.PRUNED, None  # stopped at a rung: its partial result is kept
        if stopping and result.state != Outcome.COMPLETE:
            return Outcome.INTERRUPTED, "the sweep was stopped while this trial ran; re-queued"
        # It ran and failed, or ended without every objective measured.
        outcome = result.state if result.state != Outcome.COMPLETE else Outcome.FAILED
        return outcome, result.error or f"objective {self.spec.objectives.names()} not measured"

    def _count(
        self,
        number: int,
        method: str,
        outcome: Outcome,
        values: list[float] | None,
        error: str | None,
    ) -> None:
        """The progress display's counters and event line for a trial that ended."""
        if outcome == Outcome.COMPLETE and values is not None:
            with self.state.lock:
                self.state.done += 1
            names = self.spec.objectives.names()
            self.state.event(
                f"trial {number} complete ({method}): "
                + ", ".join(f"{n} {v:.4g}" for n, v in zip(names, values, strict=False))
            )
        elif outcome == Outcome.ARTIFACT_LOST and values is not None:
            with self.state.lock:
                self.state.done += 1
            reason = error.splitlines()[0][:160] if error else ""
            self.state.event(f"trial {number} measured ({method}), artifact lost: {reason}")
        elif outcome == Outcome.INTERRUPTED:
            self.state.event(f"trial {number}: interrupted, re-queued for the next run")
        elif outcome == Outcome.PRUNED:
            with self.state.lock:
                self.state.pruned += 1
            self.state.event(f"trial {number} pruned ({method}): {error}")
        else:
            with self.state.lock:
                self.state.failed[outcome] = self.state.failed.get(outcome, 0) + 1
            reason = error.splitlines()[0][:160] if error else ""
            self.state.event(f"trial {number}: {outcome}: {reason}")

    def _mark(
        self,
        study: optuna.Study,
        trial: optuna.Trial | optuna.trial.FrozenTrial,
        outcome: Outcome,
        error: str | None = None,
        *,
        values: list[float] | None = None,
    ) -> None:
        """Record ``outcome`` (and ``error``, why) on ``trial`` and tell Optuna: the one place a
        trial's outcome is set.

        With ``values`` (complete trials, and infeasible ones with infinite quality and
        forgetting so that samplers avoid the region) the trial is told complete; a trial
        stopped at a rung is told pruned; otherwise it is told failed. Raises Optuna's errors for a trial already finished (another
        worker recovered it first).
        """
        from optuna.trial import FrozenTrial, TrialState

        # The storage, not the trial object: a frozen trial's setter changes only the copy.
        study._storage.set_trial_user_attr(trial._trial_id, "state", outcome.value)
        if error is not None:
            study._storage.set_trial_user_attr(trial._trial_id, "error", error)
        told = trial.number if isinstance(trial, FrozenTrial) else trial
        if values is not None:
            study.tell(told, values)
        elif outcome == Outcome.PRUNED:
            study.tell(told, state=TrialState.PRUNED)
        else:
            study.tell(told, state=TrialState.FAIL)

    def _record(self, study: optuna.Study, number: int) -> None:
        """Write trial ``number``'s row (and any row deferred before it) to the results file.

        A write that meets another program's lock for more than :data:`WRITE_WAIT_S` is
        deferred, never waited for: the trial goes on, the row goes out with the next write
        that gets through, and the final sync writes every trial in any case."""
        with self._deferred_lock:
            numbers = sorted({number, *self._deferred})
            study_too = self._deferred_study
        trials = study.get_trials(deepcopy=False)
        directions = [d.name.lower() for d in study.directions]
        rows, steps = [], []
        for n in numbers:
            row, trial_steps = trial_row(
                study.study_name,
                trials[n],
                directions,
                deleted_artifacts=study.user_attrs.get("deleted_artifacts"),
            )
            rows.append(row)
            steps.extend(trial_steps)
            if n == number and self.tracking is not None:
                self.tracking.put(row, trial_steps)  # logged from its own thread; never waits
        try:
            if study_too:
                self._trial_store.write_study(study_row(self.study, storage=self.storage_url))
            self._trial_store.write_trials(rows, steps)
        except ResultsLockedError:
            self._defer(numbers)
            return
        except StoreError as error:
            self.state.event(
                f"trial {number} not written to {self.store.path}: {error.message}; "
                "`paretune results sync` imports it later"
            )
            return
        with self._deferred_lock:
            self._deferred.difference_update(numbers)
            if study_too:
                self._deferred_study = False

    def _defer(self, numbers: list[int] | None = None) -> None:
        """Remember a write that met another program's lock (None: the study's row)."""
        with self._deferred_lock:
            self.deferred_writes += 1
            if numbers is None:
                self._deferred_study = True
            else:
                self._deferred.update(numbers)

    # -- helpers

    def _runner(self) -> TrialRunner:
        if self._run_trial is None:
            from sweeps.trial.isolation import run_trial_isolated

            self._run_trial = run_trial_isolated
        return self._run_trial

    def _finish(self, reason: str) -> None:
        with self.state.lock:
            if self.state.stop_reason is None:
                self.state.stop_reason = reason

    def _wait_for_other_workers(self, study: optuna.Study, waiting: _OthersRunning) -> None:
        """The budget is reached while other workers' trials run: wait until one of them
        ends, or is found dead and re-queued (:meth:`_recover_dead_workers`), then return so
        that the budget is checked again. Says what it waits for, and repeats it every
        :data:`WAIT_LOG_S` seconds."""
        from optuna.trial import TrialState

        watched = {trial.number for trial in waiting.trials}
        self._say_waiting(waiting)
        last_said = time.monotonic()
        # Ctrl-C, or another slot of this process stopping the sweep, ends the wait too.
        while not self.stop_event.wait(WAIT_POLL_S) and self.state.stop_reason is None:
            with self._ask_lock():
                self._recover_dead_workers(study)
            trials = study.get_trials(deepcopy=False)
            ended = [trials[n] for n in sorted(watched) if trials[n].state != TrialState.RUNNING]
            if ended:
                for trial in ended:
                    self._say_ended(trial)
                    self._record(study, trial.number)  # its row said "running"
                return
            if time.monotonic() - last_said >= WAIT_LOG_S:
                others = self._trials_of_other_workers(study)
                if not others:
                    return
                self._say_waiting(_OthersRunning(waiting.refusal, others))
                last_said = time.monotonic()

    def _trials_of_other_workers(self, study: optuna.Study) -> list[OtherWorkersTrial]:
        engine = self.storage.engine if is_postgres(self.storage_url) else None
        return trials_of_other_workers(study, self.worker, heartbeats_from=engine)

    def _say_waiting(self, waiting: _OthersRunning) -> None:
        count = len(waiting.trials)
        grace = getattr(self.storage, "grace_period", None)
        dead_after = (
            f"; a worker counts as dead after {grace} s without a heartbeat"
            if grace and is_postgres(self.storage_url)
            else ""
        )
        self.state.event(
            f"{waiting.refusal}; waiting for {count} running trial{'s' if count != 1 else ''} "
            f"of other workers before concluding: "
            + "; ".join(trial.describe() for trial in waiting.trials)
            + dead_after
        )

    def _say_ended(self, trial: optuna.trial.FrozenTrial) -> None:
        """One line about another worker's trial that stopped running while this one waited."""
        from optuna.trial import TrialState

        state = trial.user_attrs.get("state")
        host = trial.user_attrs.get("worker_host", "?")
        if state is None and trial.state == TrialState.FAIL:  # Optuna's heartbeat check did it
            self.state.event(
                f"trial {trial.number} on host {host}: its heartbeat went stale, so its worker "
                "is taken for dead; recorded as lost and its parameters re-queued"
            )
        elif state != Outcome.LOST:  # lost ones were announced by _recover_dead_workers
            self.state.event(
                f"trial {trial.number} on host {host} ended: {state or trial.state.name.lower()}"
            )

    def _recover_dead_workers(self, study: optuna.Study) -> list[int]:
        """Mark ``lost`` and re-queue the trials of dead workers; their rows follow."""
        from optuna.exceptions import UpdateFinishedTrialError

        recovered = []
        for trial in trials_of_dead_workers(study):
            attrs = trial.user_attrs
            try:
                self._mark(
                    study,
                    trial,
                    Outcome.LOST,
                    f"worker pid {attrs['worker_pid']} on {attrs['worker_host']} died while "
                    "the trial ran",
                )
            except (ValueError, RuntimeError, UpdateFinishedTrialError):
                continue  # another worker recovered it first
            requeue(study, trial, self.spec.run.max_retries)
            recovered.append(trial.number)
        if recovered:
            self.state.event(f"re-queued trial(s) {recovered} left running by a dead worker")
        for number in recovered:  # its row said "running": it is "lost" now
            self._record(study, number)
        return recovered

    def _running_row(
        self, study: optuna.Study, trial: optuna.Trial, config: TrialConfig
    ) -> dict[str, Any]:
        """The row a trial has in the results file while it runs (state ``running``)."""
        try:
            frozen = self.storage.get_trial(trial._trial_id)
        except Exception:  # noqa: BLE001 - the storage hiccupped: a smaller row will do
            return {
                "study": study.study_name,
                "number": trial.number,
                "state": Outcome.RUNNING,
                **config.model_dump(include={"method", "lr", "max_steps"}),
            }
        row, _ = trial_row(study.study_name, frozen, [d.name.lower() for d in study.directions])
        return row

    def _write_study_row(self) -> None:
        try:
            self._trial_store.write_study(study_row(self.study, storage=self.storage_url))
        except ResultsLockedError:
            self._defer()  # written with the next trial's row, or by the final sync
        except StoreError as error:
            self.state.event(f"results file not updated: {error.message}")

    def _refresh_state(self, study: optuna.Study | None = None) -> None:
        study = study or self.study
        trials = study.get_trials(deepcopy=False)
        spend = _spend(study, trials)
        done = sum(
            1
            for t in trials
            if t.user_attrs.get("state") in (Outcome.COMPLETE, Outcome.ARTIFACT_LOST)
        )
        frontier_size = len(frontier_trials(study)) if done else 0
        pruned = sum(1 for t in trials if t.user_attrs.get("state") == Outcome.PRUNED)
        with self.state.lock:
            self.state.dollars, self.state.hours = spend.dollars, spend.hours
            self.state.done = done
            self.state.pruned = pruned
            self.state.frontier_size = frontier_size

    @contextlib.contextmanager
    def _ask_lock(self) -> Iterator[None]:
        """Serialise budget checks and asks across threads, processes and machines."""
        with self._thread_lock, _storage_lock(self.storage, self.storage_url, self.spec.name):
            yield

    def _record_heartbeat(self, trial_id: int) -> None:
        """One Optuna heartbeat for a running trial (PostgreSQL only; a failed one is skipped)."""
        if is_postgres(self.storage_url) and hasattr(self.storage, "record_heartbeat"):
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(trial_id)

    def _start_heartbeat(self, trial_id: int) -> threading.Event:
        """Record Optuna heartbeats for a running trial (PostgreSQL only)."""
        done = threading.Event()
        if not is_postgres(self.storage_url) or not hasattr(self.storage, "record_heartbeat"):
            return done

        interval = self.storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL_S

        def beat() -> None:
            while True:
                self._record_heartbeat(trial_id)
                if done.wait(interval):
                    return

        threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}").start()
        return done


class _ProgressWriter:
    """Writes a running trial's row and its steps so far to the results file, in a thread.

    The first write (state ``running``) goes out at once; then, every
    :data:`PROGRESS_WRITE_S` seconds, the steps logged since (``steps_done`` is the last
    step). Progress is best effort: a write that meets a locked file or fails is skipped,
    never waited for, and :meth:`stop` ends the thread before the trial's final row is
    written, so a late progress write cannot overwrite the outcome.
    """

    def __init__(self, store: ResultsStore, study: str, row: dict[str, Any]) -> None:
        self.store = ResultsStore(store.path, lock_timeout_s=WRITE_WAIT_S)
        self.study, self.row = study, row
        self.steps: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.written = -1  # steps written so far; -1: not even the row
        self.thread = threading.Thread(
            target=self._loop, daemon=True, name=f"progress-{study}-{row['number']}"
        )

    def start(self) -> None:
        self.thread.start()

    def add(self, step: StepLog) -> None:
        with self.lock:
            self.steps.append(
                {"study": self.study, "number": self.row["number"], **step.model_dump()}
            )

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _loop(self) -> None:
        while True:
            self._write()
            if self.done.wait(PROGRESS_WRITE_S):
                return

    def _write(self) -> None:
        with self.lock:
            steps = list(self.steps)
        if len(steps) == self.written:
            return
        row = {**self.row, "steps_done": steps[-1]["step"] if steps else None}
        try:
            self.store.write_trials([row], steps)
        except Exception:  # noqa: BLE001 - best effort; the final write is the one that counts
            return
        self.written = len(steps)


def _objective_values(
    spec: SweepSpec, result: TrialResult | RepeatResult, devices: int | None = None
) -> list[float] | None:
    """The three objectives of a result (or of one run of a repeated trial), as Optuna is told
    them (exact match not negated); None when one was not measured."""
    quality = getattr(result.quality, spec.objectives.quality)
    forgetting = getattr(result.forgetting, spec.objectives.forgetting)
    if spec.objectives.cost == "dollars":
        cost = result.dollars
    else:
        wall = result.measured.wall_s
        if devices is None:
            assert isinstance(result, TrialResult), "a run's devices are its trial's"
            devices = result.hardware.devices
        cost = None if wall is None else wall / 3600 * devices
    values = [quality, forgetting, cost]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return [float(v) for v in values]


def _rung_record(
    trial: Any, step: int, max_steps: int | None = None, eta: int = 3
) -> dict[str, Any] | None:
    """``trial``'s report at the rung of ``step`` (user attribute ``rungs``), or None; with
    ``max_steps``, only if the trial's schedule is like it
    (:func:`sweeps.early_stopping.same_schedule`; a record of an older paretune, without
    ``max_steps``, matches any)."""
    from sweeps.early_stopping import same_schedule

    for record in trial.user_attrs.get("rungs") or ():
        if record.get("step") == step and same_schedule(max_steps, record.get("max_steps"), eta):
            return record
    return None


def _rung_point(spec: SweepSpec, record: dict[str, Any]) -> list[float | None]:
    """A rung report as the three objectives, minimised: eval NLL (the rung's quality, also for
    exact match, which is not scored at rungs), the spec's forgetting measure on the retain
    subset (retain_kl when the spec's, else retain_delta_nll, else retain_kl; None without a
    subset) and the cost in the spec's unit: the trial's cost at its last step at its pace so
    far (``projected_dollars``, ``projected_wall_s``), else (a record of an older paretune) the
    cost so far.

    Cost is compared as projected, not as spent: at a rung every trial has paid for the same
    steps, so its cost so far cannot tell a configuration that finishes cheaply from one that
    will cost four times as much, and a rung would stop a cheap configuration for not learning
    as fast as a dear one whose low cost at the rung is borrowed."""
    forgetting_order = (
        ("retain_kl",)
        if spec.objectives.forgetting == "retain_kl"
        else ("retain_delta_nll", "retain_kl")
    )
    forgetting = next((record[k] for k in forgetting_order if record.get(k) is not None), None)
    if spec.objectives.cost == "dollars":
        cost = record.get("projected_dollars") or record.get("dollars")
    else:
        wall = record.get("projected_wall_s") or record["wall_s"]
        cost = wall / 3600 * record.get("devices", 1)
    return [record.get("eval_nll"), forgetting, cost]


def _result_attrs(spec: SweepSpec, result: TrialResult) -> dict[str, Any]:
    """What a trial that ran keeps in its user attributes: its whole result, the artifact, the
    command that reruns it and, for a repeated trial, each run."""
    attrs: dict[str, Any] = {
        "result": result.model_dump(mode="json"),
        "artifact": result.artifact,
    }
    if result.command:
        attrs["command"] = result.command
    if result.repeats:
        attrs.update(_repeat_attrs(spec, result))
    return attrs


def _for_repeats(prediction: Prediction, repeats: int) -> Prediction:
    """The gate's figures for a trial that runs ``repeats`` times (each run is paid for)."""
    if repeats == 1:
        return prediction
    return replace(
        prediction,
        hours=None if prediction.hours is None else prediction.hours * repeats,
        dollars=None if prediction.dollars is None else prediction.dollars * repeats,
    )


def _repeat_attrs(spec: SweepSpec, result: TrialResult) -> dict[str, Any]:
    """What a repeated trial's row reads beside its means: ``repeats`` (runs made),
    ``objective_sd`` (each objective's standard deviation, as told: the runs' sample sd for
    quality and forgetting, whose mean is told; sqrt(runs) times it for the cost, whose sum
    is told) and ``repeat_results`` (one row per run, objectives as minimised)."""
    import statistics

    signs = [-1.0 if d == "maximize" else 1.0 for d in spec.objectives.directions()]
    rows: list[dict[str, Any]] = []
    measured: list[list[float]] = []
    for run in result.repeats:
        values = _objective_values(spec, run, devices=result.hardware.devices)
        if values is not None and run.state in (Outcome.COMPLETE, Outcome.ARTIFACT_LOST):
            measured.append(values)
        rows.append(
            {
                "repeat": run.repeat,
                "seed": run.seed,
                "state": str(run.state),
                "error": run.error,
                **{
                    f"objective_{name}": None if values is None else sign * values[i]
                    for i, (name, sign) in enumerate(
                        zip(("quality", "forgetting", "cost"), signs, strict=True)
                    )
                },
                **run.quality.model_dump(include={"eval_nll", "exact_match"}),
                **run.forgetting.model_dump(
                    include={"retain_delta_nll", "retain_kl", "fact_recall_drop"}
                ),
                "wall_s": run.measured.wall_s,
                "measured_peak_gb": run.measured.peak_gb,
                "dollars": run.dollars,
            }
        )
    sd: list[float] | None = None
    if len(measured) >= 2:
        sd = [statistics.stdev(column) for column in zip(*measured, strict=True)]
        sd[2] *= math.sqrt(len(measured))
    return {"repeats": len(result.repeats), "objective_sd": sd, "repeat_results": rows}


def _trial_logger(
    spec: SweepSpec, study: optuna.Study, storage_url: str, state: SweepState
) -> TrialLogger | None:
    """The logger of ended trials to the spec's MLflow store and offline W&B folder (None:
    the spec asks for neither). Preflight checked that each is installed and writable; a
    failure while the sweep runs is said once and stops that logging only."""
    run = spec.run
    targets: list[tuple[str, Callable[[], Target]]] = []
    exports = []
    db = f"--db {shlex.quote(str(run.results))}"
    if run.mlflow:
        uri, experiment = run.mlflow, run.mlflow_experiment
        targets.append((f"MLflow {uri}", lambda: MlflowTarget(uri, experiment=experiment)))
        extra = f" --experiment {shlex.quote(experiment)}" if experiment else ""
        exports.append(
            f"`paretune results export --to mlflow {shlex.quote(uri)}{extra} "
            f"--study {shlex.quote(spec.name)} {db}`"
        )
    if run.wandb == "offline":
        folder = Path(run.dir)
        targets.append((f"W&B offline runs in {folder}", lambda: WandbOfflineTarget(folder)))
        exports.append(
            f"`paretune results export --to wandb-offline {shlex.quote(str(folder))} "
            f"--study {shlex.quote(spec.name)} {db}`"
        )
    if not targets:
        return None

    def hint(label: str) -> str:
        chosen = [e for e, (name, _) in zip(exports, targets, strict=True) if name == label]
        return " or ".join(chosen or exports) + " logs them later"

    return TrialLogger(
        targets,
        study_row(study, storage=storage_url),
        on_event=state.event,
        export_hint=hint,
    )


def _spend(study: optuna.Study, trials: list[Any] | None = None) -> Spend:
    """Trials, dollars and hours used so far; running trials count at their prediction."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    counted = 0
    dollars = hours = 0.0
    measured_dollars: list[float] = []
    measured_hours: list[float] = []
    from optuna.trial import TrialState

    for trial in trials:
        attrs = trial.user_attrs
        state = attrs.get("state")
        if trial.state == TrialState.RUNNING and "config" in attrs and state is None:
            counted += 1
            dollars += attrs.get("predicted_dollars") or 0.0
            hours += attrs.get("predicted_hours") or 0.0
            continue
        if state in BUDGET_OUTCOMES:
            counted += 1
        elif state not in RERUN_OUTCOMES:
            continue
        result = attrs.get("result") or {}
        spent = result.get("dollars")
        wall = (result.get("measured") or {}).get("wall_s")
        if spent is not None:
            dollars += spent
            measured_dollars.append(spent)
        if wall is not None:
            hours += wall / 3600.0
            measured_hours.append(wall / 3600.0)
    return Spend(
        trials=counted,
        dollars=dollars,
        hours=hours,
        mean_dollars=sum(measured_dollars) / len(measured_dollars) if measured_dollars else None,
        mean_hours=sum(measured_hours) / len(measured_hours) if measured_hours else None,
    )


def import_kept_results(
    study: optuna.Study, storage: Any, url: str, run_dir: str | None = None
) -> str | None:
    """Tell ``study`` the finished trials an earlier run kept in a file because the storage
    ``url`` could not take them (:mod:`sweeps.pending`), under the study's ask lock; one line
    saying so, or None. ``storage``: the one ``url`` opened (:func:`sweeps.study.open_storage`).
    ``run_dir``: the spec's ``run.dir`` (default: the one the study
    records). A storage that still cannot be written raises :class:`StorageWriteError`."""
    if run_dir is None:
        run_dir = ((study.user_attrs.get("spec") or {}).get("run") or {}).get("dir")
    paths = pending_paths(run_dir, study.study_name, url)
    if not any(path.is_file() for path in paths):
        return None
    try:
        with _storage_lock(storage, url, study.study_name):
            numbers, files = import_pending(study, paths)
    except Exception as error:
        if not is_storage_write_error(error):
            raise
        raise StorageWriteError(
            f"cannot write the study storage {redact_url(url)}: {storage_problem(error)}. "
            f"The finished trials kept in {', '.join(str(p) for p in paths if p.is_file())} "
            "stay there until it can.",
            "Free space on that disk (or make the folder writable again), then rerun.",
        ) from None
    if not files:
        return None
    return (
        f"imported {len(numbers)} finished trial(s) {numbers} that an earlier run could not "
        f"write to the study storage, from {', '.join(str(f) for f in files)}: not run again"
    )


@contextlib.contextmanager
def _storage_lock(storage: Any, url: str, study_name: str) -> Iterator[None]:
    """A lock every worker of the study shares: an advisory lock in PostgreSQL, else a file lock."""
    if is_postgres(url):
        from sqlalchemy import text

        key = zlib.crc32(f"paretune:{study_name}".encode())
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    import fcntl

    path = Path(f"{url}.ask-lock")  # not "<journal>.lock": Optuna's own journal lock uses it
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _prune_artifacts(study: optuna.Study, run_dir: Path) -> None:
    """Policy ``save = "frontier"``: delete artifacts of trials the frontier leaves behind
    (only inside ``run_dir``: a path recorded in the study never deletes anything else)."""
    host = socket.gethostname()
    on_frontier = {trial.number for trial in frontier_trials(study)}
    for trial in study.get_trials(deepcopy=False):
        artifact = trial.user_attrs.get("artifact")
        if (
            trial.number in on_frontier
            or trial.user_attrs.get("state") != Outcome.COMPLETE
            or not trial.values
            or not artifact
            or trial.user_attrs.get("worker_host") != host
            or not _inside(artifact, run_dir)
        ):
            continue
        deleted = list(study.user_attrs.get("deleted_artifacts") or [])
        if artifact in deleted:
            continue
        shutil.rmtree(artifact, ignore_errors=True)
        # A finished trial's attributes are frozen; the study keeps the list instead.
        study.set_user_attr("deleted_artifacts", [*deleted, artifact])


def _inside(path: str, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder``, not the folder itself (links and '..' resolved)."""
    resolved, root = Path(path).resolve(), folder.resolve()
    return resolved != root and resolved.is_relative_to(root)


def _end_children() -> None:
    """Terminate this process's child processes (the running trials), then kill stragglers."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
