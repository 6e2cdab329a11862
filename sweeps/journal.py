"""Recovery of a journal file whose last write was cut short.

Optuna's journal (``JournalFileBackend``) appends one JSON record per line. A writer killed in
the middle of an append, or a full disk, leaves a torn last line; Optuna skips it on reading,
but the next append lands on the same line and makes it unreadable, and from then on every
open of the study fails ("Expecting ',' delimiter"). :func:`recover_journal` runs before a
journal is opened: it moves torn bytes aside into ``<journal>.torn-YYYYmmdd-HHMMSS`` and keeps
every complete record, under Optuna's own lock on the file, so no writer is mid-append while
it looks and none is cut short.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

__all__ = ["recover_journal"]

_RECORD_START = b'{"op_code"'
"""How every record Optuna writes begins (``json.dumps`` of a dict whose first key is
op_code). Inside a record the same bytes only occur escaped (``{\\"op_code\\"``), in a string."""


@dataclass
class _Recovery:
    torn: list[bytes] = field(default_factory=list)  # pieces set aside
    completed: bool = False  # a last record lacked only its newline
    aside: Path | None = None  # where the torn pieces went


def recover_journal(path: str | Path, *, scan_all: bool = False) -> str | None:
    """Set aside the torn bytes of ``path``; return one paragraph saying what was done, or None.

    Looks at the last line only (a few bytes read) unless ``scan_all``: then every line is
    checked, which also repairs a journal an earlier run already wrote onto a torn line (that
    line is the torn bytes followed by a complete record: the record is kept). A last line
    that is a complete record lacking only its newline gets the newline; it is not set aside.
    """
    path = Path(path)
    if not path.is_file() or (not scan_all and not _ends_torn(path)):
        return None
    with _journal_lock(path):
        recovery = _repair_lines(path) if scan_all else _repair_tail(path)
    return _report(path, recovery)


def _ends_torn(path: Path) -> bool:
    """Whether the file's last byte is not a newline (a cheap look, without the lock)."""
    size = path.stat().st_size
    if size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) != b"\n"


@contextlib.contextmanager
def _journal_lock(path: Path) -> Iterator[None]:
    """The lock Optuna's ``JournalFileBackend`` takes around each append (``<journal>.lock``)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # released by another after its grace period
            lock.release()


def _is_record(data: bytes) -> bool:
    """Whether ``data`` (one line without its newline) is a whole JSON record."""
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False


def _repair_tail(path: Path) -> _Recovery:
    """Under the lock: complete the last line, or set it aside and cut it off."""
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = _last_line_start(handle, size)
        handle.seek(start)
        last = handle.read()
        if not last or last.endswith(b"\n"):
            return _Recovery()  # a writer finished the line since the first look
        if _is_record(last):
            handle.write(b"\n")
            recovery = _Recovery(completed=True)
        else:
            recovery = _Recovery(torn=[last], aside=_set_aside(path, [last]))
            handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    return recovery


def _last_line_start(handle: BinaryIO, size: int, chunk: int = 1 << 16) -> int:
    """The offset just after the last newline of the file (0 if there is none)."""
    end = size
    while end > 0:
        begin = max(0, end - chunk)
        handle.seek(begin)
        newline = handle.read(end - begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _repair_lines(path: Path) -> _Recovery:
    """Under the lock: check every line; rewrite the file only if one is not a record."""
    kept: list[bytes] = []
    recovery = _Recovery()
    for line in path.read_bytes().splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        if _is_record(body):
            recovery.completed = recovery.completed or not line.endswith(b"\n")
            kept.append(line if line.endswith(b"\n") else line + b"\n")
            continue
        start = _record_inside(body)
        recovery.torn.append(body if start is None else body[:start])
        if start is not None:  # torn bytes, then a complete record a later append wrote on them
            kept.append(body[start:] + b"\n")
    if recovery.torn or recovery.completed:
        recovery.aside = _set_aside(path, recovery.torn)
        temporary = path.with_name(path.name + ".recovering")
        with temporary.open("wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    return recovery


def _record_inside(line: bytes) -> int | None:
    """Where a complete record starts inside a line that is not one, if one ends the line."""
    start = line.find(_RECORD_START, 1)
    while start > 0:
        if _is_record(line[start:]):
            return start
        start = line.find(_RECORD_START, start + 1)
    return None


def _set_aside(path: Path, pieces: list[bytes]) -> Path | None:
    """Append ``pieces`` (one a line) to ``<journal>.torn-<now>``, durably, before any cut."""
    if not pieces:
        return None
    target = path.with_name(f"{path.name}.torn-{datetime.now():%Y%m%d-%H%M%S}")
    with target.open("ab") as handle:
        handle.writelines(piece + b"\n" for piece in pieces)
        handle.flush()
        os.fsync(handle.fileno())
    return target


def _report(path: Path, recovery: _Recovery) -> str | None:
    """One paragraph for the user, or None when nothing was changed."""
    said = []
    if recovery.torn:
        size = sum(len(piece) for piece in recovery.torn)
        what = "a torn record" if len(recovery.torn) == 1 else f"{len(recovery.torn)} torn records"
        said.append(
            f"the journal {path} held {what} ({size} bytes, left by a process killed while "
            f"writing or by a full disk); the torn bytes were moved to {recovery.aside}"
        )
    if recovery.completed:
        said.append(f"the last record of {path} was complete but lacked its newline; it was added")
    if not said:
        return None
    return (
        "warning: "
        + "; ".join(said)
        + ". The study goes on with every complete record, none of which was changed."
    )
