"""Sharded trials on CPU ranks (gloo): torchrun starts them, FSDP2 shards the demo model.

Each 2-rank trial is compared with the same trial in one process: the eval NLL after the
same steps from the same seed, and what each rank holds (parameters, gradients and
optimizer states, summed over its local shards) against the one-process figure and the
planner's per-rank prediction (``planner.state_bytes``, ZeRO-3's partitioning).
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from pathlib import Path

import psutil
import pytest
from conftest import paretune

from sweeps.trial.types import TrialConfig

# Every 2-rank trial starts a launcher and two ranks, each a fresh interpreter that imports
# torch and transformers: 30 s to a minute each on two shared cores.
pytestmark = pytest.mark.slow

_ONE_THREAD = {"OMP_NUM_THREADS": "1"}
_TINY = {"max_steps": 4, "eval_every": 2, "max_new_tokens": 2, "save": "none", "device": "cpu"}


def _rank_processes() -> list[psutil.Process]:
    """Live processes running a rank of a sharded trial."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if "sweeps.trial.sharded" in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def _one_process(config: TrialConfig):
    from sweeps.trial.recipe import run_trial

    return run_trial(config.model_copy(update={"gpus": 1}))


def _assert_half_of_one_process(
    rank_states: list[float], one_states: float, predicted: float, one_predicted: float
) -> None:
    """Each rank holds half the one-process parameters, gradients and optimizer states, as
    the planner predicts per rank (and for one process), within 1%."""
    assert len(rank_states) == 2
    for states in rank_states:  # FSDP halves every tensor (dim 0, padded)
        assert states / one_states == pytest.approx(0.5, abs=0.01)
    assert predicted == pytest.approx(max(rank_states), rel=0.01)
    assert one_predicted == pytest.approx(one_states, rel=0.01)


def _assert_like_one_process(sharded, single) -> None:
    """The 2-rank trial trains the one-process trial's steps and holds half its states."""
    assert sharded.state == "complete", sharded.error
    assert single.state == "complete", single.error
    assert sharded.hardware.ranks == 2 and single.hardware.ranks == 1
    # Same seed, same rows, same steps: only the order of float reductions differs.
    assert sharded.quality.eval_nll == pytest.approx(single.quality.eval_nll, abs=1e-3)
    assert [s.loss for s in sharded.steps] == pytest.approx(
        [s.loss for s in single.steps], abs=1e-3
    )
    assert sharded.quality.eval_nll < sharded.quality.base_eval_nll  # it learned something
    m = sharded.measured
    assert m.rank_peak_gb is not None and len(m.rank_peak_gb) == 2
    assert m.rank_states_gb is not None and m.states_gb == max(m.rank_states_gb)
    assert m.peak_gb == max(m.rank_peak_gb)
    assert min(m.rank_peak_gb) <= m.peak_gb_mean <= m.peak_gb
    _assert_half_of_one_process(
        m.rank_states_gb,
        single.measured.states_gb,
        sharded.predicted.states_gb,
        single.predicted.states_gb,
    )


@pytest.fixture(scope="module")
def full_pair(demo, tmp_path_factory):
    from sweeps.trial.isolation import run_trial_isolated

    folder = tmp_path_factory.mktemp("full")
    config = TrialConfig(method="full", lr=5e-4, gpus=2, run_dir=str(folder), **_TINY)
    sharded = run_trial_isolated(config, env=_ONE_THREAD)
    return sharded, _one_process(config)


def test_full_fine_tune_on_two_cpu_ranks_matches_one_process(full_pair) -> None:
    sharded, single = full_pair
    _assert_like_one_process(sharded, single)
    assert sharded.hardware.devices == 1  # CPU ranks share one machine, priced once
    # The command that reproduces it shards it the same way.
    assert sharded.command is not None and sharded.command.startswith("paretune trial --spec ")
    saved = tomllib.loads(Path(sharded.command.split()[-1]).read_text())
    assert saved["gpus"] == 2 and saved["sharding"] == "fsdp"
    assert not _rank_processes()


def test_lora_sweep_on_groups_of_two_ranks(demo, tmp_path: Path) -> None:
    """``gpus_per_trial = 2`` on GPUs 0,1: one worker whose trials run on the pair (here
    CPU ranks, pinned all the same), recorded with each rank's memory."""
    from sweeps.results.store import ResultsStore

    spec_path = tmp_path / "pairs.toml"
    spec_path.write_text(f"""
name = "pairs"
model = "demo"
seed = 0
[hardware]
device = "cpu"
gpus_per_trial = 2
[search]
methods = ["lora"]
rank = 8
lr = 2e-3
max_steps = 4
[trial]
batch = 8
eval_every = 2
max_new_tokens = 2
[budget]
trials = 1
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
timeout_s = 400
""")
    done = paretune("sweep", "run", str(spec_path), "--gpus", "0,1", "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    store = ResultsStore(tmp_path / "results.duckdb")
    (row,) = store.trials("pairs")
    assert row["state"] == "complete", row
    assert row["ranks"] == 2 and row["cuda_visible_devices"] == "0,1"
    assert len(json.loads(row["measured_rank_states_gb"])) == 2
    sharded_config = TrialConfig.model_validate_json(row["config"])
    assert sharded_config.gpus == 2

    single = _one_process(sharded_config.model_copy(update={"run_dir": str(tmp_path / "one")}))
    assert single.state == "complete", single.error
    assert row["eval_nll"] == pytest.approx(single.quality.eval_nll, abs=1e-3)
    losses = [s["loss"] for s in store.steps("pairs", row["number"])]
    assert losses == pytest.approx([s.loss for s in single.steps], abs=1e-3)
    assert row["measured_peak_gb"] == max(json.loads(row["measured_rank_peak_gb"]))
    _assert_half_of_one_process(
        json.loads(row["measured_rank_states_gb"]),
        single.measured.states_gb,
        row["predicted_states_gb"],
        single.predicted.states_gb,
    )


def test_a_timeout_ends_every_rank(demo, tmp_path: Path) -> None:
    """The time limit kills the launcher's process group; the ranks, each in a session of
    its own (torchrun's), die with it."""
    from sweeps.trial.isolation import run_trial_isolated

    seen: set[int] = set()
    running = threading.Event()
    running.set()

    def watch() -> None:
        while running.is_set():
            seen.update(p.pid for p in _rank_processes())
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    config = TrialConfig(
        method="lora",
        gpus=2,
        run_dir=str(tmp_path),
        time_limit_s=40,
        **{**_TINY, "max_steps": 100_000},
    )
    try:
        result = run_trial_isolated(config, env=_ONE_THREAD)
    finally:
        running.clear()
        watcher.join()
    assert result.state == "timeout", result.error
    assert len(seen) == 2, "both ranks ran before the time limit"
    deadline = time.monotonic() + 10
    while _rank_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _rank_processes()
