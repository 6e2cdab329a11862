"""A plan that never misleads: no price for runs that cannot happen, whole instances and
chosen sharding said, absurd input refused, notes where the numbers alone mislead."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner import MethodSpec, Workload, estimate, memory_terms, plan, resolve_model
from planner.errors import InvalidSpecError
from planner.specs import parse_count


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "plan", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_rows_that_do_not_fit_have_no_price() -> None:
    done = _plan("Qwen/Qwen2.5-7B", "--gpu", "rtx-4090", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {m["method"]: m for m in json.loads(done.stdout)["methods"]}
    assert rows["full"]["fits"] is False
    assert rows["full"]["hours"] is None and rows["full"]["dollars"] is None
    assert rows["full"]["price_note"].startswith("does not fit: ")
    assert "would" in rows["full"]["price_note"]  # names the GPU count that fits
    assert rows["lora"]["fits"] is True and rows["lora"]["dollars"] > 0
    assert rows["lora"]["price_note"] is None

    table = _plan("Qwen/Qwen2.5-7B", "--gpu", "rtx-4090", "--method", "full")
    line = next(row for row in table.stdout.splitlines() if row.startswith("full "))
    assert "✗" in line and "—" in line
    assert "✗ full: does not fit" in table.stdout


def test_whole_instance_offers_and_chosen_sharding_are_said() -> None:
    done = _plan("llama-3.1-70b", "--method", "full", "--provider", "aws", "--format", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["methods"]
    assert row["instance_gpus"] == 8
    assert row["sharding"] == "zero3" and row["sharding_chosen_by_planner"] is True

    table = _plan("llama-3.1-70b", "--method", "full", "--provider", "aws")
    assert "8-GPU instance, " in table.stdout
    assert "zero3‡" in table.stdout and "chosen by the planner" in table.stdout

    asked = _plan(
        "llama-3.1-70b",
        "--method",
        "full",
        "--provider",
        "aws",
        "--sharding",
        "zero3",
        "--format",
        "json",
    )
    (row,) = json.loads(asked.stdout)["methods"]
    assert row["sharding"] == "zero3" and row["sharding_chosen_by_planner"] is False


def test_zero2_bucket_flags_reach_the_plan() -> None:
    # DeepSpeed ZeRO-2 allocates one reduce_bucket_size buffer of 16-bit elements during
    # the backward, two with overlap_comm (runtime/zero/stage_1_and_2.py).
    asked = ("llama-2-7b", "--method", "lora", "--gpu", "a100-80gb", "--gpus", "8")
    rows = {}
    for flags in (
        ("--zero-bucket-size", "0"),
        (),
        ("--zero-bucket-size", "1000000000", "--zero-overlap-comm"),
    ):
        done = _plan(*asked, "--sharding", "zero2", *flags, "--format", "json")
        assert done.returncode == 0, done.stderr
        (rows[flags],) = json.loads(done.stdout)["methods"]
    none, default, longlora = rows.values()
    assert default["peak_gb"] - none["peak_gb"] == pytest.approx(5e8 * 2 / 1e9, abs=0.002)
    assert longlora["peak_gb"] - none["peak_gb"] == pytest.approx(2 * 1e9 * 2 / 1e9, abs=0.002)
    assert not any("reduction buckets" in note for note in none["notes"])
    assert any("2 x 1,000,000,000 elements" in note for note in longlora["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--method", "freeze", "--freeze-layers", "40"), "more than the 32 decoder layers"),
        (("--gpus", "1000"), "beyond the 512 GPUs"),
        (("--epochs", "inf"), "positive finite number"),
        (("--epochs", "nan"), "positive finite number"),
        (("--dataset-tokens", "lots"), "cannot read `dataset_tokens` 'lots'"),
    ],
)
def test_absurd_input_is_an_error(args: tuple[str, ...], message: str) -> None:
    done = _plan("llama-3.1-8b", "--gpu", "h100", *args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_sequence_beyond_the_positions_is_a_warning() -> None:
    arch = resolve_model("llama-3.1-8b")
    long = plan(arch, Workload(seq_len=2 * arch.max_position), [MethodSpec(kind="qlora")])
    assert long.warnings and "RoPE scaling" in long.warnings[0]
    assert plan(arch, Workload(), [MethodSpec(kind="qlora")]).warnings == ()
    done = _plan("mistral-7b", "--method", "qlora", "--seq-len", "65536", "--gpu", "h200")
    assert done.returncode == 0
    assert "warning: seq_len 65536 is longer than the 32,768 positions" in done.stderr


def test_dora_on_moe_says_the_experts_are_not_trained() -> None:
    arch = resolve_model("mixtral-8x7b")
    dora = estimate(arch, Workload(seq_len=512), MethodSpec(kind="dora"))
    lora = estimate(arch, Workload(seq_len=512), MethodSpec(kind="lora"))
    assert dora.notes and "experts" in dora.notes[0]
    assert lora.notes == ()
    assert dora.trainable_params < lora.trainable_params / 10


def test_planner_refuses_freeze_beyond_the_layers() -> None:
    arch = resolve_model("gpt2")
    with pytest.raises(InvalidSpecError, match="freeze_layers"):
        memory_terms(arch, Workload(seq_len=128), MethodSpec(kind="freeze", freeze_layers=13))
    memory_terms(arch, Workload(seq_len=128), MethodSpec(kind="freeze", freeze_layers=12))


@pytest.mark.parametrize(
    ("text", "count"),
    [("20M", 20_000_000), ("1e9", 1_000_000_000), ("2B", 2_000_000_000), ("10,000", 10_000)],
)
def test_dataset_tokens_read_like_the_screen(text: str, count: int) -> None:
    assert parse_count("dataset_tokens", text) == count
    done = _plan("llama-3.1-8b", "--method", "lora", "--dataset-tokens", text, "--format", "json")
    assert json.loads(done.stdout)["workload"]["tokens"] == count


def test_screen_and_command_share_the_workload_defaults() -> None:
    from tui.screens.plan_inputs import PlanForm

    request = PlanForm().parse()
    default = Workload()
    assert (request.seq_len, request.batch, request.grad_accum, request.dataset_tokens) == (
        default.seq_len,
        default.batch,
        default.grad_accum,
        default.dataset_tokens,
    )
    assert PlanForm(seq_len="4k").parse().seq_len == 4096


def test_the_peak_is_split_into_what_nvidia_smi_and_the_allocator_show() -> None:
    arch = resolve_model("llama-3.1-8b")
    est = estimate(arch, Workload(seq_len=2048, batch=4), MethodSpec(kind="lora"), gpu="h100")
    assert est.context_bytes == 500_000_000
    # The reserve: a tenth of the short-lived memory (activations and logits).
    short_lived = est.breakdown["activations"] + est.breakdown["logits_loss"]
    assert est.reserve_bytes == pytest.approx(0.1 * short_lived, abs=2)
    assert est.allocated_gb * 1e9 == est.peak_bytes - est.context_bytes - est.reserve_bytes
    no_gpu = estimate(arch, Workload(), MethodSpec(kind="lora"))
    assert no_gpu.context_bytes == no_gpu.reserve_bytes == 0
    done = _plan("llama-3.1-8b", "--method", "lora", "--gpu", "h100")
    assert "torch.cuda.max_memory_allocated" in done.stdout and "CUDA context" in done.stdout
