"""Measured peak memory and throughput on a CUDA GPU, next to the simulator and the formula.

    python benchmarks/gpu_check.py [--gpu h100] [--steps 6] [--seq-len 1024] [--batch 4]
    python benchmarks/gpu_check.py --dry-run      # no GPU: simulated and analytic columns only

For a ~0.5B and a ~1.5B model (the Qwen2.5-0.5B and Qwen2.5-1.5B shapes, built from their
configs with random weights: nothing is downloaded) and each method (full, lora, qlora with
bitsandbytes 4-bit, dora, freeze), runs a few real training steps in bf16 and prints the
measured peak (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``) beside the
simulated and analytic peaks, and the measured tokens/s beside the planner's prediction for
``--gpu``. The methods are applied as the simulator applies them (same peft settings, same
mixed-precision AdamW with fp32 master weights, same checkpointing). Runs in a few minutes
on one H100-class GPU.

Columns: ``alloc`` and ``reserved`` are measured; ``sim step`` and ``analytic step`` leave
out the CUDA context (not in ``max_memory_allocated``) but keep the rest of the framework
term; ``sim`` and ``analytic`` are the full predicted peaks (compare with ``reserved`` plus
the context, as ``nvidia-smi`` would show).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import MethodSpec, Workload, estimate, resolve_model
from planner.memory import constants, targeted_shapes
from planner.simulate import simulate

MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
METHODS = ("full", "lora", "qlora", "dora", "freeze")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: print the simulated and analytic columns only")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="catalogue names or config.json paths, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--gpu", default="h100", help="GPU id whose throughput is predicted")
    parser.add_argument("--steps", type=int, default=6, help="training steps (the first is warm-up)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: tests only
    args = parser.parse_args(argv)

    import torch

    real = not args.dry_run
    if real and args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here. Run it on a machine with a GPU, or use "
              "--dry-run for the simulated and analytic columns.", file=sys.stderr)
        return 2

    workload = Workload(seq_len=args.seq_len, batch=args.batch)
    context = constants()["cuda_context_bytes"]
    header = (f"{'model':13s} {'method':7s} {'alloc GB':>8s} {'reserved GB':>11s} {'sim step':>8s} "
              f"{'analytic step':>13s} {'sim GB':>7s} {'analytic GB':>11s} {'tok/s':>8s} "
              f"{'predicted tok/s':>15s}")
    if real and args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}; predicted throughput for --gpu {args.gpu}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        arch = resolve_model(name)
        for kind in args.methods.split(","):
            method = MethodSpec(kind=kind)
            analytic = estimate(arch, workload, method, gpu=args.gpu)
            sim = simulate(arch, workload, method)
            predicted = workload.tokens / (analytic.hours * 3600) if analytic.hours else float("nan")
            measured = _train(arch, workload, method, args.steps, args.device) if real else {}
            print(f"{arch.name[:13]:13s} {kind:7s} {_gb(measured.get('allocated')):>8s} "
                  f"{_gb(measured.get('reserved')):>11s} {_gb(sim.peak_bytes - context):>8s} "
                  f"{_gb(analytic.peak_bytes - context):>13s} {_gb(sim.peak_bytes):>7s} "
                  f"{_gb(analytic.peak_bytes):>11s} {_num(measured.get('tokens_per_s')):>8s} "
                  f"{predicted:15,.0f}", flush=True)
    return 0


def _gb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e9:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _train(arch: Any, workload: Workload, method: MethodSpec, steps: int, device: str) -> dict[str, float]:
    """A few real steps of ``method`` on a randomly initialised model; peak memory and tokens/s."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from planner.simulate import _master_weight_adamw

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renamed APIs

    torch.manual_seed(0)
    config_dict = dict(arch.hf_config)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict, use_cache=False)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    if method.kind == "qlora":
        _quantize_decoder_linears(model, device)
    model.to(device)
    if method.grad_checkpointing:
        model.activation_checkpointing_enable()
    if method.uses_adapters:
        from peft import LoraConfig, get_peft_model

        names = [s.name for s in targeted_shapes(arch, method)]
        model = get_peft_model(model, LoraConfig(
            r=method.rank, lora_alpha=method.alpha, lora_dropout=method.lora_dropout,
            target_modules=[n for n in names if not n.startswith("experts.")] or None,
            use_dora=method.kind == "dora", task_type="CAUSAL_LM"))
    elif method.kind == "freeze":
        layers = model.model.layers
        for param in model.parameters():
            param.requires_grad_(False)
        for module in [*layers[len(layers) - method.freeze_layers:], model.model.norm]:
            for param in module.parameters():
                param.requires_grad_(True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype == torch.bfloat16 for p in trainable):
        optimizer = _master_weight_adamw(trainable)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device == "cuda")

    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed_tokens, started = 0, 0.0
    for step in range(steps):
        if step == 1:  # the first step builds the optimizer states and warms the kernels
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        input_ids = torch.randint(0, config.vocab_size, (workload.batch, workload.seq_len), device=device)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
        if step >= 1:
            timed_tokens += workload.batch * workload.seq_len
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    out = {"tokens_per_s": timed_tokens / elapsed if elapsed > 0 else float("nan")}
    if cuda:
        out["allocated"] = torch.cuda.max_memory_allocated()
        out["reserved"] = torch.cuda.max_memory_reserved()
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return out


def _quantize_decoder_linears(model: Any, device: str) -> None:
    """Every Linear of the decoder layers to bitsandbytes NF4 with double quantization
    (what ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True)`` does when loading; embeddings and head stay 16-bit)."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for layer in model.model.layers:
        for name, module in list(layer.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            quantized = bnb.nn.Linear4bit(
                module.in_features, module.out_features, bias=module.bias is not None,
                compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
            quantized.weight = bnb.nn.Params4bit(
                module.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4")
            if module.bias is not None:
                quantized.bias = nn.Parameter(module.bias.data, requires_grad=False)
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, quantized)


if __name__ == "__main__":
    raise SystemExit(main())
