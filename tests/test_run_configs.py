"""`paretune plan --config FILE`: the run a user already wrote, in each framework's format.

The example configs under tests/data/run_configs/ are written for these tests in the
shape of each framework's own examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.frameworks.configs import ConfigFileError, read_run_config

CONFIGS = Path(__file__).parent / "data" / "run_configs"


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "plan", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_axolotl_yaml() -> None:
    run = read_run_config(CONFIGS / "axolotl_qlora.yml")
    assert run.framework == "axolotl" and run.model == "meta-llama/Llama-3.1-8B"
    assert run.method == {
        "kind": "qlora",
        "rank": 32,
        "alpha": 16.0,
        "lora_dropout": 0.05,
        "targets": "all",
        "optimizer": "paged_adamw8bit",
        "grad_checkpointing": True,
        "attention": "flash",
        "precision": "bf16",
    }
    assert run.workload == {
        "seq_len": 4096,
        "batch": 2,
        "grad_accum": 4,
        "epochs": 3.0,
        "packing": True,
    }
    assert run.unmodelled == (
        "datasets",
        "learning_rate",
        "lr_scheduler",
        "output_dir",
        "warmup_steps",
    )


def test_torchtune_recipe() -> None:
    run = read_run_config(CONFIGS / "torchtune_qlora.yaml")
    assert run.framework == "torchtune" and run.model == "llama-3.1-8b"
    assert run.method["kind"] == "qlora" and run.method["rank"] == 8
    assert run.method["targets"] == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    assert run.method["loss"] == "chunked" and run.method["compiled"] is True
    assert run.method["optimizer"] == "adamw_bf16"
    assert run.workload == {
        "seq_len": 2048,
        "batch": 2,
        "grad_accum": 1,
        "epochs": 1.0,
        "packing": True,
    }
    # Nested keys are listed too: the learning rate is read by nothing here.
    assert "optimizer.lr" in run.unmodelled and "tokenizer.path" in run.unmodelled
    assert "model.lora_rank" not in run.unmodelled


def test_llama_factory_yaml() -> None:
    run = read_run_config(CONFIGS / "llama_factory_lora.yaml")
    assert run.framework == "llama-factory" and run.model == "Qwen/Qwen2.5-7B"
    assert run.method["kind"] == "lora" and run.method["loss"] == "fused"
    assert run.workload["grad_accum"] == 8 and run.workload["seq_len"] == 2048
    assert "template" in run.unmodelled


def test_trl_and_peft_json() -> None:
    run = read_run_config(CONFIGS / "trl_sft_lora.json")
    assert run.framework == "trl" and run.model == "Qwen/Qwen2.5-0.5B"
    assert run.method["kind"] == "lora" and run.method["targets"] == "all"
    assert run.workload["batch"] == 8 and run.workload["seq_len"] == 1024
    assert "use_rslora" in run.unmodelled  # no memory effect: listed, not dropped


def test_the_torchtune_config_plans_its_published_peak() -> None:
    done = _plan(
        "--config", str(CONFIGS / "torchtune_qlora.yaml"), "--gpu", "rtx-4090", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (row,) = out["methods"]
    assert row["framework"]["name"] == "torchtune" and row["framework"]["loss"] == "chunked"
    # torchtune's README: 7.4 GiB allocated for this run; the plan adds 0.5 GB of context.
    allocated_gib = (row["peak_gb"] - 0.5) * 1e9 / 2**30
    assert allocated_gib == pytest.approx(7.4, rel=0.15)
    assert out["config"]["framework"] == "torchtune"


def test_flags_win_over_the_file() -> None:
    done = _plan(
        "--config",
        str(CONFIGS / "axolotl_qlora.yml"),
        "--rank",
        "8",
        "--batch",
        "1",
        "--method",
        "lora",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (row,) = out["methods"]
    assert row["method"] == "lora"
    assert out["workload"]["batch"] == 1 and out["workload"]["seq_len"] == 4096
    assert row["trainable_params"] < 30_000_000  # rank 8 on every linear of an 8B model


def test_table_lists_what_is_not_modelled() -> None:
    done = _plan("--config", str(CONFIGS / "llama_factory_lora.yaml"), "--gpu", "rtx-4090")
    assert done.returncode == 0, done.stderr
    assert "(llama-factory)" in done.stdout
    assert "not modelled (read, not used): dataset, do_train" in done.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("axolotl_bad.yml", "`lora_r` must be a positive whole number, got 'eight'"),
        ("broken.yml", "not valid YAML at line 3"),
        ("missing.yml", "cannot read the config file"),
    ],
)
def test_malformed_file_is_one_paragraph_exit_2(name: str, message: str) -> None:
    done = _plan("--config", str(CONFIGS / name))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unknown_format_asks_for_the_framework(tmp_path: Path) -> None:
    odd = tmp_path / "run.yaml"
    odd.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigFileError, match="cannot tell which framework"):
        read_run_config(odd)
    bad_json = tmp_path / "sft.json"
    bad_json.write_text('{"r": 8,')
    with pytest.raises(ConfigFileError, match="not valid JSON at line 1"):
        read_run_config(bad_json)
