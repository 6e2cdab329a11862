"""`paretune prices`: table, JSON and CSV output, filters, overrides and user errors."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tui.cli import main


@pytest.fixture(autouse=True)
def _no_user_price_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PARETUNE_PRICES", raising=False)


def _prices(*args: str) -> Result:
    result = CliRunner().invoke(main, ["prices", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _paretune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_table_lists_gpus_offers_and_ages() -> None:
    out = _prices().output
    assert "GPUs (memory in GB = 10^9 bytes" in out
    assert "Offers, cheapest first per GPU" in out
    assert "Fine-tuning APIs" in out
    assert "CPU instances" in out and "local-cpu" in out and "c7i.xlarge" in out
    for text in ("h100-sxm", "rtx-6000-ada", "vast-ai", "runpod-secure", "no BF16 (FP16 65)"):
        assert text in out
    offers_table = out[out.index("Offers, cheapest first") : out.index("Fine-tuning APIs")]
    rows = [line.split() for line in offers_table.splitlines()]
    # Within the H100 SXM block the first offer is the cheapest: Vast.ai's 2.40 median.
    first_h100 = next(row for row in rows if row and row[0] == "h100-sxm")
    assert first_h100[1:3] == ["vast-ai", "2.40"]
    assert re.search(r"2026-10-24\s+\d+ d\s+no", " ".join(first_h100))


def test_json_has_exactly_the_documented_shape() -> None:
    data = json.loads(_prices("--format", "json").output)
    assert set(data) == {"gpus", "offers", "apis"}
    assert {tuple(sorted(g)) for g in data["gpus"]} == {
        ("bandwidth_gbps", "bf16_tflops", "id", "memory_gb", "name")
    }
    assert {tuple(sorted(o)) for o in data["offers"]} == {
        ("checked", "gpu", "kind", "provider", "source", "usd_per_hour", "verified")
    }
    assert {tuple(sorted(a)) for a in data["apis"]} == {
        ("checked", "method", "model_bracket", "provider", "source", "usd_per_mtok", "verified")
    }
    t4 = next(g for g in data["gpus"] if g["id"] == "t4")
    assert t4["bf16_tflops"] is None and t4["memory_gb"] == 16
    for offer in data["offers"]:
        assert len(offer["checked"]) == 10 and offer["checked"][4] == "-"
        assert offer["source"].startswith("https://")
    ori = next(a for a in data["apis"] if a["provider"] == "ori")
    assert ori == {
        "provider": "ori",
        "model_bracket": "up to 10B",
        "method": "lora",
        "usd_per_mtok": 0.46,
        "source": "https://www.ori.co/pricing",
        "checked": "2025-11-01",
        "verified": True,
    }


def test_json_offers_are_cheapest_first_per_gpu() -> None:
    data = json.loads(_prices("--format", "json").output)
    gpu_order = [g["id"] for g in data["gpus"]]
    offer_gpus = [o["gpu"] for o in data["offers"]]
    assert offer_gpus == sorted(offer_gpus, key=gpu_order.index)
    for gpu in gpu_order:
        prices = [o["usd_per_hour"] for o in data["offers"] if o["gpu"] == gpu]
        assert prices == sorted(prices)


def test_gpu_and_provider_filters_accept_aliases() -> None:
    data = json.loads(_prices("--gpu", "H100", "--format", "json").output)
    assert [g["id"] for g in data["gpus"]] == ["h100-sxm"]
    assert {o["gpu"] for o in data["offers"]} == {"h100-sxm"} and len(data["offers"]) >= 10

    data = json.loads(_prices("--provider", "Lambda", "--format", "json").output)
    assert {o["provider"] for o in data["offers"]} == {"lambda"}
    assert "h200" not in {g["id"] for g in data["gpus"]}  # Lambda lists no H200
    assert data["apis"] == []

    table = _prices("--gpu", "a100").output
    assert "a100-80gb" in table and "h100-sxm" not in table and "Fine-tuning APIs" not in table


def test_as_of_uses_the_prices_known_then() -> None:
    def runpod_secure_h100(*extra: str) -> float:
        data = json.loads(
            _prices(
                "--gpu", "h100", "--provider", "runpod-secure", "--format", "json", *extra
            ).output
        )
        (offer,) = data["offers"]
        return offer["usd_per_hour"]

    assert runpod_secure_h100() == 3.99
    assert runpod_secure_h100("--as-of", "2026-10-01") == 3.49
    csv_out = _prices("--gpu", "h100", "--provider", "runpod-secure", "--format", "csv",
                      "--as-of", "2026-10-01").output  # fmt: skip
    (row,) = list(csv.DictReader(io.StringIO(csv_out)))
    assert row["age_days"] == "6" and row["checked"] == "2026-09-25"


def test_csv_has_one_row_per_offer() -> None:
    rows = list(csv.DictReader(io.StringIO(_prices("--format", "csv").output)))
    data = json.loads(_prices("--format", "json").output)
    assert len(rows) == len(data["offers"])
    assert list(rows[0]) == [
        "gpu", "provider", "usd_per_hour", "kind", "gpus_per_instance", "instance",
        "region", "source", "checked", "age_days", "verified",
    ]  # fmt: skip
    p5 = next(r for r in rows if r["instance"] == "p5.48xlarge")
    assert (p5["usd_per_hour"], p5["gpus_per_instance"], p5["region"]) == ("6.88", "8", "us-east-1")


def test_prices_option_merges_an_override_file(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "offers:\n  - {gpu: l4, provider: aws, usd_per_hour: 0.5, instance: g6.xlarge,"
        " source: 'https://aws.amazon.com/ec2/pricing/', checked: 2026-11-25}\n"
    )
    data = json.loads(_prices("--gpu", "l4", "--prices", str(override), "--format", "json").output)
    assert [(o["provider"], o["usd_per_hour"]) for o in data["offers"]] == [("aws", 0.5)]
    assert str(override) in _prices("--gpu", "l4", "--prices", str(override)).output


def test_unknown_gpu_exits_2_with_a_suggestion() -> None:
    done = _paretune("prices", "--gpu", "h10")
    assert done.returncode == 2
    assert "Error: unknown GPU 'h10'" in done.stderr
    assert "Did you mean" in done.stderr and "Traceback" not in done.stderr
    done = _paretune("prices", "--provider", "runpod")
    assert done.returncode == 2
    assert "runpod-community" in done.stderr and "runpod-secure" in done.stderr


def test_bad_override_file_exits_2_naming_file_entry_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text(
        "offers:\n  - {gpu: l4, provider: aws, usd_per_hour: -1, instance: g6.xlarge,"
        " source: 'https://aws.amazon.com/ec2/pricing/', checked: 2026-11-25}\n"
    )
    done = _paretune("prices", "--prices", str(bad))
    assert done.returncode == 2
    assert str(bad) in done.stderr
    assert "offers[0] (l4 on aws)" in done.stderr and "'usd_per_hour'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_bad_as_of_date_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["prices", "--as-of", "yesterday"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output or "%Y-%m-%d" in result.output
