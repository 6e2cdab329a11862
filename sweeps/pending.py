"""Finished trials the study storage could not take, kept on disk until the next run imports them.

A trial's result is told to the Optuna storage (a journal file, or PostgreSQL) when it ends.
If that write fails (a full disk, a folder that became read-only, a database that went away),
the result is not thrown away: :func:`save_pending` appends it, as one JSON line, to
``<run.dir>/<study>/pending-trials.jsonl`` (or, when that cannot be written either, to the same
name under ``$XDG_STATE_HOME/paretune/<study>-<storage hash>/``), flushed and fsynced before the
sweep stops. The next ``paretune sweep run`` of the study, ``sweep worker`` or ``results sync``
calls :func:`import_pending` before anything else: a trial still RUNNING in the storage is told
its result under its own number, so its point is not run again; a trial the storage already
holds as finished otherwise (another worker recovered it as ``lost``) gets its result as a new
trial with the same parameters. The file is then renamed ``pending-trials.imported-<time>.jsonl``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricing.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "PENDING_NAME",
    "StorageWriteError",
    "import_pending",
    "is_storage_write_error",
    "pending_paths",
    "save_pending",
    "storage_problem",
]

PENDING_NAME = "pending-trials.jsonl"


class StorageWriteError(UserError):
    """The study storage could not be written: the sweep stops (exit 2), no result is lost."""

    title = "Study storage"


_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only"}


def is_storage_write_error(error: BaseException) -> bool:
    """Whether ``error`` is a failed write to the study storage: an ``OSError`` of the journal
    file, or Optuna's error for a database that refused or lost the write."""
    if isinstance(error, OSError):
        return True
    from optuna.exceptions import StorageInternalError

    return isinstance(error, StorageInternalError)


def storage_problem(error: BaseException) -> str:
    """The failed write in a few words: ``the disk is full ([Errno 28] No space left ...)``."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    why = _DISK_ERRNOS.get(getattr(error, "errno", None) or -1)
    if why is None and isinstance(error, PermissionError):
        why = "permission denied"
    return f"{why} ({text})" if why else text


def pending_paths(run_dir: str | Path | None, study: str, storage_url: str) -> list[Path]:
    """Where a study's pending results are written, first choice first (and read, all)."""
    paths = []
    if run_dir:
        paths.append(Path(run_dir) / study / PENDING_NAME)
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = f"{zlib.crc32(storage_url.encode()):08x}"
    paths.append(state / "paretune" / f"{study}-{key}" / PENDING_NAME)
    return paths


def save_pending(record: dict[str, Any], paths: list[Path]) -> Path | None:
    """Append ``record`` as one line to the first of ``paths`` that takes it, flushed to the
    disk (file and folder fsynced); that path, or None when none could be written."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(descriptor, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write")
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if created:
                _fsync_folder(path.parent)
            return path
        except OSError:
            continue
    return None


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def pending_record(
    trial: optuna.Trial,
    *,
    attrs: dict[str, Any],
    outcome: str,
    values: list[float] | None,
) -> dict[str, Any]:
    """What the storage should have been told about ``trial``: enough to tell it later, or to
    add it as a new trial with the same parameters."""
    from optuna.distributions import distribution_to_json

    frozen = trial.study._storage.get_trial(trial._trial_id)
    return {
        "number": trial.number,
        "params": dict(frozen.params),
        "distributions": {
            name: distribution_to_json(dist) for name, dist in frozen.distributions.items()
        },
        "attrs": {**frozen.user_attrs, **attrs},
        "outcome": outcome,
        "values": values,
        "saved_at": datetime.now().isoformat(timespec="seconds"),
    }


def import_pending(study: optuna.Study, paths: list[Path]) -> tuple[list[int], list[Path]]:
    """Tell ``study`` the results kept in ``paths``; return the trial numbers imported and the
    files they came from (renamed ``*.imported-<time>.jsonl``). A storage that still cannot be
    written raises its own error and leaves the files as they are."""
    imported: list[int] = []
    done: list[Path] = []
    for path in paths:
        if not path.is_file():
            continue
        for record in _records(path):
            imported.append(_import_one(study, record))
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.stem.removesuffix('.jsonl')}.imported-{stamp}.jsonl")
        path.rename(target)
        done.append(target)
    return imported, done


def _records(path: Path) -> list[dict[str, Any]]:
    """The whole lines of ``path`` (a line cut short by a crash while it was written is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and "number" in record:
                records.append(record)
    return records


def _import_one(study: optuna.Study, record: dict[str, Any]) -> int:
    """Tell one kept result; the number of the trial that holds it now."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    number = record["number"]
    trial = trials[number] if number < len(trials) else None
    attrs = record["attrs"]
    values = record["values"]
    if trial is not None and trial.state == TrialState.RUNNING:
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        if values is not None:
            study.tell(number, values)
        else:
            study.tell(number, state=_unvalued_state(record))
        return number
    if trial is not None and trial.user_attrs.get("result") == attrs.get("result"):
        return number  # told already (the write failed after the tell went through)
    return _add_as_new(study, record)


def _unvalued_state(record: dict[str, Any]) -> Any:
    """Optuna's state for a kept result without objectives: PRUNED for a trial that early
    stopping stopped, else FAIL."""
    from optuna.trial import TrialState

    return TrialState.PRUNED if record.get("outcome") == "pruned" else TrialState.FAIL


def _add_as_new(study: optuna.Study, record: dict[str, Any]) -> int:
    """A kept result whose trial the storage finished otherwise: a new trial, same point."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    values = record["values"]
    trial = optuna.trial.create_trial(
        params=record["params"],
        distributions={
            name: json_to_distribution(text) for name, text in record["distributions"].items()
        },
        values=values,
        state=TrialState.COMPLETE if values is not None else _unvalued_state(record),
        user_attrs=record["attrs"],
    )
    study.add_trial(trial)
    return len(study.get_trials(deepcopy=False)) - 1
