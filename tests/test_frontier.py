"""Pareto mask and hypervolume against Optuna's own implementations; charts are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweeps.results.frontier import (
    frontier_hypervolume,
    hypervolume,
    indistinguishable_pairs,
    pareto_mask,
    plot_frontier,
    reference_point,
    terminal_frontier,
)


def test_pareto_mask_small_case() -> None:
    points = [[1, 5, 1], [2, 2, 2], [3, 3, 3], [1, 5, 1], [0, 9, 9]]
    assert pareto_mask(points).tolist() == [True, True, False, True, True]


@pytest.mark.parametrize("dims", [2, 3])
def test_agrees_with_optuna(dims: int) -> None:
    from optuna._hypervolume import compute_hypervolume
    from optuna.study._multi_objective import _is_pareto_front

    rng = np.random.default_rng(dims)
    for _ in range(20):
        points = rng.random((25, dims))
        ours = pareto_mask(points)
        theirs = _is_pareto_front(points, assume_unique_lexsorted=False)
        assert ours.tolist() == theirs.tolist()
        ref = reference_point(points)
        assert hypervolume(points, ref) == pytest.approx(
            compute_hypervolume(points[theirs], ref), rel=1e-12
        )


def test_pareto_mask_is_the_pairwise_definition_with_ties_infinities_and_nan() -> None:
    # Rows drawn from a few values, so that equal rows and equal coordinates are common.
    rng = np.random.default_rng(7)
    for n, dims in [(1, 3), (2, 2), (40, 2), (60, 3), (80, 4), (300, 3)]:
        points = rng.integers(0, 5, size=(n, dims)).astype(float)
        points[rng.random((n, dims)) < 0.03] = np.inf
        points[rng.random((n, dims)) < 0.02] = np.nan
        pairwise = [
            not any(
                np.all(points[j] <= points[i]) and np.any(points[j] < points[i])
                for j in range(n)
                if j != i
            )
            for i in range(n)
        ]
        assert pareto_mask(points).tolist() == pairwise
    assert pareto_mask(np.zeros((0, 3))).tolist() == []


def test_hypervolume_by_hand() -> None:
    # Two boxes [0,2]x[1,2] and [1,2]x[0,2] overlap in [1,2]x[1,2]: 2 + 2 - 1.
    assert hypervolume([[0, 1], [1, 0]], [2, 2]) == pytest.approx(3.0)
    assert hypervolume([[3, 3]], [2, 2]) == 0.0


def _rows() -> list[dict]:
    rows = []
    for number, (q, f, c, method) in enumerate(
        [
            (1.0, 0.5, 0.01, "lora"),
            (0.8, 0.9, 0.02, "full"),
            (1.2, 0.2, 0.005, "dora"),
            (1.3, 0.95, 0.03, "lora"),
        ]
    ):
        rows.append(
            {
                "number": number,
                "state": "complete",
                "method": method,
                "objective_quality": q,
                "objective_forgetting": f,
                "objective_cost": c,
            }
        )
    rows.append(
        {
            "number": 4,
            "state": "oom",
            "method": "full",
            "objective_quality": None,
            "objective_forgetting": None,
            "objective_cost": None,
        }
    )
    return rows


def test_frontier_hypervolume_ignores_failed_and_dominated() -> None:
    rows = _rows()
    reference = [2.0, 1.0, 0.05]
    with_dominated = frontier_hypervolume(rows, reference)
    without = frontier_hypervolume([r for r in rows if r["number"] != 3], reference)
    assert with_dominated == pytest.approx(without) and with_dominated > 0


@pytest.mark.parametrize("suffix", [".png", ".svg", ".html"])
def test_plot_files(tmp_path: Path, suffix: str) -> None:
    out = plot_frontier(_rows(), tmp_path / f"front{suffix}")
    data = out.read_bytes()
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        assert b"<svg" in data


def test_terminal_chart_mentions_methods() -> None:
    text = terminal_frontier(_rows(), width=80, height=20)
    assert "lora" in text and "full" in text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_sweeps_frontier_is_optunas_best_trials(tmp_path: Path, seed: int) -> None:
    """frontier_trials (used by the sweep after every trial) gives Optuna's study.best_trials
    for a study recorded as a sweep records one: completed trials within the gate's
    constraint, infeasible ones told with infinite quality and forgetting, failed ones, a
    maximised objective, and repeated points."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.study import frontier_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "front.journal")))
    study = optuna.create_study(
        storage=storage, directions=["minimize", "maximize", "minimize"], study_name="front"
    )
    rng = np.random.default_rng(seed)
    earlier: list[list[float]] = []
    for _ in range(40):
        trial = study.ask()
        kind = rng.choice(["complete", "complete", "complete", "infeasible", "failed"])
        if kind == "infeasible":
            trial.set_constraint("peak_gb_over_gpu_memory", float(rng.uniform(0.1, 5)))
            trial.set_user_attr("state", "infeasible")
            study.tell(trial, [np.inf, np.inf, float(rng.uniform(0, 0.001))])
            continue
        trial.set_constraint("peak_gb_over_gpu_memory", 0.0)
        if kind == "failed":
            trial.set_user_attr("state", "oom")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        values = earlier[-1] if earlier and rng.random() < 0.2 else rng.random(3).round(1).tolist()
        earlier.append(values)
        trial.set_user_attr("state", "complete")
        study.tell(trial, values)
    ours = [t.number for t in frontier_trials(study)]
    assert ours == [t.number for t in study.best_trials]
    assert len(ours) >= 2


def _point(number: int, objectives: tuple[float, float, float], sd=(None, None, None), **kw):
    row = {"number": number, "state": kw.get("state", "complete")}
    for name, value, spread in zip(("quality", "forgetting", "cost"), objectives, sd, strict=True):
        row[f"objective_{name}"] = value
        row[f"objective_{name}_sd"] = spread
    return row


def test_pareto_trials_within_each_others_noise_are_marked_indistinguishable() -> None:
    noise = (0.2, 0.01, 0.001)
    rows = [
        _point(0, (1.00, 0.10, 0.010), noise),
        _point(1, (1.10, 0.095, 0.010), noise),  # within 0.2, 0.01, equal cost: the noise hides it
        _point(2, (0.50, 0.30, 0.010), noise),  # far better quality, far worse forgetting
        _point(3, (1.05, 0.20, 0.020), noise),  # dominated by 0: not on the frontier
        _point(4, (1.02, 0.099, 0.0095), (0.01, 0.01, 0.0)),  # #0's sd covers it
        _point(5, (0.9, 0.05, 0.05), noise, state="failed"),  # not complete: not a point
    ]
    assert indistinguishable_pairs(rows) == [(0, 1), (0, 4), (1, 4)]
    # Larger than the larger sd in one objective: told apart.
    rows[1]["objective_quality"] = 1.25
    assert (0, 1) not in indistinguishable_pairs(rows)


def test_without_repeats_nothing_is_marked() -> None:
    rows = [_point(0, (1.0, 0.1, 0.01)), _point(1, (1.0001, 0.0999, 0.01))]
    assert indistinguishable_pairs(rows) == []
    # One trial with a measured sd is enough for the pair.
    rows[0].update(objective_quality_sd=0.1, objective_forgetting_sd=0.1, objective_cost_sd=0.0)
    assert indistinguishable_pairs(rows) == [(0, 1)]


def test_the_frontier_view_marks_the_same_pairs(tmp_path: Path) -> None:
    """The results file's ``frontier`` view marks indistinguishable trials exactly as
    indistinguishable_pairs does (the CLI and the UI), on a real DuckDB file."""
    import duckdb

    from sweeps.results.schema import create_statements
    from sweeps.results.store import ResultsStore

    noise = (0.2, 0.01, 0.001)
    studies = {
        "a": [
            _point(0, (1.00, 0.10, 0.010), noise),
            _point(1, (1.10, 0.095, 0.010), noise),
            _point(2, (0.50, 0.30, 0.010), noise),
            _point(3, (1.05, 0.20, 0.020), noise),
            _point(4, (1.02, 0.099, 0.0095), (0.01, 0.01, 0.0)),
            _point(5, (0.9, 0.05, 0.05), noise, state="failed"),
            # Lowest forgetting: on the frontier; 0.25 from #0 in quality (> 0.2, told apart),
            # 0.15 from #1 (within #1's 0.2; #6 has no quality sd of its own).
            _point(6, (1.25, 0.09, 0.010), (None, 0.01, 0.001)),
        ],
        # Without repeats, nothing is marked, even for identical objectives.
        "b": [_point(0, (1.0, 0.1, 0.01)), _point(1, (1.0, 0.1, 0.01))],
    }
    path = tmp_path / "results.duckdb"
    with duckdb.connect(str(path)) as connection:
        for statement in create_statements():
            connection.execute(statement)
        for study, rows in studies.items():
            for row in rows:
                connection.execute(
                    "INSERT INTO trials (study, number, state, objective_quality, "
                    "objective_forgetting, objective_cost, objective_quality_sd, "
                    "objective_forgetting_sd, objective_cost_sd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [study, row["number"], row["state"]]
                    + [row[f"objective_{n}"] for n in ("quality", "forgetting", "cost")]
                    + [row[f"objective_{n}_sd"] for n in ("quality", "forgetting", "cost")],
                )
    for study, rows in studies.items():
        front = ResultsStore(path).frontier(study)
        in_view = sorted(
            (row["number"], other)
            for row in front
            for other in row["indistinguishable_from"]
            if row["number"] < other
        )
        assert in_view == indistinguishable_pairs(rows)
        for row in front:  # symmetric
            for other in row["indistinguishable_from"]:
                partner = next(r for r in front if r["number"] == other)
                assert row["number"] in partner["indistinguishable_from"]
    assert indistinguishable_pairs(studies["a"]) == [(0, 1), (0, 4), (1, 4), (1, 6)]
