"""What measuring forgetting on self-samples costs, beside what a trial costs (CPU, demo).

    python benchmarks/retain_cost.py [--steps 30] [--method lora] [--model llama-2-7b] [--gpu h100]

1. On the bundled demo model: one demo trial's training time (``measured.train_s``), then
   the self-sample retain pass with a fresh cache -- sampling the base once, scoring the base
   once (NLL and top-k, one forward pass), and scoring one fine-tuned model (NLL and KL, one
   forward pass: what every trial pays) -- with
   its token counts, and the ratios to the training time.
2. The planner's figure for the same pass on a real model and GPU: tokens forwarded x
   2 x parameters FLOPs (Kaplan et al. 2020: a forward pass is 2N FLOPs per token) at the
   catalogue MFU of the method, and for sampling also the memory-bound floor (every decode
   step reads all weights once); beside the planner's estimate of a LoRA fine-tune of
   ``--train-tokens`` tokens. Token counts for that model: continuations at their maximum
   length (a real model seldom stops before 48 tokens) and prompts at 4 characters per token
   (the usual English BPE rate; the demo's word-level tokenizer is not that model's).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _demo_trial_train_s(method: str, steps: int, run_dir: Path) -> float:
    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    result = run_trial(
        TrialConfig(
            method=method, max_steps=steps, save="none", run_dir=str(run_dir), max_new_tokens=4
        )
    )
    return float(result.measured.train_s)


def _self_sample_pass(cache: Path) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweeps.trial.demo import ensure_demo
    from sweeps.trial.retain import SelfSampleSettings, retain_source_for
    from sweeps.trial.types import TrialConfig

    demo = ensure_demo()
    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir)
    model = AutoModelForCausalLM.from_pretrained(demo.model_dir)
    # The demo model with a task of its own and no retain file: the default source.
    config = TrialConfig(train=str(demo.train))
    source = retain_source_for(
        config.model_copy(update={"model": str(demo.model_dir)}),
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        precision="fp32",
        cache_dir=cache,
        settings=SelfSampleSettings(),
    )
    started = time.perf_counter()
    source.prepare(model)
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    scores = source.score(model)
    score_s = time.perf_counter() - started
    meta = source.base["meta"]
    return {
        "sample_s": meta["sample_s"],
        "base_score_s": prepare_s - meta["sample_s"],
        "prepare_s": prepare_s,
        "score_s": score_s,
        "rows": meta["rows"],
        "prompt_tokens": meta["prompt_tokens"],
        "continuation_tokens": scores.tokens,
        "forward_tokens": meta["forward_tokens"],
    }


def _real_model_estimate(model: str, gpu_id: str, method: str, train_tokens: int) -> None:
    import math

    from planner import MethodSpec, Workload, estimate, resolve_model
    from pricing import load_catalog
    from sweeps.trial.retain import SelfSampleSettings, load_retain_prompts

    settings = SelfSampleSettings()
    prompts = load_retain_prompts()[: settings.prompts]
    rows = len(prompts) * settings.samples_per_prompt
    prompt_tokens = sum(math.ceil(len(p["prompt"]) / 4) for p in prompts) * (
        settings.samples_per_prompt
    )
    continuation_tokens = rows * settings.max_new_tokens
    sequence_tokens = prompt_tokens + continuation_tokens

    arch = resolve_model(model)
    catalog = load_catalog()
    gpu = catalog.gpu(gpu_id)
    offer = catalog.cheapest(gpu.id, None)
    trial = estimate(
        arch,
        Workload(seq_len=1024, batch=8, dataset_tokens=train_tokens, epochs=1.0),
        MethodSpec(kind=method),
        gpu=gpu.id,
    )
    flops_per_s = gpu.matmul_tflops * 1e12 * trial.mfu
    per_token = 2 * arch.compute_params  # forward: 2 FLOPs per matmul parameter per token

    # Sampling: one forward per token with the KV cache; memory-bound floor: each decode step
    # of each batch reads every weight once (bf16, 2 bytes per parameter).
    decode_steps = math.ceil(rows / settings.batch) * settings.max_new_tokens
    sample_compute_s = sequence_tokens * per_token / flops_per_s
    sample_memory_s = decode_steps * 2 * arch.total_params / (gpu.bandwidth_gbps * 1e9)
    sample_s = max(sample_compute_s, sample_memory_s)
    # One forward pass each (metrics.nll_and_topk, nll_and_kl): NLL and top-k, NLL and KL.
    base_score_s = sequence_tokens * per_token / flops_per_s
    score_s = sequence_tokens * per_token / flops_per_s  # per trial
    trial_s = (trial.hours or 0.0) * 3600
    usd_per_s = float(offer.usd_per_hour) / 3600 if offer else None

    print(f"\n{arch.name} ({arch.total_params / 1e9:.2f}B) on {gpu.id}, planner MFU {trial.mfu}")
    print(
        f"  tokens: {rows} rows, about {prompt_tokens} prompt + {continuation_tokens} "
        f"continuation = {sequence_tokens} per pass; {decode_steps} decode steps"
    )
    print(
        f"  sampling once   {sample_s:8.2f} s  (compute {sample_compute_s:.2f} s, "
        f"memory floor {sample_memory_s:.2f} s)"
    )
    print(f"  base scoring    {base_score_s:8.2f} s  (once per base model)")
    print(f"  per trial       {score_s:8.2f} s")
    print(
        f"  a {method} fine-tune of {train_tokens:,} tokens: {trial_s:,.0f} s "
        f"(planner); retain pass per trial / fine-tune = {score_s / trial_s:.5f}, "
        f"first trial (sampling + base + score) / fine-tune = "
        f"{(sample_s + base_score_s + score_s) / trial_s:.5f}"
        if trial_s
        else "  (no time estimate for the fine-tune)"
    )
    if usd_per_s is not None:
        print(
            f"  at ${float(offer.usd_per_hour):.2f}/h ({offer.provider}): first trial "
            f"${(sample_s + base_score_s + score_s) * usd_per_s:.4f}, "
            f"each later trial ${score_s * usd_per_s:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--model", default="llama-2-7b", help="catalogue model for the estimate")
    parser.add_argument("--gpu", default="h100")
    parser.add_argument("--train-tokens", type=int, default=1_000_000)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as the tests and the sweep's trials on a shared 2-core machine
    with tempfile.TemporaryDirectory() as scratch:
        train_s = _demo_trial_train_s(args.method, args.steps, Path(scratch) / "runs")
        found = _self_sample_pass(Path(scratch) / "cache")

    print(f"demo, CPU, 1 thread: {args.method} trial of {args.steps} steps, train {train_s:.2f} s")
    print(
        f"self-samples: {found['rows']} rows, {found['prompt_tokens']} prompt + "
        f"{found['continuation_tokens']} continuation tokens "
        f"({found['forward_tokens']} tokens per scoring pass)"
    )
    print(f"{'':18}{'seconds':>9}{'/ train':>9}")
    for label, key in (
        ("sampling once", "sample_s"),
        ("base scoring", "base_score_s"),
        ("per trial", "score_s"),
    ):
        print(f"  {label:16}{found[key]:9.2f}{found[key] / train_s:9.3f}")
    first = found["prepare_s"] + found["score_s"]
    print(f"  {'first trial':16}{first:9.2f}{first / train_s:9.3f}")
    _real_model_estimate(args.model, args.gpu, args.method, args.train_tokens)


if __name__ == "__main__":
    main()
