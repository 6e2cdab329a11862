"""Syne Tune's MO-ASHA on the cached grid of ``sweep_efficiency.py``, in Syne Tune's own Python.

Syne Tune is not a dependency of paretune; install it into a virtual environment of its own
and let ``sweep_efficiency.py --moasha-python VENV/bin/python`` run this script there:

    python3 -m venv .venv-syne-tune && .venv-syne-tune/bin/pip install syne-tune  # 0.16.0
    python benchmarks/sweep_efficiency.py --moasha-python .venv-syne-tune/bin/python

It imports only Syne Tune (and its NumPy) and the standard library. MO-ASHA (Schmucker et al. 2021,
``syne_tune.optimizer.schedulers.multiobjective.moasha.MOASHA``) draws configurations at
random and stops them at rungs by non-dominated sorting; here its fidelity is the step of the
grid's longest trials, its rungs and reduction factor those of the default early stopping the
cache's trials reported at (steps 10, 30, 90 of 128, eta 3), and its objectives at a rung the
same three the sweep's own early stopping compares: eval NLL, the forgetting estimate on the
retain subset and the dollars spent so far. It searches the method, rank and learning rate of the grid; each trial is played
from its cached rung records, one after another, and a stopped trial costs its rung's dollars.
Prints, per seed, each trial's final objectives (null: stopped) and its dollars, as JSON.

    VENV/bin/python sweep_efficiency_moasha.py CACHE TRIALS SEED [SEED ...]
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime


def main() -> None:
    import numpy  # Syne Tune's own dependency
    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import choice
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    cache, trials = sys.argv[1], int(sys.argv[2])
    with open(cache, encoding="utf-8") as handle:
        raw = json.load(handle)
    grid, table = raw["grid"], raw["trials"]
    longest = max(grid["max_steps"])
    stopping = raw["early_stopping"]
    runs = {}
    for seed in [int(s) for s in sys.argv[3:]]:
        # MOASHA 0.16 draws configurations and brackets from NumPy's global generator, not from
        # its random_seed: seed that too, or a run cannot be repeated.
        numpy.random.seed(seed)
        random.seed(seed)
        scheduler = MOASHA(
            config_space={
                "method": choice(grid["method"]),
                "rank": choice(grid["rank"]),  # ignored for full and freeze
                "lr": choice(grid["lr"]),
            },
            metrics=["eval_nll", "retain_delta_nll", "dollars"],
            do_minimize=True,
            time_attr="step",
            max_t=longest,
            grace_period=stopping["min_steps"],
            reduction_factor=stopping["eta"],
            random_seed=seed,
        )
        run = []
        for number in range(trials):
            config = scheduler.suggest().config
            adapter = config["method"] in ("lora", "dora")
            point = {
                "lr": config["lr"],
                "max_steps": longest,
                "method": config["method"],
                "rank": config["rank"] if adapter else None,
            }
            record = table[json.dumps(point, sort_keys=True)]
            trial = Trial(trial_id=number, config=config, creation_time=datetime.now())
            scheduler.on_trial_add(trial)
            values, dollars = record["values"], record["dollars"]
            for rung in record["rungs"]:
                if rung["step"] >= longest:
                    break
                result = {
                    "step": rung["step"],
                    "eval_nll": rung["eval_nll"],
                    # As the sweep reads a rung: retain_kl where a source has no delta NLL.
                    "retain_delta_nll": rung["retain_delta_nll"]
                    if rung["retain_delta_nll"] is not None
                    else rung["retain_kl"],
                    "dollars": rung["dollars"],
                }
                if scheduler.on_trial_result(trial, result) == "STOP":
                    values, dollars = None, rung["dollars"]
                    break
            if values is not None:
                final = {
                    "step": longest,
                    "eval_nll": values[0],
                    "retain_delta_nll": values[1],
                    "dollars": values[2],
                }
                scheduler.on_trial_complete(trial, final)
            run.append([values, dollars])
        runs[seed] = run
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
