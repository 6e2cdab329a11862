"""How fast the planner answers, against the targets the terminal UI needs.

    python benchmarks/planner_speed.py

1. One full plan: every method x every catalogue GPU x every provider offering it
   (the cheapest fitting option per method, GPU counts included, plus API prices),
   for a dense and a MoE model. Target: under 2 ms (the UI recomputes per keystroke).
2. One --max-fit plan on a chosen GPU (two boundary searches per method).
3. `paretune plan MODEL` as a user runs it: a new process that starts, plans and
   prints. Target: under 0.5 s, without importing torch.
Prints ours next to the target and the ratio (below 1.0 = faster than the target).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import Workload, plan, resolve_model  # noqa: E402 - after the path insert
from pricing import load_catalog  # noqa: E402


def _median_seconds(action, repeat: int) -> float:
    action()  # warm caches (catalogue parse, architecture shapes)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(label: str, ours_s: float, target_s: float) -> None:
    unit, scale = ("ms", 1e3) if target_s < 0.1 else ("s", 1.0)
    print(
        f"{label:<58} {ours_s * scale:>9.3f} {unit:<2} {target_s * scale:>9.3f} {unit:<2} "
        f"{ours_s / target_s:>7.2f}"
    )


def main() -> None:
    catalog = load_catalog()
    workload = Workload(seq_len=2048, batch=2, dataset_tokens=50_000_000)
    pairs = len(catalog.offers())
    print(
        f"catalogue: {len(catalog.gpus)} GPUs, {len(catalog.providers)} providers, "
        f"{pairs} GPU x provider offers; 5 methods"
    )
    print(f"{'measurement':<58} {'ours':>12} {'target':>12} {'ratio':>7}")
    print("-" * 93)
    for name in ("llama-3.1-8b", "qwen3-30b-a3b"):
        arch = resolve_model(name)
        seconds = _median_seconds(
            lambda arch=arch: plan(arch, workload, catalog=catalog), repeat=200
        )
        _row(f"full plan, {name} (5 methods x {pairs} offers)", seconds, 0.002)
    arch = resolve_model("llama-3.1-8b")
    seconds = _median_seconds(
        lambda: plan(arch, workload, gpu="h100", catalog=catalog, max_fit=True), repeat=50
    )
    _row("plan --max-fit on one GPU, llama-3.1-8b (5 methods)", seconds, 0.010)

    command = [sys.executable, "-m", "tui.cli", "plan", "llama-3.1-8b"]
    probe = [
        sys.executable,
        "-c",
        "import sys; from tui.cli import run\n"
        "try:\n    run(['plan', 'llama-3.1-8b'])\nexcept SystemExit:\n    pass\n"
        "print('torch imported:', 'torch' in sys.modules)",
    ]
    walls = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    _row("`paretune plan llama-3.1-8b`: process start to exit", statistics.median(walls), 0.5)
    done = subprocess.run(probe, cwd=ROOT, check=True, capture_output=True, text=True)
    print(done.stdout.strip().splitlines()[-1])
    # What an empty interpreter costs on this machine, for scale.
    bare = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    print(f"(a bare `python -c pass` takes {statistics.median(bare):.3f} s here)")


if __name__ == "__main__":
    main()
