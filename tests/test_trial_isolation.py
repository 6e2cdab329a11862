"""Trials in a child process: out of memory, time limits and crashes end the trial, not us."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.trial.isolation import run_trial_isolated
from sweeps.trial.types import TrialConfig

_ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models; extra threads only contend


@pytest.mark.slow
def test_out_of_memory_child_ends_as_oom_and_the_parent_carries_on(tmp_path: Path, demo) -> None:
    config = TrialConfig(max_steps=2, memory_limit_gb=0.05, run_dir=str(tmp_path))
    result = run_trial_isolated(config, env=_ONE_THREAD)
    assert result.state == "oom", result.error
    assert "memory" in result.error.lower()
    # The parent is fine and can run the next trial.
    steps = []
    done = run_trial_isolated(
        TrialConfig(
            max_steps=2, eval_every=1, max_new_tokens=2, run_dir=str(tmp_path), save="none"
        ),
        on_step=steps.append,
        env=_ONE_THREAD,
    )
    assert done.state == "complete", done.error
    assert [s.step for s in steps] == [1, 2]
    assert done.steps == steps


def test_what_counts_as_running_out_of_memory() -> None:
    """Under the memory cap, running out surfaces as more than MemoryError: an mmap's ENOMEM,
    a thread that cannot start. Those trials are ``oom``, not ``failed``; without a cap, a
    thread that cannot start is just a failure."""
    import errno

    from sweeps.trial.isolation import _is_oom

    capped, free = TrialConfig(memory_limit_gb=0.05), TrialConfig()
    thread = RuntimeError("can't start new thread")
    assert _is_oom(thread, capped) and not _is_oom(thread, free)
    assert _is_oom(OSError(errno.ENOMEM, "Cannot allocate memory"), free)
    assert _is_oom(
        RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes"
        ),
        free,
    )
    assert not _is_oom(ValueError("shapes do not match"), capped)
    assert not _is_oom(OSError(errno.ENOENT, "No such file or directory"), capped)


def test_time_limit_ends_as_timeout(tmp_path: Path) -> None:
    result = run_trial_isolated(TrialConfig(max_steps=10_000, run_dir=str(tmp_path)), timeout_s=2)
    assert result.state == "timeout"
    assert "2 s" in result.error


@pytest.mark.slow
def test_a_warm_child_trains_exactly_like_a_fresh_one(tmp_path: Path, demo) -> None:
    """CPU trials fork from the preloaded server; the outcome is the same as from a new
    interpreter (same seed, same numbers), with per-step progress on the same channel."""
    config = TrialConfig(
        device="cpu",
        max_steps=3,
        eval_every=1,
        max_new_tokens=2,
        run_dir=str(tmp_path),
        save="none",
    )
    warm_steps = []
    warm = run_trial_isolated(config, env=_ONE_THREAD, start="warm", on_step=warm_steps.append)
    fresh = run_trial_isolated(config, env=_ONE_THREAD, start="fresh")
    assert warm.state == fresh.state == "complete", (warm.error, fresh.error)
    assert [s.step for s in warm_steps] == [1, 2, 3]
    assert warm.quality.eval_nll == fresh.quality.eval_nll
    assert warm.forgetting.retain_kl == fresh.forgetting.retain_kl
    assert 0 < warm.measured.peak_gb < 0.5  # the trial's own memory, not the libraries'


@pytest.mark.slow
def test_a_warm_child_times_out_and_runs_out_of_memory_like_a_fresh_one(
    tmp_path: Path, demo
) -> None:
    hung = run_trial_isolated(
        TrialConfig(device="cpu", max_steps=10_000, run_dir=str(tmp_path)),
        timeout_s=3,
        start="warm",
    )
    assert hung.state == "timeout", hung.error
    capped = run_trial_isolated(
        TrialConfig(device="cpu", max_steps=2, memory_limit_gb=0.05, run_dir=str(tmp_path)),
        env=_ONE_THREAD,
        start="warm",
    )
    assert capped.state == "oom", capped.error
    missing = run_trial_isolated(
        TrialConfig(device="cpu", model=str(tmp_path / "nowhere"), run_dir=str(tmp_path)),
        start="warm",
    )
    assert missing.state == "failed" and missing.error


@pytest.mark.slow
def test_bad_input_in_the_child_is_a_failed_trial(tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    result = run_trial_isolated(
        TrialConfig(model=str(broken), train=str(tmp_path / "t.jsonl"), run_dir=str(tmp_path))
    )
    assert result.state == "failed"
    assert "does not exist" in result.error or "cannot load" in result.error


def _paretune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
        cwd=cwd,
        env={
            **__import__("os").environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **_ONE_THREAD,
        },
    )


@pytest.mark.slow
def test_cli_json_contract(tmp_path: Path, demo) -> None:
    done = _paretune(
        "trial",
        "--demo",
        "--max-steps",
        "3",
        "--lr",
        "1e-3",
        "--format",
        "json",
        "--run-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["state"] == "complete"
    assert {
        "state",
        "method",
        "params",
        "quality",
        "forgetting",
        "measured",
        "predicted",
        "dollars",
        "hardware",
        "artifact",
        "error",
    } <= set(payload)
    assert {"eval_nll", "base_eval_nll", "exact_match", "overfit_gap", "generalization_gap"} <= set(
        payload["quality"]
    )
    assert {"retain_delta_nll", "retain_kl", "fact_recall_drop"} <= set(payload["forgetting"])
    assert {"peak_gb", "wall_s", "train_s", "tokens", "tokens_per_s"} <= set(payload["measured"])
    assert {"peak_gb", "hours", "dollars"} <= set(payload["predicted"])


@pytest.mark.slow
def test_cli_bad_input_exits_2_and_trial_failure_exits_1(tmp_path: Path) -> None:
    missing = _paretune("trial", "--spec", "nope.toml", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read nope.toml" in missing.stderr
    spec = tmp_path / "trial.toml"
    spec.write_text('method = "lora"\nrnak = 4\n')
    typo = _paretune("trial", "--spec", str(spec), cwd=tmp_path)
    assert typo.returncode == 2 and "rnak" in typo.stderr
    spec.write_text(
        f'method = "lora"\nmax_steps = 2\nmemory_limit_gb = 0.05\nrun_dir = "{tmp_path / "runs"}"\n'
    )
    oom = _paretune("trial", "--spec", str(spec), "--format", "json", cwd=tmp_path)
    assert oom.returncode == 1
    assert json.loads(oom.stdout)["state"] == "oom"


def test_a_sweep_spec_gives_its_first_point() -> None:
    from tui.cli.trial import config_from_spec

    config = config_from_spec(Path(__file__).resolve().parents[1] / "examples" / "demo.toml")
    assert config.model == "demo" and config.method == "lora"
    assert config.max_steps in (100, 150)  # the middle of 50..200, on its grid of 50
    assert config.usd_per_hour == 0.10
