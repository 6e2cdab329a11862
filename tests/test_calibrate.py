"""`paretune calibrate` on real measurements: a demo sweep's trials (results file), the
same trials exported and imported as a CSV, benchmarks/gpu_check.py rows measured on the
CPU; the profile applied to plans; bad input as one paragraph with exit code 2."""

from __future__ import annotations

import csv
import importlib.util
import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import paretune, write_demo_spec

TINY_QWEN2 = {
    "model_type": "qwen2",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@pytest.fixture(scope="module")
def swept(demo, tmp_path_factory) -> Path:
    """The results file of one real demo sweep (LoRA and freeze, 4 trials of 2 steps)."""
    folder = tmp_path_factory.mktemp("calibrate")
    spec = write_demo_spec(folder, "cal", trials=4, save="none")
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "results.duckdb"


def test_planner_terms_in_the_schema_are_the_planners() -> None:
    from planner import TERMS
    from sweeps.results.schema import PREDICTED_TERMS

    assert PREDICTED_TERMS == TERMS


@pytest.mark.slow
def test_trials_record_the_terms_and_calibrate_fits_them(swept: Path, tmp_path: Path) -> None:
    from sweeps.results.store import ResultsStore

    _, rows = ResultsStore(swept).query(
        "SELECT predicted_peak_gb, predicted_flops, predicted_seq_len, "
        "predicted_weights_bytes + predicted_adapter_weights_bytes + predicted_gradients_bytes"
        " + predicted_optimizer_states_bytes + predicted_activations_bytes"
        " + predicted_logits_loss_bytes + predicted_framework_overhead_bytes "
        "FROM trials WHERE state = 'complete'"
    )
    assert rows
    for peak_gb, flops, seq_len, terms in rows:
        assert terms == pytest.approx(peak_gb * 1e9, rel=1e-6) and flops > 0 and seq_len > 0

    out = tmp_path / "profile.toml"
    done = paretune("calibrate", "--db", str(swept), "--min-runs", "1", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leave-one-out" in done.stdout and "cpu" in done.stdout
    profile = tomllib.loads(out.read_text())
    assert profile["version"] == 1 and profile["min_runs"] == 1
    groups = {g["method"]: g for g in profile["groups"]}
    assert set(groups) <= {"lora", "freeze"} and groups
    assert sum(g["runs"] for g in groups.values()) == len(rows)
    for group in groups.values():
        assert group["device"] == "cpu" and group["throughput"]["unit"] == "flop_per_s"
        assert group["throughput"]["value"] > 0 and group["memory"]["runs"] == group["runs"]
        assert len(group["sources"]) == group["runs"]
        assert all("study cal trial" in source for source in group["sources"])

    # A higher minimum than any group has: nothing is fitted, every group keeps the defaults.
    strict = paretune("calibrate", "--db", str(swept), "--min-runs", "99", "--out", str(out))
    assert strict.returncode == 0 and "too few runs" in strict.stdout
    assert tomllib.loads(out.read_text())["groups"] == []


@pytest.mark.slow
def test_the_profile_corrects_cpu_estimates_and_flags_extrapolation(
    swept: Path, demo, tmp_path: Path
) -> None:
    from planner import MethodSpec, Workload, estimate, resolve_model
    from planner.calibration import apply, build_profile, load_profile
    from sweeps.calibration import runs_from_results

    runs, skipped = runs_from_results(swept)
    assert skipped == 0
    out = tmp_path / "profile.toml"
    build_profile(runs, min_runs=1).write(out)
    profile = load_profile(out)
    arch = resolve_model(str(demo.model_dir))
    run = runs[0]
    method = MethodSpec(kind=run.method, precision="fp32")  # type: ignore[arg-type]
    near = estimate(arch, Workload(seq_len=run.seq_len, batch=run.batch), method)
    assert near.hours is None  # the planner alone has no CPU throughput
    calibrated = apply(near, profile)
    assert calibrated.calibrated and calibrated.label.startswith("calibrated from ")
    assert "on cpu" in calibrated.label and calibrated.warnings == ()
    correction = profile.fit.correction(run.key)
    assert calibrated.estimate.hours == pytest.approx(near.flops / correction.throughput / 3600)
    physical = sum(near.breakdown[t] for t in ("weights", "gradients", "optimizer_states"))
    assert calibrated.estimate.peak_bytes >= physical

    far = estimate(arch, Workload(seq_len=run.seq_len * 10, batch=run.batch), method)
    assert any("sequence length" in w for w in apply(far, profile).warnings)

    on_gpu = apply(estimate(arch, Workload(seq_len=64, batch=4), method, gpu="h100"), profile)
    assert not on_gpu.calibrated and "no runs on h100" in on_gpu.label


@pytest.mark.slow
def test_imported_csv_of_the_same_trials_and_plan_says_so(
    swept: Path, demo, tmp_path: Path
) -> None:
    from sweeps.results.store import ResultsStore

    _, rows = ResultsStore(swept).query(
        "SELECT method, batch, predicted_seq_len, measured_peak_gb, tokens_per_s "
        "FROM trials WHERE state = 'complete'"
    )
    table = tmp_path / "runs.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "method", "gpu", "batch", "seq_len", "peak_gb", "tokens_per_s"])
        for method, batch, seq_len, peak, speed in rows:
            writer.writerow([demo.model_dir, method, "cpu", batch, seq_len, peak, speed])
    out = tmp_path / "imported.toml"
    done = paretune("calibrate", "--import", str(table), "--min-runs", "1", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rows)} imported runs" in done.stdout
    assert {g["device"] for g in tomllib.loads(out.read_text())["groups"]} == {"cpu"}

    planned = paretune(
        "plan", "qwen2.5-0.5b", "--method", "lora", "--gpu", "h100", "--calibration", str(out)
    )
    assert planned.returncode == 0, planned.stderr
    assert "not calibrated: the profile has no runs on h100-sxm (it has cpu)" in planned.stdout
    as_json = paretune(
        "plan",
        "qwen2.5-0.5b",
        "--method",
        "lora",
        "--gpu",
        "h100",
        "--calibration",
        str(out),
        "--format",
        "json",
    )
    notes = json.loads(as_json.stdout)["calibration"]
    assert notes["profile"] == str(out) and notes["methods"][0]["calibrated"] is False
    plain = paretune("plan", "qwen2.5-0.5b", "--calibration", "none", "--format", "json")
    assert json.loads(plain.stdout)["calibration"] is None


@pytest.mark.slow
def test_gpu_check_rows_measured_on_the_cpu(tmp_path: Path) -> None:
    config = tmp_path / "tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(TINY_QWEN2))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_check.jsonl"
    arguments = ["--device", "cpu", "--models", str(config), "--methods", "lora,freeze"]
    arguments += ["--steps", "3", "--seq-len", "16", "--batch", "2", "--out", str(out)]
    assert module.main(arguments) == 0

    profile = tmp_path / "profile.toml"
    done = paretune("calibrate", "--gpu-check", str(out), "--min-runs", "1", "--out", str(profile))
    assert done.returncode == 0, done.stdout + done.stderr
    groups = tomllib.loads(profile.read_text())["groups"]
    assert {(g["device"], g["method"]) for g in groups} == {("cpu", "lora"), ("cpu", "freeze")}
    assert all(g["throughput"]["value"] > 0 and g["seq_len"] == [16, 16] for g in groups)
    assert all("memory" not in g or "activation_scale" not in g["memory"] for g in groups)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("empty.csv", "", "is empty"),
        ("header.csv", "model,method,gpu,batch,seq_len,peak_gb\n", "no runs"),
        (
            "units.csv",
            "model,method,gpu,batch,seq_len,peak_gib\nqwen2.5-0.5b,lora,h100,4,1024,20\n",
            "unknown column(s) 'peak_gib'",
        ),
        (
            "value.csv",
            "model,method,gpu,batch,seq_len,peak_gb\nqwen2.5-0.5b,lora,h100,4,1024,20GB\n",
            "peak_gb '20GB' is not a plain number",
        ),
        ("runs.json", '{"runs": 3}', "not a list of runs"),
        ("runs.txt", "model\n", "imports .csv and .json"),
        ("check.jsonl", "not json\n", "is not JSON"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    option = "--gpu-check" if name.endswith(".jsonl") else "--import"
    out = tmp_path / "profile.toml"
    done = paretune("calibrate", option, str(path), "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2 and not out.exists()


def test_no_runs_at_all_is_an_error(tmp_path: Path) -> None:
    done = paretune("calibrate", "--out", str(tmp_path / "p.toml"), cwd=tmp_path)
    assert done.returncode == 2 and "no measured runs" in done.stderr


def test_plan_with_a_missing_or_garbled_profile_is_an_error(tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.toml"
    garbled.write_text("version = 99\n")
    for path, says in ((tmp_path / "absent.toml", "no such file"), (garbled, "version 99")):
        done = paretune("plan", "qwen2.5-0.5b", "--gpu", "h100", "--calibration", str(path))
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


def test_the_fit_tells_a_fixed_time_per_step_from_throughput() -> None:
    """Runs timed as ``steps * overhead + flops / throughput`` (two groups, micro-batches 2
    to 16): the fit finds the overhead and each group's throughput, and predicts a run
    outside its batches within a percent; with one FLOPs-per-step only, overhead is 0."""
    from dataclasses import replace

    from planner.calibration import fit
    from planner.calibration.fit import Run, leave_one_out, predicted_seconds

    overhead, speeds = 0.006, {"lora": 60e9, "freeze": 120e9}

    def run(method: str, batch: int, steps: int = 30) -> Run:
        flops = 2e8 * batch * steps
        seconds = steps * overhead + flops / speeds[method]
        return Run(
            f"{method}-{batch}", "cpu", method, "transformers", "m", 64, batch, {}, None,
            flops, seconds, steps=steps,
        )  # fmt: skip

    runs = [run(m, b) for m in speeds for b in (2, 4, 8, 16)]
    found = fit(runs, 2)
    for method, speed in speeds.items():
        correction = found.correction(("cpu", method, "transformers"))
        assert correction is not None
        assert correction.step_overhead_s == pytest.approx(overhead, rel=1e-6)
        assert correction.throughput == pytest.approx(speed, rel=1e-6)
        outside = run(method, 64, steps=100)
        assert predicted_seconds(
            outside, correction.throughput, correction.step_overhead_s
        ) == pytest.approx(outside.seconds, rel=0.01)
    # Leave-one-out: every held-out run is predicted from the others' fit.
    assert all(e.hours_after is not None and e.hours_after < 0.01 for e in leave_one_out(runs, 2))
    # Without step counts, throughput alone cannot express the fixed cost: 10% off or more.
    untimed = [replace(r, steps=None) for r in runs]
    assert all(c.step_overhead_s == 0.0 for c in fit(untimed, 2).corrections)
    assert all(e.hours_after is not None and e.hours_after > 0.1 for e in leave_one_out(untimed, 2))

    same = fit([run(m, 8) for m in speeds for _ in range(3)], 2)
    assert all(c.step_overhead_s == 0.0 for c in same.corrections)
