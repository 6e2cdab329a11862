"""Framework presets: each framework's documented behaviour reaches the plan, flags win."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from planner import GB, MethodSpec, Workload, estimate, memory_terms, resolve_model
from planner.errors import InvalidSpecError
from planner.estimation.memory import constants, logits_loss_bytes
from planner.frameworks import PRESETS, framework_method, term_notes
from planner.specs import FRAMEWORKS, METHODS

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GIB = 2**30


@pytest.fixture(scope="module")
def llama8b():
    return resolve_model("llama-3.1-8b")


def test_every_framework_has_a_preset_with_sourced_valid_settings() -> None:
    assert set(PRESETS) == set(FRAMEWORKS)
    fields = {f.name for f in dataclasses.fields(MethodSpec)}
    for preset in PRESETS.values():
        assert preset.version
        for setting in preset.settings:
            assert setting.field in fields, (preset.name, setting.field)
            assert setting.source and setting.why
        for kind in METHODS:
            chosen = framework_method(preset.name, kind)
            assert chosen.method.framework == preset.name
            assert chosen.method.speed_factor == preset.speed_factor


def test_explicit_settings_win_over_the_preset() -> None:
    preset_only = framework_method("torchtune", "qlora")
    assert preset_only.method.loss == "chunked"
    assert not preset_only.method.adapter_fp32
    overridden = framework_method(
        "torchtune", "qlora", settings={"loss": "standard"}, explicit={"loss"}
    )
    assert overridden.method.loss == "standard"
    assert "loss" not in {c.field for c in overridden.changes}
    # A value given but not marked explicit is a default: the preset replaces it.
    assert framework_method("torchtune", "qlora", settings={"loss": "standard"}).method.loss == (
        "chunked"
    )


def test_optimizer_in_backward_only_without_accumulation() -> None:
    assert framework_method("torchtune", "full").method.optimizer_in_backward
    assert not framework_method("torchtune", "full", grad_accum=4).method.optimizer_in_backward
    assert not framework_method("torchtune", "lora").method.optimizer_in_backward


def test_unknown_framework_is_a_user_error() -> None:
    with pytest.raises(InvalidSpecError, match="unknown framework 'unslot'") as caught:
        framework_method("unslot", "lora")
    assert "unsloth" in (caught.value.hint or "")
    assert framework_method("LlamaFactory", "lora").method.framework == "llama-factory"


def test_loss_modes_order_the_logits_term(llama8b) -> None:
    tokens = 4 * 2048
    by_mode = {
        (loss, compiled): logits_loss_bytes(
            llama8b, MethodSpec(kind="lora", loss=loss, compiled=compiled), tokens
        )
        for loss in ("standard", "chunked", "fused")
        for compiled in (False, True)
    }
    standard = by_mode[("standard", False)]
    # The figure: 12.6 GB of logits and loss at micro-batch 4 x 2048.
    assert standard / GB == pytest.approx(12.6, abs=0.05)
    assert by_mode[("chunked", False)] < standard
    assert by_mode[("chunked", True)] < by_mode[("chunked", False)]
    # Compiled chunked CE keeps the 16-bit logits and one chunk's 16-bit gradient.
    chunks = constants()["chunked_loss_chunks"]
    assert by_mode[("chunked", True)] == pytest.approx(
        tokens * llama8b.vocab * 2 * (1 + 1 / chunks)
    )
    assert by_mode[("fused", False)] < 0.1 * standard
    assert by_mode[("standard", True)] == standard  # compile changes the chunked loss only


def test_offloaded_checkpoints_keep_two_layers(llama8b) -> None:
    work = Workload(seq_len=2048, batch=2)
    on_gpu = memory_terms(llama8b, work, MethodSpec(kind="qlora"))
    offloaded = memory_terms(llama8b, work, MethodSpec(kind="qlora", offload_checkpoints=True))
    saved = on_gpu.breakdown["activations"] - offloaded.breakdown["activations"]
    # (32 - 2) layer inputs of 2048 x 2 tokens x 4096 hidden in bf16 move to host memory.
    assert saved == pytest.approx(30 * 2 * 4096 * 2048 * 2, rel=0.01)


def test_bf16_adapters_halve_adapter_memory(llama8b) -> None:
    work = Workload(seq_len=512, batch=1)
    fp32 = memory_terms(llama8b, work, MethodSpec(kind="lora"))
    bf16 = memory_terms(llama8b, work, MethodSpec(kind="lora", adapter_fp32=False))
    assert bf16.breakdown["adapter_weights"] * 2 == fp32.breakdown["adapter_weights"]


def test_torchtune_published_qlora_peak(llama8b) -> None:
    """torchtune's README (v0.3+): Llama 3.1 8B QLoRA on one RTX 4090, batch 2, packed to
    2048, torch.compile on: 7.4 GiB peak allocated. The preset with --compile comes within
    15%; transformers' defaults over-predict by about 80%."""
    work = Workload(seq_len=2048, batch=2)
    settings = {"rank": 8, "alpha": 16, "targets": LLAMA_TARGETS, "compiled": True}
    torchtune = framework_method("torchtune", "qlora", settings=settings, explicit={"compiled"})
    hf = framework_method("hf", "qlora", settings=settings, explicit={"compiled"})
    context = constants()["cuda_context_bytes"]
    measured = 7.4 * GIB

    def allocated(method: MethodSpec) -> float:
        return memory_terms(llama8b, work, method).peak_bytes - context

    assert abs(allocated(torchtune.method) - measured) / measured < 0.15
    assert allocated(hf.method) > 1.6 * measured


def test_term_notes_name_what_the_framework_changed() -> None:
    notes = term_notes(framework_method("torchtune", "qlora").method)
    assert notes["logits_loss"] == "chunked CE (CEWithChunkedOutputLoss, 8 chunks), torchtune"
    assert term_notes(framework_method("hf", "qlora").method) == {}
    # An explicit flag that undoes the preset leaves no note.
    undone = framework_method(
        "torchtune", "qlora", settings={"loss": "standard"}, explicit={"loss"}
    )
    assert "logits_loss" not in term_notes(undone.method)


def test_unsloth_speed_claim_divides_the_hours(llama8b) -> None:
    work = Workload(seq_len=1024, batch=1)
    hf = estimate(llama8b, work, framework_method("hf", "lora").method, gpu="h100")
    unsloth = estimate(llama8b, work, framework_method("unsloth", "lora").method, gpu="h100")
    assert hf.hours is not None and unsloth.hours is not None
    assert unsloth.hours == pytest.approx(hf.hours / 2.0)


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "plan", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_plan_command_framework_preset_and_override() -> None:
    done = _plan(
        "llama-3.1-8b", "--method", "qlora", "--framework", "torchtune", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["methods"]
    framework = row["framework"]
    assert framework["name"] == "torchtune" and framework["loss"] == "chunked"
    assert {c["field"] for c in framework["changes"]} >= {"loss", "adapter_fp32"}
    assert "chunked CE" in framework["term_notes"]["logits_loss"]

    overridden = _plan(
        "llama-3.1-8b",
        "--method",
        "qlora",
        "--framework",
        "torchtune",
        "--loss",
        "standard",
        "--format",
        "json",
    )
    (row,) = json.loads(overridden.stdout)["methods"]
    assert row["framework"]["loss"] == "standard"
    assert (
        row["breakdown_gb"]["logits_loss"]
        > 1.5 * json.loads(done.stdout)["methods"][0]["breakdown_gb"]["logits_loss"]
    )


def test_plan_table_marks_the_speed_claim_and_the_changed_terms() -> None:
    done = _plan("llama-3.1-8b", "--method", "lora", "--framework", "unsloth", "--gpu", "h100")
    assert done.returncode == 0, done.stderr
    assert "framework: Unsloth" in done.stdout
    assert "vendor claim" in done.stdout
    assert "logits_loss" in done.stdout and "fused CE" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--framework", "megatron"), "unknown framework 'megatron'"),
        (("--loss", "sparse"), "unknown loss 'sparse'"),
        (("--epochs", "inf"), "`epochs` must be a positive finite number"),
    ],
)
def test_plan_command_refuses_bad_framework_input(args: tuple[str, ...], message: str) -> None:
    done = _plan("llama-3.1-8b", "--method", "lora", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
