"""The calibration loop through sweeps and trackers, on real sweeps and real stores.

One demo sweep logs its trials to a local SQLite MLflow store and to offline W&B runs; the
profiles calibrated from its results file, from the MLflow store and from the W&B files
are the same fit. Runs that other tools logged (an MLflow ``file:`` store written by
MlflowClient, W&B exports as CSV and JSON) are read by their names, and skipped runs are
counted. A second sweep, on the user's own model, predicts with the profile: its gate and
trials record which profile (path, sha256, version) and the calibration view shows it. The
preflight says which profile a sweep uses and where it extrapolates.
"""

from __future__ import annotations

import csv
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import paretune, write_demo_spec

QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
}


@pytest.fixture(scope="module")
def first(demo, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A real four-trial demo sweep logged to MLflow (SQLite) and to offline W&B runs."""
    folder = tmp_path_factory.mktemp("calsweep")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in QUIET.items():
            patch.setenv(name, value)
        for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            patch.setenv(name, str(folder / name.lower()))
        spec = write_demo_spec(
            folder,
            "first",
            trials=4,
            save="none",
            extra_run=f'mlflow = "{uri}"\nwandb = "offline"',
        )
        done = paretune("sweep", "run", str(spec), "--no-check")
        assert done.returncode == 0, done.stdout + done.stderr
        profile = folder / "profile.toml"
        fitted = paretune(
            "calibrate", "--db", str(folder / "results.duckdb"), "--min-runs", "1",
            "--out", str(profile),
        )  # fmt: skip
        assert fitted.returncode == 0, fitted.stdout + fitted.stderr
        yield {"folder": folder, "uri": uri, "profile": profile, "demo": demo}


def _fit(path: Path) -> dict[str, Any]:
    """A profile's fitted values, without when it was made and the names of its runs."""
    document = tomllib.loads(path.read_text())
    document.pop("created")
    for group in document["groups"]:
        group.pop("sources")
    return document


def _trials(results: Path) -> list[dict[str, Any]]:
    from sweeps.results.store import ResultsStore

    names, rows = ResultsStore(results).query(
        "SELECT method, batch, predicted_seq_len, measured_peak_gb, tokens_per_s FROM trials "
        "WHERE state = 'complete' ORDER BY number"
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.mark.slow
def test_a_sweep_logged_to_mlflow_and_wandb_calibrates_as_from_its_results_file(first) -> None:
    folder = first["folder"]
    by_mlflow, by_wandb = folder / "mlflow.toml", folder / "wandb.toml"
    done = paretune(
        "calibrate", "--mlflow", first["uri"], "--min-runs", "1", "--out", str(by_mlflow)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 MLflow runs" in done.stdout
    done = paretune(
        "calibrate", "--wandb", str(folder / "runs" / "wandb"), "--min-runs", "1",
        "--out", str(by_wandb),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 W&B runs" in done.stdout
    expected = _fit(first["profile"])
    assert expected["groups"] and _fit(by_mlflow) == expected and _fit(by_wandb) == expected
    sources = tomllib.loads(by_mlflow.read_text())["groups"][0]["sources"]
    assert all(s.startswith(first["uri"] + ": study first trial ") for s in sources)


def _mlflow_store_of_another_tool(folder: Path, rows: list[dict[str, Any]], model: str) -> str:
    """A local ``file:`` MLflow store with runs named as a Hugging Face script logs them:
    the sweep's measured trials, one without its batch size."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (folder / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("finetunes")
    for index, row in enumerate(rows):
        run = client.create_run(experiment, run_name=f"run-{index}")
        params = {
            "model_name_or_path": model,
            "peft_type": row["method"].upper(),
            "max_seq_length": str(row["predicted_seq_len"]),
            "gpu": "cpu",
        }
        if index:  # the first run lacks its batch size: skipped and counted
            params["per_device_train_batch_size"] = str(row["batch"])
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "peak_memory_gib", row["measured_peak_gb"] * 1e9 / 2**30)
        client.log_metric(run.info.run_id, "train_tokens_per_second", row["tokens_per_s"])
        client.set_terminated(run.info.run_id)
    return uri


@pytest.mark.slow
def test_runs_other_tools_logged_are_read_by_their_names(first, tmp_path: Path) -> None:
    rows = _trials(first["folder"] / "results.duckdb")
    model = str(first["demo"].model_dir)

    uri = _mlflow_store_of_another_tool(tmp_path, rows, model)
    out = tmp_path / "mlflow.toml"
    done = paretune("calibrate", "--mlflow", uri, "--min-runs", "1", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rows) - 1} of {len(rows)} MLflow runs (skipped: 1 no batch)" in done.stdout
    groups = tomllib.loads(out.read_text())["groups"]
    assert sum(g["runs"] for g in groups) == len(rows) - 1
    assert all(g["device"] == "cpu" and g["throughput"]["value"] > 0 for g in groups)

    # W&B: the runs table saved from its API as JSON (config and summary per run) ...
    exported = [
        {
            "name": f"run-{index}",
            "config": {
                "model": {"value": model},
                "method": row["method"],
                "batch": row["batch"],
                "seq_len": row["predicted_seq_len"],
                "device": "cpu",
            },
            "summary": {"peak_gb": row["measured_peak_gb"], "tokens_per_s": row["tokens_per_s"]},
        }
        for index, row in enumerate(rows)
    ]
    as_json = tmp_path / "wandb.json"
    as_json.write_text(json.dumps(exported))
    # ... and the UI's CSV download: one flat column per config and summary key.
    as_csv = tmp_path / "wandb.csv"
    with as_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "State", "model", "method", "gpu", "batch", "seq_len", "peak_gb"])
        for index, row in enumerate(rows):
            writer.writerow(
                [f"run-{index}", "finished", model, row["method"], "cpu", row["batch"],
                 row["predicted_seq_len"], row["measured_peak_gb"]]
            )  # fmt: skip
    # ... and api.runs() put in a pandas frame and saved with to_csv: Python dicts as text.
    as_frame = tmp_path / "wandb_api.csv"
    with as_frame.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "summary", "config", "name"])
        for index, run in enumerate(exported):
            config = {k: v["value"] if isinstance(v, dict) else v for k, v in run["config"].items()}
            writer.writerow([index, repr(run["summary"]), repr(config), run["name"]])
    for path in (as_json, as_csv, as_frame):
        done = paretune("calibrate", "--wandb", str(path), "--min-runs", "1", "--out", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(rows)} of {len(rows)} W&B runs" in done.stdout
        groups = tomllib.loads(out.read_text())["groups"]
        assert sum(g["runs"] for g in groups) == len(rows)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("empty.csv", "", "is empty"),
        ("nomethod.csv", "model,gpu,batch,seq_len,peak_gb\nqwen2.5-0.5b,h100,4,1024,20\n", "no run has method"),
        (
            "units.csv",
            "model,method,gpu,batch,seq_len,peak_memory_tb\nqwen2.5-0.5b,lora,h100,4,1024,1\n",
            "unit calibrate does not know: peak_memory_tb",
        ),
        ("runs.json", '{"runs": 3}', "not a list of runs"),
        ("runs.txt", "x", "offline run folders"),
        ("nothing", None, "no offline run folder"),
    ],
)  # fmt: skip
def test_bad_wandb_input_is_one_paragraph_and_exit_2(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    path = tmp_path / name
    if text is None:
        path.mkdir()
    else:
        path.write_text(text)
    out = tmp_path / "profile.toml"
    done = paretune("calibrate", "--wandb", str(path), "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_a_missing_mlflow_store_is_refused_and_not_created(tmp_path: Path) -> None:
    for uri in (f"sqlite:///{tmp_path / 'none.db'}", f"file:{tmp_path / 'none'}"):
        done = paretune("calibrate", "--mlflow", uri, "--out", str(tmp_path / "p.toml"))
        assert done.returncode == 2 and "MLflow store" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_on_its_own_model_predicts_with_the_profile_and_records_it(
    first, own_model, tmp_path: Path
) -> None:
    from planner.calibration import load_profile
    from sweeps.results.store import ResultsStore

    profile = load_profile(first["profile"])
    retain = tmp_path / "retain.jsonl"
    retain.write_text(
        "".join(json.dumps({"text": f"The {w} sat by the river at dusk."}) + "\n"
                for w in ("cat", "dog", "fox", "owl"))
    )  # fmt: skip
    spec = tmp_path / "own.toml"
    spec.write_text(f"""
name = "own"
model = "{own_model.model_dir}"
seed = 0
[data]
train = "{own_model.train}"
eval = "{own_model.eval}"
retain = "{retain}"
[hardware]
device = "cpu"
usd_per_hour = 0.10
[search]
methods = ["lora"]
rank = [2, 4]
max_steps = 2
[trial]
batch = 4
eval_every = 2
max_seq_len = 32
[budget]
trials = 2
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
calibration = "{first["profile"]}"
""")
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    store = ResultsStore(tmp_path / "results.duckdb")

    _, (study,) = store.query("SELECT calibration FROM studies WHERE study = 'own'")
    recorded = json.loads(study[0])
    assert recorded["sha256"] == profile.sha256 and recorded["version"] == profile.version
    assert recorded["path"] == str(first["profile"].resolve()) and recorded["runs"] == 4

    names, rows = store.query(
        "SELECT c.calibrated, c.calibration_sha256, c.predicted_peak_gb, c.predicted_hours, "
        "c.predicted_dollars, c.train_hours_ratio, c.calibration, t.predicted_flops, "
        "t.predicted_weights_bytes + t.predicted_adapter_weights_bytes "
        "+ t.predicted_gradients_bytes + t.predicted_optimizer_states_bytes "
        "+ t.predicted_activations_bytes + t.predicted_logits_loss_bytes "
        "+ t.predicted_framework_overhead_bytes AS terms "
        "FROM calibration c JOIN trials t USING (study, number) WHERE c.study = 'own'"
    )
    assert len(rows) == 2
    lora = profile.fit.correction(("cpu", "lora", "transformers"))
    for row in (dict(zip(names, r, strict=True)) for r in rows):
        assert row["calibrated"] is True and row["calibration_sha256"] == profile.sha256, row
        # CPU trials are timed at the fitted throughput (the planner alone has no CPU hours)
        assert row["predicted_hours"] == pytest.approx(
            row["predicted_flops"] / lora.throughput / 3600
        )
        assert row["predicted_dollars"] == pytest.approx(row["predicted_hours"] * 0.10)
        assert row["train_hours_ratio"] > 0
        # the peak is corrected; the planner's own terms stay as they were, for the next fit
        assert row["predicted_peak_gb"] * 1e9 != pytest.approx(row["terms"], rel=1e-3)
        label = json.loads(row["calibration"])["label"]
        assert label.startswith(f"calibrated from {lora.runs} runs on cpu")

    # The gate used the same profile: its prediction is on each trial.
    import optuna

    from sweeps.study import open_storage

    trials = optuna.load_study(
        study_name="own", storage=open_storage(str(tmp_path / "runs" / "own.journal"))
    ).get_trials()
    for trial in trials:
        gate = trial.user_attrs["calibration"]
        assert gate["sha256"] == profile.sha256 and gate["calibrated"] is True
        assert trial.user_attrs["predicted_hours"] > 0

    refit = paretune("calibrate", "--db", str(tmp_path / "results.duckdb"), "--min-runs", "1",
                     "--out", str(tmp_path / "again.toml"))  # fmt: skip
    assert refit.returncode == 0 and "2 complete trials" in refit.stdout, refit.stderr


@pytest.mark.slow
def test_the_preflight_says_which_profile_and_where_it_extrapolates(first, tmp_path: Path) -> None:
    from sweeps.preflight import PreflightError, preflight
    from sweeps.spec import load_spec

    profile = first["profile"]
    calibrated = write_demo_spec(
        tmp_path, "checked", trials=2, extra_run=f'calibration = "{profile}"'
    )
    checks = {c.name: c.detail for c in preflight(load_spec(calibrated), dry_step=False)}
    said = checks["calibration"]
    assert said.startswith("calibrated from 4 runs on cpu; leave-one-out error memory ")
    assert f"profile {profile}" in said and "lora: calibrated from " in said
    # the demo's examples are a few tokens long; the gate sizes max_seq_len = 64
    assert "extrapolating: sequence length 64 is far outside" in said

    plain = write_demo_spec(tmp_path, "plain", trials=2, extra_run='calibration = "none"')
    checks = {c.name: c.detail for c in preflight(load_spec(plain), dry_step=False)}
    assert checks["calibration"] == 'none, the planner\'s defaults ([run] calibration = "none")'

    missing = write_demo_spec(
        tmp_path, "missing", trials=2, extra_run=f'calibration = "{tmp_path / "no.toml"}"'
    )
    with pytest.raises(PreflightError) as raised:
        preflight(load_spec(missing), dry_step=False)
    assert "calibration: calibration profile" in raised.value.message
    assert "no such file" in raised.value.message
    # Without the preflight, the sweep refuses it before the study is touched.
    done = paretune("sweep", "run", str(missing), "--no-check")
    assert done.returncode == 2 and "no such file" in done.stderr, done.stdout + done.stderr
    assert '[run] calibration = "none"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "missing.journal").exists()


def test_the_gate_and_the_budget_predict_with_the_profile(tmp_path: Path) -> None:
    """On a target GPU: a profile (written here, as a fixture: no GPU run is claimed) whose
    qlora group adds 80 GB of overhead and halves the MFU makes a trial that fits by the
    defaults infeasible, and doubles its hours and dollars; a real sweep records it."""
    import optuna

    from planner.calibration import Correction, Fit, Profile
    from sweeps.gate import Gate
    from sweeps.results.store import ResultsStore
    from sweeps.spec import SweepSpec
    from sweeps.worker import Sweep

    def spec(calibration: str) -> SweepSpec:
        return SweepSpec.model_validate(
            {
                "name": "gated",
                "model": "meta-llama/Llama-3.1-8B",
                "hardware": {"device": "cuda", "gpu": "h100-sxm", "provider": "runpod-secure"},
                "search": {"methods": ["qlora"], "rank": [8, 16], "lr": 1e-4},
                "trial": {"max_seq_len": 2048, "batch": 4, "grad_checkpointing": True},
                "budget": {"trials": 3},
                "run": {
                    "dir": str(tmp_path / "runs"),
                    "results": str(tmp_path / "r.duckdb"),
                    "calibration": calibration,
                },
            }
        )

    plain = spec("none")
    config = plain.trial_config({"method": "qlora", "rank": 8})
    defaults = Gate(plain).predict(config)
    assert defaults.fits and defaults.calibration is None and defaults.hours > 0
    mfu = Gate(plain)._estimate(Gate(plain)._resolve_arch(), config, gpu="h100-sxm").mfu
    correction = Correction(
        device="h100-sxm", method="qlora", framework="transformers", runs=3,
        sources=("a test fixture",), throughput=mfu / 2, throughput_runs=3,
        throughput_weight=1.0, activation_scale=1.0, overhead_bytes=80e9, memory_runs=3,
        memory_weight=1.0, seq_len=(1024, 4096), batch=(2, 8), models=("llama-3.1-8b",),
    )  # fmt: skip
    path = tmp_path / "gpu.toml"
    Profile(Fit(min_runs=3, corrections=(correction,)), (), created="2026-12-01").write(path)

    calibrated_spec = spec(str(path))
    gate = Gate(calibrated_spec)
    calibrated = gate.predict(config)
    assert not calibrated.fits and calibrated.peak_gb > 80
    assert calibrated.hours == pytest.approx(2 * defaults.hours, rel=1e-6)
    assert calibrated.dollars == pytest.approx(2 * defaults.dollars, rel=1e-6)
    assert calibrated.calibration["calibrated"] and calibrated.calibration["warnings"] == []
    assert calibrated.calibration["sha256"] == gate.profile.profile.sha256

    sweep = Sweep.open(calibrated_spec)
    state = sweep.run()
    assert "infeasible trials in a row" in state.stop_reason  # never launched
    study = optuna.load_study(study_name="gated", storage=sweep.storage)
    assert {t.user_attrs["state"] for t in study.trials} == {"infeasible"}
    assert study.user_attrs["calibration"]["sha256"] == gate.profile.profile.sha256
    _, rows = ResultsStore(tmp_path / "r.duckdb").query(
        "SELECT predicted_peak_gb, json_extract_string(calibration, '$.sha256') FROM trials"
    )
    assert rows and all(peak > 80 and sha == gate.profile.profile.sha256 for peak, sha in rows)


def test_a_trial_without_its_profile_keeps_the_defaults_and_says_why(tmp_path: Path) -> None:
    from planner import MethodSpec, Workload, estimate, resolve_model
    from sweeps.trial.prediction import calibrated_prediction
    from sweeps.trial.recipe import trial_command
    from sweeps.trial.types import TrialConfig

    planned = estimate(
        resolve_model("qwen2.5-0.5b"),
        Workload(seq_len=1024, batch=4),
        MethodSpec(kind="lora"),
        gpu="h100-sxm",
    )
    assert calibrated_prediction(planned, None) == (planned, None)
    kept, why = calibrated_prediction(planned, str(tmp_path / "gone.toml"))
    assert kept is planned and why is not None and why["calibrated"] is False
    assert "no such file" in why["label"]
    # The sweep passes its profile to each trial; the command that reruns one leaves it out.
    config = TrialConfig(method="lora", lr=3e-4, max_steps=30)
    with_profile = config.model_copy(update={"calibration": str(tmp_path / "p.toml")})
    assert trial_command(with_profile, Path("t.toml")) == trial_command(config)


@pytest.mark.slow
def test_a_cpu_sweeps_budget_is_checked_against_the_calibrated_cost(first, tmp_path) -> None:
    """Without a profile a CPU trial is unpriced until one has run; with one, a trial the
    profile prices above what is left is never launched."""
    import optuna

    from sweeps.spec import load_spec
    from sweeps.study import open_storage

    spec = write_demo_spec(
        tmp_path, "budgeted", trials=2, extra_run=f'calibration = "{first["profile"]}"'
    )
    spec.write_text(spec.read_text().replace("trials = 2", "trials = 2\ndollars = 0.0000001"))
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = load_spec(spec)
    (trial,) = optuna.load_study(
        study_name="budgeted", storage=open_storage(loaded.storage_url)
    ).get_trials()
    assert trial.user_attrs["state"] == "over_budget" and "result" not in trial.user_attrs
    assert trial.user_attrs["predicted_dollars"] > 0.0000001
    assert trial.user_attrs["calibration"]["calibrated"] is True
    assert "dollar budget" in trial.user_attrs["error"]
