"""Measured peak memory and throughput on a CUDA GPU, next to the simulator and the formula.

    python benchmarks/gpu_check.py [--gpu h100] [--steps 6] [--seq-len 1024] [--batch 4] \
        [--out gpu_check.jsonl] [--time-budget-s 420]
    python benchmarks/gpu_check.py --dry-run      # no GPU: simulated and analytic columns only

For a ~0.5B and a ~1.5B model (the Qwen2.5-0.5B and Qwen2.5-1.5B shapes, built from their
configs with random weights: nothing is downloaded) and each method (full, lora, qlora with
bitsandbytes 4-bit, dora, freeze), runs a few real training steps in bf16 and prints the
measured peak (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``) beside the
simulated and analytic peaks, and the measured tokens/s beside the planner's prediction for
``--gpu`` (default: the GPU it runs on, when the catalogue knows it; else h100). The methods,
their checkpointing and their optimizer are applied by ``planner.methods``, the code the
simulator and the trial call (same peft settings, same mixed-precision AdamW with fp32
master weights, same checkpointing). Runs in a few minutes on one H100-class GPU.

Made to run once, unattended: each (model, method) row is measured on its own, so an
out-of-memory error, a missing bitsandbytes or an API change prints an error line for that
row and the rest still run; each row is printed (and appended to ``--out`` as a JSON line)
as soon as it is measured; rows not started within ``--time-budget-s`` are skipped with a
note. Exit code 0 when every row was measured, 1 when any failed or was skipped, 2 without
a GPU.

Columns: ``alloc`` and ``reserved`` are measured; ``sim step`` and ``analytic step`` leave
out the CUDA context (not in ``max_memory_allocated``) but keep the rest of the framework
term; ``sim`` and ``analytic`` are the full predicted peaks (compare with ``reserved`` plus
the context, as ``nvidia-smi`` would show).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import MethodSpec, Workload, estimate, resolve_model
from planner.estimation.memory import constants
from planner.simulation.simulate import simulate

MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
METHODS = ("full", "lora", "qlora", "dora", "freeze")
_DEFAULT_GPU = "h100"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU needed: print the simulated and analytic columns only",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="catalogue names or config.json paths, comma-separated",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--gpu",
        default=None,
        help="GPU id whose throughput is predicted (default: this GPU, else h100)",
    )
    parser.add_argument(
        "--steps", type=int, default=6, help="training steps (the first is warm-up)"
    )
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="append one JSON line per row (and one for the run) to this file",
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=420.0,
        help="rows not started after this many seconds are skipped",
    )
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: tests only
    args = parser.parse_args(argv)

    import torch

    measure = not args.dry_run
    cuda = measure and args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here. Run it on a machine with a GPU, or use "
            "--dry-run for the simulated and analytic columns.",
            file=sys.stderr,
        )
        return 2

    started = time.monotonic()
    versions = _versions()
    device_name = torch.cuda.get_device_name() if cuda else None
    gpu = args.gpu or (_catalog_gpu_id(device_name) if device_name else None) or _DEFAULT_GPU
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    if device_name:
        print(f"device: {device_name}; predicted throughput for --gpu {gpu}", flush=True)
    _append(
        args.out,
        {
            "kind": "run",
            "versions": versions,
            "device": device_name,
            "gpu": gpu,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )

    workload = Workload(seq_len=args.seq_len, batch=args.batch)
    header = (
        f"{'model':13s} {'method':7s} {'alloc GB':>8s} {'reserved GB':>11s} {'sim step':>8s} "
        f"{'analytic step':>13s} {'sim GB':>7s} {'analytic GB':>11s} {'tok/s':>8s} "
        f"{'predicted tok/s':>15s}"
    )
    print(header)
    print("-" * len(header), flush=True)
    complete = True
    for name in args.models.split(","):
        for kind in args.methods.split(","):
            if time.monotonic() - started > args.time_budget_s:
                row = {
                    "model": name,
                    "method": kind,
                    "status": "skipped",
                    "error": f"time budget of {args.time_budget_s:g} s spent",
                }
            else:
                row = _row(name, kind, workload, gpu, args.steps, args.device if measure else None)
            row = {"kind": "row", **row, "elapsed_s": round(time.monotonic() - started, 1)}
            complete &= row["status"] == "ok"
            _print_row(row)
            _append(args.out, row)
            if cuda:
                _release_cuda_memory()
    if not complete:
        print("gpu_check: not every row was measured (see the lines marked '!').", flush=True)
    return 0 if complete else 1


def _row(
    name: str, kind: str, workload: Workload, gpu: str, steps: int, device: str | None
) -> dict[str, Any]:
    """One (model, method): measured (unless ``device`` is None), simulated and analytic.

    Each part is tried on its own, so a failing measurement still leaves the predictions."""
    row: dict[str, Any] = {"model": name, "method": kind, "status": "ok"}
    errors = []
    try:
        arch = resolve_model(name)
        method = MethodSpec(kind=kind)
    except Exception as error:  # noqa: BLE001 - reported in the row
        return {**row, "status": "error", "error": _describe(error, "setup")}
    row["model"] = arch.name
    context = constants()["cuda_context_bytes"]
    try:
        analytic = estimate(arch, workload, method, gpu=gpu)
        row.update(
            analytic_bytes=analytic.peak_bytes,
            analytic_step_bytes=analytic.peak_bytes - context,
            predicted_tokens_per_s=(
                workload.tokens / (analytic.hours * 3600) if analytic.hours else None
            ),
        )
    except Exception as error:  # noqa: BLE001
        errors.append(_describe(error, "analytic"))
    if device is not None:
        try:
            row.update(_train(arch, workload, method, steps, device))
        except Exception as error:  # noqa: BLE001 - OOM, missing bitsandbytes, API changes
            errors.append(_describe(error, "measure"))
    try:
        sim = simulate(arch, workload, method)
        row.update(sim_bytes=sim.peak_bytes, sim_step_bytes=sim.peak_bytes - context)
    except Exception as error:  # noqa: BLE001
        errors.append(_describe(error, "simulate"))
    if errors:
        row.update(status="error", error="; ".join(errors))
    return row


def _describe(error: BaseException, part: str) -> str:
    """``part: Type: first line``; the traceback goes to stderr for the log."""
    print(f"gpu_check: {part} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{part}: {type(error).__name__}: {first[:300]}"


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['model'][:13]:13s} {row['method']:7s} {_gb(row.get('allocated_bytes')):>8s} "
        f"{_gb(row.get('reserved_bytes')):>11s} {_gb(row.get('sim_step_bytes')):>8s} "
        f"{_gb(row.get('analytic_step_bytes')):>13s} {_gb(row.get('sim_bytes')):>7s} "
        f"{_gb(row.get('analytic_bytes')):>11s} {_num(row.get('tokens_per_s')):>8s} "
        f"{_num(row.get('predicted_tokens_per_s')):>15s}",
        flush=True,
    )
    if row["status"] != "ok":
        print(f"  ! {row['status']}: {row['model']} {row['method']}: {row['error']}", flush=True)


def _append(path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def _gb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e9:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
    }
    for package in ("transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def _catalog_gpu_id(device_name: str) -> str | None:
    """The catalogue id of a CUDA device name: without the vendor, then without trailing
    memory words (``NVIDIA H100 80GB HBM3`` is the H100 SXM); None when unknown."""
    from pricing import load_catalog
    from pricing.errors import UserError

    try:
        catalog = load_catalog()
    except Exception:  # noqa: BLE001 - only the default of --gpu; each row reports the cause
        return None
    words = device_name.removeprefix("NVIDIA ").split()
    while words:
        try:
            return catalog.gpu(" ".join(words)).id
        except UserError:
            if not re.fullmatch(r"\d+GB|HBM\d*e?", words.pop(), flags=re.IGNORECASE):
                return None
    return None


def _release_cuda_memory() -> None:
    """Free what the last row left (reference cycles, the allocator's cached blocks), so
    each row's reserved peak is its own."""
    import torch

    gc.collect()
    try:
        torch.cuda.empty_cache()
    except RuntimeError as error:  # a CUDA error is sticky: the next rows report it too
        print(f"gpu_check: could not empty the CUDA cache: {error}", file=sys.stderr, flush=True)


# --- one measured row ---------------------------------------------------------------------------


def _train(
    arch: Any, workload: Workload, method: MethodSpec, steps: int, device: str
) -> dict[str, float]:
    """A few real steps of ``method`` on a randomly initialised model; peak memory and tokens/s."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from planner.methods import MethodSetup, apply_method, build_optimizer, quantize_to_nf4

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renamed APIs

    cuda = device == "cuda"
    torch.manual_seed(0)
    config_dict = dict(arch.hf_config)
    model_type = config_dict.pop("model_type")
    config_dict["use_cache"] = False
    config = AutoConfig.for_model(model_type, **config_dict)
    with torch.device(device):  # initialised where it trains: much faster on a GPU
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16
        )
    if method.kind == "qlora":
        quantize_to_nf4(model, torch.bfloat16)
    model.to(device)  # bitsandbytes quantizes each Params4bit here; else a no-op
    # The method, its checkpointing and its optimizer as the simulator applies them.
    model = apply_method(model, MethodSetup.from_spec(method))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, method.optimizer, lr=1e-4, kernel="fused")

    if cuda:
        # Building the model (and quantizing it) left freed blocks in the allocator's cache:
        # return them, so the reserved peak is what the training steps need.
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timed_tokens, started, loss = 0, 0.0, None
    for step in range(steps):
        if step == 1:  # the first step builds the optimizer states and warms the kernels
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        input_ids = torch.randint(
            0, config.vocab_size, (workload.batch, workload.seq_len), device=device
        )
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = loss.detach()
        if step >= 1:
            timed_tokens += workload.batch * workload.seq_len
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    out = {
        "tokens_per_s": timed_tokens / elapsed if elapsed > 0 and timed_tokens else None,
        "final_loss": float(loss) if loss is not None else None,
    }
    if cuda:
        out["allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["reserved_bytes"] = torch.cuda.max_memory_reserved()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
