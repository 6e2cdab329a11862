"""An ``lm-eval:`` retain source through the whole product: `paretune trial` on a checkpoint of
one's own trains, scores the accuracy drop with the real harness and exits 0; its result lands
in a results file's columns; `paretune sweep check` accepts forgetting = "retain_acc_drop" on
it and refuses "retain_kl" (exit 2).

The task is the 20-item ``tests/data/lm_eval/retain_mc.yaml`` (see tests/test_retain_lm_eval.py);
commands run from that folder, offline, with the data sets cache under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.spec import SpecError, spec_from_text

ROOT = Path(__file__).parent.parent
TASKS = ROOT / "tests" / "data" / "lm_eval"
RETAIN = "lm-eval:paretune_retain_mc?include=."


def _paretune(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "PARETUNE_CACHE_DIR": str(cache / "paretune"),
    }
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=TASKS,  # the task's YAML reads retain_mc.jsonl from the working directory
        env=env,
    )


# --- the spec ------------------------------------------------------------------------------------


def _spec_text(forgetting: str, retain: str | None = RETAIN, *, folder: Path = Path()) -> str:
    data = f'[data]\nretain = "{retain}"\n' if retain else ""
    return (
        f'name = "lm-eval"\n{data}[objectives]\nforgetting = "{forgetting}"\n'
        f'[run]\ndir = "{folder / "runs"}"\nresults = "{folder / "results.duckdb"}"\n'
        "[budget]\ntrials = 1\n"
    )


def test_retain_acc_drop_is_an_objective_of_lm_eval_retain_sources_only() -> None:
    spec = spec_from_text(_spec_text("retain_acc_drop"))
    assert spec.objectives.directions()[1] == "minimize"
    assert spec_from_text(_spec_text("retain_delta_nll")).data.retain == RETAIN
    with pytest.raises(SpecError) as refused:
        spec_from_text(_spec_text("retain_acc_drop", retain="general.jsonl"))
    assert 'needs data.retain = "lm-eval:TASKS"' in refused.value.message
    with pytest.raises(SpecError, match="got no retain"):
        spec_from_text(_spec_text("retain_acc_drop", retain=None))


def test_retain_kl_on_lm_eval_is_refused_in_one_paragraph() -> None:
    with pytest.raises(SpecError) as refused:
        spec_from_text(_spec_text("retain_kl"))
    message = refused.value.message
    assert "no next-token distributions" in message and "retain_acc_drop" in message
    assert "\n" not in message


def test_an_lm_eval_value_reads_back_as_written() -> None:
    from sweeps.trial.retain_lm_eval import LmEvalSpec

    for text in ("lm-eval:a,b", "lm-eval:a?limit=5", "lm-eval:a?limit=5&metric=acc_norm"):
        spec = LmEvalSpec.parse(text)
        assert spec.text() == text and LmEvalSpec.parse(spec.text()) == spec
    spec = LmEvalSpec(("a", "b"), limit=3, include="tasks/mine", metric="exact_match")
    assert spec.text() == "lm-eval:a,b?limit=3&include=tasks/mine&metric=exact_match"


def test_a_trial_spec_leaves_source_values_as_they_are(tmp_path: Path) -> None:
    from tui.cli.trial import config_from_spec

    (tmp_path / "trial.toml").write_text(
        f'model = "some-org/some-model"\ntrain = "task.jsonl"\nretain = "{RETAIN}"\n'
        'eval = "hf:some-org/some-set"\n'
    )
    config = config_from_spec(tmp_path / "trial.toml")
    assert config.retain == RETAIN and config.eval == "hf:some-org/some-set"
    assert config.train == str(tmp_path / "task.jsonl")  # a file: relative to the spec


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trial_measures_the_accuracy_drop_and_the_results_file_stores_it(
    own_model, tmp_path: Path
) -> None:
    done = _paretune(
        "trial",
        "--model",
        str(own_model.model_dir),
        "--train",
        str(own_model.train),
        "--eval",
        str(own_model.eval),
        "--retain",
        RETAIN,
        "--max-steps",
        "2",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path / "runs"),
        "--format",
        "json",
        cache=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    forgetting = result["forgetting"]
    assert forgetting["retain_source"].startswith("lm-eval:") and forgetting["retain_source"] == (
        RETAIN
    )
    drop, low, high = (
        forgetting["retain_acc_drop"],
        forgetting["retain_acc_drop_low"],
        forgetting["retain_acc_drop_high"],
    )
    assert -1 <= low <= drop <= high <= 1 and low < high
    assert 0 <= forgetting["base_retain_acc"] <= 1
    assert forgetting["retain_kl"] is None and forgetting["retain_delta_nll"] is not None
    (task,) = forgetting["retain_tasks"]
    assert task["task"] == "paretune_retain_mc" and task["items"] == 20
    assert task["drop"] == pytest.approx(drop)
    assert task["base_acc"] - task["acc"] == pytest.approx(drop)

    # Recorded as a sweep records it, the result fills the trials columns of the same names.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.results.store import ResultsStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize"] * 3)
    study.set_user_attr("objectives", ["eval_nll", "retain_acc_drop", "dollars"])
    trial = study.ask()
    trial.set_user_attr("result", result)
    study.tell(trial, [result["quality"]["eval_nll"], drop, result["dollars"]])
    store = ResultsStore(tmp_path / "results.duckdb")
    assert store.sync_study(study) == 1
    (row,) = store.trials("s")
    assert row["retain_source"] == RETAIN and row["objective_forgetting"] == pytest.approx(drop)
    assert (row["retain_acc_drop"], row["retain_acc_drop_low"], row["retain_acc_drop_high"]) == (
        pytest.approx(drop),
        pytest.approx(low),
        pytest.approx(high),
    )
    assert row["base_retain_acc"] == pytest.approx(forgetting["base_retain_acc"])
    _, rows = store.query(
        "SELECT json_extract_string(retain_tasks, '$[0].task'), "
        "CAST(json_extract(retain_tasks, '$[0].items') AS INTEGER) FROM trials"
    )
    assert rows == [("paretune_retain_mc", 20)]


@pytest.mark.slow
def test_sweep_check_accepts_retain_acc_drop_and_refuses_retain_kl(
    own_model, tmp_path: Path
) -> None:
    def spec(forgetting: str) -> Path:
        text = _spec_text(forgetting, folder=tmp_path).replace(
            "[data]\n",
            f'model = "{own_model.model_dir}"\n[data]\ntrain = "{own_model.train}"\n'
            f'eval = "{own_model.eval}"\n',
        )
        text += '[hardware]\ndevice = "cpu"\n[search]\nmethods = ["lora"]\nmax_steps = 2\n'
        path = tmp_path / f"{forgetting}.toml"
        path.write_text(text)
        return path

    done = _paretune("sweep", "check", str(spec("retain_acc_drop")), cache=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {line.split(":")[0]: line for line in done.stdout.splitlines() if line[:1] == "✓"}
    assert "paretune_retain_mc 20 items" in checks["✓ data"], done.stdout
    assert f"retain_acc_drop (retain: {RETAIN})" in checks["✓ objectives"], done.stdout
    assert "local-cpu" in checks["✓ objectives"]  # no price given: priced as the CPU it runs on
    assert "✓ dry step" in checks
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.duckdb").exists()

    done = _paretune("sweep", "check", str(spec("retain_kl")), cache=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "no next-token distributions" in done.stderr


@pytest.mark.slow
def test_sweep_check_names_an_unknown_lm_eval_task(own_model, tmp_path: Path) -> None:
    text = _spec_text("retain_acc_drop", retain="lm-eval:no_such_task?include=.", folder=tmp_path)
    text = text.replace(
        "[data]\n", f'model = "{own_model.model_dir}"\n[data]\ntrain = "{own_model.train}"\n'
    )
    (tmp_path / "spec.toml").write_text(text + '[hardware]\ndevice = "cpu"\n')
    done = _paretune("sweep", "check", str(tmp_path / "spec.toml"), cache=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lm-eval has no task, group or tag 'no_such_task'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
