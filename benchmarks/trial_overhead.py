"""What a trial costs beyond training, on the bundled demo (CPU).

    python benchmarks/trial_overhead.py [--steps 60] [--method full] [--repeats 3]

1. Training throughput: the trial loop's tokens/s (``measured.tokens_per_s``, eval time
   excluded) against a bare PyTorch loop (forward with labels, backward, clip, AdamW step)
   on the same model, method and micro-batches. Aim: at least 0.9x. Median of ``--repeats`` interleaved pairs.
2. Fixed cost of one isolated trial: starting the child (a fresh interpreter importing torch,
   or a fork of the warm server), loading the model, tokenizer, data and cached base scores,
   evaluating (NLL, greedy exact match, retain KL, fact recall) and saving, against its
   training time.
"""

from __future__ import annotations

import argparse
import time


def _bare_loop(config, steps: int) -> float:
    """Tokens/s of the plainest loop over the same batches the trial would see."""
    import torch
    from transformers import AutoTokenizer

    from sweeps.trial import recipe as trial_module

    sources = trial_module._sources(config)
    device = torch.device("cpu")
    tokenizer = AutoTokenizer.from_pretrained(sources.model)
    data = trial_module._load_data(config, sources, tokenizer)
    model = trial_module._load_model(sources.model, config, device, "fp32", quantized=False)
    model = trial_module._apply_method(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    batches = trial_module._cycle_batches(data, config)
    torch.manual_seed(config.seed)
    model.train()
    tokens, seconds = 0, 0.0
    for _ in range(steps):
        started = time.perf_counter()  # the trial's step time includes fetching the batch too
        _, batch = next(batches)
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
        tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--method", default="full")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both loops (1: steadier on a shared machine)",
    )
    args = parser.parse_args()

    import os
    import statistics
    import tempfile

    import torch

    torch.set_num_threads(args.threads)

    from sweeps.trial.demo import ensure_demo
    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    ensure_demo()
    runs = tempfile.mkdtemp(prefix="paretune-bench-")
    config = TrialConfig(
        method=args.method,
        lr=1e-3,
        max_steps=args.steps,
        eval_every=10 * args.steps,
        warmup_ratio=0.0,
        save="none",
        max_new_tokens=4,
        run_dir=runs,
    )
    run_trial(config.model_copy(update={"max_steps": 3}))  # warm caches (base scores, tokens)

    # Interleaved pairs, so a busy machine slows both sides alike; medians of the pairs.
    ours, bare, ratios = [], [], []
    for _ in range(args.repeats):
        ours.append(run_trial(config).measured.tokens_per_s)
        bare.append(_bare_loop(config, args.steps))
        ratios.append(ours[-1] / bare[-1])
    load = os.getloadavg()[0]
    print(
        f"training throughput ({args.method}, {args.steps} steps, demo, CPU, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats} interleaved pairs, "
        f"load average {load:.1f})"
    )
    print(f"  {'trial loop':<28}{statistics.median(ours):>10.0f} tokens/s")
    print(f"  {'bare PyTorch loop':<28}{statistics.median(bare):>10.0f} tokens/s")
    print(
        f"  {'ratio (trial / bare)':<28}{statistics.median(ratios):>10.2f}x"
        f"   (pairs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )

    # The same isolated trial from a fresh interpreter and forked from the warm server (the
    # first warm trial also starts the server, so it is shown apart).
    isolated = config.model_copy(update={"save": "adapter", "device": "cpu"})
    for label, start in [
        ("fresh interpreter", "fresh"),
        ("warm, first (starts server)", "warm"),
        ("warm", "warm"),
    ]:
        started = time.perf_counter()
        result = run_trial_isolated(
            isolated, env={"OMP_NUM_THREADS": str(args.threads)}, start=start
        )
        total = time.perf_counter() - started
        m = result.measured
        spawn = total - m.wall_s
        rest = m.wall_s - m.load_s - m.train_s - m.eval_s
        fixed = total - m.train_s
        print(
            f"\none isolated trial, {label} ({args.method}, {args.steps} steps, "
            f"state {result.state})"
        )
        for name, seconds in [
            ("start + imports", spawn),
            ("load (model, data, base)", m.load_s),
            ("train", m.train_s),
            ("evaluate", m.eval_s),
            ("save + bookkeeping", rest),
            ("total", total),
        ]:
            print(f"  {name:<28}{seconds:>8.2f} s")
        print(f"  {'fixed cost / training time':<28}{fixed / m.train_s:>8.2f}x")


if __name__ == "__main__":
    main()
