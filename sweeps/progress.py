"""The live sweep display: trials and dollars against the budget, running trials, frontier."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from sweeps.worker import Sweep, SweepState

__all__ = ["PROGRESS_LOG_S", "render_state", "steps_of", "watch"]

PROGRESS_LOG_S = 30.0
"""Without a terminal (a log file, a pipe): seconds between lines about running trials."""


def steps_of(step: int, max_steps: int | None) -> str:
    """``40/120``, or ``40`` when the trial runs by epochs (no ``max_steps``)."""
    return f"{step}/{max_steps}" if max_steps else f"{step}"


def _budget(value: float, limit: float | None, unit: str = "") -> str:
    if unit == "$":
        from pricing.display import format_dollars

        return format_dollars(value) + (f" / {format_dollars(limit)}" if limit is not None else "")
    return f"{value:g}{unit}" + (f" / {limit:g}{unit}" if limit is not None else "")


def render_state(state: SweepState) -> RenderableType:
    """One panel: totals, then a row per running trial, then the latest events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with state.lock:
        failed = sum(state.failed.values())
        head = Text.assemble(
            ("study ", "dim"),
            (state.study, "bold"),
            ("   trials ", "dim"),
            _budget(state.done + state.pruned + failed, state.budget_trials),
            ("   spent ", "dim"),
            _budget(state.dollars, state.budget_dollars, "$"),
            ("   hours ", "dim"),
            f"{state.hours:.3f}" + (f" / {state.budget_hours:g}" if state.budget_hours else ""),
            ("   frontier ", "dim"),
            str(state.frontier_size),
            *((("   pruned ", "dim"), str(state.pruned)) if state.pruned else ()),
            ("   not completed ", "dim"),
            f"{failed} ({', '.join(f'{k} {v}' for k, v in state.failed.items())})"
            if failed
            else "0",
            ("   infeasible ", "dim"),
            str(state.infeasible),
        )
        table = Table(box=None, pad_edge=False, header_style="dim")
        for column in ("trial", "slot", "method", "step", "loss", "elapsed"):
            table.add_column(column)
        now = time.monotonic()
        for running in sorted(state.running.values(), key=lambda r: r.number):
            step = "-" if running.step is None else steps_of(running.step, running.max_steps)
            loss = "-" if running.loss is None else f"{running.loss:.4f}"
            table.add_row(
                f"#{running.number}",
                running.slot,
                running.method,
                step,
                loss,
                f"{now - running.started:.0f}s",
            )
        events = [Text(e, style="yellow") for e in state.events[-5:]]
    return Group(head, table, *events)


def watch(sweep: Sweep, console: Console) -> SweepState:
    """Run ``sweep`` with a live display (a TTY) or one line per event (logs, pipes)."""
    import threading

    if not console.is_terminal:
        printed = 0
        done = threading.Event()
        result: dict[str, SweepState] = {}
        error: list[BaseException] = []

        def target() -> None:
            try:
                result["state"] = sweep.run()
            except BaseException as caught:  # re-raised in the main thread
                error.append(caught)
            finally:
                done.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        logged: dict[int, int | None] = {}
        last_log = time.monotonic()
        try:
            while not done.wait(0.5):
                printed = _print_new_events(sweep.state, console, printed)
                if time.monotonic() - last_log >= PROGRESS_LOG_S:
                    last_log = time.monotonic()
                    _print_running(sweep.state, console, logged)
        except KeyboardInterrupt:
            sweep.stop("interrupted")
            thread.join()
            _print_new_events(sweep.state, console, printed)
            raise
        _print_new_events(sweep.state, console, printed)
        if error:
            raise error[0]
        return result["state"]

    from rich.live import Live

    # Live's own refresh thread redraws the panel from the sweep's state twice a second.
    with Live(
        console=console, refresh_per_second=2, get_renderable=lambda: render_state(sweep.state)
    ):
        return sweep.run()


def _print_running(state: SweepState, console: Console, logged: dict[int, int | None]) -> None:
    """One line per running trial whose step moved since the last such line."""
    now = time.monotonic()
    with state.lock:
        running = sorted(state.running.values(), key=lambda r: r.number)
    for trial in running:
        if trial.step is None or logged.get(trial.number) == trial.step:
            continue
        logged[trial.number] = trial.step
        loss = "" if trial.loss is None else f", loss {trial.loss:.4f}"
        console.print(
            f"trial {trial.number} ({trial.method}, {trial.slot}): "
            f"step {steps_of(trial.step, trial.max_steps)}"
            f"{loss}, {now - trial.started:.0f} s",
            markup=False,
            highlight=False,
        )


def _print_new_events(state: SweepState, console: Console, printed: int) -> int:
    with state.lock:
        new = state.events[printed:]
    for line in new:
        console.print(line, markup=False, highlight=False)
    return printed + len(new)
