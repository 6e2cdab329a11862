"""Early stopping, the cost-aware sampler with warm start, sharded trials and MLflow logging on
a user's own checkpoint (the ``own_model`` fixture: a tiny random Qwen2 with a BPE tokenizer
of its own, a local folder), not only on the demo.

One own-model sweep (two 4-step LoRA trials with a rung at step 2, the cost-aware sampler,
logged to a SQLite MLflow store) serves the early-stopping, MLflow and warm-start tests; its
points are enqueued, as in ``test_early_stopping.py``, so that what is stopped does not depend
on the sampler: a learning rate that learns (3e-3) and one that wrecks the model (0.3). At $0
an hour the cost so far ties, so the wrecking trial is dominated at the rung by the finished
good one and stopped there. Forgetting is measured on the own model's self-samples (no retain
file): its vocabulary (about 384 tokens) is larger than the top-k the base keeps per position
(``KL_TOP_K``, 256), so its samples are often outside that top-k.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import load_spec_study, paretune

from sweeps.results.store import ResultsStore
from sweeps.trial.types import TrialConfig

# Real fine-tunes of the own model (seconds each) and, for the sharded trial, two ranks.
pytestmark = pytest.mark.slow

GOOD, WRECKING = 3e-3, 0.3
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def _own_spec(
    own_model,
    folder: Path,
    name: str,
    *,
    trials: int,
    model: str | None = None,
    search: str = "",
    run: str = "",
) -> Path:
    """An own-model sweep of 4-step LoRA trials at rank 4, cost-aware, priced at $0 an hour."""
    spec = folder / f"{name}.toml"
    spec.write_text(f"""
name = "{name}"
model = "{model or own_model.model_dir}"
seed = 0
sampler = "cost-aware"
[data]
train = "{own_model.train}"
eval = "{own_model.eval}"
[hardware]
device = "cpu"
usd_per_hour = 0.0
[search]
methods = ["lora"]
rank = 4
lr = [{GOOD}, {WRECKING}]
max_steps = 4
{search}
[trial]
batch = 8
eval_every = 4
max_seq_len = 64
max_new_tokens = 4
[budget]
trials = {trials}
[run]
dir = "{folder / "runs"}"
results = "{folder / "results.duckdb"}"
save = "none"
timeout_s = 300
{run}
""")
    return spec


@pytest.fixture(scope="module")
def stopped(own_model, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The own-model sweep with early stopping and MLflow: trial 0 learns, trial 1 wrecks."""
    from sweeps.spec import load_spec
    from sweeps.study import open_storage, open_study
    from sweeps.worker import Sweep

    folder = tmp_path_factory.mktemp("own-features")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    path = _own_spec(
        own_model,
        folder,
        "own-rungs",
        trials=2,
        search='early_stopping = { method = "mo-asha", eta = 3, min_steps = 2, retain_rows = 8 }',
        run=f'mlflow = "{uri}"',
    )
    spec = load_spec(path)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in QUIET.items():
            patch.setenv(key, value)
        study = open_study(spec, open_storage(spec.storage_url))
        for lr in (GOOD, WRECKING):
            study.enqueue_trial({"lr": lr}, skip_if_exists=False)
        sweep = Sweep.open(spec)
        state = sweep.run()
        yield {"folder": folder, "uri": uri, "spec": spec, "state": state, "sweep": sweep}


def test_an_own_model_trial_is_stopped_at_a_rung_with_retain_deltas(stopped) -> None:
    spec, state = stopped["spec"], stopped["state"]
    assert (state.done, state.pruned) == (1, 1), state.events
    rows = {row["number"]: row for row in ResultsStore(spec.run.results).trials("own-rungs")}
    good, wrecked = rows[0], rows[1]
    assert good["state"] == "complete" and good["stopped_at_step"] is None
    assert good["retain_source"] == "self-samples" and math.isfinite(good["retain_delta_nll"])
    assert wrecked["state"] == "pruned" and wrecked["stopped_at_step"] == 2
    assert wrecked["steps_done"] == 2 and wrecked["retain_source"] == "self-samples"
    assert "stopped at step 2 by early stopping" in wrecked["error"]
    (good_rung,) = json.loads(good["rungs"])
    (rung,) = json.loads(wrecked["rungs"])
    assert (rung["step"], rung["continues"], rung["reached"]) == (2, False, 2)
    assert good_rung["continues"] and good_rung["step"] == 2
    # Both rungs measured the retain delta on the self-samples subset (whole sampling batches),
    # though the model's samples are often outside the base's cached top-k.
    for record in (good_rung, rung):
        assert record["retain_rows"] >= 8
        assert record["retain_delta_nll"] is not None and math.isfinite(record["retain_delta_nll"])
        assert record["retain_kl"] > 0
    assert rung["retain_delta_nll"] > good_rung["retain_delta_nll"]
    assert rung["eval_nll"] > good_rung["eval_nll"]
    assert [row["number"] for row in ResultsStore(spec.run.results).frontier("own-rungs")] == [0]


def test_own_model_trials_are_logged_to_mlflow_with_its_name(stopped, own_model) -> None:
    from mlflow.tracking import MlflowClient

    uri, spec = stopped["uri"], stopped["spec"]
    assert stopped["sweep"].tracking.failed == {}
    rows = {row["number"]: row for row in ResultsStore(spec.run.results).trials("own-rungs")}
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("own-rungs")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("paretune.role") == "study"]
    children = {int(r.data.tags["paretune.trial"]): r for r in runs if r is not parent}
    assert parent.data.params["model"] == str(own_model.model_dir)
    assert parent.data.params["sampler"] == "cost-aware"
    assert sorted(children) == [0, 1]
    for number, run in children.items():
        row = rows[number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["paretune.state"] == row["state"]
        assert run.data.params["model"] == str(own_model.model_dir)
        assert run.data.params["method"] == "lora" and run.data.params["rank"] == "4"
        assert float(run.data.params["lr"]) == pytest.approx(row["lr"])
        assert run.data.metrics["eval_nll"] == pytest.approx(row["eval_nll"])
        steps = ResultsStore(spec.run.results).steps("own-rungs", number)
        history = client.get_metric_history(run.info.run_id, "step/loss")
        assert [(m.step, m.value) for m in history] == [
            (s["step"], pytest.approx(s["loss"])) for s in steps
        ]
    assert children[0].data.metrics["retain_delta_nll"] == pytest.approx(
        rows[0]["retain_delta_nll"]
    )
    assert children[1].data.metrics["stopped_at_step"] == 2


def test_a_cost_aware_study_warm_starts_from_an_own_model_study(stopped, own_model) -> None:
    """A second own-model study, warm-started from the first (its storage: the same journal
    file), runs with the cost-aware sampler; one on another model is refused at once."""
    folder = stopped["folder"]
    warm = _own_spec(own_model, folder, "own-warm", trials=1, search='warm_start = "own-rungs"')
    done = paretune("sweep", "run", str(warm), "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = ResultsStore(folder / "results.duckdb").trials("own-warm")
    assert row["state"] == "complete" and row["lr"] in (GOOD, WRECKING)
    assert len(load_spec_study(warm).trials) == 1  # the first study's trials stay there
    assert load_spec_study(warm).user_attrs["spec"]["sampler"] == "cost-aware"
    # Its cost model prices the own model's points by the planner's training FLOPs for the
    # folder's architecture (not the flat 1.0 of a point it cannot price).
    from sweeps.cost_aware import CostModel
    from sweeps.spec import load_spec

    costs = CostModel(load_spec(warm))
    assert costs.units({"lr": GOOD}) > 1e6
    assert costs.units({"lr": GOOD, "max_steps": 8}) == pytest.approx(2 * costs.units({"lr": GOOD}))

    # The same folder under another name is another model (another checkpoint, as far as the
    # spec can tell): its results do not carry over.
    other = folder / "other-checkpoint"
    shutil.copytree(own_model.model_dir, other, dirs_exist_ok=True)
    for model in (str(other), "demo"):
        refused_spec = _own_spec(
            own_model,
            folder,
            "own-refused",
            trials=1,
            model=model,
            search='warm_start = "own-rungs"',
        )
        refused = paretune("sweep", "run", str(refused_spec), "--no-check")
        out = refused.stdout + refused.stderr
        assert refused.returncode == 2, out
        said = " ".join(out.split())
        assert f"that study ran with model = '{own_model.model_dir}'" in said, out
        assert "Traceback" not in out
    assert "own-refused" not in [
        s["study"] for s in ResultsStore(folder / "results.duckdb").studies()
    ]


@pytest.mark.parametrize(("method", "lr"), [("lora", 3e-3), ("full", 5e-4)])
def test_an_own_model_trial_on_two_cpu_ranks_matches_one_process(
    own_model, tmp_path: Path, method: str, lr: float
) -> None:
    """``paretune trial --gpus 2 --sharding fsdp`` on the own model (gloo ranks on CPU): each
    rank's memory is recorded, and the eval NLL and losses are the one-process trial's. A full
    fine-tune shards the own model's tied input and output embeddings (the demo's are not)."""
    import tomli_w

    from sweeps.trial.recipe import run_trial

    config = TrialConfig(
        model=str(own_model.model_dir),
        train=str(own_model.train),
        eval=str(own_model.eval),
        method=method,
        rank=4,
        lr=lr,
        max_steps=4,
        eval_every=2,
        batch=8,
        max_seq_len=64,
        max_new_tokens=2,
        device="cpu",
        save="none",
        run_dir=str(tmp_path / "runs"),
    )
    trial = tmp_path / "trial.toml"
    trial.write_text(tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)))
    done = paretune(
        "trial", "--spec", str(trial), "--gpus", "2", "--sharding", "fsdp", "--format", "json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sharded = json.loads(done.stdout)
    single = run_trial(config)
    assert sharded["state"] == "complete", sharded.get("error")
    assert single.state == "complete", single.error
    assert sharded["hardware"]["ranks"] == 2 and single.hardware.ranks == 1
    assert sharded["config"]["model"] == str(own_model.model_dir)
    # Same seed, rows and steps: only the order of float reductions differs.
    assert sharded["quality"]["eval_nll"] == pytest.approx(single.quality.eval_nll, abs=1e-3)
    assert [s["loss"] for s in sharded["steps"]] == pytest.approx(
        [s.loss for s in single.steps], abs=1e-3
    )
    measured = sharded["measured"]
    assert len(measured["rank_peak_gb"]) == 2 and len(measured["rank_states_gb"]) == 2
    assert measured["peak_gb"] == max(measured["rank_peak_gb"])
    for states in measured["rank_states_gb"]:  # each rank holds about half the states
        assert states / single.measured.states_gb == pytest.approx(0.5, abs=0.02)
    # as the planner predicts for a rank of the own model's architecture (ZeRO-3 partitioning)
    assert sharded["predicted"]["states_gb"] == pytest.approx(
        max(measured["rank_states_gb"]), rel=0.01
    )
    assert sharded["forgetting"]["retain_source"] == "self-samples"
    assert sharded["forgetting"]["retain_delta_nll"] == pytest.approx(
        single.forgetting.retain_delta_nll, abs=1e-3
    )
