"""Writes that fail mid-sweep: a full disk, a read-only folder, a results file cut short, an
artifact that cannot be saved, a data line too long to tokenize. No finished trial is thrown
away, nothing is run twice, each failure is one paragraph, never a traceback.

The full-disk and read-only tests mount a small tmpfs or a read-only bind mount inside a user
and mount namespace (``unshare -rm``, :mod:`disk_scenarios`); they are skipped where the
machine does not allow that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, cli_env, journal_study, load_spec_study, paretune, write_demo_spec

from sweeps.results.store import ResultsStore, StoreError, study_row, trial_rows
from sweeps.spec import load_spec
from sweeps.worker import Sweep


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
            "mount -t tmpfs -o size=64k tmpfs /tmp",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _can_mount(), reason="mounting in a user namespace (unshare -rm) is not permitted here"
)


def _scenario(name: str, folder: Path) -> dict:
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            sys.executable,
            str(ROOT / "tests" / "disk_scenarios.py"),
            name,
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _one_paragraph(out: str) -> str:
    """The error paragraph a command ended with (the console wraps lines at its width)."""
    assert "Traceback" not in out, out
    error = out[out.index("Error: ") :]
    return " ".join(error.split())


# ---------------------------------------------------------------- the study storage


@pytest.mark.slow
@needs_mounts
@pytest.mark.parametrize("how", ["full", "read-only"])
def test_a_journal_that_breaks_mid_trial_keeps_the_result_and_the_next_run_imports_it(
    demo, tmp_path: Path, how: str
) -> None:
    outcome = _scenario(f"journal-{how}", tmp_path)
    first, second = outcome["first"], outcome["second"]
    assert first["rc"] == 2, first["out"]
    paragraph = _one_paragraph(first["out"])
    why = "the disk is full" if how == "full" else "the file system is read-only"
    assert f"cannot write the study storage {tmp_path}/journal/w.journal: {why}" in paragraph
    kept = tmp_path / "runs" / "w" / "pending-trials.jsonl"
    assert f"Finished trial(s) [0] are kept in {kept}" in paragraph
    # The next run imports trial 0 under its own number and runs only the one trial left.
    assert second["rc"] == 0, second["out"]
    flat = " ".join(second["out"].split())
    assert "imported 1 finished trial(s) [0] that an earlier run could not write" in flat
    trials = outcome["trials"]
    assert [(t["number"], t["state"], t["optuna_state"]) for t in trials] == [
        (0, "complete", "COMPLETE"),
        (1, "complete", "COMPLETE"),
    ]
    assert trials[0]["values"] and trials[0]["wall_s"] > 0  # the first run's measurements
    assert trials[0]["params"] != trials[1]["params"]
    assert [k for k in outcome["kept"] if k.endswith("pending-trials.jsonl")] == []
    assert len([k for k in outcome["kept"] if ".imported-" in k]) == 1


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_at_start_is_said_at_once(demo, tmp_path: Path) -> None:
    runs = _scenario("full-at-start", tmp_path)
    for name in ("check", "run"):  # the preflight checks see it
        assert runs[name]["rc"] == 2, runs[name]["out"]
        assert "Traceback" not in runs[name]["out"]
        flat = " ".join(runs[name]["out"].split())
        assert f"the disk holding {tmp_path}/journal is full" in flat, flat
    assert runs["no_check"]["rc"] == 2, runs["no_check"]["out"]
    paragraph = _one_paragraph(runs["no_check"]["out"])
    assert "cannot write the study storage" in paragraph and "the disk is full" in paragraph
    assert "Nothing was run." in paragraph


@pytest.mark.slow
@needs_mounts
def test_results_on_a_full_disk_lose_nothing(demo, tmp_path: Path) -> None:
    outcome = _scenario("results-full", tmp_path)
    run = outcome["run"]
    assert run["rc"] == 0, run["out"]
    assert "Traceback" not in run["out"]
    flat = " ".join(run["out"].split())
    assert "cannot write the results file" in flat and "the disk is full" in flat, flat
    assert [t["state"] for t in outcome["trials"]] == ["complete", "complete"]
    assert outcome["sync"]["rc"] == 0, outcome["sync"]["out"]
    assert outcome["rows"] == [[0, "complete"], [1, "complete"]]


# ---------------------------------------------------------------- a results file cut short


def _results_file(tmp_path: Path) -> tuple[Path, str]:
    """A real results file of a few blocks, and the journal of its study."""
    study = journal_study(tmp_path)
    db = tmp_path / "results.duckdb"
    store = ResultsStore(db)
    store.write_study(study_row(study))
    rows, steps = trial_rows(study)
    wide = [{**row, "number": 10 + i, "error": "x" * 5000} for i in range(400) for row in rows[:1]]
    store.write_trials(rows + wide, steps)
    return db, str(tmp_path / "s.journal")


def test_a_results_file_cut_short_is_reported_and_left_byte_identical(tmp_path: Path) -> None:
    db, journal = _results_file(tmp_path)
    assert db.stat().st_size > 500_000
    os.truncate(db, 300_000)
    before = db.read_bytes()

    with pytest.raises(StoreError, match="cut short") as caught:
        ResultsStore(db).write_trials([{"study": "s", "number": 99, "state": "complete"}])
    assert "300,000 bytes" in caught.value.message and "left untouched" in caught.value.hint
    with pytest.raises(StoreError, match="cut short"):
        ResultsStore(db).trials("s")
    synced = paretune("results", "sync", "--storage", journal, "--db", str(db))
    assert synced.returncode == 2, synced.stdout + synced.stderr
    assert "Traceback" not in synced.stderr and "cut short" in synced.stderr
    listed = paretune("sql", "SELECT count(*) FROM trials", "--db", str(db))
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert db.read_bytes() == before


@pytest.mark.slow
def test_a_sweep_and_its_checks_leave_a_results_file_cut_short_as_it_was(
    demo, tmp_path: Path
) -> None:
    spec_path = write_demo_spec(tmp_path, "cut", trials=1)
    db, _ = _results_file(tmp_path)
    os.truncate(db, 300_000)
    before = db.read_bytes()
    checked = paretune("sweep", "check", str(spec_path))
    assert checked.returncode == 2 and "cut short" in " ".join(
        checked.stdout.split() + checked.stderr.split()
    )
    ran = paretune("sweep", "run", str(spec_path), "--no-check")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "cut short" in " ".join(ran.stdout.split())
    assert db.read_bytes() == before  # the study row, progress, the trial's row, the final sync
    study = load_spec_study(spec_path)
    assert [t.user_attrs["state"] for t in study.trials] == ["complete"]


# ---------------------------------------------------------------- artifacts


@pytest.mark.slow
def test_an_artifact_that_cannot_be_saved_is_artifact_lost_not_failed(demo, tmp_path: Path) -> None:
    spec = load_spec(write_demo_spec(tmp_path, "art", trials=1, save="all"))
    trial_dir = tmp_path / "runs" / "art" / "art" / "trial-0000"
    trial_dir.mkdir(parents=True)
    for name in ("adapter", "trained_layers", "model"):  # files where its folder goes
        (trial_dir / name).write_text("")
    sweep = Sweep.open(spec)
    state = sweep.run()
    [trial] = sweep.study.get_trials(deepcopy=False)
    assert trial.user_attrs["state"] == "artifact_lost", trial.user_attrs.get("error")
    assert trial.state == optuna.trial.TrialState.COMPLETE and len(trial.values) == 3
    assert "could not be saved in" in trial.user_attrs["error"]
    assert state.done == 1 and not state.failed
    assert state.stop_reason == "trial budget reached (1 of 1)"  # it counts against the budget
    [row] = ResultsStore(spec.run.results).trials("art")
    assert row["state"] == "artifact_lost" and row["eval_nll"] is not None
    assert row["artifact"] is None
    assert ResultsStore(spec.run.results).frontier("art") == []  # nothing to take away


# ---------------------------------------------------------------- a line too long to tokenize


def test_a_huge_line_is_cut_before_tokenizing_and_named(demo, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from sweeps.trial.data import load_examples, text_limit, tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir)
    train = tmp_path / "train.jsonl"
    huge = "word " * 2_000_000  # 10 MB: a tokenizer given it whole needs about 1 GB
    rows = [{"prompt": "q", "completion": "a"}, {"prompt": huge, "completion": "b"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = load_examples(str(train), tokenizer)
    tokenized = tokenize_examples(examples, tokenizer, max_seq_len=64)
    limit = text_limit(tokenizer, 64)
    assert tokenized.cut == [
        f"{train}:2: a text of 10,000,000 characters, cut to its first {limit:,} before "
        "tokenizing (only the first max_seq_len tokens are used)"
    ]
    # The tokens that are used are those of the whole line.
    whole = tokenizer(huge[: limit * 4], add_special_tokens=True)["input_ids"][:64]
    assert tokenized.skipped == [f"{train}:2: the prompt fills max_seq_len=64"]
    cut = tokenizer(huge[:limit], add_special_tokens=True)["input_ids"][:64]
    assert cut == whole


@pytest.mark.slow
def test_a_trial_with_a_huge_line_runs_under_its_memory_cap(demo, tmp_path: Path) -> None:
    """Given the whole line, the tokenizer aborted in Rust under the cap (a 10 MB line under
    1.5 GB: "memory allocation of 33554432 bytes failed", the trial `failed` with a Rust
    backtrace; it needs ~100 bytes per character). The cap is on address space, which the
    libraries a trial loads (torch, pyarrow for the data check) take their share of: a 20 MB
    line under 2.5 GB."""
    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.types import TrialConfig

    rows = demo.train.read_text().splitlines()
    huge = json.dumps({"prompt": "word " * 4_000_000, "completion": "ok"})
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join([*rows[:3], huge, *rows[3:]]) + "\n")
    config = TrialConfig(
        max_steps=2,
        train=str(train),
        eval=str(demo.eval),
        memory_limit_gb=2.5,
        run_dir=str(tmp_path),
        save="none",
        max_seq_len=64,
        batch=4,
        eval_every=2,
    )
    result = run_trial_isolated(config, env={"OMP_NUM_THREADS": "1"})
    assert result.state == "complete", result.error
    assert result.params["rows_cut"] == 1
    assert result.params["first_row_cut"].startswith(f"{train}:4: a text of 20,000,000 characters")


def test_a_rust_allocation_failure_is_oom() -> None:
    from sweeps.trial.isolation import _is_oom, _oom_markers
    from sweeps.trial.types import TrialConfig

    tail = "memory allocation of 33554432 bytes failed\nstack backtrace:"
    assert any(marker in tail for marker in _oom_markers(TrialConfig()))
    assert _is_oom(RuntimeError("memory allocation of 8 bytes failed"), TrialConfig())


# ---------------------------------------------------------------- kept results, imported by sync


def test_results_sync_imports_kept_results_once(tmp_path: Path) -> None:
    """A result kept while the storage could not be written is told by `results sync`: under
    its own number when the trial is still RUNNING, as a new trial when another worker
    already recorded it as lost; the file is then set aside and not imported again."""
    from optuna.distributions import FloatDistribution

    from sweeps.pending import pending_paths, pending_record, save_pending
    from sweeps.study import open_storage

    journal = str(tmp_path / "k.journal")
    study = optuna.create_study(
        study_name="k", storage=open_storage(journal), directions=["minimize"] * 3
    )
    study.set_user_attr("spec", {"run": {"dir": str(tmp_path / "runs")}})
    paths = pending_paths(str(tmp_path / "runs"), "k", journal)
    for lr in (1e-3, 2e-3):
        trial = study.ask({"lr": FloatDistribution(1e-4, 1e-2, log=True)})
        attrs = {"state": "complete", "result": {"dollars": lr}, "worker_host": "h"}
        record = pending_record(trial, attrs=attrs, outcome="complete", values=[lr, 0.1, lr])
        assert save_pending(record, paths) == paths[0]
    lost = study.get_trials(deepcopy=False)[1]  # another worker found it dead meanwhile
    study._storage.set_trial_user_attr(lost._trial_id, "state", "lost")
    study.tell(1, state=optuna.trial.TrialState.FAIL)

    db = tmp_path / "r.duckdb"
    synced = paretune("results", "sync", "--storage", journal, "--db", str(db))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "imported 2 finished trial(s) [0, 2]" in " ".join(synced.stdout.split())
    rows = [(r["number"], r["state"], r["dollars"]) for r in ResultsStore(db).trials("k")]
    assert rows == [(0, "complete", 1e-3), (1, "lost", None), (2, "complete", 2e-3)]
    assert not paths[0].exists() and len(list(paths[0].parent.glob("*.imported-*"))) == 1
    again = paretune("results", "sync", "--storage", journal, "--db", str(db))
    assert again.returncode == 0 and "imported" not in again.stdout
    assert len(ResultsStore(db).trials("k")) == 3
