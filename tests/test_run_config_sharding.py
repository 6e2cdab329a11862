"""`paretune plan --config`: how a run config shards its training. The DeepSpeed JSON an
Axolotl, LLaMA-Factory or TRL config names is read (ZeRO stage, reduction buckets,
ZeRO-Offload), as are transformers' FSDP keys and torchtune's distributed-recipe keys; the
planner's ZeRO-1 and ZeRO-Offload terms are checked against what DeepSpeed partitions.

The configs under tests/data/run_configs/ are written for these tests in the shape of each
framework's own examples (Axolotl's deepspeed_configs/zero2.json, LLaMA-Factory's
examples/deepspeed/ds_z3_offload_config.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from planner import MethodSpec, Workload, resolve_model
from planner.errors import InvalidSpecError
from planner.estimation.memory import memory_terms, state_bytes, zero_bucket_bytes
from planner.frameworks.configs import ConfigFileError, read_run_config

CONFIGS = Path(__file__).parent / "data" / "run_configs"


def _plan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "plan", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def _plan_json(*args: str, cwd: Path | None = None) -> dict:
    done = _plan(*args, "--format", "json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_axolotl_reads_the_deepspeed_json_it_names() -> None:
    run = read_run_config(CONFIGS / "axolotl_full_zero2.yml")
    assert run.method["kind"] == "full"
    assert run.method["sharding"] == "zero2"
    # DeepSpeed's own defaults for what the file leaves out (reduce_bucket_size 5e8).
    assert run.method["zero_reduce_bucket_size"] == 500_000_000
    assert run.method["zero_overlap_comm"] is True
    assert run.method["optimizer_offload"] is True
    assert run.method["adapter_fp32"] is False  # the engine casts the module to bf16
    # Everything else in that JSON is "auto" (the trainer's settings) or has no effect.
    assert not [k for k in run.unmodelled if k.startswith("deepspeed")], run.unmodelled
    assert "deepspeed" not in run.unmodelled


def test_the_config_plans_as_the_same_flags_do() -> None:
    """The file's DeepSpeed settings give the plan the explicit flags give."""
    common = ("--gpu", "a100-80gb", "--gpus", "8")
    from_file = _plan_json("--config", str(CONFIGS / "axolotl_full_zero2.yml"), *common)
    by_hand = _plan_json(
        "--config",
        str(CONFIGS / "axolotl_full_zero2.yml"),
        *common,
        "--sharding",
        "zero2",
        "--zero-bucket-size",
        "500000000",
        "--zero-overlap-comm",
        "--optimizer-offload",
    )
    (row,) = from_file["methods"]
    assert row["peak_gb"] == by_hand["methods"][0]["peak_gb"]
    assert row["sharding"] == "zero2" and not row["sharding_chosen_by_planner"]
    terms = row["breakdown_gb"]
    # ZeRO-Offload: no optimizer states on the GPU; the gradients are the two buckets of
    # 5e8 bf16 elements (overlap_comm), nothing else.
    assert terms["optimizer_states"] == 0
    assert terms["gradients"] == pytest.approx(2 * 500_000_000 * 2 / 1e9, abs=0.01)
    assert any("offload_optimizer" in note for note in row["notes"])

    without = _plan_json(
        "--config", str(CONFIGS / "axolotl_full_zero2.yml"), *common, "--no-optimizer-offload"
    )
    kept = without["methods"][0]["breakdown_gb"]
    # Without the offload each GPU keeps its eighth of the fp32 states and master weights.
    assert kept["optimizer_states"] == pytest.approx(8.03e9 * 12 / 8 / 1e9, rel=0.02)
    assert without["methods"][0]["peak_gb"] > row["peak_gb"] + 10


def test_a_relative_deepspeed_path_is_found_from_the_working_directory(tmp_path: Path) -> None:
    """Axolotl and LLaMA-Factory run from the project folder: the path may be relative to
    it rather than to the config."""
    project = tmp_path / "project"
    (project / "deepspeed_configs").mkdir(parents=True)
    shutil.copy(CONFIGS / "deepspeed_configs" / "zero1.json", project / "deepspeed_configs")
    configs = project / "configs"
    configs.mkdir()
    config = configs / "run.yml"
    text = (CONFIGS / "axolotl_full_zero2.yml").read_text()
    config.write_text(text.replace("zero2.json", "zero1.json"))
    out = _plan_json("--config", str(config), "--gpu", "a100-80gb", "--gpus", "4", cwd=project)
    (row,) = out["methods"]
    assert out["config"]["method"]["sharding"] == "zero1" and row["sharding"] == "zero1"
    terms = row["breakdown_gb"]
    # ZeRO-1: states partitioned over 4, gradients whole, plus two 5e8-element buckets.
    assert terms["optimizer_states"] == pytest.approx(8.03e9 * 12 / 4 / 1e9, rel=0.02)
    assert terms["gradients"] >= 8.03e9 * 2 / 1e9


def test_a_deepspeed_file_that_is_not_there_is_one_paragraph_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "run.yml"
    config.write_text(
        (CONFIGS / "axolotl_full_zero2.yml").read_text().replace("zero2.json", "zero9.json")
    )
    done = _plan("--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "`deepspeed` names 'deepspeed_configs/zero9.json', which is not a file" in done.stderr
    assert "--sharding" in done.stderr and "Traceback" not in done.stderr

    bad = tmp_path / "deepspeed_configs"
    bad.mkdir()
    (bad / "zero9.json").write_text('{"zero_optimization": {"stage": 5}}')
    done = _plan("--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "`zero_optimization.stage` must be 0, 1, 2 or 3, got 5" in done.stderr
    (bad / "zero9.json").write_text('{"zero_optimization": {"stage": 2,}}')
    done = _plan("--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "not valid JSON at line 1" in done.stderr


def test_an_auto_bucket_is_the_models_hidden_size_squared(tmp_path: Path) -> None:
    """transformers fills "auto" reduce_bucket_size with hidden_size x hidden_size."""
    data = json.loads((CONFIGS / "trl_sft_lora.json").read_text())
    assert "deepspeed" not in data
    data["deepspeed"] = "ds_z2_auto.json"
    config = tmp_path / "sft.json"
    config.write_text(json.dumps(data))
    shutil.copy(CONFIGS / "ds_z2_auto.json", tmp_path)
    run = read_run_config(config)
    assert run.method["zero_reduce_bucket_size"] == "auto"
    assert run.method["precision"] == "bf16"
    out = _plan_json("--config", str(config), "--gpu", "a100-80gb", "--gpus", "2")
    hidden = resolve_model("Qwen/Qwen2.5-0.5B").hidden
    (row,) = out["methods"]
    assert any(f"1 x {hidden * hidden:,} elements" in note for note in row["notes"]), row["notes"]


def test_llama_factory_zero3_offload_lists_what_is_not_modelled() -> None:
    run = read_run_config(CONFIGS / "llama_factory_full_z3.yaml")
    assert run.method["kind"] == "full" and run.method["sharding"] == "zero3"
    assert run.method["optimizer_offload"] is True
    # Parameter offload and stage 3's live-parameter limits change the peak but are not
    # modelled: listed, as the file's other unread keys are.
    for key in (
        "deepspeed:zero_optimization.offload_param.device",
        "deepspeed:zero_optimization.stage3_max_live_parameters",
        "deepspeed:zero_optimization.sub_group_size",
    ):
        assert key in run.unmodelled, run.unmodelled
    assert "deepspeed:zero_optimization.reduce_bucket_size" not in run.unmodelled  # "auto"
    done = _plan("--config", str(CONFIGS / "llama_factory_full_z3.yaml"), "--gpus", "8")
    assert done.returncode == 0, done.stderr
    assert "deepspeed:zero_optimization.offload_param.device" in " ".join(done.stdout.split())


def test_transformers_fsdp_keys() -> None:
    run = read_run_config(CONFIGS / "trl_sft_fsdp.json")
    assert run.method["sharding"] == "zero3" and run.method["grad_checkpointing"] is True
    assert not [k for k in run.unmodelled if k.startswith("fsdp")], run.unmodelled

    from planner.frameworks.distributed import fsdp_fields

    here = Path("run.yml")
    fields, unread = fsdp_fields(["shard_grad_op", "offload", "auto_wrap"], None, config=here)
    # SHARD_GRAD_OP is ZeRO-2's partitioning without DeepSpeed's reduction buckets.
    assert fields == {"sharding": "zero2", "zero_reduce_bucket_size": 0}
    assert unread == ("fsdp:offload",)
    fields, unread = fsdp_fields(
        None,
        {"fsdp_version": 2, "reshard_after_forward": False, "limit_all_gathers": True},
        config=here,
    )
    assert fields["sharding"] == "zero2" and unread == ("fsdp_config:limit_all_gathers",)
    fields, _ = fsdp_fields(None, {"fsdp_sharding_strategy": "FULL_SHARD"}, config=here)
    assert fields["sharding"] == "zero3"
    with pytest.raises(ConfigFileError, match="unknown FSDP option 'full_shards'"):
        fsdp_fields("full_shards auto_wrap", None, config=here)


def test_torchtune_distributed_recipe_keys(tmp_path: Path) -> None:
    text = (CONFIGS / "torchtune_qlora.yaml").read_text()
    config = tmp_path / "distributed.yaml"
    config.write_text(text + "fsdp_reshard_after_forward: False\nfsdp_cpu_offload: True\n")
    run = read_run_config(config)
    assert run.method["sharding"] == "zero2" and run.method["zero_reduce_bucket_size"] == 0
    assert "fsdp_cpu_offload" in run.unmodelled
    config.write_text(text + "fsdp_cpu_offload: False\n")
    run = read_run_config(config)
    assert run.method["sharding"] == "zero3" and "fsdp_cpu_offload" not in run.unmodelled


# -- the planner's ZeRO-1 and ZeRO-Offload terms -------------------------------------------


def test_zero1_partitions_only_the_optimizer_states() -> None:
    arch = resolve_model("llama-3.1-8b")
    full = MethodSpec(kind="full", precision="bf16", gpus=4)
    plain = state_bytes(arch, full)
    zero1 = state_bytes(arch, full.with_(sharding="zero1"))
    zero2 = state_bytes(arch, full.with_(sharding="zero2"))
    assert zero1["optimizer_states"] == zero2["optimizer_states"]
    assert zero1["optimizer_states"] == pytest.approx(plain["optimizer_states"] / 4, abs=1)
    assert zero1["gradients"] == plain["gradients"] == 4 * zero2["gradients"]
    assert zero1["weights"] == plain["weights"]
    # The same DeepSpeedZeroOptimizer runs stages 1 and 2: the same reduction buffers.
    assert zero_bucket_bytes(full.with_(sharding="zero1")) == zero_bucket_bytes(
        full.with_(sharding="zero2")
    )


def test_optimizer_offload_keeps_states_and_gradients_off_the_gpu() -> None:
    arch = resolve_model("llama-3.1-8b")
    work = Workload(seq_len=2048, batch=1, grad_accum=8)
    for sharding in ("zero1", "zero2", "zero3"):
        method = MethodSpec(kind="full", gpus=8, sharding=sharding, optimizer_offload=True)
        terms = memory_terms(arch, work, method).breakdown
        assert terms["optimizer_states"] == 0
        assert terms["gradients"] == zero_bucket_bytes(method)
        assert state_bytes(arch, method)["optimizer_states"] == 0
    with pytest.raises(InvalidSpecError, match="needs ZeRO"):
        MethodSpec(kind="full", optimizer_offload=True)


def test_the_simulated_step_says_what_it_did_not_shard_or_offload() -> None:
    """The simulator runs one device with torch AdamW: beside its column the table says
    so, since the planner's ZeRO-1 + offload peak is lower than that step's."""
    done = _plan(
        "gpt2",
        "--method",
        "full",
        "--gpus",
        "4",
        "--sharding",
        "zero1",
        "--optimizer-offload",
        "--gpu",
        "a100-80gb",
        "--seq-len",
        "256",
        "--simulate",
    )
    assert done.returncode == 0, done.stderr
    flat = " ".join(done.stdout.split())
    assert "sim full: simulated on one device without sharding" in flat
    assert "optimizer offload is not simulated" in flat
    assert "DeepSpeed's reduction buckets are not simulated" in flat


def test_an_8_bit_base_is_listed_not_planned_silently_as_16_bit(tmp_path: Path) -> None:
    axolotl = tmp_path / "lora8.yml"
    axolotl.write_text("base_model: meta-llama/Llama-3.1-8B\nadapter: lora\nload_in_8bit: true\n")
    assert "load_in_8bit" in read_run_config(axolotl).unmodelled
    axolotl.write_text("base_model: meta-llama/Llama-3.1-8B\nadapter: lora\nload_in_8bit: false\n")
    assert "load_in_8bit" not in read_run_config(axolotl).unmodelled
    factory = tmp_path / "lf.yaml"
    for bits, listed in ((8, True), (4, False)):
        factory.write_text(
            f"model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: lora\nquantization_bit: {bits}\n"
        )
        run = read_run_config(factory)
        assert ("quantization_bit" in run.unmodelled) is listed
        assert run.method["kind"] == ("lora" if listed else "qlora")


def test_a_config_on_your_own_local_checkpoint(own_model, tmp_path: Path) -> None:
    """The run a user wrote for their own model folder (a small Qwen2 with random weights
    and a tokenizer trained here), with Axolotl's zero2.json beside it: planned from the
    folder's config.json, sharded and offloaded as the JSON says."""
    shutil.copytree(CONFIGS / "deepspeed_configs", tmp_path / "deepspeed_configs")
    config = tmp_path / "own.yml"
    config.write_text(
        f"base_model: {own_model.model_dir}\n"
        "adapter: lora\nlora_r: 8\nlora_alpha: 16\nlora_target_linear: true\n"
        "sequence_len: 128\nmicro_batch_size: 2\n"
        f"datasets:\n  - path: {own_model.train}\n    ds_type: json\n"
        "deepspeed: deepspeed_configs/zero2.json\n"
    )
    out = _plan_json("--config", str(config), "--gpu", "a100-80gb", "--gpus", "2")
    (row,) = out["methods"]
    assert out["config"]["model"] == str(own_model.model_dir)
    assert row["method"] == "lora" and row["sharding"] == "zero2"
    assert row["breakdown_gb"]["optimizer_states"] == 0
    assert any("ZeRO-2's reduction buckets: 2 x 500,000,000" in n for n in row["notes"])
    assert out["config"]["method"]["adapter_fp32"] is False
