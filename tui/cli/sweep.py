"""``paretune sweep``, ``sql``, ``frontier``, ``results`` (registered by :mod:`tui.cli`).

Heavy imports (optuna, duckdb, matplotlib) happen inside the commands, so ``paretune --help``
stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from pricing.errors import UserError
from sweeps.results.store import DEFAULT_RESULTS


class SweepUsageError(UserError):
    title = "Sweep"


class SweepBrokenError(UserError):
    """The circuit breaker stopped the sweep: its trials kept failing the same way."""

    title = "Sweep stopped"


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _parse_gpus(value: str | None) -> list[str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise SweepUsageError(f"--gpus must list distinct GPU indices like 0,1,2; got {value!r}")
    return parts


def _slots(spec: Any, gpus: list[str] | None, workers: int | None) -> list[str | None]:
    """One slot per worker: a GPU index, ``[hardware] gpus_per_trial`` consecutive ones
    (``"0,1"``: the trial's CUDA_VISIBLE_DEVICES), or None (a CPU worker)."""
    if gpus is None and spec.hardware.gpus:
        gpus = [str(g) for g in spec.hardware.gpus]
    per_trial = spec.hardware.gpus_per_trial
    if gpus is not None:
        if len(gpus) % per_trial:
            raise SweepUsageError(
                f"--gpus {','.join(gpus)}: {len(gpus)} GPU(s) do not split into groups of "
                f"gpus_per_trial {per_trial}",
                f"List a multiple of {per_trial} GPUs.",
            )
        groups = [",".join(gpus[i : i + per_trial]) for i in range(0, len(gpus), per_trial)]
        if workers is not None and workers != len(groups):
            raise SweepUsageError(
                f"--workers {workers} does not match the {len(groups)} GPU group(s) "
                f"{' '.join(groups)}",
                "One worker runs per GPU (per gpus_per_trial GPUs); drop --workers or list "
                "that many GPUs.",
            )
        return list(groups)
    return [None] * (workers or 1)


def _summary(console: Any, state: Any, spec: Any, *, stop_line: bool = True) -> None:
    from pricing.display import format_dollars

    console.print(
        f"study {spec.name}: {state.done} complete, "
        + (f"{state.pruned} pruned (stopped early), " if state.pruned else "")
        + f"{_not_completed(state.failed)}, "
        f"infeasible {state.infeasible}; spent {format_dollars(state.dollars)}"
        + (
            f" of {format_dollars(spec.budget.dollars)}"
            f" ({format_dollars(spec.budget.dollars - state.dollars)} left)"
            if spec.budget.dollars is not None
            else ""
        )
        + f", {state.hours:.3f} h; frontier size {state.frontier_size}",
        markup=False,
        highlight=False,
    )
    if state.stop_reason and stop_line:
        console.print(f"stopped: {state.stop_reason}", markup=False, highlight=False)


def _not_completed(failures: dict[str, int]) -> str:
    """``2 not completed (failed 1, oom 1)``, or ``none failed``."""
    if not sum(failures.values()):
        return "none failed"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(failures.items()))
    return f"{sum(failures.values())} not completed ({reasons})"


def _run(
    spec_path: Path,
    *,
    gpus: str | None,
    workers: int | None,
    max_trials: int | None,
    storage: str | None,
    seed_offset: int,
    check: bool = True,
) -> None:
    from sweeps.progress import watch
    from sweeps.results.store import redact_url
    from sweeps.spec import load_spec
    from sweeps.worker import Sweep

    spec = load_spec(spec_path)
    if workers is not None and workers < 1:
        raise SweepUsageError(f"--workers must be >= 1, got {workers}")
    if max_trials is not None and max_trials < 0:
        raise SweepUsageError(f"--max-trials must be >= 0, got {max_trials}")
    slots = _slots(spec, _parse_gpus(gpus), workers)
    console = _console()
    if check:  # before the study or the results file is opened: a failure writes nothing
        _preflight(console, spec, storage=storage, slots=slots)
    sweep = Sweep.open(
        spec, slots=slots, max_trials=max_trials, storage_url=storage, seed_offset=seed_offset
    )
    console.print(
        f"sweep {spec.name}: storage {redact_url(sweep.storage_url)}, results {spec.run.results}, "
        f"{len(slots)} worker(s)"
        + (f" on GPU {','.join(s for s in slots if s)}" if any(slots) else ""),
        markup=False,
        highlight=False,
    )
    _price_notice(console, spec)
    import signal

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # `kill`, a scheduler's preemption: stop as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, terminated)
    try:
        state = watch(sweep, console)
    except KeyboardInterrupt:
        _summary(console, sweep.state, spec, stop_line=False)  # the next line says why
        console.print(
            "Interrupted: no trial left running; rerun the same command to resume.",
            markup=False,
            highlight=False,
        )
        raise SystemExit(130) from None
    trip = sweep.breaker.tripped
    _summary(console, state, spec, stop_line=trip is None)
    if trip is not None:  # exit code 2, the message once, as one paragraph
        raise SweepBrokenError(trip.message)


def _price_notice(console: Any, spec: Any) -> None:
    """Say once if the catalogue price the sweep's trials are charged at is stale."""
    hw = spec.hardware
    if hw.gpu is None or hw.usd_per_hour is not None:
        return
    from pricing import load_catalog
    from pricing.staleness import staleness_notice

    offer = load_catalog().cheapest(hw.gpu, hw.provider)
    notice = staleness_notice([offer.checked]) if offer is not None else None
    if notice:
        console.print(f"Note: {notice}", markup=False, highlight=False)


def _preflight(console: Any, spec: Any, *, storage: str | None, slots: list[str | None]) -> None:
    """Run the preflight checks, printing each as it passes; PreflightError (exit 2) if any fails."""
    from sweeps.preflight import preflight

    preflight(
        spec,
        storage_url=storage,
        gpus=[gpu for slot in slots if slot is not None for gpu in slot.split(",")],
        on_check=lambda check: console.print(
            check.line(), markup=False, highlight=False, soft_wrap=True
        ),
    )


def _db_option(help: str = "DuckDB results file.") -> Any:
    """The ``--db`` option every results command takes."""
    return click.option(
        "--db",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_RESULTS,
        show_default=True,
        help=help,
    )


@click.group("sweep")
def sweep_group() -> None:
    """Run, join and inspect Optuna sweeps of real fine-tunes."""


@sweep_group.command("check")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gpus", default=None, help="GPU indices the trials would run on (e.g. 0,1).")
@click.option(
    "--storage", default=None, help="Check this study storage instead of the spec's (as a worker)."
)
def sweep_check(spec: Path, gpus: str | None, storage: str | None) -> None:
    """Check SPEC in seconds, before any trial is paid for (exit 2 on a problem).

    The model's config and tokenizer load (weights on the meta device), the device exists,
    the data parse with usable rows, every objective can be measured, the results file and
    the study storage can be written, and the first point of the search trains for one
    optimizer step on real rows. Nothing is written to the study or the results file.
    `sweep run` and `sweep worker` run the same checks first.
    """
    from sweeps.spec import load_spec

    loaded = load_spec(spec)
    console = _console()
    _preflight(console, loaded, storage=storage, slots=_slots(loaded, _parse_gpus(gpus), None))
    console.print(
        f"ready: `paretune sweep run {spec}` starts the sweep.", markup=False, highlight=False
    )


@sweep_group.command("run")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gpus", default=None, help="GPU indices, one worker each (e.g. 0,1).")
@click.option("--workers", type=int, default=None, help="Workers (CPU; or one per --gpus).")
@click.option("--max-trials", type=int, default=None, help="Launch at most N trials in this run.")
@click.option(
    "--no-check",
    "no_check",
    is_flag=True,
    help="Skip the preflight checks (`paretune sweep check`) that run before the sweep starts.",
)
def sweep_run(
    spec: Path, gpus: str | None, workers: int | None, max_trials: int | None, no_check: bool
) -> None:
    """Run (or resume) the sweep described by SPEC.

    Each trial runs in its own process pinned to one GPU. The study lives in the spec's
    storage (a journal file by default), so rerunning the same command resumes it;
    results land in the DuckDB file named by the spec. Ctrl-C stops cleanly.

    First the preflight checks of `paretune sweep check` run (seconds; one training step of
    the first point); a problem stops it with exit code 2 before anything is written.
    --no-check skips them.
    """
    _run(
        spec,
        gpus=gpus,
        workers=workers,
        max_trials=max_trials,
        storage=None,
        seed_offset=0,
        check=not no_check,
    )


@sweep_group.command("worker")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--storage",
    required=True,
    help="The shared study: postgresql://user@host/db (or a journal file).",
)
@click.option(
    "--max-trials", type=int, default=None, help="Launch at most N trials from this worker."
)
@click.option("--no-check", "no_check", is_flag=True, help="Skip the preflight checks.")
def sweep_worker(spec: Path, storage: str, max_trials: int | None, no_check: bool) -> None:
    """Join SPEC's study as one more worker (one per GPU; pin it with CUDA_VISIBLE_DEVICES).

    Start as many as you like on as many machines as share STORAGE; together they run
    exactly the spec's trial budget. The preflight checks (`paretune sweep check`) run on
    this machine first, unless --no-check.
    """
    # One worker; its trials inherit this process's CUDA_VISIBLE_DEVICES (recorded per trial).
    _run(
        spec,
        gpus=None,
        workers=1,
        max_trials=max_trials,
        storage=storage,
        seed_offset=1000 + os.getpid() % 100000,
        check=not no_check,
    )


@sweep_group.command("launch")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--cloud",
    is_flag=True,
    help="Workers on rented GPUs through SkyPilot, one per cluster (the only kind yet).",
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Clusters, one worker each."
)
@click.option(
    "--gpu", default=None, help="Catalogue GPU to rent (default: the cheapest offer that fits)."
)
@click.option("--provider", default=None, help="Catalogue provider to rent from (default: any).")
@click.option(
    "--storage",
    default=None,
    help="The shared study's postgresql:// URL (default: the spec's [run] storage).",
)
@click.option(
    "--max-trials", type=int, default=None, help="Launch at most N trials from each worker."
)
@click.option(
    "--install",
    default=None,
    help="What each cluster's setup installs with pip (default: 'paretune[distributed]' of "
    "this version).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the task files (default: <run dir>/cloud).",
)
@click.option("--dry-run", "dry_run", is_flag=True, help="Write the task files and launch nothing.")
def sweep_launch(
    spec: Path,
    cloud: bool,
    workers: int,
    gpu: str | None,
    provider: str | None,
    storage: str | None,
    max_trials: int | None,
    install: str | None,
    out: Path | None,
    dry_run: bool,
) -> None:
    """Launch SPEC's workers on rented GPUs through SkyPilot (--cloud), one per cluster.

    Each cluster rents the catalogue offer on which the most of the sweep's methods fit
    ([hardware] gpus_per_trial GPUs), the cheapest for their predicted hours (or the one
    --gpu/--provider name), installs paretune, mounts the spec with its data and model, and
    runs `paretune sweep worker` against the study's PostgreSQL storage. The workers charge
    their trials at the cluster's hourly price, so the study's dollar budget counts them and
    stops them. --dry-run writes the SkyPilot task files; without it `sky launch` runs each
    (the cloud extra: pip install 'paretune[cloud]'), and each cluster is torn down when its
    worker ends. `paretune results sync --storage URL` brings the trials back; `sky down
    CLUSTER` removes a cluster early.
    """
    from sweeps.cloud import (
        plan_launch,
        sky_check,
        sky_executable,
        sky_launch,
        write_tasks,
    )
    from sweeps.results.store import redact_url
    from sweeps.spec import load_spec

    if not cloud:
        raise SweepUsageError(
            "sweep launch needs --cloud: it launches workers on rented clusters",
            "On this machine, run `paretune sweep run SPEC` (or `paretune sweep worker`).",
        )
    if max_trials is not None and max_trials < 0:
        raise SweepUsageError(f"--max-trials must be >= 0, got {max_trials}")
    loaded = load_spec(spec)
    plan = plan_launch(
        loaded,
        workers=workers,
        gpu=gpu,
        provider=provider,
        storage=storage,
        install=install,
        max_trials=max_trials,
    )
    console = _console()

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    offer = plan.offer
    say(f"offer: {offer.line()}")
    say(
        f"trials charged at ${offer.trial_usd_per_hour:.4g}/h per GPU x {offer.gpus_per_trial} "
        f"GPU(s) = the cluster's price; methods that fit: {', '.join(offer.fits) or '-'}"
        + (
            f"; too big (recorded infeasible, never run): {', '.join(offer.too_big)}"
            if offer.too_big
            else ""
        )
    )
    sky = None if dry_run else sky_executable()
    if sky is not None:
        sky_check(sky, offer.cloud)
    folder = out or Path(loaded.run.dir) / "cloud"
    written = write_tasks(plan, folder)
    say(f"wrote {written[0]} (the workers' spec) and {len(written) - 1} task file(s):")
    for path in written[1:]:
        say(f"  {path}")
    url = redact_url(plan.storage_url)
    if sky is None:
        say("launch them with:")
        for path, cluster in zip(written[1:], plan.clusters, strict=True):
            say(f"  sky launch --down -c {cluster} {path}")
    else:
        for path, cluster in zip(written[1:], plan.clusters, strict=True):
            say(f"launching {cluster} ...")
            code = sky_launch(sky, path, cluster)
            if code:
                done = plan.clusters[: plan.clusters.index(cluster)]
                raise SweepUsageError(
                    f"`sky launch` of cluster {cluster} failed (exit {code}; SkyPilot's output "
                    "is above)" + (f"; already running: {', '.join(done)}" if done else ""),
                    "Fix what SkyPilot says and run the same command again; "
                    + (f"`sky down {' '.join(done)}` stops the others." if done else ""),
                )
        say(f"launched {len(plan.clusters)} worker(s); each cluster goes down when its worker ends")
    say(f"results:  paretune results sync --storage {url} && paretune sweep status {loaded.name}")
    say(f"cleanup:  sky down {' '.join(plan.clusters)}")


@sweep_group.command("status")
@click.argument("study", required=False)
@_db_option()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--storage",
    default=None,
    help="The study's PostgreSQL URL, to check its running trials' heartbeats (default: the "
    "URL recorded with the study, which has no password).",
)
def sweep_status(study: str | None, db: Path, fmt: str, storage: str | None) -> None:
    """Progress, spend, best trials and failures by reason of STUDY (or of every study).

    With a PostgreSQL study, each running trial shows how long ago its worker's last heartbeat
    was, and is marked STALE past the grace period: its worker looks dead, and the next worker
    to ask for a trial records it as lost and runs it again.
    """
    from sweeps.progress import steps_of
    from sweeps.results.frontier import frontier_hypervolume
    from sweeps.results.store import ResultsStore

    store = ResultsStore(db)
    studies = store.studies()
    if study is not None:
        studies = [s for s in studies if s["study"] == study]
        if not studies:
            from pricing.errors import did_you_mean

            raise SweepUsageError(
                f"no study {study!r} in {db}",
                did_you_mean(study, [s["study"] for s in store.studies()]),
            )
    report = []
    for row in studies:
        trials = store.trials(row["study"])
        failures: dict[str, int] = {}
        for t in trials:
            if t["state"] not in ("complete", "running", "waiting", "pruned"):
                failures[t["state"]] = failures.get(t["state"], 0) + 1
        pruned = [
            {"number": t["number"], "method": t["method"], "stopped_at_step": t["stopped_at_step"]}
            for t in trials
            if t["state"] == "pruned"
        ]
        best = store.frontier(row["study"])
        running = []
        for t in trials:
            if t["state"] == "running":
                steps = store.steps(row["study"], t["number"])
                running.append(
                    {
                        "number": t["number"],
                        "method": t["method"],
                        "steps_done": t["steps_done"],
                        "max_steps": t["max_steps"],
                        "loss": steps[-1]["loss"] if steps else None,
                        "started_at": t["started_at"],
                        "worker_host": t["worker_host"],
                    }
                )
        heartbeats = _running_heartbeats(storage or row["storage"], row["study"], running)
        report.append(
            {
                "study": row["study"],
                "model": row["model"],
                "trials": row["trials"],
                "complete": row["complete"],
                "running": len(running),
                "pruned": len(pruned),
                "pruned_trials": pruned,
                "failures": failures,
                "dollars": row["dollars"],
                "budget_dollars": row["budget_dollars"],
                "budget_trials": row["budget_trials"],
                "running_trials": running,
                **heartbeats,
                "hypervolume": frontier_hypervolume(trials),
                "frontier": [
                    {
                        k: t[k]
                        for k in (
                            "number",
                            "method",
                            "rank",
                            "lr",
                            "eval_nll",
                            "retain_delta_nll",
                            "dollars",
                            "artifact",
                        )
                    }
                    for t in best
                ],
            }
        )
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    from pricing.display import format_dollars

    # Piped (a file, grep): wide enough that no path is cut to "runs/de…".
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if not report:
        console.print(f"no studies in {db}", markup=False)
    for item in report:
        budget = f" of {format_dollars(item['budget_dollars'])}" if item["budget_dollars"] else ""
        trials_budget = f" of {item['budget_trials']}" if item["budget_trials"] else ""
        console.print(
            f"[bold]{item['study']}[/bold] ({item['model']}): {item['complete']} complete{trials_budget}, "
            f"{item['running']} running, {item['trials']} recorded; spent {format_dollars(item['dollars'])}{budget}; "
            f"hypervolume {item['hypervolume']:.4g}"
        )
        for t in item["running_trials"]:
            step = (
                "not started"
                if t["steps_done"] is None
                else f"step {steps_of(t['steps_done'], t['max_steps'])}"
            )
            loss = "" if t["loss"] is None else f", loss {t['loss']:.4f}"
            since = f", since {t['started_at']:%Y-%m-%d %H:%M:%S}" if t["started_at"] else ""
            host = f" on {t['worker_host']}" if t["worker_host"] else ""
            console.print(
                f"  running: #{t['number']} {t['method']} {step}{loss}{since}{host}"
                + _heartbeat_note(t, item.get("heartbeat_grace_s")),
                markup=False,
            )
        if item.get("heartbeats_unknown"):
            console.print(f"  heartbeats unknown: {item['heartbeats_unknown']}", markup=False)
        if item["pruned"]:
            console.print(
                f"  pruned (stopped early at a rung; not on the frontier): {item['pruned']}: "
                + ", ".join(
                    f"#{t['number']} at step {t['stopped_at_step']}" for t in item["pruned_trials"]
                ),
                markup=False,
            )
        if item["failures"]:
            console.print(
                "  not completed: "
                + ", ".join(f"{k} {v}" for k, v in sorted(item["failures"].items())),
                markup=False,
            )
        table = Table(title="Pareto-optimal trials", title_justify="left")
        for column in ("#", "method", "rank", "lr", "eval NLL", "retain dNLL", "$"):
            table.add_column(column)
        table.add_column("artifact", overflow="fold")  # wrapped if need be, never cut
        for t in item["frontier"]:
            table.add_row(
                str(t["number"]),
                t["method"] or "",
                _num(t["rank"]),
                _num(t["lr"]),
                _num(t["eval_nll"]),
                _num(t["retain_delta_nll"]),
                format_dollars(t["dollars"], sign=False),
                t["artifact"] or "",
            )
        console.print(table)


def _running_heartbeats(
    storage: str | None, study: str, running: list[dict[str, Any]]
) -> dict[str, Any]:
    """Add each running trial's heartbeat age and staleness (PostgreSQL studies only); the
    grace period, or why the heartbeats could not be read."""
    from sweeps.study import is_postgres

    if not running or not storage or not is_postgres(storage):
        return {}
    from sweeps.liveness import heartbeats_of

    try:
        ages, grace = heartbeats_of(storage, study)
    except Exception as error:  # noqa: BLE001 - any failure to reach the database: say so
        from sweeps.results.store import redact_url

        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return {"heartbeats_unknown": f"cannot read {redact_url(storage)}: {reason}"}
    for trial in running:
        age = ages.get(trial["number"])
        trial["heartbeat_age_s"] = None if age is None else round(age, 1)
        trial["heartbeat_stale"] = None if age is None else age > grace
    return {"heartbeat_grace_s": grace}


def _heartbeat_note(trial: dict[str, Any], grace: int | None) -> str:
    """``, heartbeat 12 s ago``, marked STALE past the grace period."""
    if grace is None:
        return ""
    age = trial.get("heartbeat_age_s")
    if age is None:
        return ", no heartbeat recorded"
    note = f", heartbeat {age:.0f} s ago"
    if trial["heartbeat_stale"]:
        note += (
            f": STALE (none for over {grace} s), its worker looks dead; the next worker to ask "
            "for a trial records it as lost and runs it again"
        )
    return note


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@click.command("sql")
@click.argument("query")
@_db_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="How to print the rows (json: a list of row objects).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the rows to FILE instead (.parquet, .csv or .json; its folder must exist).",
)
@click.option(
    "--allow-files",
    "allow_files",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    metavar="DIR",
    help="Let read-only SQL read files in DIR and below (read_parquet, read_csv, ...); repeatable.",
)
@click.option("--write", is_flag=True, help="Allow statements that change the file.")
def sql_command(
    query: str, db: Path, fmt: str, out: Path | None, allow_files: tuple[Path, ...], write: bool
) -> None:
    """Run SQL QUERY against the results file (read-only unless --write).

    Tables: studies, trials, steps; views: frontier, calibration (see docs/reference/schema.md).

    Read-only (the default) means nothing on disk changes and nothing is fetched. The query
    sees the results file only: other files, URLs and other databases are refused, and so are
    COPY, EXPORT and IMPORT DATABASE, ATTACH and DETACH, INSTALL and LOAD, CHECKPOINT, VACUUM
    and ANALYZE, PREPARE and EXECUTE, and changing any setting (SET, RESET, PRAGMA); such a
    statement exits with status 2 and says what to run instead. --allow-files DIR lets the
    query read files in DIR (and its subfolders) with read_parquet, read_csv, read_json, ...;
    SQL writes nothing there. --out FILE is written by paretune from the fetched rows. --write
    opens the file writable with DuckDB's full SQL: files, extensions and other databases.
    """
    from sweeps.results.store import ResultsStore

    store = ResultsStore(db)
    if write and allow_files:
        raise SweepUsageError(
            "--allow-files applies to read-only queries",
            "With --write the query may already read any file; drop --allow-files.",
        )
    if out is not None:
        from sweeps.results.export import check_export_path, write_table

        check_export_path(out)  # before the query runs: a bad path costs nothing
        table = (
            store.arrow(query) if write else _read_only(store, query, allow_files, arrow=True)[2]
        )
        write_table(table, out)
        click.echo(f"wrote {table.num_rows} rows to {out}", err=True)
        return
    if not write:
        columns, rows, _ = _read_only(store, query, allow_files, arrow=False)
    else:
        columns, rows = store.query(query, write=write)
    text = _format_rows(columns, rows, fmt)
    click.echo(text, nl=not text.endswith("\n"))


def _read_only(
    store: Any, query: str, allow_files: tuple[Path, ...], *, arrow: bool
) -> tuple[list[str], list[tuple[Any, ...]], Any]:
    """Run ``query`` on a read-only connection: (columns, rows, None), or ([], [], Arrow table)."""
    import duckdb

    from sweeps.results.readonly import check_read_only, sql_error

    check_read_only(query)
    with store.connect(allowed_dirs=allow_files) as connection:
        try:
            if arrow:
                import pyarrow as pa

                relation = connection.sql(query)
                return [], [], pa.table({}) if relation is None else relation.to_arrow_table()
            cursor = connection.execute(query)
            if cursor.description is None:
                return [], [], None
            return [d[0] for d in cursor.description], cursor.fetchall(), None
        except duckdb.Error as error:
            raise sql_error(error) from None


def _format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    from sweeps.results.export import json_default

    if fmt == "json":
        return (
            json.dumps(
                [dict(zip(columns, row, strict=False)) for row in rows],
                indent=2,
                default=json_default,
            )
            + "\n"
        )
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()
    if not columns:
        return "OK\n"
    width = os.get_terminal_size().columns if sys.stdout.isatty() else 200
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n"
    if len(columns) * _MIN_COLUMN_WIDTH > width:
        return (
            _vertical(columns, rows)
            + count
            + (
                f"{len(columns)} columns do not fit in {width} characters: one block per row. "
                "Name fewer columns, or use --format csv or json.\n"
            )
        )
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold", min_width=min(len(column), _MIN_COLUMN_WIDTH))
    for row in rows:
        table.add_row(*[_sql_cell(c, v) for c, v in zip(columns, row, strict=True)])
    import io

    console = Console(width=max(100, width), record=True, file=io.StringIO())
    console.print(table)
    return console.export_text() + count


_MIN_COLUMN_WIDTH = 8
"""A grid column narrower than this shows nothing readable: more columns switch to blocks."""


def _vertical(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """Rows as blocks of ``column | value`` lines (psql's expanded display)."""
    name_width = max(len(c) for c in columns)
    lines = []
    for number, row in enumerate(rows, 1):
        lines.append(f"-[ row {number} ]" + "-" * max(0, name_width - 6))
        for column, value in zip(columns, row, strict=True):
            lines.append(f"{column:<{name_width}} | {_sql_cell(column, value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _sql_cell(column: str, value: Any) -> str:
    """One value as the SQL grid shows it: dollars with significant digits, true/false."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and "dollars" in column.lower():
        from pricing.display import format_dollars

        return format_dollars(value, sign=False)
    return _num(value)


@click.command("frontier")
@click.argument("study", required=False)
@_db_option()
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(["quality", "forgetting", "cost"]),
    default="forgetting",
    show_default=True,
)
@click.option(
    "--y",
    "y_axis",
    type=click.Choice(["quality", "forgetting", "cost"]),
    default="quality",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write FILE.png, .svg or .html instead of drawing in the terminal.",
)
def frontier_command(
    study: str | None, db: Path, x_axis: str, y_axis: str, out: Path | None
) -> None:
    """Chart STUDY's trials: method by colour, cost by size, Pareto points joined.

    Without STUDY, the most recently created study. Prints the frontier size and hypervolume.
    """
    from sweeps.results.frontier import (
        axis_labels,
        frontier_hypervolume,
        indistinguishable_pairs,
        mixed_data_warning,
        plot_frontier,
        terminal_frontier,
    )
    from sweeps.results.store import ResultsStore

    if x_axis == y_axis:
        raise SweepUsageError(f"--x and --y are both {x_axis!r}", "Pick two different objectives.")
    store = ResultsStore(db)
    studies = [s["study"] for s in store.studies()]
    if not studies:
        raise SweepUsageError(f"no studies in {db}", "Run a sweep first: paretune sweep run SPEC")
    if study is None:
        study = studies[0]
    elif study not in studies:
        from pricing.errors import did_you_mean

        raise SweepUsageError(f"no study {study!r} in {db}", did_you_mean(study, studies))
    rows = store.trials(study)
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        raise SweepUsageError(
            f"study {study!r} has no completed trials yet",
            "`paretune sweep status` shows what happened to its trials.",
        )
    front = store.frontier(study)
    title = f"{study}: {len(complete)} trials, {len(front)} Pareto-optimal"
    _, metric_rows = store.query(
        "SELECT quality_metric, forgetting_metric, cost_metric FROM studies WHERE study = ?",
        [study],
    )
    labels = axis_labels(dict(zip(("quality", "forgetting", "cost"), metric_rows[0], strict=False)))
    if out is not None:
        if out.suffix.lower() not in (".png", ".svg", ".html"):
            raise SweepUsageError(f"--out must end in .png, .svg or .html, got {out.name!r}")
        plot_frontier(rows, out, x=x_axis, y=y_axis, title=title, labels=labels)
        click.echo(f"wrote {out}")
    else:
        size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((100, 30))
        click.echo(
            terminal_frontier(
                rows,
                x=x_axis,
                y=y_axis,
                width=size.columns,
                height=max(15, size.lines - 6),
                title=title,
                labels=labels,
            )
        )
    click.echo(
        f"frontier: trials {', '.join('#' + str(r['number']) for r in front)}; "
        f"hypervolume {frontier_hypervolume(rows):.4g}"
    )
    warning = mixed_data_warning(rows)
    if warning is not None:
        click.secho(warning, fg="yellow", err=True)
    if any(r.get("repeats") for r in complete):  # repeated trials: say which the noise hides
        pairs = indistinguishable_pairs(rows)
        click.echo(
            "within noise (every objective differs by less than the larger sd of its repeats): "
            + ", ".join(f"#{a} ~ #{b}" for a, b in pairs)
            if pairs
            else "within noise: none (every two frontier trials differ by more than their sd)"
        )


@click.group("results")
def results_group() -> None:
    """The DuckDB results file."""


@results_group.command("sync")
@click.option(
    "--storage", required=True, help="Optuna storage: a journal file or postgresql:// URL."
)
@click.option(
    "--study", "studies", multiple=True, help="Only this study (repeatable); default: all."
)
@_db_option("DuckDB results file (created if missing).")
def results_sync(storage: str, studies: tuple[str, ...], db: Path) -> None:
    """Import studies from an Optuna storage into the results file (idempotent)."""
    import optuna

    from sweeps.results.store import ResultsStore
    from sweeps.study import open_storage
    from sweeps.worker import import_kept_results

    if not storage.startswith(("postgresql", "postgres://")) and not Path(storage).exists():
        raise SweepUsageError(f"no journal file at {storage}", "Pass the storage the sweep used.")
    backend = open_storage(storage)
    # The names alone: the study summaries read (and copy) every trial of every study.
    names = optuna.get_all_study_names(backend)
    chosen = list(studies) or names
    missing = [s for s in chosen if s not in names]
    if missing:
        from pricing.errors import did_you_mean

        raise SweepUsageError(
            f"no study {missing[0]!r} in {storage}", did_you_mean(missing[0], names)
        )
    store = ResultsStore(db)
    for name in chosen:
        study = optuna.load_study(study_name=name, storage=backend)
        imported = import_kept_results(study, backend, storage)
        if imported:
            click.echo(f"{name}: {imported}")
        count = store.sync_study(study, storage=storage)
        click.echo(f"{name}: {count} trials -> {db}")


@results_group.command("upgrade")
@_db_option()
def results_upgrade(db: Path) -> None:
    """Rewrite an older results file so DuckDB 1.x clients open it too.

    Files paretune created before it chose DuckDB 1.0's storage format are in DuckDB 2's
    format, which the 1.x command-line client, DBeaver and other 1.x tools refuse. This copies
    every table and view into a file of the 1.0 format under the file's write lock, checks the
    row counts, and puts the copy in place; the original stays as FILE.duckdb2-backup. A file
    already in the 1.0 format is left as it is.
    """
    from sweeps.results.store import ResultsStore

    if not db.is_file():
        raise SweepUsageError(
            f"no results file at {db}", "Pass the file a sweep wrote with --db (or run a sweep)."
        )
    store = ResultsStore(db)
    backup = store.upgrade_format()
    if backup is None:
        click.echo(f"{db}: already readable by DuckDB 1.0 and later ({store.storage_format()})")
    else:
        click.echo(
            f"{db}: rewritten in DuckDB 1.0's storage format ({store.storage_format()}); "
            f"the original is kept as {backup}"
        )


@results_group.command("export")
@click.option(
    "--to",
    "to",
    nargs=2,
    required=True,
    metavar="KIND WHERE",
    help="mlflow URI (sqlite:///mlflow.db, file:./mlruns, http://host:5000), or "
    "wandb-offline FOLDER (offline W&B runs in FOLDER/wandb).",
)
@click.option(
    "--study", "studies", multiple=True, help="Only this study (repeatable); default: all."
)
@click.option("--experiment", default=None, help="MLflow experiment; default: the study's name.")
@_db_option()
def results_export(
    to: tuple[str, str], studies: tuple[str, ...], experiment: str | None, db: Path
) -> None:
    """Log a study's trials as MLflow runs (or offline W&B runs); idempotent.

    Each ended trial becomes one run, a child of the study's run: its parameters, its three
    objectives and other metrics, its step curve, hardware, the whole row as trial.json, and
    its adapter when it was kept. A trial already logged there (by an earlier export or by
    the sweep's [run] mlflow) is skipped.
    """
    from sweeps.results.store import ResultsStore
    from sweeps.results.tracking import (
        MlflowTarget,
        Target,
        WandbOfflineTarget,
        export_study,
    )

    kind, where = to
    if kind not in ("mlflow", "wandb-offline"):
        raise SweepUsageError(
            f"--to {kind!r} is not a place trials can be exported to.",
            "Use `--to mlflow URI` (e.g. sqlite:///mlflow.db) or `--to wandb-offline FOLDER`.",
        )
    if not db.is_file():
        raise SweepUsageError(
            f"no results file at {db}", "Pass the file a sweep wrote with --db (or run a sweep)."
        )
    store = ResultsStore(db)
    names = [row["study"] for row in store.studies()]
    chosen = list(studies) or names
    missing = [s for s in chosen if s not in names]
    if missing or not chosen:
        from pricing.errors import did_you_mean

        raise SweepUsageError(
            f"no study {missing[0]!r} in {db}" if missing else f"no study in {db}",
            did_you_mean(missing[0], names) if missing else "Run a sweep first.",
        )
    target: Target = (
        MlflowTarget(where, experiment=experiment)
        if kind == "mlflow"
        else WandbOfflineTarget(Path(where))
    )
    for name in chosen:
        done = export_study(store, name, [target])
        logged, skipped = done.logged[target.label], done.skipped[target.label]
        click.echo(
            f"{name}: {len(logged)} trial{'s' if len(logged) != 1 else ''} logged to "
            f"{target.label}" + (f", {skipped} already there" if skipped else "")
        )


COMMANDS: list[click.Command] = [sweep_group, sql_command, frontier_command, results_group]
