"""A journal file whose last write was cut short (a killed writer, a full disk) is repaired when
it is opened: the torn bytes go aside, every complete record stays, and the study goes on."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from sweeps.journal import recover_journal
from sweeps.study import open_storage

TORN = b'{"op_code":6,"worker_id":"abc'


def _journal(folder: Path, trials: int = 3) -> Path:
    """A real journal: a study with ``trials`` complete trials."""
    path = folder / "study.journal"
    study = optuna.create_study(
        study_name="s", storage=open_storage(str(path)), directions=["minimize", "minimize"]
    )
    for i in range(trials):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        study.tell(trial, [float(i), 1.0])
    return path


def _states(path: Path, name: str = "s") -> list[str]:
    study = optuna.load_study(study_name=name, storage=open_storage(str(path)))
    return [t.state.name for t in study.trials]


def _torn_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.torn-*"))


def test_a_torn_last_record_is_set_aside_and_the_study_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _journal(tmp_path)
    complete = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(TORN)
    storage = open_storage(str(path))
    warning = capsys.readouterr().err
    assert warning.startswith("warning: the journal") and "torn record (29 bytes" in warning
    assert warning.count("\n") == 1  # one paragraph
    [aside] = _torn_files(path)
    assert aside.name.startswith("study.journal.torn-") and str(aside) in warning
    assert aside.read_bytes() == TORN + b"\n"
    assert path.read_bytes() == complete  # every complete record, nothing else
    # New records go on their own lines again: the study can be written and reopened.
    study = optuna.load_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    study.tell(trial, [3.0, 1.0])
    assert _states(path) == ["COMPLETE"] * 4
    assert capsys.readouterr().err == ""  # a sound journal opens silently


def test_without_recovery_the_next_append_poisons_the_journal(tmp_path: Path) -> None:
    """Why: Optuna skips a torn last line but appends onto it, and then cannot read the file."""
    path = _journal(tmp_path)
    with path.open("ab") as handle:
        handle.write(TORN)
    for _ in range(2):  # two runs: the first writes onto the torn line, the second after it
        with contextlib.suppress(Exception):  # Optuna fails reading back what it wrote
            storage = JournalStorage(JournalFileBackend(str(path)))
            optuna.load_study(study_name="s", storage=storage).ask()
    with pytest.raises(ValueError, match="Expecting ',' delimiter"):
        JournalStorage(JournalFileBackend(str(path)))


def test_a_complete_last_record_without_its_newline_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _journal(tmp_path)
    written = path.read_bytes()
    path.write_bytes(written[:-1])  # the last record (trial 2 told complete) lacks "\n"
    # Optuna alone ignores that record: trial 2 would still be running.
    stock = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.state.name for t in stock.trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert _states(path) == ["COMPLETE"] * 3
    assert path.read_bytes() == written
    assert _torn_files(path) == []
    assert "was complete but lacked its newline" in capsys.readouterr().err


def test_a_journal_already_poisoned_by_an_append_is_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal written onto a torn line by an earlier run (which then died): the torn bytes
    go aside and the record appended onto them is kept, as is every line after it."""
    path = _journal(tmp_path)
    before = path.read_bytes()
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    study.tell(trial, [5.0, 1.0])
    appended = path.read_bytes()[len(before) :]  # the records of one more trial
    path.write_bytes(before + TORN + appended)  # as if appended after a torn write
    with pytest.raises(ValueError):  # Optuna alone cannot open it
        JournalStorage(JournalFileBackend(str(path)))
    storage = open_storage(str(path))
    assert "torn record" in capsys.readouterr().err
    assert [t.values for t in optuna.load_study(study_name="s", storage=storage).trials][-1] == [
        5.0,
        1.0,
    ]
    [aside] = _torn_files(path)
    assert aside.read_bytes() == TORN + b"\n"


def test_recovery_waits_for_a_writer_holding_the_journal_lock(tmp_path: Path) -> None:
    """A writer appends under Optuna's lock (``<journal>.lock``): its half-written line is not
    torn, so recovery takes the same lock before it looks, and the writer's line is kept."""
    path = _journal(tmp_path)
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    with path.open("ab") as handle:
        handle.write(b'{"op_code":2,"worker_id":"w","study_id":0,')  # a write in progress
    result: list[str | None] = []
    recovering = threading.Thread(target=lambda: result.append(recover_journal(path)))
    recovering.start()
    time.sleep(1.0)
    assert recovering.is_alive() and _torn_files(path) == []  # waiting for the lock
    with path.open("ab") as handle:
        handle.write(b'"user_attr":{"note":"done"}}\n')  # the writer finishes its line
    lock.release()
    recovering.join(timeout=30)
    assert result == [None] and _torn_files(path) == []
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert study.user_attrs == {"note": "done"}


def test_a_sound_or_missing_journal_is_left_alone(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    before = path.read_bytes()
    assert recover_journal(path) is None
    assert recover_journal(path, scan_all=True) is None
    assert path.read_bytes() == before
    assert recover_journal(tmp_path / "none.journal") is None
    assert not (tmp_path / "none.journal").exists()


@pytest.mark.slow
def test_sweeps_and_sync_go_on_after_a_torn_journal(demo, tmp_path: Path) -> None:
    """The reported case, through the command line: a demo study's journal torn at its end,
    then two `sweep run`s and a `results sync` (each failed before, from the first on)."""
    from conftest import paretune, write_demo_spec

    spec = write_demo_spec(tmp_path, "torn", trials=10, save="none")
    first = paretune("sweep", "run", str(spec), "--max-trials", "1", "--no-check")
    assert first.returncode == 0, first.stdout + first.stderr
    journal = tmp_path / "runs" / "torn.journal"
    with journal.open("ab") as handle:
        handle.write(TORN)
    for run in range(2):
        again = paretune("sweep", "run", str(spec), "--max-trials", "1", "--no-check")
        assert again.returncode == 0, again.stdout + again.stderr
        assert ("torn record" in again.stderr) == (run == 0), again.stderr
        assert "Traceback" not in again.stderr
    synced = paretune("results", "sync", "--storage", str(journal), "--db", str(tmp_path / "r.db"))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "torn: 3 trials" in synced.stdout
    assert _states(journal, "torn") == ["COMPLETE"] * 3
    [aside] = _torn_files(journal)
    assert aside.read_bytes() == TORN + b"\n"
