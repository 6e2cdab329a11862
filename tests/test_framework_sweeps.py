"""A sweep planned for the framework the full-scale run will use (the spec's ``framework``):
the spec key, what the trials take from the preset, what the gate and each recorded trial
predict, and what preflight says about the difference."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import paretune

from planner import Workload, estimate, resolve_model
from planner.specs import FRAMEWORKS
from sweeps.gate import Gate
from sweeps.spec import SpecError, load_spec, spec_from_text, write_spec
from sweeps.trial.prediction import framework_untaken, planner_method, trainer_method
from sweeps.trial.types import TrialConfig

_BASE = 'name = "s"\nmodel = "llama-3.1-8b"\n'


def _spec(head: str = "", body: str = ""):
    return spec_from_text(_BASE + head + '\n[search]\nmethods = ["qlora", "full"]\n' + body)


def test_the_framework_key_names_a_preset_and_is_written_back(tmp_path: Path) -> None:
    assert _spec().framework == "hf"
    assert _spec('framework = "llamafactory"').framework == "llama-factory"
    assert _spec('framework = "Unsloth"').framework == "unsloth"
    spec = _spec('framework = "torchtune"')
    assert load_spec(write_spec(spec, tmp_path / "s.toml")).framework == "torchtune"
    assert spec_from_text(_BASE + "\n").model_copy().to_raw()["framework"] == "hf"
    # The trial's own list of frameworks is the planner's.
    literal = TrialConfig.model_fields["framework"].annotation
    assert set(literal.__args__) == set(FRAMEWORKS)  # type: ignore[union-attr]


def test_an_unknown_framework_is_one_paragraph_with_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as raised:
        _spec('framework = "unslot"')
    assert "framework: unknown framework 'unslot'" in raised.value.message
    assert "Did you mean 'unsloth'?" in raised.value.message
    with pytest.raises(SpecError, match="trial.framework is set by the top-level framework key"):
        _spec(body='[trial]\nframework = "unsloth"\n')

    spec = tmp_path / "bad.toml"
    spec.write_text(_BASE + 'framework = "axolotel"\n')
    done = paretune("sweep", "check", str(spec), cwd=tmp_path)
    assert done.returncode == 2
    assert "Did you mean 'axolotl'?" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_trials_take_the_loss_the_framework_computes_unless_the_spec_sets_one() -> None:
    point = {"method": "qlora", "lr": 1e-4}
    assert _spec().trial_config(point).loss == "standard"
    assert _spec('framework = "torchtune"').trial_config(point).loss == "chunked"
    unsloth = _spec('framework = "unsloth"').trial_config(point)
    assert (unsloth.framework, unsloth.loss, unsloth.grad_checkpointing) == (
        "unsloth",
        "fused",
        True,  # Unsloth checkpoints (offloaded there; on the device in the trial)
    )
    own = _spec('framework = "unsloth"', '[trial]\nloss = "chunked"\ngrad_checkpointing = false\n')
    config = own.trial_config(point)
    assert (config.loss, config.grad_checkpointing) == ("chunked", False)


def test_a_sharded_trial_takes_chunked_loss_where_the_framework_fuses_it() -> None:
    """A fused linear cross-entropy cannot run on a sharded trial: one of several GPUs takes
    the chunked loss instead, planned as it runs; a spec's own loss is left as written."""
    point = {"method": "lora", "lr": 1e-4}
    two = '[hardware]\ngpu = "h100-sxm"\ngpus_per_trial = 2\n'
    assert _spec('framework = "unsloth"').trial_config(point).loss == "fused"
    sharded = _spec('framework = "unsloth"\n' + two).trial_config(point)
    assert (sharded.gpus, sharded.loss) == (2, "chunked")
    planned = planner_method(sharded, precision="bf16")
    assert (planned.loss, planned.gpus) == ("chunked", 2)
    assert _spec(two).trial_config(point).loss == "standard"  # hf: nothing to change


def test_the_prediction_is_the_frameworks_while_the_trainer_runs_peft() -> None:
    config = _spec('framework = "unsloth"').trial_config({"method": "qlora", "lr": 1e-4})
    planned = planner_method(config, precision="bf16")
    trained = trainer_method(config, precision="bf16")
    assert (planned.framework, planned.offload_checkpoints, planned.unquantized_fp32) == (
        "unsloth",
        True,
        False,
    )
    assert (trained.framework, trained.offload_checkpoints, trained.unquantized_fp32) == (
        "hf",
        False,
        True,  # the trial goes through peft's prepare_model_for_kbit_training
    )
    assert planned.loss == trained.loss == "fused"  # the one the trial really computes
    assert framework_untaken("unsloth", "qlora") == [
        "checkpoints offloaded to host memory",
        "FlashAttention-2 / xformers kernels",
        "its own k-bit preparation keeps embeddings and head 16-bit",
    ]
    assert framework_untaken("trl", "lora") == []  # TRL's fused loss: the trial runs it


def test_the_gate_predicts_as_the_framework_runs() -> None:
    gpu = '[hardware]\ngpu = "rtx-4090"\n'
    point = {"method": "qlora", "lr": 1e-4}
    body = "[trial]\nbatch = 4\nmax_seq_len = 2048\ngrad_checkpointing = true\nmax_steps = 10\n"
    hf_spec = spec_from_text(_BASE + gpu + '[search]\nmethods = ["qlora"]\n' + body)
    un_spec = spec_from_text(
        _BASE + 'framework = "unsloth"\n' + gpu + '[search]\nmethods = ["qlora"]\n' + body
    )
    hf = Gate(hf_spec).predict(hf_spec.trial_config(point))
    unsloth = Gate(un_spec).predict(un_spec.trial_config(point))
    # Unsloth never builds the 128k-vocabulary logits and offloads the checkpoints.
    assert hf.peak_gb is not None and unsloth.peak_gb is not None
    assert unsloth.peak_gb < hf.peak_gb - 3
    # Its hours carry its claimed speed-up (a vendor claim, said so in preflight).
    assert unsloth.hours is not None and hf.hours is not None and unsloth.hours < hf.hours
    # A trial that does not fit says whose behaviour the prediction is for.
    small = spec_from_text(
        _BASE + 'framework = "unsloth"\n[hardware]\ngpu = "rtx-4090"\nmemory_gb = 4\n'
        '[search]\nmethods = ["qlora"]\n' + body
    )
    refused = Gate(small).predict(small.trial_config(point))
    assert not refused.fits
    assert "GB (as unsloth runs it) > 4.0 GB on the target GPU" in refused.reason()


def _recorded(results: Path, study: str) -> list[dict]:
    with duckdb.connect(str(results), read_only=True) as connection:
        found = connection.sql(
            "SELECT state, config, predicted_seq_len, predicted_adapter_weights_bytes, "
            "predicted_optimizer_states_bytes, predicted_activations_bytes, "
            f"predicted_logits_loss_bytes FROM trials WHERE study = '{study}' ORDER BY number"
        )
        names = [column[0] for column in found.description]
        return [dict(zip(names, row, strict=True)) for row in found.fetchall()]


def _trainer_terms(model: str, row: dict, **changes: object) -> dict[str, int]:
    """What the planner predicts for the same trial (with ``changes``) as paretune's
    trainer runs it."""
    trial = TrialConfig(**{**json.loads(row["config"]), **changes})
    found = estimate(
        resolve_model(model),
        Workload(seq_len=row["predicted_seq_len"], batch=trial.batch, dataset_tokens=1000),
        trainer_method(trial, precision="fp32"),
    )
    return dict(found.breakdown)


@pytest.mark.slow
def test_a_demo_sweep_records_the_framework_and_its_prediction(demo, tmp_path: Path) -> None:
    spec = tmp_path / "un.toml"
    spec.write_text(f"""
name = "un"
model = "demo"
framework = "unsloth"
[hardware]
device = "cpu"
usd_per_hour = 0.10
[search]
methods = ["lora"]
rank = 4
lr = 1e-3
max_steps = 2
[trial]
batch = 4
eval_every = 2
max_seq_len = 64
[budget]
trials = 1
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
timeout_s = 300
""")
    checked = paretune("sweep", "check", str(spec), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "are for Unsloth (unsloth 2026.8.19)" in checked.stdout
    assert "trainer with Unsloth's loss fused, grad_checkpointing on, dropout 0" in checked.stdout
    assert "but not checkpoints offloaded to host memory" in checked.stdout
    assert "speed claim x2 (a vendor claim)" in checked.stdout
    done = paretune("sweep", "run", str(spec), "--no-check", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = _recorded(tmp_path / "results.duckdb", "un")
    config = json.loads(row["config"])
    assert (row["state"], config["framework"], config["loss"]) == ("complete", "unsloth", "fused")
    assert config["grad_checkpointing"] is True
    # The recorded activations are Unsloth's (checkpoints offloaded to host memory), below
    # what the planner gives the same trial as paretune's trainer runs it.
    trainer = _trainer_terms(str(demo.model_dir), row)
    assert row["predicted_activations_bytes"] < trainer["activations"]
    assert row["predicted_logits_loss_bytes"] == trainer["logits_loss"]  # fused in both
    # The calibration view says whose predictions its rows compare with the measurement.
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as connection:
        found = connection.sql("SELECT framework FROM calibration WHERE study = 'un'").fetchall()
    assert found == [("unsloth",)]


@pytest.mark.slow
def test_a_sweep_of_your_own_model_records_the_framework(own_model, tmp_path: Path) -> None:
    spec = tmp_path / "own.toml"
    spec.write_text(f"""
name = "own-torchtune"
model = "{own_model.model_dir}"
framework = "torchtune"
[data]
train = "{own_model.train}"
eval = "{own_model.eval}"
[hardware]
device = "cpu"
cpu_instance = "local-cpu"
[search]
methods = ["lora"]
rank = 4
lr = 1e-3
max_steps = 2
[trial]
batch = 8
eval_every = 2
max_seq_len = 64
max_new_tokens = 2
[budget]
trials = 1
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
timeout_s = 300
""")
    done = paretune("sweep", "run", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trials run paretune's transformers + peft trainer" in done.stdout
    [row] = _recorded(tmp_path / "results.duckdb", "own-torchtune")
    config = json.loads(row["config"])
    assert (row["state"], config["framework"], config["loss"]) == (
        "complete",
        "torchtune",
        "chunked",
    )
    # The recorded prediction has torchtune's chunked loss, below transformers' full fp32
    # logits for the same trial.
    standard = _trainer_terms(str(own_model.model_dir), row, loss="standard")
    assert 0 < row["predicted_logits_loss_bytes"] < standard["logits_loss"]
