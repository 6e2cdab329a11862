"""What a sharded trial holds per rank, against one process and the planner's prediction.

    python benchmarks/sharded_memory.py [--ranks 2] [--methods full lora] [--device cpu]

For each method, the demo trial runs once in one process and once on N ranks (torchrun,
FSDP2; gloo CPU ranks on CPU, one GPU each on CUDA), the same steps from the same seed.
Prints, side by side: the parameters + gradients + optimizer states each rank holds
(summed over its local shards) and one process holds, the planner's per-rank figure
(``planner.state_bytes``: ZeRO-3's partitioning), each rank's peak, and the eval NLL of
both runs (their difference is the order of float reductions).
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import tempfile

    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.types import TrialConfig

    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    header = (
        f"{'method':<6} {'run':<10} {'states/rank MB':>15} {'planner MB':>11} "
        f"{'ratio':>6} {'peak/rank GB':>18} {'eval NLL':>10}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="sharded-memory-") as folder:
        for method in args.methods:
            base = TrialConfig(
                method=method,
                lr=5e-4 if method == "full" else 2e-3,
                max_steps=args.steps,
                eval_every=args.steps,
                max_new_tokens=2,
                save="none",
                device=args.device,
                run_dir=folder,
            )
            one = run_trial_isolated(base, env=env)
            many = run_trial_isolated(base.model_copy(update={"gpus": args.ranks}), env=env)
            for label, result in (("1 process", one), (f"{args.ranks} ranks", many)):
                if result.state != "complete":
                    print(f"{method:<6} {label:<10} {result.state}: {result.error}")
                    continue
                m, p = result.measured, result.predicted
                states = m.rank_states_gb or [m.states_gb or 0.0]
                peaks = m.rank_peak_gb or [m.peak_gb or 0.0]
                ratio = max(states) / (one.measured.states_gb or 1.0)
                print(
                    f"{method:<6} {label:<10} "
                    f"{' '.join(f'{s * 1e3:.3f}' for s in states):>15} "
                    f"{(p.states_gb or 0.0) * 1e3:>11.3f} {ratio:>6.3f} "
                    f"{' '.join(f'{x:.3f}' for x in peaks):>18} "
                    f"{result.quality.eval_nll:>10.6f}"
                )


if __name__ == "__main__":
    main()
