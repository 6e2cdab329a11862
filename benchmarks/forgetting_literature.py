"""Does the demo forget as the literature says fine-tunes forget? (CPU, one thread.)

    python benchmarks/forgetting_literature.py [--steps 150] [--seeds 0 1] [--lr 1e-3]

Two claims, measured on the bundled demo after enough steps to learn its task, on the demo's
world text (``retain_delta_nll``, ``retain_kl``) and on the base model's self-samples
(``self_retain_delta_nll``, ``self_retain_kl``) side by side:

1. At one learning rate and number of steps, more trained parameters forget more: LoRA rank
   4 < 16 < 64 (alpha = 2 x rank, as Biderman et al. 2024, "LoRA Learns Less and Forgets
   Less", so the adapter's scale stays the same) < full fine-tuning. Kalajdzievski 2024
   ("Scaling Laws for Forgetting When Fine-Tuning Large Language Models") finds forgetting
   growing as a power law in the number of parameters fine-tuned and the steps taken.
2. Each method at a learning rate of its own (full fine-tuning's usual ones are ten times
   lower than LoRA's): learning and forgetting together, the comparison Biderman et al. make
   ("full fine-tuning learns more and forgets more").

Each row is one real trial (``run_trial``), one per seed; the verdict lines say whether
claim 1 holds for every seed and figure. ``tests/test_trial.py`` keeps ranks 4 and 64 and
full fine-tuning at lr 1e-3 as a test.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

_FIGURES = ("retain_delta_nll", "retain_kl", "self_retain_delta_nll", "self_retain_kl")


def _trial(method: str, rank: int | None, lr: float, steps: int, seed: int, runs: Path):
    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    adapter = {"rank": rank, "alpha": 2.0 * rank} if rank is not None else {}
    return run_trial(
        TrialConfig(
            method=method,
            lr=lr,
            max_steps=steps,
            seed=seed,
            eval_every=50,
            max_new_tokens=4,
            save="none",
            run_dir=str(runs),
            **adapter,
        )
    )


_LABELS = ("world ΔNLL", "world KL", "self ΔNLL", "self KL")


def _row(label: str, seed: int, result) -> str:
    q, f = result.quality, result.forgetting
    figures = "".join(f"{getattr(f, name):>11.3f}" for name in _FIGURES)
    return (
        f"{label:<16}{seed:>5}{q.eval_nll:>9.3f}{q.exact_match:>7.3f}{figures}"
        f"{f.fact_recall_drop:>13.3f}{result.measured.train_s:>8.1f}"
    )


def _header() -> str:
    names = "".join(f"{label:>11}" for label in _LABELS)
    return (
        f"{'method':<16}{'seed':>5}{'eval NLL':>9}{'EM':>7}{names}{'recall drop':>13}{'train s':>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lr", type=float, default=1e-3, help="the one lr of claim 1")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as the tests: a 2M-parameter model gains nothing from more
    same_lr = [("lora", 4), ("lora", 16), ("lora", 64), ("full", None)]
    own_lr = [("lora", 16, 3e-4), ("lora", 16, 1e-3), ("full", None, 1e-4), ("full", None, 2e-4)]
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        base = _trial("lora", 8, args.lr, 1, 0, runs)
        print(
            f"demo, {args.steps} steps, CPU 1 thread; base eval NLL "
            f"{base.quality.base_eval_nll:.3f}, exact match {base.quality.base_exact_match:.3f}; "
            "forgetting on the world text (the demo's retain set) and on self-samples"
        )
        print(f"\n1. one lr ({args.lr:g}) for every method\n{_header()}")
        forgot: dict[int, list] = {}
        for seed in args.seeds:
            for method, rank in same_lr:
                result = _trial(method, rank, args.lr, args.steps, seed, runs)
                forgot.setdefault(seed, []).append(result.forgetting)
                print(_row(f"{method} r{rank}" if rank else method, seed, result), flush=True)
        print("\n2. each method at a lr of its own (learning and forgetting together)")
        print(_header())
        for seed in args.seeds:
            for method, rank, lr in own_lr:
                result = _trial(method, rank, lr, args.steps, seed, runs)
                label = (f"{method} r{rank}" if rank else method) + f" {lr:g}"
                print(_row(label, seed, result), flush=True)
    print(
        "\nclaim 1, pair by pair: seeds where the larger forgets more (world ΔNLL, world KL, "
        "self ΔNLL, self KL)"
    )
    names = [f"{m} r{r}" if r else m for m, r in same_lr]
    for low, high in itertools.combinations(range(len(same_lr)), 2):
        held = [
            sum(
                getattr(forgot[seed][low], name) < getattr(forgot[seed][high], name)
                for seed in args.seeds
            )
            for name in _FIGURES
        ]
        counts = ", ".join(f"{n}/{len(args.seeds)}" for n in held)
        print(f"  {names[low]} < {names[high]}: {counts}")


if __name__ == "__main__":
    main()
