"""Every sampler a spec can name searches the conditional space (rank only for adapters, lr per method)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweeps.spec import load_spec
from sweeps.study import make_sampler, suggest

DEMO = Path(__file__).parent.parent / "examples" / "demo.toml"


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "random"])
def test_sampler_searches_the_conditional_space(sampler: str) -> None:
    spec = load_spec(DEMO).model_copy(update={"sampler": sampler})
    study = optuna.create_study(directions=spec.objectives.directions(), sampler=make_sampler(spec))
    seen = set()
    for i in range(12):
        trial = study.ask()
        params = suggest(trial, spec)
        config = spec.trial_config(params, trial_number=trial.number)
        seen.add(config.method)
        assert set(trial.params) == set(params)
        if config.method in ("lora", "dora"):
            assert 2 <= config.rank <= 32 and config.alpha == config.rank * params["alpha_ratio"]
            assert 1e-4 <= params[f"lr_{config.method}"] <= 1e-2
        else:
            assert "rank" not in params and 1e-5 <= params[f"lr_{config.method}"] <= 1e-3
        assert config.max_steps in (50, 100, 150, 200)
        study.tell(trial, [1.0 / (i + 1), 0.1 * i, 0.01])
    assert len(seen) >= 2
