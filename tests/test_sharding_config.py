"""Sharded trials without starting any: the GPU groups of a sweep, what a rank trains on,
how the ranks' reports become one outcome, the planner's per-rank states, and the errors
said before anything starts. The trials themselves run in tests/test_sharded.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import paretune, write_demo_spec

from sweeps.outcome import Outcome
from sweeps.trial.types import TrialConfig


def _spec(tmp_path: Path, hardware: str):
    from sweeps.spec import load_spec

    path = write_demo_spec(tmp_path, "groups", trials=2)
    path.write_text(path.read_text().replace('device = "cpu"', f'device = "cpu"\n{hardware}'))
    return load_spec(path)


def test_gpus_per_trial_groups_the_gpus_one_worker_each(tmp_path: Path) -> None:
    from tui.cli.sweep import SweepUsageError, _slots

    spec = _spec(tmp_path, "gpus = [0, 1, 2, 3]\ngpus_per_trial = 2")
    assert _slots(spec, None, None) == ["0,1", "2,3"]  # two trials at a time, a pair each
    assert _slots(spec, ["4", "5"], None) == ["4,5"]
    with pytest.raises(SweepUsageError, match="groups of gpus_per_trial 2"):
        _slots(spec, ["0", "1", "2"], None)
    with pytest.raises(SweepUsageError, match="does not match the 2 GPU group"):
        _slots(spec, None, 4)
    config = spec.trial_config({"method": "lora", "rank": 2, "lr": 1e-3})
    assert config.gpus == 2 and config.sharding == "fsdp"
    # On CPU, workers are unpinned and each trial runs on gpus_per_trial CPU ranks.
    cpu = _spec(tmp_path, "gpus_per_trial = 2")
    assert _slots(cpu, None, 2) == [None, None]
    assert cpu.trial_config({"method": "lora", "rank": 2, "lr": 1e-3}).gpus == 2


def test_gpus_that_do_not_split_into_groups_are_a_spec_error(tmp_path: Path) -> None:
    from sweeps.spec import SpecError

    with pytest.raises(SpecError, match="gpus_per_trial 2 does not divide the 3 GPUs"):
        _spec(tmp_path, "gpus = [0, 1, 2]\ngpus_per_trial = 2")


def test_each_rank_trains_its_share_of_a_micro_batch() -> None:
    import torch

    from sweeps.trial.sharded import Ranks

    batch = {
        "input_ids": torch.arange(12).reshape(3, 4),
        "attention_mask": torch.ones(3, 4, dtype=torch.long),
        "labels": torch.arange(12).reshape(3, 4),
    }
    first, second = Ranks(0, 2, 0, None), Ranks(1, 2, 1, None)
    assert first.rows(batch)["input_ids"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert second.rows(batch)["input_ids"].tolist() == [[4, 5, 6, 7]]
    # A batch shorter than the ranks: the rank left over runs a row with nothing scored.
    short = {k: v[:1] for k, v in batch.items()}
    spare = second.rows(short)
    assert spare["input_ids"].tolist() == [[0, 1, 2, 3]]
    assert (spare["labels"] == -100).all()
    assert short["labels"].tolist() == [[0, 1, 2, 3]]  # the batch itself is untouched


def _outcome(collected, failure: str | None = None) -> tuple[int, list[dict]]:
    from sweeps.trial.sharded import _send_outcome

    sent: list[dict] = []
    code = _send_outcome(TrialConfig(gpus=2), collected, failure, sent.append)
    return code, sent


def test_one_rank_out_of_memory_makes_the_trial_oom() -> None:
    from sweeps.trial.sharded import _Collected

    # Rank 1 ran out of memory; rank 0 then lost its peer: the trial is oom, said by rank 1.
    collected = _Collected(
        rank_errors=[
            {"rank": 0, "state": "failed", "error": "RuntimeError: Connection closed by peer"},
            {"rank": 1, "state": "oom", "error": "torch.OutOfMemoryError: CUDA out of memory"},
        ]
    )
    code, sent = _outcome(collected, "ChildFailedError: rank 1 exit 1")
    assert code == 0 and len(sent) == 1
    result = sent[0]["result"]
    assert result["state"] == Outcome.OOM
    assert result["error"].startswith("rank 1: torch.OutOfMemoryError")
    # A failure without any out-of-memory error: the first rank's error.
    code, sent = _outcome(_Collected(rank_errors=collected.rank_errors[:1]), "ChildFailedError")
    assert sent[0]["result"]["state"] == Outcome.FAILED
    assert "Connection closed by peer" in sent[0]["result"]["error"]
    # Nothing reported at all (a rank killed outright): what torchrun said.
    code, sent = _outcome(_Collected(), "ChildFailedError: exitcode -9")
    assert "exitcode -9" in sent[0]["result"]["error"]
    # Bad input, from any rank, is bad input (exit code 2 in the command line).
    code, sent = _outcome(_Collected(user_error={"message": "no such file", "hint": None}))
    assert code == 2 and sent == [{"user_error": {"message": "no such file", "hint": None}}]


def test_the_planner_partitions_the_states_per_rank() -> None:
    from planner import MethodSpec, resolve_model, state_bytes

    arch = resolve_model("llama-3.1-8b")
    one = sum(state_bytes(arch, MethodSpec(kind="full", precision="bf16")).values())
    fsdp = state_bytes(arch, MethodSpec(kind="full", precision="bf16", gpus=4, sharding="zero3"))
    zero2 = state_bytes(arch, MethodSpec(kind="full", precision="bf16", gpus=4, sharding="zero2"))
    # Full fine-tune with mixed-precision AdamW: 2 + 2 + 12 bytes per parameter.
    assert one == pytest.approx(16 * arch.total_params, rel=1e-6)
    assert sum(fsdp.values()) == pytest.approx(one / 4, rel=1e-6)
    assert zero2["weights"] == 2 * arch.total_params  # stage 2 keeps the weights whole
    assert zero2["optimizer_states"] == fsdp["optimizer_states"]


def test_unsupported_sharding_is_said_before_anything_starts() -> None:
    done = paretune("trial", "--demo", "--gpus", "2", "--sharding", "zero2")
    assert done.returncode == 2
    assert "sharding 'zero2' is not supported yet" in done.stderr
    assert "--sharding fsdp" in done.stderr
    assert "Traceback" not in done.stderr
    done = paretune("trial", "--demo", "--gpus", "2", "--method", "qlora")
    assert done.returncode == 2 and "cannot use method qlora yet" in done.stderr
