"""Trials as MLflow runs and offline W&B runs, read back with MLflow's own client and from
W&B's own offline run files.

One real demo sweep (two trials, one optimizer step each) logs to a local SQLite MLflow store
and to offline W&B runs; ``paretune results export`` then logs the same study from its
results file, to the same store (nothing added) and to a new one (the same content).
Everything stays on this machine: no telemetry, W&B offline.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RESULTS_TRIALS, write_demo_spec, write_study

from sweeps.calibration_trackers import wandb_records
from sweeps.results.store import ResultsStore

QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
}


def _quiet(patch: pytest.MonkeyPatch, folder: Path) -> None:
    for name, value in QUIET.items():
        patch.setenv(name, value)
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        patch.setenv(name, str(folder / name.lower()))


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _quiet(monkeypatch, tmp_path)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str) -> tuple[Any, dict[int, Any]]:
    """The study's parent run and its child runs by trial number, as MLflow returns them."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([found.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("paretune.role") == "study"]
    children = {int(r.data.tags["paretune.trial"]): r for r in runs if r is not parent}
    assert len(children) == len(runs) - 1
    return parent, children


# ---------------------------------------------------------------- W&B's offline run files


def wandb_run(folder: Path, run_id: str) -> dict[str, Any]:
    """What one offline W&B run holds: run settings, config, summary, history, files,
    artifacts, exit code."""
    (run_folder,) = (folder / "wandb").glob(f"offline-run-*-{run_id}")
    (path,) = run_folder.glob("*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "files": [], "artifacts": []}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update(
                {item.key: json.loads(item.value_json) for item in record.run.config.update}
            )
        elif kind == "config":
            out["config"].update(
                {item.key: json.loads(item.value_json) for item in record.config.update}
            )
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            row = {
                (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                for i in record.history.item
            }
            out["history"].append(row)
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


# ---------------------------------------------------------------- one real sweep


@pytest.fixture(scope="module")
def swept(demo, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A real two-trial demo sweep with ``[run] mlflow`` (SQLite) and ``wandb = "offline"``."""
    from sweeps.spec import load_spec
    from sweeps.worker import Sweep

    folder = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        _quiet(patch, folder)
        spec_path = write_demo_spec(
            folder,
            "tracked",
            trials=2,
            save="all",
            max_steps=1,
            extra_run=f'mlflow = "{uri}"\nwandb = "offline"',
        )
        spec = load_spec(spec_path)
        sweep = Sweep.open(spec)
        state = sweep.run()
        yield {"folder": folder, "uri": uri, "spec": spec, "state": state, "sweep": sweep}


@pytest.mark.slow  # a real demo sweep or preflight
def test_sweep_logs_each_trial_as_a_child_mlflow_run(swept) -> None:
    uri, folder = swept["uri"], swept["folder"]
    assert swept["state"].done == 2
    assert swept["sweep"].tracking.failed == {}
    assert f"2 trials logged to MLflow {uri}" in swept["state"].events
    rows = {r["number"]: r for r in ResultsStore(folder / "results.duckdb").trials("tracked")}
    parent, children = _runs(uri, "tracked")
    client = _client(uri)

    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert parent.data.params["model"] == "demo"
    assert parent.data.params["quality_metric"] == "eval_nll"
    spec = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "spec.json", str(folder))).read_text()
    )
    assert spec["name"] == "tracked"

    assert sorted(children) == [0, 1]
    for number, run in children.items():
        row = rows[number]
        assert run.info.run_name == f"trial-{number}" and run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["paretune.study"] == "tracked"
        assert run.data.tags["paretune.state"] == "complete"
        assert run.data.params["method"] == row["method"]
        assert float(run.data.params["lr"]) == pytest.approx(row["lr"])
        for objective in ("quality", "forgetting", "cost"):
            value = run.data.metrics[f"objective_{objective}"]
            assert value == pytest.approx(row[f"objective_{objective}"])
        assert run.data.metrics["eval_nll"] == pytest.approx(row["eval_nll"])
        assert run.data.metrics["dollars"] == pytest.approx(row["dollars"])
        assert run.data.metrics["measured_peak_gb"] == pytest.approx(row["measured_peak_gb"])
        # hardware and versions
        assert run.data.tags["hardware.device"] == "cpu"
        assert float(run.data.tags["hardware.usd_per_hour"]) == pytest.approx(0.10)
        assert run.data.tags["version.torch"] == row["torch_version"]
        # the step curve, as the results file has it
        steps = ResultsStore(folder / "results.duckdb").steps("tracked", number)
        history = client.get_metric_history(run.info.run_id, "step/loss")
        assert [(m.step, m.value) for m in history] == [
            (s["step"], pytest.approx(s["loss"])) for s in steps
        ]
        assert steps and len(history) == len(steps)
        # the whole row, and the adapter where the trial kept one
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "trial.json" in artifacts
        if row["method"] in ("lora", "qlora", "dora"):
            assert "adapter" in artifacts
            kept = {p.name for p in Path(row["artifact"]).iterdir()}
            logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "adapter")}
            assert kept and logged == kept
        else:
            assert "adapter" not in artifacts


@pytest.mark.slow  # a real demo sweep or preflight
def test_sweep_writes_each_trial_as_an_offline_wandb_run(swept) -> None:
    folder = swept["folder"]
    rows = {r["number"]: r for r in ResultsStore(folder / "results.duckdb").trials("tracked")}
    for number, row in rows.items():
        run = wandb_run(folder / "runs", f"tracked-{number}")
        assert run["run"].project == "tracked" and run["run"].run_group == "tracked"
        assert run["run"].display_name == f"trial-{number}"
        assert run["config"]["method"] == row["method"]
        assert run["config"]["hardware.device"] == "cpu"
        assert run["summary"]["objective_quality"] == pytest.approx(row["objective_quality"])
        assert run["summary"]["objective_cost"] == pytest.approx(row["objective_cost"])
        assert run["summary"]["state"] == "complete"
        steps = ResultsStore(folder / "results.duckdb").steps("tracked", number)
        logged = [(h["_step"], h["step/loss"]) for h in run["history"] if "step/loss" in h]
        assert logged == [(s["step"], pytest.approx(s["loss"])) for s in steps]
        assert "trial.json" in run["files"]
        adapters = [a for a in run["artifacts"] if a.type == "model"]
        assert len(adapters) == (1 if row["method"] in ("lora", "qlora", "dora") else 0)
        assert run["exit_code"] == 0


@pytest.mark.slow  # a real demo sweep or preflight
def test_export_adds_nothing_the_sweep_logged_and_fills_a_new_store(swept, capsys) -> None:
    from tui.cli import run as cli

    uri, folder = swept["uri"], swept["folder"]
    db = str(folder / "results.duckdb")
    cli(["results", "export", "--to", "mlflow", uri, "--db", db])
    assert "tracked: 0 trials logged" in capsys.readouterr().out
    assert len(_runs(uri, "tracked")[1]) == 2

    fresh = f"file:{folder / 'mlruns'}"
    cli(["results", "export", "--to", "mlflow", fresh, "--study", "tracked", "--db", db])
    assert "tracked: 2 trials logged" in capsys.readouterr().out
    cli(["results", "export", "--to", "mlflow", fresh, "--study", "tracked", "--db", db])
    assert "0 trials logged" in capsys.readouterr().out  # idempotent
    _, live = _runs(uri, "tracked")
    _, exported = _runs(fresh, "tracked")
    assert sorted(exported) == [0, 1]
    for number, run in exported.items():
        assert run.data.params == live[number].data.params
        assert run.data.metrics == pytest.approx(live[number].data.metrics)
        assert run.data.tags["paretune.trial"] == str(number)

    cli(["results", "export", "--to", "wandb-offline", str(folder / "runs"), "--db", db])
    assert "0 trials logged" in capsys.readouterr().out  # the sweep wrote both already


# ---------------------------------------------------------------- export of a results file


def test_export_a_results_file_to_mlflow_and_wandb(tmp_path: Path, capsys) -> None:
    from tui.cli import run as cli

    db = tmp_path / "results.duckdb"
    write_study(db, "past")
    uri = f"file:{tmp_path / 'mlruns'}"
    cli(["results", "export", "--to", "mlflow", uri, "--experiment", "team", "--db", str(db)])
    assert "past: 6 trials logged" in capsys.readouterr().out
    parent, children = _runs(uri, "team")
    client = _client(uri)
    assert parent.data.params["budget_trials"] == "8"
    assert sorted(children) == list(range(6))
    oom = children[5]
    assert oom.info.status == "FAILED" and oom.data.tags["paretune.state"] == "oom"
    assert "out of memory" in oom.data.tags["paretune.error"]
    assert "objective_quality" not in oom.data.metrics
    first = children[0]
    assert first.data.metrics["objective_quality"] == pytest.approx(RESULTS_TRIALS[0][3])
    history = client.get_metric_history(first.info.run_id, "step/loss")
    assert [m.step for m in history] == list(range(1, 21))
    evals = client.get_metric_history(first.info.run_id, "step/eval_nll")
    assert [m.step for m in evals] == [5, 10, 15, 20]

    cli(["results", "export", "--to", "mlflow", uri, "--experiment", "team", "--db", str(db)])
    assert "past: 0 trials logged" in capsys.readouterr().out
    assert len(_runs(uri, "team")[1]) == 6

    wandb_folder = tmp_path / "wb"
    cli(["results", "export", "--to", "wandb-offline", str(wandb_folder), "--db", str(db)])
    assert "past: 6 trials logged" in capsys.readouterr().out
    run = wandb_run(wandb_folder, "past-0")
    assert run["config"]["method"] == RESULTS_TRIALS[0][0] and run["exit_code"] == 0
    assert [h["_step"] for h in run["history"]] == list(range(1, 21))
    assert wandb_run(wandb_folder, "past-5")["exit_code"] == 1  # the OOM trial


def test_a_half_logged_run_is_not_taken_for_a_logged_trial(tmp_path: Path) -> None:
    """A trial whose logging broke half-way is logged again by the next export."""
    from sweeps.results.tracking import MlflowTarget, export_study

    db = tmp_path / "results.duckdb"
    write_study(db, "half")
    store = ResultsStore(db)
    uri = f"file:{tmp_path / 'mlruns'}"
    target = MlflowTarget(uri)
    target.open_study({"study": "half"})
    client = target.client
    run = client.create_run(  # what a broken log leaves: a run without its paretune.trial tag
        target.experiment_id, tags={"paretune.study": "half", "mlflow.parentRunId": "x"}
    )
    assert run.info.run_id
    done = export_study(store, "half", [MlflowTarget(uri)])
    assert sorted(done.logged[f"MLflow {uri}"]) == list(range(6))


# ---------------------------------------------------------------- errors


def test_export_refuses_an_unknown_destination_and_study(tmp_path: Path, capsys) -> None:
    from tui.cli import run as cli

    db = tmp_path / "results.duckdb"
    write_study(db, "past")
    for args, words in (
        (["--to", "neptune", "x"], "--to 'neptune' is not a place"),
        (["--to", "mlflow", "file:x", "--study", "pats"], "no study 'pats'"),
        (["--to", "mlflow", "http://127.0.0.1:9"], "could not be logged to MLflow"),
    ):
        with pytest.raises(SystemExit) as exit:
            cli(["results", "export", *args, "--db", str(db)])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


def test_without_mlflow_installed_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """MLflow missing: one paragraph naming the extra, exit 2; no traceback."""
    from tui.cli import run as cli

    db = tmp_path / "results.duckdb"
    write_study(db, "past")
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets uninstalled
    with pytest.raises(SystemExit) as exit:
        cli(["results", "export", "--to", "mlflow", f"file:{tmp_path / 'm'}", "--db", str(db)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "MLflow is not installed" in err and "pip install 'paretune[mlflow]'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # a real demo sweep or preflight
def test_preflight_checks_tracking_before_any_trial(
    demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep run` and `sweep check` refuse a spec whose MLflow store cannot be written, or
    whose extra is missing, before the first trial."""
    from sweeps.preflight import PreflightError, preflight
    from sweeps.spec import load_spec

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = load_spec(
        write_demo_spec(
            tmp_path,
            "pre",
            trials=1,
            extra_run=f'mlflow = "sqlite:///{blocker}/mlflow.db"\nwandb = "offline"',
        )
    )
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets uninstalled
    with pytest.raises(PreflightError) as error:
        preflight(spec, dry_step=False)
    message = error.value.message
    assert f"trials cannot be logged to MLflow at sqlite:///{blocker}/mlflow.db" in message
    assert "is a file" in message
    assert "Weights & Biases is not installed" in message
    assert "pip install 'paretune[wandb]'" in message


def test_mlflow_problem_names_what_is_wrong_and_creates_nothing(tmp_path: Path) -> None:
    from sweeps.preflight import _unwritable
    from sweeps.results.tracking import mlflow_problem

    def unwritable(path: Path, folder: bool) -> str | None:
        return _unwritable(path, folder=folder)

    assert mlflow_problem(f"sqlite:///{tmp_path}/m.db", unwritable=unwritable) is None
    assert mlflow_problem(f"file:{tmp_path}/mlruns", unwritable=unwritable) is None
    assert list(tmp_path.iterdir()) == []  # checked, not created
    refused = mlflow_problem("http://127.0.0.1:9", unwritable=unwritable)  # nothing listens
    assert refused and "127.0.0.1" in refused


@pytest.mark.slow  # a real demo sweep or preflight
def test_logging_that_fails_loses_no_trial_and_says_so_once(demo, tmp_path: Path) -> None:
    """An MLflow store that cannot be written: the sweep runs on, its trials are in the
    results file, and one event says logging stopped and how to log them later."""
    from sweeps.spec import load_spec
    from sweeps.worker import Sweep

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = load_spec(
        write_demo_spec(
            tmp_path,
            "broken",
            trials=1,
            save="none",
            max_steps=1,
            extra_run=f'mlflow = "sqlite:///{blocker}/mlflow.db"',
        )
    )
    sweep = Sweep.open(spec)
    state = sweep.run()
    assert state.done == 1
    rows = ResultsStore(tmp_path / "results.duckdb").trials("broken")
    assert [r["state"] for r in rows] == ["complete"]
    warnings = [e for e in state.events if "logging stopped" in e]
    assert len(warnings) == 1, state.events
    assert "paretune results export --to mlflow" in warnings[0]
    assert "--study broken" in warnings[0]


def test_spec_keys_round_trip(tmp_path: Path) -> None:
    from sweeps.spec import SpecError, load_spec, write_spec

    spec = load_spec(
        write_demo_spec(
            tmp_path,
            "keys",
            trials=1,
            extra_run='mlflow = "sqlite:///m.db"\nmlflow_experiment = "team"\nwandb = "offline"',
        )
    )
    again = load_spec(write_spec(spec, tmp_path / "again.toml"))
    assert (again.run.mlflow, again.run.mlflow_experiment, again.run.wandb) == (
        "sqlite:///m.db",
        "team",
        "offline",
    )
    with pytest.raises(SpecError) as error:
        load_spec(write_demo_spec(tmp_path, "bad", trials=1, extra_run='wandb = "online"'))
    assert "wandb" in error.value.message


def test_an_adapter_deleted_before_it_is_logged_leaves_the_run_whole(tmp_path: Path) -> None:
    """With save = "frontier", a later trial may delete an adapter (off the frontier) while the
    sweep's logger is still to upload it: the run is logged without it, and says so."""
    from sweeps.results.tracking import MlflowTarget, trial_content

    db = tmp_path / "results.duckdb"
    write_study(db, "race")
    store = ResultsStore(db)
    row = store.trials("race")[0]
    adapter = tmp_path / row["artifact"]
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    content = trial_content(row, store.steps("race", 0), base=tmp_path)
    assert content.adapter == adapter
    shutil.rmtree(adapter)  # deleted by the artifact policy before the upload

    uri = f"file:{tmp_path / 'mlruns'}"
    target = MlflowTarget(uri)
    target.open_study({"study": "race"})
    target.log(content)
    _, children = _runs(uri, "race")
    run = children[0]
    assert run.info.status == "FINISHED"
    assert "deleted by the artifact policy" in run.data.tags["paretune.adapter"]
    assert run.data.metrics["objective_quality"] == pytest.approx(RESULTS_TRIALS[0][3])
