"""One real fine-tune, measured: :func:`run_trial` reads top to bottom.

    result = run_trial(TrialConfig(method="lora", rank=8, lr=2e-4, max_steps=40))
    result.quality.eval_nll, result.forgetting.retain_kl, result.measured.peak_gb

``run_trial`` calls its steps in order, each a function (section "the trial" below):
``_setup_where`` resolves the device, the precision and the hourly price (never unknown:
the detected GPU's cheapest catalogue offer, or ``local-cpu``, when none is given);
``_setup_data`` loads the tokenizer, the data and the retain source forgetting is measured
on (:mod:`sweeps.trial.retain`: the retain file, the demo's world text, else the base
model's self-samples; on the demo its self-samples too); ``_setup_model`` scores the base
model on the task and prepares the retain sources once (both cached on disk, since a sweep
runs many trials on one base) and loads the model with its method applied by
:mod:`planner.methods`, the layer the step simulator calls too;
``_setup_optimizer_and_schedule``; ``_train``, one loop that logs every optimizer step;
``_evaluate`` scores quality and forgetting; ``_save_run`` saves the adapter, the spec and
the command; ``_assemble_result`` puts memory, time, tokens and dollars beside the
planner's prediction. It runs in the calling process;
:func:`sweeps.trial.isolation.run_trial_isolated` runs it in a child process with memory
and time limits.

Bad input (an unknown target module, a missing file, an unknown GPU id) raises a
:class:`pricing.errors.UserError` subclass before any training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.estimation.project_cost import eval_interval
from pricing.errors import UserError
from sweeps.outcome import Outcome
from sweeps.trial.types import (
    DataProvenance,
    Forgetting,
    Hardware,
    Measured,
    Predicted,
    Quality,
    RungReport,
    StepLog,
    TrialConfig,
    TrialResult,
)

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.trial.retain import RetainSource

__all__ = ["TrialError", "run_trial", "trial_command"]

_BASE_METRICS_VERSION = 2  # 2: the task only; forgetting is its retain source's
_TRAIN_NLL_ROWS = 512  # train NLL at the end is scored on at most this many rows


class TrialError(UserError):
    """A trial configuration that cannot run as given."""

    title = "Cannot run this trial"


# --- where it runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    model: str
    train: str
    eval: str | None
    retain: str | None
    facts: str | None


def _sources(config: TrialConfig) -> _Sources:
    if config.model == "demo":
        from sweeps.trial.demo import ensure_demo

        demo = ensure_demo()
        return _Sources(
            model=str(demo.model_dir),
            train=config.train or str(demo.train),
            eval=config.eval or (None if config.train else str(demo.eval)),
            retain=config.retain or str(demo.retain),
            facts=config.facts or (str(demo.facts) if not config.train else None),
        )
    if config.train is None:
        raise TrialError(
            f"model {config.model!r} needs training data",
            'Give train = "task.jsonl" (prompt/completion or messages rows), or use model = "demo".',
        )
    return _Sources(config.model, config.train, config.eval, config.retain, config.facts)


def _device(requested: str):
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise TrialError(
            "device 'cuda' was asked for but no CUDA GPU is visible",
            "Use --device cpu (or auto), or check CUDA_VISIBLE_DEVICES and the torch build.",
        )
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":  # the first visible GPU; a sweep pins it with CUDA_VISIBLE_DEVICES
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(requested)


def _precision(config: TrialConfig, device) -> str:
    """The compute precision: bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU."""
    import torch

    wanted = config.precision
    on_gpu = device.type == "cuda"
    if wanted == "auto":
        if not on_gpu:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise TrialError(
            f"this GPU ({torch.cuda.get_device_name(device)}) does not support bf16",
            "Use --precision fp16 (or auto).",
        )
    if wanted == "fp16" and not on_gpu:
        raise TrialError(
            "fp16 training needs a CUDA GPU", "Use precision auto, fp32 or bf16 on CPU."
        )
    return wanted


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@dataclass(frozen=True)
class _Price:
    """What an hour of the hardware costs, and what it is priced as."""

    usd_per_hour: float
    provider: str | None = None
    gpu_id: str | None = None
    cpu_instance: str | None = None


def _price(config: TrialConfig, device) -> _Price:
    """The hourly price (for all devices) of the hardware, never unknown: ``usd_per_hour``;
    else the catalogue price of ``gpu`` (cheapest offer, at ``provider`` if given) or of
    ``cpu_instance``; else on CUDA the cheapest offer for the detected GPU (at ``provider``
    if given), on CPU the catalogue's ``local-cpu`` (your own machine, $0 unless a price
    file says otherwise). Unknown ids raise a ``UserError`` before any work."""
    from pricing import load_catalog

    catalog = load_catalog()
    gpu_id = catalog.gpu(config.gpu).id if config.gpu is not None else None
    provider = catalog.check_provider(config.provider) if config.provider is not None else None
    if config.usd_per_hour is not None:
        return _Price(config.usd_per_hour, provider, gpu_id, config.cpu_instance)
    if gpu_id is not None:
        return _gpu_price(catalog, gpu_id, provider, "")
    if config.cpu_instance is not None:
        instance = catalog.cpu_instance(config.cpu_instance)
        return _Price(float(instance.usd_per_hour), instance.provider, None, instance.id)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        try:
            gpu = _catalog_gpu(catalog, name)
        except UserError:
            raise TrialError(
                f"cannot price this GPU: {name!r} is not in the price catalogue",
                "Give its hourly price (--usd-per-hour, or usd_per_hour in [hardware]), or the "
                "catalogue GPU to price it as (--gpu, and --provider); `paretune prices` lists "
                "them.",
            ) from None
        return _gpu_price(catalog, gpu.id, provider, f" (the detected {name})")
    if provider is not None:
        raise TrialError(
            f"provider {config.provider!r} prices a GPU, and this trial runs on the CPU",
            "Give the GPU to price it as (--gpu), a CPU instance (--cpu-instance), or "
            "--usd-per-hour.",
        )
    local = catalog.cpu_instance("local-cpu")
    return _Price(float(local.usd_per_hour), local.provider, None, local.id)


def _gpu_price(catalog, gpu_id: str, provider: str | None, which: str) -> _Price:
    offer = catalog.cheapest(gpu_id, provider)
    if offer is None:
        raise TrialError(
            f"no price for GPU {gpu_id!r}{which}" + (f" at {provider!r}" if provider else ""),
            "Give --usd-per-hour (usd_per_hour), another provider, or see `paretune prices`.",
        )
    return _Price(float(offer.usd_per_hour), offer.provider, gpu_id)


# --- the base model's scores, cached ------------------------------------------------------------


def _model_fingerprint(path: str) -> str:
    """A local model folder by its files' names, sizes and times; a Hub id by its name."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    entries = sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file()
    )
    return json.dumps([str(folder.resolve()), entries])


def _base_cache_dir(key_parts: list[Any]) -> Path:
    from sweeps.trial.demo import demo_cache_root

    digest = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode())
    return demo_cache_root() / "base-scores" / digest.hexdigest()[:24]


def _score_base(model, tokenizer, data: _Data, config: TrialConfig) -> dict[str, Any]:
    """The base model on the task (forgetting's base data is its retain source's)."""
    from sweeps.trial.metrics import completion_nll

    return {
        "eval_nll": completion_nll(model, data.eval_batches())[0],
        "exact_match": _exact_match(model, tokenizer, data, config),
    }


def _load_base_scores(folder: Path) -> dict[str, Any] | None:
    if not (folder / "scores.json").exists():
        return None
    return json.loads((folder / "scores.json").read_text())


def _save_base_scores(folder: Path, scores: dict[str, Any]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    building.mkdir(exist_ok=True)
    (building / "scores.json").write_text(json.dumps(scores))
    try:
        os.replace(building, folder)  # another trial may have won the race: keep theirs
    except OSError:
        import shutil

        shutil.rmtree(building, ignore_errors=True)


# --- data -------------------------------------------------------------------------------------


@dataclass
class _Data:
    """The task's data, and the retain sources forgetting is measured on: ``retain`` (the
    trial's own: a retain file, the demo's world text or self-samples) and, on the demo,
    ``self_retain`` (self-samples too, so that the two can be compared)."""

    train: Any
    eval: Any
    eval_examples: list
    retain: RetainSource
    self_retain: RetainSource | None
    pad_id: int
    config: TrialConfig
    bad_rows: list[str]
    fingerprint: str
    provenance: DataProvenance

    def eval_batches(self):
        from sweeps.trial.data import batches

        return batches(self.eval, batch_size=self.config.batch, pad_id=self.pad_id)

    def train_score_batches(self):
        from sweeps.trial.data import Tokenized, batches

        head = Tokenized(
            self.train.input_ids[:_TRAIN_NLL_ROWS], self.train.labels[:_TRAIN_NLL_ROWS]
        )
        return batches(head, batch_size=self.config.batch, pad_id=self.pad_id)

    def retain_sources(self) -> list[RetainSource]:
        return [self.retain] + ([self.self_retain] if self.self_retain is not None else [])


def _load_data(config: TrialConfig, where: _Where, tokenizer) -> _Data:
    from sweeps.datacheck.clean import clean_task
    from sweeps.trial.data import load_examples, tokenize_examples
    from sweeps.trial.demo import demo_cache_root

    sources = where.sources
    cache = demo_cache_root() / "tokenized"
    train_examples, bad = load_examples(sources.train, tokenizer, bad_rows=config.bad_rows)
    eval_examples = None
    if sources.eval is not None:
        eval_examples, bad_eval = load_examples(sources.eval, tokenizer, bad_rows=config.bad_rows)
        bad += bad_eval
    # Leaked eval rows dropped (or refused), or a split that keeps copies on one side.
    cleaned = clean_task(
        train_examples,
        eval_examples,
        fraction=config.eval_fraction,
        leakage=config.leakage,
        train_path=sources.train,
        eval_path=sources.eval,
        retain_path=sources.retain,
    )
    train_examples, eval_examples = cleaned.train, cleaned.eval
    length = config.max_seq_len
    train = tokenize_examples(train_examples, tokenizer, max_seq_len=length, cache_dir=cache)
    evaluation = tokenize_examples(eval_examples, tokenizer, max_seq_len=length, cache_dir=cache)
    if not train.input_ids:
        raise TrialError("no training example fits in max_seq_len", "Raise max_seq_len.")
    retain, self_retain = _retain_sources(config, where, tokenizer)
    bad += getattr(retain, "bad_rows", [])
    fingerprint = hashlib.sha256(json.dumps(evaluation.input_ids).encode()).hexdigest()
    return _Data(
        train,
        evaluation,
        eval_examples,
        retain,
        self_retain,
        tokenizer.pad_token_id,
        config,
        bad,
        fingerprint,
        cleaned.provenance,
    )


def _retain_sources(
    config: TrialConfig, where: _Where, tokenizer
) -> tuple[RetainSource, RetainSource | None]:
    """The trial's retain source, and on the demo its self-samples as well."""
    from sweeps.trial.retain import retain_source_for

    def source_for(kind: Literal["auto", "self-samples"]) -> RetainSource:
        return retain_source_for(
            config,
            tokenizer=tokenizer,
            device=where.device,
            precision=where.precision,
            model_path=where.sources.model,
            source=kind,
        )

    retain = source_for("auto")
    return retain, (source_for("self-samples") if retain.name == "demo" else None)


def _exact_match(model, tokenizer, data: _Data, config: TrialConfig) -> float:
    from sweeps.trial.data import text_limit
    from sweeps.trial.metrics import exact_match, greedy_continuations

    examples = data.eval_examples
    limit = text_limit(tokenizer, config.max_seq_len)  # a 49 MB prompt is not tokenized whole
    said = greedy_continuations(
        model,
        tokenizer,
        [e.prompt[:limit] for e in examples],
        max_new_tokens=config.max_new_tokens,
        batch=max(config.batch, 16),
        add_special_tokens=not examples[0].templated,
    )
    return exact_match(said, [e.completion for e in examples])


# --- the model and the method -------------------------------------------------------------------


def _load_model(path: str, config: TrialConfig, device, precision: str, *, quantized: bool):
    import torch
    from transformers import AutoModelForCausalLM

    # Full and freeze train fp32 master weights under autocast; adapter methods keep the
    # frozen base in the compute precision, which is where their memory saving comes from.
    weights = torch.float32 if config.method in ("full", "freeze") else _dtype(precision)
    kwargs: dict[str, Any] = {"dtype": weights}
    if quantized:
        from planner.methods import nf4_quantization_config

        compute = torch.float32 if precision == "fp32" else _dtype(precision)
        kwargs["quantization_config"] = nf4_quantization_config(compute)
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise TrialError(
            f"cannot load model {path!r}: {error}",
            'Give a local model folder, a Hub id, or model = "demo".',
        ) from None
    if not quantized:
        model.to(device)
    elif device.type == "cpu":
        # bitsandbytes 0.50 repacks 4-bit weights for AVX512-BF16 the first time a layer runs
        # in eval mode without gradients, and never packs them back; later training steps
        # then go through a kernel with no autograd (silently wrong gradients). The trial
        # evaluates between steps, so keep the training layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    return model


def _apply_method(model, config: TrialConfig):
    """Make exactly the parameters the method trains trainable; return the model to train.

    The method goes through ``planner.methods`` as the step simulator's ``trial`` recipe
    runs it (the top ``freeze_trainable_layers`` layers; QLoRA through peft's k-bit
    preparation; checkpointing non-reentrant); bad settings are a ``TrialError``."""
    from planner.errors import InvalidSpecError
    from planner.methods import MethodSetup, apply_method, decoder_layers
    from sweeps.trial.prediction import trainer_method

    # The precision changes what the planner predicts, not how a method is applied.
    spec = trainer_method(config, precision="fp32")
    setup = MethodSetup.from_spec(spec, recipe="trial", use_rslora=config.use_rslora)
    try:
        if config.method == "freeze":
            layers = len(decoder_layers(model))
            if config.freeze_trainable_layers > layers:
                raise TrialError(
                    f"freeze_trainable_layers={config.freeze_trainable_layers} but the model "
                    f"has {layers} layers",
                    f"Use at most {layers}.",
                )
        return apply_method(model, setup)
    except InvalidSpecError as error:
        raise TrialError(error.message, error.hint) from None


def _optimizer(config: TrialConfig, parameters: list):
    from planner.errors import InvalidSpecError
    from planner.methods import build_optimizer

    try:
        return build_optimizer(
            parameters, config.optimizer, lr=config.lr, weight_decay=config.weight_decay
        )
    except InvalidSpecError as error:
        raise TrialError(error.message, error.hint) from None


# --- measuring ----------------------------------------------------------------------------------


def _memory_baseline_gb() -> float:
    """Start measuring the trial's memory: the resident set now, with the peak reset to it.

    Linux resets the peak resident set ("VmHWM", ``ru_maxrss``) when 5 is written to
    ``/proc/self/clear_refs`` (proc(5)), so a process that ran something bigger before (a test
    session, an earlier trial) does not hide this trial's peak. Elsewhere the peak so far is
    both the baseline and the starting peak."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):
        return _process_peak_gb()


def _process_peak_gb() -> float:
    """The process's peak resident set size, libraries included."""
    import resource

    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _peak_gb(device, baseline_gb: float = 0.0) -> tuple[float, float | None]:
    """(peak, reserved) in GB: CUDA max allocated/reserved, or on CPU the peak resident set
    above ``baseline_gb``, the resident set after imports and before any data or model was
    loaded. The planner predicts the trial's own memory (weights, gradients, optimizer state,
    activations), not the ~0.5 GB of torch and libraries every process carries, so only the
    growth is comparable with it."""
    if device.type == "cuda":
        import torch

        return (
            torch.cuda.max_memory_allocated(device) / 1e9,
            torch.cuda.max_memory_reserved(device) / 1e9,
        )
    return max(0.0, _process_peak_gb() - baseline_gb), None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def _planner_prediction(
    config: TrialConfig, where: _Where, data: _Data, epochs: float
) -> tuple[Predicted, Any]:
    """The planner's estimate of this same run, on the GPU it is priced as (the detected one
    by default); empty when it cannot model the model."""
    model_path, precision, price = where.sources.model, where.precision, where.price
    try:
        from planner import Workload, estimate, resolve_model
        from sweeps.trial.prediction import calibrated_prediction, planner_method

        longest = max(len(ids) for ids in data.train.input_ids)
        arch = resolve_model(model_path)
        from planner import state_bytes
        from sweeps.trial.prediction import rank_batch

        workload = Workload(
            seq_len=config.max_seq_len if config.packing else longest,
            batch=rank_batch(config),
            grad_accum=config.grad_accum,
            dataset_tokens=max(1, data.train.tokens),
            epochs=epochs,
            packing=config.packing,
        )
        method = planner_method(config, precision=precision)
        found = estimate(
            arch,
            workload,
            method,
            gpu=price.gpu_id,
            provider=price.provider if price.gpu_id is not None else None,
        )
        corrected, calibration = calibrated_prediction(found, config.calibration)
    except Exception:  # noqa: BLE001 - a prediction is optional; the measurement is not
        return Predicted(), None
    dollars = float(corrected.dollars) if corrected.dollars is not None else None
    if dollars is None and corrected.hours is not None and found.gpu is None:
        # a CPU run timed by a calibrated throughput: its hours at the trial's own price
        dollars = corrected.hours * price.usd_per_hour
    predicted = Predicted(
        peak_gb=corrected.peak_gb,
        hours=corrected.hours,
        dollars=dollars,
        calibration=calibration,
        flops=found.flops,
        seq_len=found.workload.seq_len,
        breakdown=dict(found.breakdown),
        states_gb=sum(state_bytes(arch, method).values()) / 1e9,
    )
    return predicted, found


def _mfu(predicted_estimate, tokens_per_s: float, device, config: TrialConfig) -> float | None:
    """Model FLOPs utilisation (PaLM, Chowdhery et al. 2022, App. B): achieved training
    FLOP/s over the GPU's dense 16-bit peak; the FLOPs per token are the planner's."""
    if device.type != "cuda" or predicted_estimate is None:
        return None
    try:
        import torch

        from pricing import load_catalog

        catalog = load_catalog()
        gpu = (
            catalog.gpu(config.gpu)
            if config.gpu
            else _catalog_gpu(catalog, torch.cuda.get_device_name(device))
        )
        peak = gpu.matmul_tflops * 1e12
    except Exception:  # noqa: BLE001 - an unknown GPU only means no MFU
        return None
    per_token = predicted_estimate.flops / max(1, predicted_estimate.workload.tokens)
    return per_token * tokens_per_s / (peak * config.gpus)  # a sharded trial: all its GPUs


def _catalog_gpu(catalog, device_name: str):
    """The catalogue GPU of a CUDA device name: without the vendor, then without trailing
    memory words, since ``NVIDIA H100 80GB HBM3`` is how an H100 SXM names itself."""
    import re

    words = device_name.removeprefix("NVIDIA ").split()
    while words:
        try:
            return catalog.gpu(" ".join(words))
        except UserError:
            if not re.fullmatch(r"\d+GB|HBM\d*e?", words.pop(), flags=re.IGNORECASE):
                raise
    raise UserError(f"no catalogue GPU for the device {device_name!r}")


# --- the command that reproduces a trial ------------------------------------------------------

_FLAGS = {
    "method": "--method",
    "rank": "--rank",
    "alpha": "--alpha",
    "lr": "--lr",
    "targets": "--targets",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "batch": "--batch",
    "seed": "--seed",
    "device": "--device",
    "gpus": "--gpus",
    "sharding": "--sharding",
    "run_dir": "--run-dir",
}


_RUNG_FIELDS = ("rung_min_steps", "rung_eta", "rung_retain_rows")
_SWEEP_ONLY = ("study", "trial_number", "calibration", *_RUNG_FIELDS)
"""Settings only a sweep gives a trial: the command that reruns it leaves them out, and the
saved spec its rungs (rerun alone, a trial runs to its last step)."""


def trial_command(config: TrialConfig, spec_path: Path | None = None) -> str:
    """``paretune trial ...`` with flags when they say it all, else ``--spec`` the saved TOML."""
    defaults = TrialConfig()
    changed = {
        name
        for name in TrialConfig.model_fields
        if getattr(config, name) != getattr(defaults, name) and name not in _SWEEP_ONLY
    }
    needs_spec = bool(changed - set(_FLAGS) - {"model", "train", "eval"})
    if needs_spec and spec_path is not None:
        return f"paretune trial --spec {spec_path}"
    words = ["paretune", "trial"]
    if config.model == "demo" and config.train is None:
        words.append("--demo")
    for name, flag in (("model", "--model"), ("train", "--train"), ("eval", "--eval")):
        if name in changed:
            words += [flag, str(getattr(config, name))]
    for name, flag in _FLAGS.items():
        if name in changed or name in ("method", "lr"):
            words += [flag, str(getattr(config, name))]
    return " ".join(words)


def _write_spec(config: TrialConfig, path: Path) -> None:
    import tomli_w

    values = {
        k: v
        for k, v in config.model_dump(mode="json").items()
        if v is not None and k not in _RUNG_FIELDS
    }
    path.write_text("# paretune trial --spec " + path.name + "\n" + tomli_w.dumps(values))


# --- the trial --------------------------------------------------------------------------------


def run_trial(
    config: TrialConfig,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    on_rung: Callable[[RungReport], bool] | None = None,
) -> TrialResult:
    """Fine-tune, evaluate and measure one configuration; raises ``UserError`` on bad input.

    Each step below is one function, and measures what it does: loading time up to the
    trained model, the train loop's time, tokens and memory peaks, the evaluation's time.

    With ``on_rung`` and ``config.rung_min_steps``, the trial reports at each rung of the
    sweep's early stopping (:func:`sweeps.early_stopping.rung_steps`) and stops there when
    ``on_rung`` returns False: it ends ``pruned``, with the rung's eval NLL, its cost so far and
    no artifact (the final evaluation is skipped; that is what stopping saves).
    """
    started = time.perf_counter()
    where = _setup_where(config)
    tokenizer, data = _setup_data(config, where)
    model, base = _setup_model(config, where, tokenizer, data)
    load_s = time.perf_counter() - started
    optimization = _setup_optimizer_and_schedule(config, model, data, where)
    rung = _rung_reporter(config, where, data, started, load_s, optimization.total_steps, on_rung)
    trained = _train(model, data, config, where, optimization, on_step, rung)
    if trained.stopped_at_step is not None:
        return _stopped_result(
            config, where, data, model, optimization, trained, base, load_s, started
        )
    return _finish(
        config, where, tokenizer, data, model, base, optimization, trained, started, load_s
    )


def _finish(
    config: TrialConfig,
    where: _Where,
    tokenizer,
    data: _Data,
    model,
    base: dict[str, Any],
    optimization: _Optimization,
    trained: _Trained,
    started: float,
    load_s: float,
) -> TrialResult:
    """Steps 6 to 8 on the trained (whole) model: evaluate, save, assemble the result."""
    evaluation = _evaluate(model, tokenizer, data, config, where, base, trained)
    saved = _save_run(model, tokenizer, config)
    wall_s = time.perf_counter() - started
    result = _assemble_result(
        config, where, data, model, optimization, trained, evaluation, saved, load_s, wall_s
    )
    lost = saved.lost or _saving("the model card", saved.folder, _write_card, saved.folder, result)
    if lost is not None:  # measured all the same: the metrics are kept, the trial counts
        return result.model_copy(
            update={"state": Outcome.ARTIFACT_LOST, "error": lost, "artifact": None}
        )
    return result


# 1. Where it runs and what an hour of it costs (bad ids fail here, before any work).


@dataclass(frozen=True)
class _Where:
    device: Any
    precision: str  # bf16 | fp16 | fp32, as resolved for the device
    baseline_gb: float  # CPU: the resident set before any data or model was loaded
    price: _Price
    sources: _Sources
    ranks: Any = None  # a sharded trial's sweeps.trial.sharded.Ranks; None: one process

    def autocast(self):
        """Mixed precision for the forward passes (training and evaluation alike)."""
        import torch

        return torch.autocast(
            self.device.type, dtype=_dtype(self.precision), enabled=self.precision != "fp32"
        )


def _setup_where(config: TrialConfig) -> _Where:
    device = _device(config.device)
    precision = _precision(config, device)
    # The libraries every trial loads, imported before the memory baseline is taken, so
    # that a CPU trial's peak is its own memory.
    import peft  # noqa: F401
    from transformers import AutoTokenizer, get_scheduler  # noqa: F401

    import sweeps.trial.metrics  # noqa: F401

    baseline_gb = _memory_baseline_gb() if device.type == "cpu" else 0.0
    price = _price(config, device)
    sources = _sources(config)
    _seed_everything(config.seed)
    return _Where(device, precision, baseline_gb, price, sources)


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# 2. Tokenizer and data.


def _setup_data(config: TrialConfig, where: _Where) -> tuple[Any, _Data]:
    """The tokenizer, the task's data and the retain sources (nothing is scored yet)."""
    from transformers import AutoTokenizer

    model = where.sources.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise TrialError(f"cannot load the tokenizer of {model!r}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, _load_data(config, where, tokenizer)


# 3. The base model's scores and retain data, then the model to train with its method applied.


def _setup_model(
    config: TrialConfig, where: _Where, tokenizer, data: _Data
) -> tuple[Any, dict[str, Any]]:
    """(model to train, the base model's scores). The base is scored once per (model,
    data, precision) and then read from disk; the device's peaks are reset afterwards."""
    import torch

    base, model = _base_scores(config, where, tokenizer, data)
    if model is None:
        model = _load_model(
            where.sources.model,
            config,
            where.device,
            where.precision,
            quantized=config.method == "qlora",
        )
    _seed_everything(config.seed)
    model = _apply_method(model, config)
    model.config.use_cache = False
    if where.device.type == "cuda":
        # So the trial's peaks are its own: what scoring the base, loading and quantizing
        # freed (and what only reference cycles still hold) goes back to the device
        # before the peaks are reset; the cached blocks would count as reserved.
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(where.device)
    return model, base


def _base_scores(config: TrialConfig, where: _Where, tokenizer, data: _Data):
    """(the base model's scores on the task, the model that scored them when the trial can
    train it as loaded, else None). The retain sources whose base data is not cached are
    prepared with the same base model (self-samples: sampled from it, then scored)."""
    base_key = [
        _BASE_METRICS_VERSION,
        _model_fingerprint(where.sources.model),
        data.fingerprint,
        where.precision,
        where.device.type,
        config.max_new_tokens,
        config.batch,
    ]
    base_folder = _base_cache_dir(base_key)
    base = _load_base_scores(base_folder)
    unprepared = [source for source in data.retain_sources() if not source.ready()]
    if base is not None and not unprepared:
        return base, None
    # The base is always the unquantized model, so QLoRA's forgetting includes the
    # damage of quantization itself.
    scorer = _load_model(
        where.sources.model,
        config.model_copy(update={"method": "lora"}),
        where.device,
        where.precision,
        quantized=False,
    )
    if base is None:
        base = _score_base(scorer, tokenizer, data, config)
        _save_base_scores(base_folder, base)
    for source in unprepared:
        source.prepare(scorer)
    if config.method in ("lora", "dora"):
        return base, scorer
    del scorer
    return base, None


# 4. The optimizer and the schedule: epochs or max_steps, with gradient accumulation.


@dataclass(frozen=True)
class _Optimization:
    trainable: list
    optimizer: Any
    scheduler: Any
    scaler: Any  # fp16 loss scaling, else None
    steps_per_epoch: int
    total_steps: int
    loss: str = "standard"  # TrialConfig.loss: how the step computes cross-entropy


def _setup_optimizer_and_schedule(
    config: TrialConfig, model, data: _Data, where: _Where
) -> _Optimization:
    import torch
    from transformers import get_scheduler

    rows = (
        len(data.train.input_ids)
        if not config.packing
        else math.ceil(data.train.tokens / config.max_seq_len)
    )
    micro_per_epoch = math.ceil(rows / config.batch)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(config, trainable)
    schedule = "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule
    scheduler = get_scheduler(
        schedule,
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    scaler = torch.amp.GradScaler("cuda") if where.precision == "fp16" else None
    return _Optimization(
        trainable, optimizer, scheduler, scaler, steps_per_epoch, total_steps, config.loss
    )


# 5. The training loop: one optimizer step per `grad_accum` micro-batches, each logged.


@dataclass(frozen=True)
class _Trained:
    steps: list[StepLog]
    train_s: float  # optimizer steps only, evaluation excluded
    tokens: int
    best_nll: float
    best_step: int | None
    peak_gb: float
    reserved_gb: float | None
    states_gb: float | None = None  # parameters + gradients + optimizer states after a step
    ranks: RankMemory | None = None  # a sharded trial: each rank's figures
    stopped_at_step: int | None = None  # the rung where the sweep's early stopping stopped it


@dataclass(frozen=True)
class RankMemory:
    """A sharded trial's memory, one entry per rank (rank 0 first), in GB."""

    peak_gb: list[float]
    states_gb: list[float]
    reserved_gb: list[float | None]


def _state_bytes(model, optimizer) -> int:
    """Bytes the parameters, their gradients and the optimizer's states hold in this process:
    on a sharded model, this rank's local shards (``DTensor.to_local``)."""
    import torch

    def local(tensor) -> Any:
        return tensor.to_local() if hasattr(tensor, "to_local") else tensor

    def size(tensor) -> int:
        tensor = local(tensor)
        return tensor.numel() * tensor.element_size()

    total, seen = 0, set()
    for parameter in model.parameters():
        if id(parameter) in seen:  # tied weights count once
            continue
        seen.add(id(parameter))
        total += size(parameter)
        if parameter.grad is not None:
            total += size(parameter.grad)
    for state in optimizer.state.values():
        total += sum(size(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total


_Rung = Callable[[Any, int, float], bool]
"""At a rung: (model, step, eval NLL) -> whether the trial goes on."""


def _train(
    model,
    data: _Data,
    config: TrialConfig,
    where: _Where,
    optimization: _Optimization,
    on_step: Callable[[StepLog], None] | None,
    rung: _Rung | None = None,
) -> _Trained:
    import torch

    from sweeps.early_stopping import rung_steps
    from sweeps.trial.metrics import completion_nll

    rungs = (
        set(rung_steps(config.rung_min_steps, config.rung_eta, optimization.total_steps))
        if rung is not None and config.rung_min_steps is not None
        else set()
    )
    stopped_at_step = None
    steps: list[StepLog] = []
    states: list[int] = []
    best = _BestEval(keep_weights=config.early_stopping)
    tokens_trained, train_s = 0, 0.0
    micro_batches = _cycle_batches(data, config)
    eval_every = eval_interval(optimization.total_steps, config.eval_every)
    model.train()
    for step in range(1, optimization.total_steps + 1):
        step_started = time.perf_counter()
        window = [next(micro_batches) for _ in range(config.grad_accum)]
        step_loss, step_tokens, lr = _optimizer_step(
            model, window, where, optimization, states if step == 1 else None
        )
        if where.device.type == "cuda":
            torch.cuda.synchronize(where.device)
        elapsed = time.perf_counter() - step_started
        train_s += elapsed
        tokens_trained += step_tokens

        eval_nll = None
        if step % eval_every == 0 or step == optimization.total_steps or step in rungs:
            with where.autocast():
                eval_nll = completion_nll(model, data.eval_batches())[0]
            model.train()
            best.update(step, eval_nll, model)
        log = StepLog(
            step=step,
            epoch=round(window[-1][0], 4),
            loss=step_loss,
            lr=lr,
            tokens_per_s=step_tokens / elapsed if elapsed > 0 else 0.0,
            peak_gb=round(_peak_gb(where.device, where.baseline_gb)[0], 4),
            eval_nll=eval_nll,
        )
        steps.append(log)
        if on_step is not None:
            on_step(log)
        if step in rungs and rung is not None and eval_nll is not None:
            if not rung(model, step, eval_nll):
                stopped_at_step = step
                break
            model.train()
        if config.early_stopping and best.evals_since >= config.early_stopping_patience:
            break
    if stopped_at_step is None:
        best.restore(model, last_eval_nll=steps[-1].eval_nll)
    model.eval()
    peak_gb, reserved_gb = _peak_gb(where.device, where.baseline_gb)
    return _Trained(
        steps,
        train_s,
        tokens_trained,
        best.nll,
        best.step,
        peak_gb,
        reserved_gb,
        states_gb=states[0] / 1e9 if states else None,
        stopped_at_step=stopped_at_step,
    )


def _rung_reporter(
    config: TrialConfig,
    where: _Where,
    data: _Data,
    started: float,
    load_s: float,
    total_steps: int,
    on_rung: Callable[[RungReport], bool] | None,
) -> _Rung | None:
    """What the training loop calls at a rung: the rung's report (eval NLL, the forgetting
    measures on the first ``rung_retain_rows`` rows of the retain source, the cost so far and
    the cost at the last step at the pace so far) to ``on_rung``, whose answer says whether
    the trial goes on. None without rungs."""
    if on_rung is None or config.rung_min_steps is None:
        return None

    def report(model, step: int, eval_nll: float) -> bool:
        scores = data.retain.score_subset(model, config.rung_retain_rows)
        wall_s = time.perf_counter() - started
        # Loading is paid once; every step so far (with its evaluations and rung scoring) is
        # the pace of the steps left. The final evaluation is not in it: it is the same for
        # every trial of a sweep, so it moves no trial against another.
        projected_s = wall_s + (total_steps - step) * max(wall_s - load_s, 0.0) / step
        return on_rung(
            RungReport(
                step=step,
                eval_nll=eval_nll,
                retain_delta_nll=None if scores is None else scores.retain_delta_nll,
                retain_kl=None if scores is None else scores.retain_kl,
                retain_rows=0 if scores is None else scores.rows,
                wall_s=wall_s,
                dollars=wall_s / 3600 * where.price.usd_per_hour,
                max_steps=total_steps,
                projected_wall_s=projected_s,
                projected_dollars=projected_s / 3600 * where.price.usd_per_hour,
            )
        )

    return report


def _stopped_result(
    config: TrialConfig,
    where: _Where,
    data: _Data,
    model,
    optimization: _Optimization,
    trained: _Trained,
    base: dict[str, Any],
    load_s: float,
    started: float,
) -> TrialResult:
    """A trial stopped at a rung: ``pruned``, with the rung's eval NLL as its quality, its
    steps, time and cost so far, and no final evaluation, forgetting or artifact."""
    last_eval = next(s.eval_nll for s in reversed(trained.steps) if s.eval_nll is not None)
    evaluation = _Evaluation(
        Quality(
            eval_nll=last_eval,
            base_eval_nll=base["eval_nll"],
            base_exact_match=base["exact_match"],
            best_step=trained.best_step,
        ),
        Forgetting(retain_source=data.retain.name),
        0.0,
    )
    saved = _Saved(_run_dir(config), trial_command(config), None)
    wall_s = time.perf_counter() - started
    result = _assemble_result(
        config, where, data, model, optimization, trained, evaluation, saved, load_s, wall_s
    )
    return result.model_copy(
        update={"state": Outcome.PRUNED, "stopped_at_step": trained.stopped_at_step}
    )


def _optimizer_step(
    model, window: list, where: _Where, optimization: _Optimization, states: list[int] | None = None
) -> tuple[float, int, float]:
    """Forward and backward over the window's micro-batches, then one optimizer and
    scheduler step; returns (loss, tokens, learning rate of the step). ``states``, when
    given, gets the bytes the parameters, gradients and optimizer states hold once the
    step is taken (before the gradients are freed).

    On a sharded trial each rank runs its share of every micro-batch's rows
    (:func:`sweeps.trial.sharded.rank_rows`) and FSDP averages the gradients over the
    ranks, so the loss is scaled by the ranks' count: the step is the one-process step."""
    import torch

    from planner.methods import token_loss_sum

    scaler, optimizer = optimization.scaler, optimization.optimizer
    # Token-weighted mean over the whole accumulation window, not a mean of means.
    scored = sum(int((b["labels"][:, 1:] != -100).sum()) for _, b in window)
    step_loss, step_tokens = 0.0, 0
    ranks = where.ranks
    for _, full_batch in window:
        step_tokens += int(full_batch["attention_mask"].sum())
        batch = full_batch if ranks is None else ranks.rows(full_batch)
        input_ids = batch["input_ids"].to(where.device)
        labels = batch["labels"][:, 1:].to(where.device)
        with where.autocast():
            # The loss as the planned framework computes it (TrialConfig.loss); the logits
            # it returns stay alive until the next micro-batch, as they would in a loop.
            loss_sum, _logits = token_loss_sum(
                model,
                input_ids,
                batch["attention_mask"].to(where.device),
                labels,
                loss=optimization.loss,
            )
        loss = loss_sum / max(1, scored)
        scaled = loss if ranks is None else loss * ranks.world
        (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += float(loss.detach())
    if ranks is not None:
        step_loss = ranks.sum(step_loss)
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(optimization.trainable, 1.0)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if states is not None:
        states.append(_state_bytes(model, optimizer))
    lr = optimization.scheduler.get_last_lr()[0]
    optimization.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, step_tokens, lr


def _cycle_batches(data: _Data, config: TrialConfig):
    """Micro-batches forever, reshuffled each epoch; yields (epoch_float, batch)."""
    from sweeps.trial.data import batches

    epoch = 0
    while True:
        chunk = list(
            batches(
                data.train,
                batch_size=config.batch,
                pad_id=data.pad_id,
                packing=config.packing,
                max_seq_len=config.max_seq_len,
                shuffle_seed=config.seed * 10_007 + epoch,
            )
        )
        for index, batch in enumerate(chunk):
            yield epoch + (index + 1) / len(chunk), batch
        epoch += 1


@dataclass
class _BestEval:
    """The best eval NLL seen so far, its step, and with early stopping the trainable
    weights at that step (on the CPU), to be put back at the end."""

    keep_weights: bool
    nll: float = math.inf
    step: int | None = None
    weights: dict[str, Any] | None = None
    evals_since: int = 0

    def update(self, step: int, eval_nll: float, model) -> None:
        if eval_nll >= self.nll:
            self.evals_since += 1
            return
        self.nll, self.step, self.evals_since = eval_nll, step, 0
        if self.keep_weights:
            self.weights = {
                n: p.detach().to("cpu", copy=True)
                for n, p in model.named_parameters()
                if p.requires_grad
            }

    def restore(self, model, *, last_eval_nll: float | None) -> None:
        """The kept weights back into ``model``, unless the last eval was the best."""
        import torch

        if self.weights is None or last_eval_nll == self.nll:
            return
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.weights.items():
                named[name].copy_(value.to(named[name].device))


# 6. Quality and forgetting, against the cached base scores.


@dataclass(frozen=True)
class _Evaluation:
    quality: Quality
    forgetting: Forgetting
    eval_s: float


def _evaluate(
    model,
    tokenizer,
    data: _Data,
    config: TrialConfig,
    where: _Where,
    base: dict[str, Any],
    trained: _Trained,
) -> _Evaluation:
    """Quality on the task, and forgetting on the retain source(s), against the base."""
    started = time.perf_counter()
    with where.autocast():
        quality = _quality(model, tokenizer, data, config, base, trained)
    forgetting = _forgetting(model, data)  # each source runs under the trial's autocast
    return _Evaluation(quality, forgetting, time.perf_counter() - started)


def _quality(
    model, tokenizer, data: _Data, config: TrialConfig, base: dict[str, Any], trained: _Trained
) -> Quality:
    from sweeps.trial.metrics import completion_nll

    eval_nll = completion_nll(model, data.eval_batches())[0]
    train_nll = completion_nll(model, data.train_score_batches())[0]
    return Quality(
        eval_nll=eval_nll,
        base_eval_nll=base["eval_nll"],
        exact_match=_exact_match(model, tokenizer, data, config),
        base_exact_match=base["exact_match"],
        train_nll=train_nll,
        overfit_gap=eval_nll - min(trained.best_nll, eval_nll),
        generalization_gap=eval_nll - train_nll,
        best_step=trained.best_step,
    )


def _forgetting(model, data: _Data) -> Forgetting:
    scores = data.retain.score(model)
    compared: dict[str, float | None] = {}
    if data.self_retain is not None:
        own = data.self_retain.score(model)
        compared = {"self_retain_delta_nll": own.retain_delta_nll, "self_retain_kl": own.retain_kl}
    return Forgetting(**scores.forgetting_fields(), retain_source=scores.source, **compared)


# 7. Artifacts: the adapter (or the trained weights), the spec and a model card.


@dataclass(frozen=True)
class _Saved:
    folder: Path
    command: str
    artifact: Path | None
    lost: str | None = None  # why the artifacts could not be saved (the trial is still measured)


def _save_run(model, tokenizer, config: TrialConfig) -> _Saved:
    """The trial's folder: its spec, the command that reruns it, the artifacts. A write that
    fails (a full disk, a read-only folder) does not throw the measurements away: the trial
    ends as ``artifact_lost`` with the reason."""
    folder = _run_dir(config)
    spec_path = folder / "trial.toml"
    command = trial_command(config, spec_path)

    def save() -> Path | None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_spec(config, spec_path)
        if config.save == "none":
            return None
        artifact = _save_artifacts(model, tokenizer, config, folder)
        # transformers' save_pretrained only logs an error for a path that is a file.
        if not artifact.is_dir() or not any(artifact.iterdir()):
            raise FileExistsError(f"{artifact} is not a folder holding the saved weights")
        return artifact

    saved: list[Path | None] = []
    lost = _saving("the artifacts", folder, lambda: saved.append(save()))
    return _Saved(folder, command, saved[0] if saved else None, lost)


def _saving(what: str, folder: Path, write: Callable[..., Any], *args: Any) -> str | None:
    """Run ``write(*args)``; why it failed, or None. Writers raise many kinds on a full disk or
    a read-only folder (OSError, safetensors' SafetensorError, torch's RuntimeError)."""
    try:
        write(*args)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any failed write loses the files, not the trial
        first = str(error).splitlines()[0] if str(error) else ""
        return f"{what} could not be saved in {folder}: {type(error).__name__}: {first}"
    return None


def _run_dir(config: TrialConfig) -> Path:
    name = (
        f"trial-{config.trial_number:04d}"
        if config.trial_number is not None
        else f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    return Path(config.run_dir) / (config.study or "trials") / name


# 8. The result: measurements, dollars and the planner's prediction for the same run.


def _assemble_result(
    config: TrialConfig,
    where: _Where,
    data: _Data,
    model,
    optimization: _Optimization,
    trained: _Trained,
    evaluation: _Evaluation,
    saved: _Saved,
    load_s: float,
    wall_s: float,
) -> TrialResult:
    tokens_per_s = trained.tokens / trained.train_s if trained.train_s > 0 else 0.0
    epochs_run = len(trained.steps) / optimization.steps_per_epoch
    predicted, estimate = _planner_prediction(config, where, data, epochs_run)
    hardware = _hardware(config, where)
    per_rank: dict[str, Any] = {}
    if trained.ranks is not None:
        peaks, states = trained.ranks.peak_gb, trained.ranks.states_gb
        reserved = [r for r in trained.ranks.reserved_gb if r is not None]
        per_rank = {
            "peak_gb_mean": sum(peaks) / len(peaks),
            "states_gb_mean": sum(states) / len(states),
            "rank_peak_gb": peaks,
            "rank_states_gb": states,
        }
        trained = replace(
            trained,
            peak_gb=max(peaks),
            states_gb=max(states),
            reserved_gb=max(reserved) if reserved else None,
        )
    measured = Measured(
        **per_rank,
        states_gb=trained.states_gb,
        peak_gb=trained.peak_gb,
        peak_reserved_gb=trained.reserved_gb,
        process_peak_gb=_process_peak_gb() if where.device.type == "cpu" else None,
        wall_s=wall_s,
        load_s=load_s,
        train_s=trained.train_s,
        eval_s=evaluation.eval_s,
        tokens=trained.tokens,
        tokens_per_s=tokens_per_s,
        mfu=_mfu(estimate, tokens_per_s, where.device, config),
        steps=len(trained.steps),
    )
    return TrialResult(
        state="complete",
        method=config.method,
        params=_params(config, where, data, model),
        quality=evaluation.quality,
        forgetting=evaluation.forgetting,
        measured=measured,
        predicted=predicted,
        dollars=wall_s / 3600 * where.price.usd_per_hour * hardware.devices,
        hardware=hardware,
        artifact=str(saved.artifact) if saved.artifact else None,
        steps=trained.steps,
        command=saved.command,
        config=config,
        data=data.provenance,
    )


def _params(config: TrialConfig, where: _Where, data: _Data, model) -> dict[str, Any]:
    return {
        "rank": config.rank,
        "alpha": config.alpha,
        "lr": config.lr,
        "targets": config.targets,
        "epochs": config.epochs,
        "max_steps": config.max_steps,
        "batch": config.batch,
        "grad_accum": config.grad_accum,
        "use_rslora": config.use_rslora,
        "dropout": config.dropout,
        "seed": config.seed,
        "precision": where.precision,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "bad_rows_skipped": len(data.bad_rows),
        "rows_cut": len(data.train.cut) + len(data.eval.cut),
        "first_row_cut": next(iter([*data.train.cut, *data.eval.cut]), None),
    }


def _hardware(config: TrialConfig, where: _Where) -> Hardware:
    import torch

    device = where.device
    return Hardware(
        device=device.type,
        device_name=(
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
        ),
        # The ranks of a CPU trial share one machine, priced once.
        devices=config.gpus if device.type == "cuda" else 1,
        ranks=config.gpus,
        gpu=where.price.gpu_id,
        provider=where.price.provider,
        cpu_instance=where.price.cpu_instance,
        usd_per_hour=where.price.usd_per_hour,
        versions=_versions(),
    )


def _save_artifacts(model, tokenizer, config: TrialConfig, folder: Path) -> Path:
    """The peft adapter; for full/freeze the trained weights (full: only with save='full')."""
    if config.save == "full":
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        return folder / "model"
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder / "adapter")
        return folder / "adapter"
    if config.method == "freeze":
        from safetensors.torch import save_file

        trained = {
            n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
        }
        (folder / "trained_layers").mkdir(exist_ok=True)
        save_file(trained, folder / "trained_layers" / "model.safetensors")
        return folder / "trained_layers"
    return folder  # full fine-tune with save='adapter': the weights are large; card only


def _write_card(folder: Path, result: TrialResult) -> None:
    from sweeps.datacheck.card import Card, card_lines, fmt

    config = result.config
    assert config is not None
    q, f, m = result.quality, result.forgetting, result.measured
    card = Card(
        model=config.model,
        method=config.method,
        summary=(
            f"method: {config.method}; rank {config.rank}, alpha {config.alpha}, "
            f"targets {config.targets}, lr {config.lr} ({config.lr_schedule}), "
            f"batch {config.batch} x {config.grad_accum}, seed {config.seed}",
            f"trainable parameters: {result.params.get('trainable_params')} of "
            f"{result.params.get('total_params')}",
            f"steps: {m.steps}; tokens: {m.tokens}; wall {fmt(m.wall_s, 1)} s "
            f"(train {fmt(m.train_s, 1)} s); peak {fmt(m.peak_gb, 3)} GB on "
            f"{result.hardware.device}",
        ),
        metrics=(
            ("eval NLL (completion tokens)", fmt(q.eval_nll), fmt(q.base_eval_nll)),
            ("exact match", fmt(q.exact_match, 3), fmt(q.base_exact_match, 3)),
            ("overfit gap", fmt(q.overfit_gap), ""),
            (f"retain ΔNLL ({f.retain_source})", fmt(f.retain_delta_nll), ""),
            (f"retain KL(base ‖ fine-tuned) ({f.retain_source})", fmt(f.retain_kl), ""),
            *(
                (
                    ("retain ΔNLL (self-samples)", fmt(f.self_retain_delta_nll), ""),
                    ("retain KL (self-samples)", fmt(f.self_retain_kl), ""),
                )
                if f.self_retain_delta_nll is not None
                else ()
            ),
            ("fact recall drop", fmt(f.fact_recall_drop, 3), fmt(f.base_fact_recall, 3)),
        ),
        data=result.data.model_dump() if result.data is not None else None,
        retain_source=f.retain_source,
        retain_delta_nll=f.retain_delta_nll,
        retain_kl=f.retain_kl,
        command=result.command,
    )
    lines = card_lines(card)
    (folder / "README.md").write_text("\n".join(lines))
    (folder / "result.json").write_text(result.model_dump_json(indent=2))
