"""The cost-aware sampler in real Optuna studies on journal files: cheap points first when they
promise the same, its cost model learning from measured dollars, and warm start from another
study in the same storage or in the results file."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from pricing.errors import UserError
from sweeps.cost_aware import _STARTUP, CostModel
from sweeps.results.store import ResultsStore
from sweeps.spec import SpecError, SweepSpec, spec_from_text
from sweeps.study import SweepError, make_sampler, open_storage, open_study, suggest

# Priced by the planner on an H100: 200 steps cost four times 50, a full fine-tune more than
# LoRA; no model is loaded (a catalogue architecture), so these tests take seconds.
SEARCH = {
    "methods": ["lora", "full"],
    "rank": [4, 16],
    "lr": [1e-4, 1e-3, 1e-2],
    "max_steps": [50, 200],
}


def _spec(name: str, tmp_path: Path, **update: object) -> SweepSpec:
    raw: dict = {
        "name": name,
        "sampler": "cost-aware",
        "model": "llama-3.1-8b",
        "hardware": {"gpu": "h100"},
        "search": dict(SEARCH),
        "budget": {"trials": 16},
        "run": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results.duckdb")},
    }
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return SweepSpec(**raw)


def _predicted(spec: SweepSpec, params: dict) -> float:
    return CostModel(spec).units(params)


def test_with_equal_promise_cheaper_points_are_proposed_first(tmp_path: Path) -> None:
    spec = _spec("flat", tmp_path)
    storage = open_storage(str(tmp_path / "flat.journal"))
    study = open_study(spec, storage)
    costs = []
    for _ in range(12):
        trial = study.ask()
        params = suggest(trial, spec)
        cost = _predicted(spec, params)
        costs.append(cost)
        # Every point promises the same: equal quality and forgetting; cost as predicted.
        study.tell(trial, [1.0, 0.5, cost])
    assert len(set(costs)) > 2, "the search space has points of different costs"
    # After the random startup, TPE's proposals all promise the same, and the cost term picks
    # among the cheapest points; as the budget is spent it cools, and dearer points come back.
    cheap = sorted(set(costs))[:2]
    after = costs[_STARTUP : _STARTUP + 3]
    assert all(c in cheap for c in after), f"cheap ones first after the startup: {costs}"
    assert max(costs[_STARTUP + 3 :]) > max(cheap)

    # Random search on the same study shape proposes them in no such order.
    shuffled = optuna.create_study(
        directions=spec.objectives.directions(),
        sampler=make_sampler(spec.model_copy(update={"sampler": "random"})),
    )
    random_costs = []
    for _ in range(12):
        trial = shuffled.ask()
        random_costs.append(_predicted(spec, suggest(trial, spec)))
        shuffled.tell(trial, [1.0, 0.5, random_costs[-1]])
    assert not all(c in cheap for c in random_costs[_STARTUP : _STARTUP + 3])


def test_the_cost_model_learns_the_fixed_cost_the_planner_does_not_see() -> None:
    model = CostModel(_spec("fit", Path(".")))
    # Measured: 2 dollars of loading and scoring plus 1 per planner unit.
    model.fit([(1.0, 3.0), (4.0, 6.0), (10.0, 12.0)])
    assert math.isclose(model.intercept, 2.0) and math.isclose(model.slope, 1.0)
    model.fit([(1.0, 3.0)])  # one trial: the measured/predicted ratio
    assert model.intercept == 0.0 and math.isclose(model.slope, 3.0)
    model.fit([(1.0, 5.0), (4.0, 5.0), (9.0, 5.0)])  # cost does not follow the planner
    assert model.slope == 0.0 and math.isclose(model.intercept, 5.0)


def _values(params: dict) -> list[float]:
    """Only full fine-tunes at lr 1e-3 are good; every trial costs the same."""
    good = params["method"] == "full" and params["lr"] == 1e-3
    return [0.1 if good else 3.0, 0.1 if good else 3.0, 1.0]


def test_without_a_target_gpu_the_planner_flops_rank_the_points(tmp_path: Path) -> None:
    """CPU runs are not priced by the planner; its training FLOPs still are its figure."""
    spec = _spec("cpu", tmp_path, hardware={"gpu": None, "device": "cpu"})
    model = CostModel(spec)
    short = model.units({"method": "lora", "rank": 4, "lr": 1e-3, "max_steps": 50})
    long = model.units({"method": "lora", "rank": 4, "lr": 1e-3, "max_steps": 200})
    full = model.units({"method": "full", "lr": 1e-3, "max_steps": 50})
    assert short > 1e9 and math.isclose(long / short, 4.0, rel_tol=1e-6) and full > short


def _first_study(spec: SweepSpec, storage: object, result: dict | None = None) -> None:
    """An earlier study where only full fine-tunes at lr 1e-3 were good; each trial keeps
    ``result`` as its result (what a sweep's trial records), where given."""
    study = open_study(spec, storage)
    for params in (
        {"method": "full", "lr": 1e-3, "max_steps": 50},
        {"method": "full", "lr": 1e-3, "max_steps": 200},
        {"method": "lora", "rank": 4, "lr": 1e-4, "max_steps": 50},
        {"method": "lora", "rank": 16, "lr": 1e-2, "max_steps": 50},
        {"method": "lora", "rank": 4, "lr": 1e-3, "max_steps": 200},
        {"method": "lora", "rank": 16, "lr": 1e-4, "max_steps": 200},
        {"method": "full", "lr": 1e-2, "max_steps": 50},
        {"method": "lora", "rank": 16, "lr": 1e-3, "max_steps": 50},
    ):
        study.enqueue_trial(params)
        trial = study.ask()
        if result is not None:
            trial.set_user_attr("result", result)
        study.tell(trial, _values(suggest(trial, spec)))


def _first_proposals(spec: SweepSpec, storage: object, n: int) -> list[dict]:
    study = open_study(spec, storage)
    proposals = []
    for _ in range(n):
        trial = study.ask()
        proposals.append(suggest(trial, spec))
        study.tell(trial, _values(proposals[-1]))
    return proposals


def test_warm_start_seeds_from_another_study_in_the_same_storage(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "shared.journal"))
    _first_study(_spec("first", tmp_path), storage)
    cold = _first_proposals(_spec("cold", tmp_path), storage, 3)
    warm = _first_proposals(_spec("warm", tmp_path, search={"warm_start": "first"}), storage, 3)
    # Cold, the first proposals are the random startup; warm, TPE starts from the earlier
    # study's good region at once.
    assert not all(p["method"] == "full" and p["lr"] == 1e-3 for p in cold), cold
    assert all(p["method"] == "full" for p in warm) and warm[0]["lr"] == 1e-3, warm
    # The earlier trials only seed the sampler: the new study holds its own trials alone.
    study = optuna.load_study(study_name="warm", storage=storage)
    assert len(study.trials) == 3


def test_warm_start_from_the_results_file(tmp_path: Path) -> None:
    first_storage = open_storage(str(tmp_path / "first.journal"))
    _first_study(_spec("first", tmp_path), first_storage)
    store = ResultsStore(tmp_path / "results.duckdb")
    store.sync_study(optuna.load_study(study_name="first", storage=first_storage))
    # Another storage: only the results file knows the first study.
    other = open_storage(str(tmp_path / "second.journal"))
    warm = _first_proposals(_spec("second", tmp_path, search={"warm_start": "first"}), other, 2)
    assert all(p["method"] == "full" for p in warm) and warm[0]["lr"] == 1e-3, warm


def test_warm_start_refuses_a_missing_study_or_another_task(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "shared.journal"))
    _first_study(_spec("first", tmp_path), storage)
    with pytest.raises(SweepError, match="no study of that name"):
        open_study(_spec("b", tmp_path, search={"warm_start": "nope"}), storage)
    other_model = _spec("c", tmp_path, model="llama-3.2-1b", search={"warm_start": "first"})
    with pytest.raises(SweepError, match="model = 'llama-3.1-8b'"):
        open_study(other_model, storage)
    other_data = _spec("d", tmp_path, data={"train": "task.jsonl"}, search={"warm_start": "first"})
    with pytest.raises(SweepError, match="data.train"):
        open_study(other_data, storage)


def test_warm_start_compares_data_by_the_bytes_its_trials_read(tmp_path: Path) -> None:
    """Where the earlier trials recorded their data files' sha256 (as a sweep's trials do), a
    copy, a moved or a linked file is the same data, and the same path edited since is not;
    without a record, the path decides, spelled any way."""
    from sweeps.datacheck.check import file_sha256
    from sweeps.trial.types import DataFile, DataProvenance

    task = tmp_path / "task.jsonl"
    task.write_text('{"prompt": "1+1=", "completion": "2"}\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link.jsonl").symlink_to(task)
    copy = tmp_path / "copy.jsonl"
    copy.write_text(task.read_text())
    read = DataProvenance(
        fingerprint="-",
        files=[DataFile(role="train", path=str(task), sha256=file_sha256(str(task)), rows=1)],
        split="file",
        train_rows=1,
        eval_rows=0,
    )

    def warm(storage: object, name: str, train: Path) -> list[dict]:
        spec = _spec(name, tmp_path, data={"train": str(train)}, search={"warm_start": "first"})
        return _first_proposals(spec, storage, 1)

    recorded = open_storage(str(tmp_path / "recorded.journal"))
    first = _spec("first", tmp_path, data={"train": str(task)})
    _first_study(first, recorded, {"data": read.model_dump(mode="json")})
    assert warm(recorded, "by-copy", copy) and warm(
        recorded, "by-link", tmp_path / "data/link.jsonl"
    )

    bare = open_storage(str(tmp_path / "bare.journal"))  # trials without a record
    _first_study(_spec("first", tmp_path, data={"train": str(task)}), bare)
    assert warm(bare, "spelled", tmp_path / "data" / ".." / "task.jsonl")
    with pytest.raises(SweepError, match="data.train"):
        warm(bare, "copied", copy)

    task.write_text('{"prompt": "1+1=", "completion": "3"}\n')  # edited in place since
    with pytest.raises(SweepError, match="train data had sha256 .* the data differ"):
        warm(recorded, "edited", task)


def test_warm_start_in_the_spec_file(tmp_path: Path) -> None:
    text = """
name = "second"
sampler = "cost-aware"
[search]
methods = ["lora"]
warm_start = "first"
[budget]
trials = 4
"""
    spec = spec_from_text(text)
    assert spec.search.warm_start == "first"
    assert spec_from_text(_to_toml(spec)).search.warm_start == "first"
    with pytest.raises(SpecError, match='set sampler = "cost-aware"'):
        spec_from_text(text.replace('sampler = "cost-aware"', 'sampler = "tpe"'))
    with pytest.raises(SpecError, match="warm_start must be the name of an earlier study"):
        spec_from_text(text.replace('"first"', "3"))
    assert issubclass(SpecError, UserError)


def _to_toml(spec: SweepSpec) -> str:
    import tomli_w

    raw = spec.to_raw()
    return tomli_w.dumps(raw)


@pytest.mark.slow  # three real demo trials, one minute on two idle cores
def test_demo_sweeps_with_the_cost_aware_sampler_and_a_warm_start(demo, tmp_path: Path) -> None:
    from conftest import load_spec_study, paretune, write_demo_spec

    def cost_aware(path: Path, warm_start: str | None = None) -> Path:
        text = path.read_text().replace('sampler = "tpe"', 'sampler = "cost-aware"')
        if warm_start:
            text = text.replace("[search]\n", f'[search]\nwarm_start = "{warm_start}"\n')
        path.write_text(text)
        return path

    first = cost_aware(write_demo_spec(tmp_path, "first", trials=2, save="none"))
    done = paretune("sweep", "run", str(first))
    assert done.returncode == 0, done.stdout + done.stderr
    second = cost_aware(write_demo_spec(tmp_path, "second", trials=1, save="none"), "first")
    done = paretune("sweep", "run", str(second))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = ResultsStore(tmp_path / "results.duckdb").trials("second")
    assert [r["state"] for r in rows] == ["complete"]
    assert len(load_spec_study(second).trials) == 1  # the first study's trials stay there

    missing = cost_aware(write_demo_spec(tmp_path, "third", trials=1), "no-such-study")
    refused = paretune("sweep", "run", str(missing))
    assert refused.returncode == 2
    assert "no study of that name" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr


def test_a_spec_of_one_method_is_costed_without_sampling_it(tmp_path: Path) -> None:
    """With one method, ``method`` is no sampled parameter: the cost model still prices points
    (it used to fail the first ask with KeyError 'method')."""
    spec = _spec("one", tmp_path, search={**SEARCH, "methods": ["lora"]})
    assert CostModel(spec).units({"rank": 4, "lr": 1e-3, "max_steps": 200}) == pytest.approx(
        4 * CostModel(spec).units({"rank": 4, "lr": 1e-3, "max_steps": 50})
    )
    study = open_study(spec, open_storage(str(tmp_path / "one.journal")))
    for _ in range(3):
        trial = study.ask()
        params = suggest(trial, spec)
        assert params["method"] == "lora" and "method" not in trial.params
        study.tell(trial, [1.0, 0.5, _predicted(spec, trial.params)])
