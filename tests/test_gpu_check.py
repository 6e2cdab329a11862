"""benchmarks/gpu_check.py as a one-shot run: a failing row is reported and the rest still
run, each row lands in --out as it is measured, and a spent time budget skips the rest.
On the CPU (``--device cpu``) with a tiny model; the GPU run takes the same code path."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TINY_QWEN2 = {
    "model_type": "qwen2",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _gpu_check():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_QWEN2))
    return config


@pytest.mark.slow
def test_a_failing_row_is_reported_and_the_other_rows_still_run(
    tiny_config: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # A machine without bitsandbytes: the qlora row cannot be measured, freeze can.
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    out = tmp_path / "results" / "gpu_check.jsonl"
    code = _gpu_check().main(
        [
            "--device",
            "cpu",
            "--models",
            str(tiny_config),
            "--methods",
            "qlora,freeze",
            "--steps",
            "2",
            "--seq-len",
            "16",
            "--batch",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 1  # not every row was measured

    printed = capsys.readouterr().out
    assert printed.startswith("versions: python ")
    rows = {
        line.split()[1]: line.split()
        for line in printed.splitlines()
        if line.split()[1:2] in (["qlora"], ["freeze"])
    }
    assert float(rows["freeze"][8].replace(",", "")) > 0  # measured tokens/s
    assert rows["qlora"][8] == "-"
    assert float(rows["qlora"][6]) > 0  # the predictions are still there
    (error_line,) = [line for line in printed.splitlines() if line.lstrip().startswith("!")]
    assert "qlora" in error_line and "measure: ModuleNotFoundError" in error_line
    assert "bitsandbytes" in error_line

    run, *measured = _records(out)
    assert run["kind"] == "run" and run["gpu"] == "h100" and "torch" in run["versions"]
    by_method = {r["method"]: r for r in measured}
    assert [r["kind"] for r in measured] == ["row", "row"]
    assert by_method["freeze"]["status"] == "ok"
    assert by_method["freeze"]["tokens_per_s"] > 0
    assert by_method["freeze"]["sim_bytes"] > 0 and by_method["freeze"]["analytic_bytes"] > 0
    assert by_method["qlora"]["status"] == "error"
    assert by_method["qlora"]["error"].startswith("measure: ModuleNotFoundError")
    assert "tokens_per_s" not in by_method["qlora"] and by_method["qlora"]["sim_bytes"] > 0


def test_an_unknown_model_is_an_error_row_not_a_crash(
    tiny_config: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "gpu_check.jsonl"
    code = _gpu_check().main(
        [
            "--dry-run",
            "--models",
            f"no-such-model,{tiny_config}",
            "--methods",
            "lora",
            "--seq-len",
            "16",
            "--batch",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    _, unknown, tiny = _records(out)
    assert unknown["status"] == "error" and "UnknownModelError" in unknown["error"]
    assert tiny["status"] == "ok" and tiny["sim_bytes"] > 0
    assert "! error: no-such-model lora: setup: UnknownModelError" in capsys.readouterr().out


def test_rows_past_the_time_budget_are_skipped_and_out_is_appended(
    tiny_config: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "gpu_check.jsonl"
    out.write_text(json.dumps({"kind": "earlier"}) + "\n")
    code = _gpu_check().main(
        [
            "--dry-run",
            "--models",
            str(tiny_config),
            "--methods",
            "lora,full",
            "--time-budget-s",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    earlier, run, *rows = _records(out)
    assert earlier == {"kind": "earlier"} and run["kind"] == "run"
    assert [(r["method"], r["status"]) for r in rows] == [("lora", "skipped"), ("full", "skipped")]
    assert all("time budget of 0 s" in r["error"] for r in rows)
    assert capsys.readouterr().out.count("! skipped:") == 2


def test_dry_run_builds_the_table(tiny_config: Path, capsys) -> None:
    assert (
        _gpu_check().main(
            [
                "--dry-run",
                "--models",
                str(tiny_config),
                "--methods",
                "lora,full",
                "--seq-len",
                "32",
                "--batch",
                "1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[1:2] in (["lora"], ["full"])]
    assert len(rows) == 2
    for row in rows:
        assert row[2] == row[3] == "-"  # nothing measured without a GPU
        assert float(row[6]) > 0 and float(row[7]) > 0  # simulated and analytic GB


def test_each_method_trains_for_real_on_the_cpu(tiny_config: Path, capsys) -> None:
    """The GPU run's code path (quantizing to NF4 with bitsandbytes, peft, freeze, the
    optimizer, the timed steps) on the CPU with a tiny model; memory is not measured."""
    assert (
        _gpu_check().main(
            [
                "--device",
                "cpu",
                "--models",
                str(tiny_config),
                "--methods",
                "qlora,freeze",
                "--steps",
                "2",
                "--seq-len",
                "16",
                "--batch",
                "1",
            ]
        )
        == 0
    )
    rows = [
        line.split()
        for line in capsys.readouterr().out.splitlines()
        if line.split()[1:2] in (["qlora"], ["freeze"])
    ]
    assert len(rows) == 2
    assert all(float(row[8].replace(",", "")) > 0 for row in rows)  # measured tokens/s
