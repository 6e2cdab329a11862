"""The planner's formula against the simulated training step, for three 7-8B models.

    python benchmarks/simulate_vs_analytic.py [--models llama-3.1-8b,...] [--seq-lens 512,...]

For Llama-3.1-8B, Qwen2.5-7B and Mistral-7B at sequence lengths 512, 2048 and 8192, and
each method (micro-batch 1, gradient checkpointing on, bf16, AdamW: the planner's
defaults, costed on an H100 so both include the CUDA overhead), prints the analytic peak and the simulated peak side by side with their ratio,
the largest term where they differ, and how long each simulation took (the simulator
extrapolates from 2 and 4 layers; the aim is under 30 s per method on two CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import MethodSpec, Workload, estimate, resolve_model
from planner.simulation.simulate import simulate

MODELS = ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b")
SEQ_LENS = (512, 2048, 8192)
METHODS = ("full", "lora", "qlora", "dora", "freeze")
AIM_SECONDS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seq-lens", default=",".join(map(str, SEQ_LENS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()

    header = (
        f"{'model':14s} {'seq':>5s} {'method':7s} {'analytic GB':>11s} {'simulated GB':>12s} "
        f"{'sim/analytic':>12s}  {'largest gap (analytic -> simulated GB)':40s} {'sim s':>6s}"
    )
    print(header)
    print("-" * len(header))
    slowest = 0.0
    ratios = []
    for name in args.models.split(","):
        arch = resolve_model(name)
        for seq_len in map(int, args.seq_lens.split(",")):
            workload = Workload(seq_len=seq_len, batch=1)
            for kind in args.methods.split(","):
                method = MethodSpec(kind=kind)
                analytic = estimate(arch, workload, method, gpu="h100")
                started = time.perf_counter()
                simulated = simulate(arch, workload, method)
                seconds = time.perf_counter() - started
                slowest = max(slowest, seconds)
                ratio = simulated.peak_bytes / analytic.peak_bytes
                ratios.append(ratio)
                gap_term = max(
                    analytic.breakdown,
                    key=lambda t: abs(simulated.breakdown[t] - analytic.breakdown[t]),
                )
                gap = (
                    f"{gap_term} {analytic.breakdown[gap_term] / 1e9:.2f} -> "
                    f"{simulated.breakdown[gap_term] / 1e9:.2f}"
                )
                print(
                    f"{name:14s} {seq_len:5d} {kind:7s} {analytic.peak_bytes / 1e9:11.2f} "
                    f"{simulated.peak_gb:12.2f} {ratio:12.3f}  {gap:40s} {seconds:6.1f}",
                    flush=True,
                )
    print()
    print(
        f"sim/analytic ratio: min {min(ratios):.3f}, max {max(ratios):.3f}, "
        f"median {sorted(ratios)[len(ratios) // 2]:.3f}"
    )
    print(
        f"slowest simulation: {slowest:.1f} s (aim: under {AIM_SECONDS:.0f} s per method on "
        f"two CPU cores; LoRA and QLoRA share one simulated step)"
    )


if __name__ == "__main__":
    main()
