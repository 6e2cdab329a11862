"""Sweeps on a disk that fills up or turns read-only, run inside a user and mount namespace.

``python tests/disk_scenarios.py SCENARIO FOLDER`` is started by ``tests/test_write_failures.py``
under ``unshare --user --map-root-user --mount``, where it may mount a small tmpfs or a
read-only bind mount without privileges on the machine. It prints one JSON object: what each
command printed, its exit code, and the study's trials afterwards.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import load_spec_study, paretune, start, wait_for_running_trial, write_demo_spec


def wait_for_training(spec: Path, process: subprocess.Popen[str]) -> None:
    """Until a trial trains: its last write before the run (the gate's constraint) is done."""
    import optuna

    wait_for_running_trial(spec, process)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        running = load_spec_study(spec).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
        if any(k.startswith("constraints") for t in running for k in t.system_attrs):
            return
        time.sleep(0.2)
    raise AssertionError("no trial started training in time")


def mount_tmpfs(folder: Path, size: str = "1m") -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its disk is full; the file that holds them."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)
    return filler


def make_read_only(folder: Path) -> None:
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)


def trials(spec: Path) -> list[dict]:
    return [
        {
            "number": t.number,
            "state": t.user_attrs.get("state"),
            "optuna_state": t.state.name,
            "params": t.params,
            "values": t.values,
            "wall_s": ((t.user_attrs.get("result") or {}).get("measured") or {}).get("wall_s"),
        }
        for t in load_spec_study(spec).get_trials(deepcopy=False)
    ]


def journal_breaks_mid_trial(folder: Path, how: str) -> dict:
    """A two-trial sweep whose journal folder fills up (``full``) or turns read-only (``ro``)
    while its first trial trains; then, the folder repaired, the same command again."""
    journal = folder / "journal"
    journal.mkdir()
    mount_tmpfs(journal)
    spec = write_demo_spec(
        folder, "w", trials=2, storage=str(journal / "w.journal"), save="all", max_steps=30
    )  # 30 steps: the trial still trains when the folder breaks, however loaded the machine
    sweep = start("sweep", "run", str(spec), "--no-check")
    wait_for_training(spec, sweep)
    filler = fill(journal) if how == "full" else make_read_only(journal)
    first, _ = sweep.communicate(timeout=600)
    if how == "full":
        filler.unlink()
    else:
        subprocess.run(["umount", str(journal)], check=True)
    second = paretune("sweep", "run", str(spec), "--no-check")
    return {
        "first": {"rc": sweep.returncode, "out": first},
        "second": {"rc": second.returncode, "out": second.stdout + second.stderr},
        "trials": trials(spec),
        "kept": sorted(str(p.relative_to(folder)) for p in folder.rglob("pending-trials*")),
    }


def full_at_start(folder: Path) -> dict:
    """``sweep check``, ``sweep run`` and ``sweep run --no-check`` with the journal's disk full."""
    journal = folder / "journal"
    journal.mkdir()
    mount_tmpfs(journal)
    fill(journal)
    spec = write_demo_spec(folder, "w", trials=1, storage=str(journal / "w.journal"))
    runs = {}
    for name, args in {
        "check": ("sweep", "check", str(spec)),
        "run": ("sweep", "run", str(spec)),
        "no_check": ("sweep", "run", str(spec), "--no-check"),
    }.items():
        done = paretune(*args)
        runs[name] = {"rc": done.returncode, "out": done.stdout + done.stderr}
    return runs


def results_full_mid_sweep(folder: Path) -> dict:
    """A two-trial sweep whose results file's disk fills up while its first trial trains."""
    results = folder / "results"
    results.mkdir()
    mount_tmpfs(results, "4m")
    spec = write_demo_spec(folder, "w", trials=2)
    text = spec.read_text().replace(str(folder / "results.duckdb"), str(results / "r.duckdb"))
    spec.write_text(text)
    sweep = start("sweep", "run", str(spec), "--no-check")
    wait_for_training(spec, sweep)
    filler = fill(results)
    out, _ = sweep.communicate(timeout=600)
    filler.unlink()
    synced = paretune(
        "results",
        "sync",
        "--storage",
        str(folder / "runs" / "w.journal"),
        "--db",
        str(results / "r.duckdb"),
    )
    from sweeps.results.store import ResultsStore

    rows = ResultsStore(results / "r.duckdb").trials("w")
    return {
        "run": {"rc": sweep.returncode, "out": out},
        "sync": {"rc": synced.returncode, "out": synced.stdout + synced.stderr},
        "rows": [(r["number"], r["state"]) for r in rows],
        "trials": trials(spec),
    }


SCENARIOS = {
    "journal-full": lambda folder: journal_breaks_mid_trial(folder, "full"),
    "journal-read-only": lambda folder: journal_breaks_mid_trial(folder, "ro"),
    "full-at-start": full_at_start,
    "results-full": results_full_mid_sweep,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](Path(sys.argv[2]))))
