"""Preflight: what a sweep needs, checked in seconds, before any trial is paid for.

    checks = preflight(spec)   # raises PreflightError naming every problem found
    for check in checks:
        print(check.line())    # ✓ model: ..., ✓ device: ..., ✓ dry step: in 2.1 s ...

``paretune sweep check SPEC`` runs it, and so do ``sweep run``, ``sweep worker`` and the
terminal UI's launch before they open the study. In order:

- **model**: its config and tokenizer load, the architecture builds on the meta device (no
  weights in memory) and a local folder's weight files have readable headers. A model's own
  Python code is never run (``trust_remote_code`` stays off, as in the trial).
- **device**: CUDA asked for (``device = "cuda"``, or GPU indices with ``device = "auto"``)
  is visible, and so is each GPU index listed.
- **data**: the train, eval, retain and fact-probe files parse with the trial's own loaders
  and hold usable rows; bad rows are named as ``file:line``. An ``lm-eval:`` retain is built
  as the trial builds it: lm-eval installed, every task known, its items read.
- **data check**: duplicates, leakage of eval (and retain) rows from train, personal data
  and format (:mod:`sweeps.datacheck`), summarised; eval rows leaking from train are a
  problem only with ``[data] leakage = "error"`` (``drop``, the default, drops them).
- **objectives**: each of the three objectives can be measured with this spec (forgetting
  needs a retain source); every trial can price itself as it will (the catalogue ids given
  exist; on CUDA the visible GPU is in the catalogue, unless a price is given).
- **calibration**: the calibration profile the gate and the trials correct the planner by
  (``[run] calibration``, default the active one) reads, and says what it was fitted from
  and its leave-one-out error, or that the planner's defaults are used; per method of the
  search, whether a group of the profile applies, and where the search space's first or
  last point lies far outside the runs the profile was fitted from (extrapolating).
- **storage**: the run folder and the results file can be written, an existing results file
  is a DuckDB database, and the Optuna storage is reachable (the journal's folder writable,
  or the PostgreSQL server answers).
- **tracking** (with ``[run] mlflow`` or ``wandb``): MLflow (or wandb) is installed and the
  tracking store can be written (a local store's folder, an existing database opens, a
  tracking server answers), so no trial is paid for before logging is known to work.
- **dry step**: the first point of the search space (:func:`first_point`) runs one optimizer
  step (forward, backward, optimizer) in the trial's own child process, on the first rows
  of each data file, with evaluation on those rows only.

Every check runs even when an earlier one fails, so one run lists every problem; the dry
step runs only when all the others pass. Nothing is written to the study or the results file
(no journal, no DuckDB file): the dry step works in a temporary folder, and only the usual
caches (tokenized data, base-model scores) are filled.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pricing.errors import UserError
from sweeps.spec import (
    ADAPTER_METHODS,
    LM_EVAL_RETAIN,
    Choice,
    Fixed,
    Param,
    SweepSpec,
    lr_param_name,
)
from sweeps.trial.types import TrialConfig

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.trial.retain_lm_eval import LmEvalRetain

__all__ = ["DRY_STEP_TIMEOUT_S", "Check", "PreflightError", "Problem", "first_point", "preflight"]

DRY_STEP_TIMEOUT_S = 1800.0
"""Time limit of the dry step when the spec sets no ``[run] timeout_s``."""

_RETAIN_METRICS = ("retain_delta_nll", "retain_kl", "retain_acc_drop")


@dataclass(frozen=True)
class Check:
    """A check that passed: its ``name`` and what it found."""

    name: str
    detail: str

    def line(self) -> str:
        return f"✓ {self.name}: {self.detail}"


@dataclass(frozen=True)
class Problem:
    """A check that failed: ``what`` is wrong and how to ``fix`` it."""

    check: str
    what: str
    fix: str | None = None

    def paragraph(self) -> str:
        return f"{self.check}: {self.what}" + (f"\n  {self.fix}" if self.fix else "")


class PreflightError(UserError):
    """The spec cannot run as given; ``problems`` lists each one (a paragraph apiece)."""

    title = "Preflight failed"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = (
            f"preflight found {count} problem{'s' if count != 1 else ''}; "
            "no trial was run and nothing was written."
        )
        super().__init__(
            "\n\n".join([head, *(p.paragraph() for p in self.problems)]),
            f"\nFix {'them' if count != 1 else 'it'}, then check again with "
            "`paretune sweep check SPEC` "
            "(`paretune sweep run --no-check` skips this check).",
        )


# ---------------------------------------------------------------- the entry point


def preflight(
    spec: SweepSpec,
    *,
    storage_url: str | None = None,
    gpus: Sequence[str] | None = None,
    dry_step: bool = True,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Check ``spec`` before a sweep; return the passed checks or raise :class:`PreflightError`.

    ``storage_url`` overrides the spec's Optuna storage (``sweep worker --storage``); ``gpus``
    are the GPU indices the trials are pinned to (default: the spec's ``[hardware] gpus``);
    the dry step runs on the first. ``on_check`` is called with each check as it passes.
    """
    report = _Report(on_check)
    context = _Context(
        spec,
        storage_url or spec.storage_url,
        list(gpus) if gpus is not None else [str(g) for g in spec.hardware.gpus],
    )
    try:
        context.config = spec.trial_config(first_point(spec))
    except ValueError as error:  # pydantic's ValidationError is one
        report.problem(
            "search", f"the first point of the search space is not a valid trial: {error}"
        )
        raise PreflightError(report.problems) from None
    report.run("model", _check_model, context)
    report.run("device", _check_device, context)
    report.run("data", _check_data, context)
    if context.train:
        report.run("data check", _check_data_quality, context)
    report.run("objectives", _check_objectives, context)
    if spec.framework != "hf":
        report.run("framework", _check_framework, context)
    report.run("calibration", _check_calibration, context)
    report.run("storage", _check_storage, context)
    if spec.run.mlflow or spec.run.wandb:
        report.run("tracking", _check_tracking, context)
    if dry_step and not report.problems:
        report.run("dry step", _dry_step, context)
    if report.problems:
        raise PreflightError(report.problems)
    return report.checks


def first_point(spec: SweepSpec) -> dict[str, Any]:
    """The search space's first point as Optuna parameters: the first method, the first value
    of each list and the low end of each range (what :meth:`SweepSpec.trial_config` takes)."""
    method = spec.search.methods[0]
    params: dict[str, Any] = {"method": method}
    for name, param in spec.search.params.items():
        if not isinstance(param, Fixed):
            params[name] = _first(param)
    if method in spec.search.lr_by_method:
        params[lr_param_name(spec, method)] = _first(spec.search.lr_by_method[method])
    return params


def last_point(spec: SweepSpec) -> dict[str, Any]:
    """The search space's other corner: the last method, the last value of each list and the
    high end of each range."""
    method = spec.search.methods[-1]
    params: dict[str, Any] = {"method": method}
    for name, param in spec.search.params.items():
        if not isinstance(param, Fixed):
            params[name] = _last(param)
    if method in spec.search.lr_by_method:
        params[lr_param_name(spec, method)] = _last(spec.search.lr_by_method[method])
    return params


def _last(param: Param) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return param.values[-1]
    return int(param.high) if param.integer else param.high


def _first(param: Param) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return param.values[0]
    return int(param.low) if param.integer else param.low


# ---------------------------------------------------------------- bookkeeping


@dataclass
class _Context:
    """The spec and what the checks found, for the checks after them."""

    spec: SweepSpec
    storage_url: str
    gpus: list[str]
    config: TrialConfig = field(default_factory=TrialConfig)  # the first point
    tokenizer: Any = None
    train: list[Any] = field(default_factory=list)  # parsed Examples, for the dry step's rows
    eval: list[Any] = field(default_factory=list)
    retain: list[str] = field(default_factory=list)


class _Report:
    def __init__(self, on_check: Callable[[Check], None] | None) -> None:
        self.on_check = on_check
        self.checks: list[Check] = []
        self.problems: list[Problem] = []

    def problem(self, check: str, what: str, fix: str | None = None) -> None:
        self.problems.append(Problem(check, what, fix))

    def run(self, name: str, check: Callable[[_Context, _Report], str], context: _Context) -> None:
        """Run one check; it passes when it reported no problem."""
        before = len(self.problems)
        detail = check(context, self)
        if len(self.problems) == before:
            passed = Check(name, detail)
            self.checks.append(passed)
            if self.on_check is not None:
                self.on_check(passed)


# ---------------------------------------------------------------- model


def _check_model(context: _Context, report: _Report) -> str:
    spec = context.spec
    if spec.model == "demo":
        from sweeps.trial.demo import ensure_demo

        path = str(ensure_demo().model_dir)
    else:
        path = spec.model
        if _is_local_path(path) and not Path(path).expanduser().is_dir():
            report.problem(
                "model",
                f"the model folder {path!r} does not exist.",
                "Give an existing folder with config.json, the tokenizer and the weights, "
                'a Hugging Face id (org/name), or model = "demo".',
            )
            return ""
        path = str(Path(path).expanduser()) if _is_local_path(path) else path
    loaded = _load_config_and_tokenizer(path, report)
    if loaded is None:
        return ""
    config, tokenizer = loaded
    if tokenizer.eos_token_id is None:
        report.problem(
            "model",
            f"the tokenizer of {spec.model!r} has no end-of-sequence token: trials end every "
            "completion with it and pad with it.",
            "Save the tokenizer with an eos_token set.",
        )
    context.tokenizer = tokenizer
    built = _meta_model(config, spec.model, report)
    weights = _check_weights(Path(path), report) if Path(path).is_dir() else "Hub"
    if built is None or weights is None:
        return ""
    architecture, parameters = built
    return (
        f"{spec.model}: {architecture}, {parameters / 1e6:,.1f}M parameters built on the meta "
        f"device; config, tokenizer and weights ({weights}) readable"
    )


def _is_local_path(model: str) -> bool:
    """A folder rather than a Hub id (``org/name``): it exists, or it is written as a path."""
    return (
        Path(model).expanduser().exists()
        or model.startswith(("/", "./", "../", "~", "."))
        or model.count("/") > 1
        or "\\" in model
    )


def _load_config_and_tokenizer(path: str, report: _Report) -> tuple[Any, Any] | None:
    from transformers import AutoConfig, AutoTokenizer

    try:
        # As the trial loads them: a model's own Python code is never run.
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            report.problem(
                "model",
                f"{path!r} needs its own Python code to load (trust_remote_code), which "
                "paretune does not run.",
                "Use a model whose architecture transformers ships (Llama, Qwen, Mistral, "
                "Gemma, Phi, GPT-2, ...), or a checkpoint converted to one.",
            )
        else:
            report.problem(
                "model",
                f"cannot load the config and tokenizer of {path!r}: {text}",
                "Give a local folder with config.json and the tokenizer files, a Hugging Face "
                'id you can download, or model = "demo".',
            )
        return None
    return config, tokenizer


def _meta_model(config: Any, name: str, report: _Report) -> tuple[str, int] | None:
    """(architecture, parameter count) of the model built on the meta device: no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, KeyError, ImportError) as error:
        report.problem(
            "model",
            f"{name!r} is not a causal language model transformers can build: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}",
            "Sweeps fine-tune decoder-only language models (AutoModelForCausalLM).",
        )
        return None
    return type(model).__name__, sum(p.numel() for p in model.parameters())


def _check_weights(folder: Path, report: _Report) -> str | None:
    """A local folder's weight files: present, every shard an index names there, and each
    safetensors header readable (memory-mapped; no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            report.problem("model", f"{index} is not a readable weight index: {error}")
            return None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            report.problem(
                "model",
                f"{folder} lacks {len(missing)} weight shard(s) its index names: "
                + ", ".join(missing[:3]),
                "Finish copying or downloading the model.",
            )
            return None
    tensors = sorted(folder.glob("*.safetensors"))
    pickled = sorted(folder.glob("pytorch_model*.bin"))
    if not tensors and not pickled:
        report.problem(
            "model",
            f"{folder} has no weights (*.safetensors or pytorch_model*.bin).",
            "Copy the weights next to config.json, or save the model with save_pretrained.",
        )
        return None
    count = 0
    for file in tensors:
        try:
            with safe_open(str(file), framework="pt") as handle:
                count += len(list(handle.keys()))
        except (SafetensorError, OSError) as error:
            report.problem(
                "model",
                f"{file} is not a readable safetensors file ({error}); it may be truncated.",
                "Download or save the model again.",
            )
            return None
    if tensors:
        return (
            f"{count} tensors in {len(tensors)} safetensors file{'s' if len(tensors) > 1 else ''}"
        )
    return f"{len(pickled)} pytorch_model .bin file{'s' if len(pickled) > 1 else ''}"


# ---------------------------------------------------------------- device


def _check_device(context: _Context, report: _Report) -> str:
    import torch

    hardware = context.spec.hardware
    wanted = [int(g) for g in context.gpus]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    asks_cuda = hardware.device == "cuda" or (hardware.device == "auto" and bool(wanted))
    if not asks_cuda:
        if hardware.device == "cpu":
            return "cpu" + (" (GPU indices only pin CUDA_VISIBLE_DEVICES)" if wanted else "")
        return "auto: " + (f"cuda, {_visible(torch, count)}" if count else "cpu (no CUDA GPU)")
    asked = 'device = "cuda"' if hardware.device == "cuda" else f"GPU indices {wanted}"
    if count == 0:
        report.problem(
            "device",
            f"the spec asks for a CUDA GPU ({asked}) but none is visible: {_why_no_cuda(torch)}.",
            'Run on the CPU: set [hardware] device = "cpu" and drop the GPU indices '
            "([hardware] gpus, --gpus); or run where a GPU is visible.",
        )
        return ""
    # Trials are pinned by setting CUDA_VISIBLE_DEVICES to the index; an index is then one of
    # the machine's GPUs, which this process sees all of only when it is not pinned itself.
    absent = [g for g in wanted if g >= count]
    if absent and "CUDA_VISIBLE_DEVICES" not in os.environ:
        report.problem(
            "device",
            f"GPU {', '.join(map(str, absent))} asked for, but the visible GPUs are "
            f"{_visible(torch, count)}.",
            "List only visible GPU indices in [hardware] gpus (or --gpus).",
        )
        return ""
    return f"cuda, {_visible(torch, count)}"


def _visible(torch: Any, count: int) -> str:
    return ", ".join(f"{i} ({torch.cuda.get_device_name(i)})" for i in range(count))


def _why_no_cuda(torch: Any) -> str:
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    pinned = os.environ.get("CUDA_VISIBLE_DEVICES")
    if pinned is not None:
        return f"CUDA_VISIBLE_DEVICES={pinned!r} shows none"
    return "no GPU or driver was found"


# ---------------------------------------------------------------- data


def _check_data(context: _Context, report: _Report) -> str:
    from sweeps.trial.recipe import _sources  # how the trial itself resolves its data

    config = context.config
    try:
        sources = _sources(config)
    except UserError as error:
        report.problem("data", error.message, error.hint)
        return ""
    found = []
    train = _examples("train", sources.train, context, report)
    if train is not None:
        context.train = train
        found.append(f"train {len(train)} rows")
        if sources.eval is None and len(train) < 2:
            report.problem(
                "data",
                f"train data {sources.train} has {len(train)} usable row; without an eval file "
                "trials hold some rows out for evaluation, so it needs at least two.",
                "Add rows, or give [data] eval.",
            )
    if sources.eval is not None:
        held_out = _examples("eval", sources.eval, context, report)
        if held_out is not None:
            context.eval = held_out
            found.append(f"eval {len(held_out)} rows")
    else:
        found.append(f"eval {config.eval_fraction:.0%} of train")
    if sources.retain is not None and sources.retain.startswith(LM_EVAL_RETAIN):
        items = _lm_eval_items(context, report)
        if items is not None:
            found.append(f"retain {sources.retain} ({items})")
    elif sources.retain is not None:
        texts = _texts(sources.retain, context, report)
        if texts is not None:
            context.retain = texts
            found.append(f"retain {len(texts)} texts")
    if sources.facts is not None:
        found.append(f"facts {len(_facts(sources.facts, report))} probes")
    return ", ".join(found)


def _check_data_quality(context: _Context, report: _Report) -> str:
    """The data check on the rows the data check parsed; leakage refused only when the spec
    says ``leakage = "error"``."""
    from sweeps.datacheck import check_rows
    from sweeps.datacheck.report import summary_line
    from sweeps.trial.data import load_text_rows
    from sweeps.trial.recipe import _sources

    retain: list[tuple[str, str]] = []
    config = context.config
    sources = _sources(config)
    retain_path = sources.retain
    if context.retain and retain_path and not retain_path.startswith(LM_EVAL_RETAIN):
        retain, _ = load_text_rows(retain_path, bad_rows="skip")
    data = check_rows(
        context.train,
        context.eval,
        retain,
        files=[],
        tokenizer=context.tokenizer,
        max_seq_len=config.max_seq_len,
    )
    leaks = data.eval_leaks
    if leaks.total and context.spec.data.leakage == "error":
        report.problem(
            "data check",
            f"{leaks.total} of {data.eval_rows} eval rows ({data.eval_leak_share:.0%}) copy or "
            'nearly copy train rows, and [data] leakage = "error":\n    '
            + "\n    ".join(leaks.examples),
            'Remove them from the eval file, or set [data] leakage = "drop" to drop them '
            "before every trial (`paretune data check` lists them).",
        )
        return ""
    summary = summary_line(data)
    if leaks.total:
        summary += f"; leakage = {context.spec.data.leakage}"
    if sources.eval is None:
        summary += "; eval held out of train with copies kept on one side"
    return summary


def _examples(role: str, path: str, context: _Context, report: _Report) -> list[Any] | None:
    from sweeps.trial.data import DataError, load_examples

    try:
        examples, bad = load_examples(path, context.tokenizer, bad_rows="skip")
    except DataError as error:
        if _is_empty(path):
            report.problem(
                "data",
                f"{role} data {path} is empty: there is nothing to "
                + ("train on." if role == "train" else "evaluate on."),
                'Add one JSON object a line: {"prompt": ..., "completion": ...} or '
                '{"messages": [...]}.',
            )
        else:
            report.problem("data", f"{role} data: {error.message}", error.hint)
        return None
    if bad and context.config.bad_rows == "fail":
        report.problem("data", _bad_rows(role, path, bad), _BAD_ROWS_FIX)
        return None
    return examples


def _lm_eval_items(context: _Context, report: _Report) -> str | None:
    """An ``lm-eval:`` retain built as the trial builds it (lm-eval installed, every task
    known), its tasks' items read; without a tokenizer (the model check failed and says why)
    the tasks alone. Nothing is scored."""
    import torch

    from sweeps.trial.retain import retain_source_for
    from sweeps.trial.retain_lm_eval import lm_eval_items

    config = context.config
    try:
        if context.tokenizer is None:
            counts = lm_eval_items(config.retain or "")
        else:
            source = retain_source_for(
                config, tokenizer=context.tokenizer, device=torch.device("cpu"), precision="fp32"
            )
            counts = cast("LmEvalRetain", source).items()
    except UserError as error:
        report.problem("data", f"retain {config.retain}: {error.message}", error.hint)
        return None
    return ", ".join(f"{task} {count} items" for task, count in counts.items())


def _texts(path: str, context: _Context, report: _Report) -> list[str] | None:
    from sweeps.trial.data import DataError, load_texts

    try:
        texts, bad = load_texts(path, bad_rows="skip")
    except DataError as error:
        what = f"retain data {path} is empty" if _is_empty(path) else error.message
        report.problem(
            "data",
            f"{what}: forgetting is measured on it.",
            'Give {"text": ...} rows of general text the base model already models well.',
        )
        return None
    if bad and context.config.bad_rows == "fail":
        report.problem("data", _bad_rows("retain", path, bad), _BAD_ROWS_FIX)
        return None
    return texts


def _facts(path: str, report: _Report) -> list[dict]:
    from sweeps.trial.data import DataError, load_facts

    try:
        facts = load_facts(path)
    except DataError as error:
        report.problem("data", f"fact probes: {error.message}", error.hint)
        return []
    if not facts:
        report.problem(
            "data", f"fact probes {path} hold no rows.", 'Give {"prompt", "answer"} rows.'
        )
    return facts


_BAD_ROWS_FIX = (
    'Fix those rows, or set bad_rows = "skip" in [trial] to skip them (they are counted).'
)


def _bad_rows(role: str, path: str, bad: list[str]) -> str:
    shown = "\n    ".join(bad[:5]) + ("\n    ..." if len(bad) > 5 else "")
    return f"{role} data {path} has {len(bad)} bad row{'s' if len(bad) != 1 else ''}:\n    {shown}"


def _is_empty(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return not any(line.strip() for line in handle)
    except OSError:
        return False


def _retain_factory() -> Callable[..., Any] | None:
    """``sweeps.trial.retain.retain_source_for`` where that module exists (its retain sources,
    self-samples among them, measure forgetting on any causal LM), else None."""
    import importlib

    try:
        module = importlib.import_module("sweeps.trial.retain")
    except ModuleNotFoundError as error:
        if error.name == "sweeps.trial.retain":
            return None
        raise
    return getattr(module, "retain_source_for", None)


# ---------------------------------------------------------------- objectives


def _check_objectives(context: _Context, report: _Report) -> str:
    objectives, config = context.spec.objectives, context.config
    forgetting = objectives.forgetting
    if forgetting in _RETAIN_METRICS:
        retain = _retain_source(config)
        if retain is None:
            report.problem(
                "objectives",
                f'forgetting = "{forgetting}" needs a retain set, and model {config.model!r} '
                "has none: every trial would end without a forgetting score and count as failed.",
                '[data] retain = "general.jsonl" ({"text"} rows of general text the base '
                'model already models well) gives one; model = "demo" has its own.',
            )
        else:
            forgetting += f" (retain: {retain})"
    demo_facts = config.model == "demo" and config.train is None
    if forgetting == "fact_recall_drop" and config.facts is None and not demo_facts:
        report.problem(
            "objectives",
            'forgetting = "fact_recall_drop" needs fact probes, and this spec has none.',
            'Set facts = "facts.jsonl" ({"prompt", "answer"} rows) in [trial], or use '
            'forgetting = "retain_delta_nll".',
        )
    return (
        f"{objectives.quality}, {forgetting}, {objectives.cost}{_price(context, report)}"
        + _early_stopping(context)
    )


def _check_framework(context: _Context, report: _Report) -> str:
    """What a sweep planned for another framework predicts and what its trials measure."""
    from planner.frameworks import preset
    from sweeps.trial.prediction import framework_trial_values, framework_untaken

    spec, config = context.spec, context.config
    chosen = preset(spec.framework)
    from_preset = framework_trial_values(spec.framework, config.method, set())
    taken = []
    for name, value in from_preset.items():
        ours = getattr(config, name)
        if isinstance(ours, bool):
            shown = "on" if ours else "off"
        else:
            shown = f"{ours:g}" if isinstance(ours, float) else str(ours)
        own = " (the spec's own, over the preset's)" if ours != value else ""
        if (name, value, ours) == ("loss", "fused", "chunked") and config.gpus > 1:
            own = " (the preset's fused loss cannot run sharded yet; planned as chunked too)"
        taken.append(f"{name} {shown}{own}")
    runs = (
        f"with {chosen.title}'s {', '.join(taken)}"
        if taken
        else f"(no setting of {chosen.title}'s preset applies to it)"
    )
    detail = (
        f"the gate's and each trial's predicted VRAM, hours and dollars are for "
        f"{chosen.title} ({chosen.version}); the trials run paretune's transformers + peft "
        f"trainer {runs}"
    )
    by_gap: dict[str, list[str]] = {}  # what the trainer leaves out -> the methods
    for method in spec.search.methods:
        found = framework_untaken(spec.framework, method)
        if found:
            by_gap.setdefault(", ".join(found), []).append(method)
    whole = len(by_gap) == 1 and len(next(iter(by_gap.values()))) == len(spec.search.methods)
    untaken = [gap if whole else f"{', '.join(methods)}: {gap}" for gap, methods in by_gap.items()]
    if untaken:
        detail += (
            f", but not {'; '.join(untaken)}: the measured peak and time are paretune's "
            f"trainer's, not {chosen.title}'s"
        )
    if chosen.speed_factor != 1.0:
        detail += (
            f"; hours use {chosen.title}'s speed claim x{chosen.speed_factor:g} (a vendor claim)"
        )
    return detail


def _check_calibration(context: _Context, report: _Report) -> str:
    """Which profile the predictions use, what it says of each method, and extrapolation."""
    from planner.calibration import default_profile_path
    from sweeps.gate import Gate
    from sweeps.trial.prediction import sweep_profile

    choice = context.spec.run.calibration
    try:
        profile = sweep_profile(choice)
    except UserError as error:
        report.problem("calibration", error.message, error.hint)
        return ""
    if profile is None:
        why = (
            '[run] calibration = "none"'
            if choice is not None
            else f"no profile at {default_profile_path()}; `paretune calibrate` writes one"
        )
        return f"none, the planner's defaults ({why})"
    detail = (
        f"{profile.profile.summary()} (profile {profile.path}, sha256 "
        f"{profile.profile.sha256[:12]})"
    )
    try:
        gate = Gate(context.spec, calibrate=False)
    except UserError:
        return detail  # a bad catalogue id: the objectives check says so
    gate.profile = profile
    said: list[str] = []
    points = [first_point(context.spec)]
    points += [{**points[0], "method": m} for m in context.spec.search.methods[1:]]
    points.append(last_point(context.spec))
    for params in points:
        try:
            config = context.spec.trial_config(params)
        except ValueError:
            continue
        calibration = gate.predict(config).calibration or {}
        lines = [f"{config.method}: {calibration['label']}"] if "label" in calibration else []
        lines += [f"{config.method}: {w}" for w in calibration.get("warnings", [])]
        said += [line for line in lines if line not in said]
    return "; ".join([detail, *said])


def _early_stopping(context: _Context) -> str:
    """``; early stopping: mo-asha, rungs at steps 10, 30 (eta 3)`` for the first point, or
    ``; early stopping off``."""
    from sweeps.early_stopping import rung_steps

    stopping = context.spec.early_stopping()
    if stopping is None or stopping.min_steps is None:
        return "; early stopping off"
    max_steps = context.config.max_steps
    if max_steps is None:
        return f"; early stopping: {stopping.method}, rungs from step {stopping.min_steps}"
    steps = ", ".join(map(str, rung_steps(stopping.min_steps, stopping.eta, max_steps)))
    return f"; early stopping: {stopping.method}, rungs at steps {steps} (eta {stopping.eta})"


def _retain_source(config: TrialConfig) -> str | None:
    """What forgetting is measured on, as the trial picks it; None when there is nothing."""
    if config.retain is not None and config.retain.startswith(LM_EVAL_RETAIN):
        return config.retain
    if config.retain is not None:
        return Path(config.retain).name
    if config.model == "demo":
        return "the demo's world text"
    if _retain_factory() is not None:
        return "self-samples of the base model"
    return None


def _price(context: _Context, report: _Report) -> str:
    """The hourly price every trial will be priced at, found as the trial finds it
    (:func:`sweeps.trial.recipe._price`): the catalogue ids given must exist, and on CUDA
    the visible GPU must be in the catalogue unless an hourly price or a GPU id is given."""
    from sweeps.gate import Gate
    from sweeps.trial.recipe import _price as trial_price

    try:
        Gate(context.spec, calibrate=False)  # every id given is in the catalogue
        device = _priced_device(context)
        if device is None:
            return ""  # CUDA asked for and none visible: the device check says so
        price = trial_price(context.config, device)
    except UserError as error:
        report.problem("objectives", error.message, error.hint)
        return ""
    if context.spec.objectives.cost != "dollars":
        return ""
    if context.config.usd_per_hour is not None:
        return f" at ${price.usd_per_hour:g}/h"
    what = price.gpu_id or price.cpu_instance
    at = f" on {price.provider}" if price.provider and price.gpu_id else ""
    detected = " (the detected GPU)" if context.config.gpu is None and price.gpu_id else ""
    return f" at the {what} price{at}{detected}, ${price.usd_per_hour:g}/h"


def _priced_device(context: _Context) -> Any:
    """The device the first trial runs on, as its price sees it; None when CUDA is asked
    for and none is visible."""
    import torch

    wanted = context.spec.hardware.device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted == "cpu" or (wanted == "auto" and count == 0):
        return torch.device("cpu")
    if count == 0:
        return None
    pinned = int(context.gpus[0]) if context.gpus else 0
    return torch.device("cuda", pinned if pinned < count else 0)


# ---------------------------------------------------------------- storage


def _check_storage(context: _Context, report: _Report) -> str:
    from sweeps.results.store import redact_url
    from sweeps.study import is_postgres

    run = context.spec.run
    problem = _unwritable(Path(run.dir), folder=True)
    if problem:
        report.problem(
            "storage",
            f"the run folder {run.dir} cannot be written: {problem}.",
            "Point [run] dir at a folder you can write.",
        )
    results = Path(run.results)
    existing = results.is_file()
    problem = _unwritable(results, folder=False)
    if problem:
        report.problem(
            "storage",
            f"the results file {results} cannot be written: {problem}.",
            "Point [run] results at a file in a folder you can write.",
        )
    elif existing:
        _check_duckdb(results, report)
    url = context.storage_url
    if is_postgres(url):
        problem = _postgres_problem(url)
        if problem:
            report.problem(
                "storage",
                f"the study database {redact_url(url)} cannot be reached: {problem}",
                "Check that PostgreSQL runs and the URL (user, host, database) is right; "
                "`pip install 'paretune[distributed]'` provides the driver.",
            )
    else:
        problem = _unwritable(Path(url), folder=False)
        if problem:
            report.problem(
                "storage",
                f"the study journal {url} cannot be written: {problem}.",
                "Point [run] storage (or --storage) at a file in a folder you can write.",
            )
    return (
        f"results {results} ({'existing DuckDB file' if existing else 'new'}), "
        f"study {redact_url(url)}, run folder {run.dir}"
    )


def _check_tracking(context: _Context, report: _Report) -> str:
    from sweeps.results.tracking import TrackingError, mlflow_problem, wandb_problem

    run = context.spec.run
    done = []

    def unwritable(path: Path, folder: bool) -> str | None:
        return _unwritable(path, folder=folder)

    if run.mlflow:
        try:
            problem = mlflow_problem(run.mlflow, unwritable=unwritable)
        except TrackingError as error:
            report.problem("tracking", error.message, error.hint)
        else:
            if problem:
                report.problem(
                    "tracking",
                    f"trials cannot be logged to MLflow at {run.mlflow}: {problem}.",
                    "Fix [run] mlflow (a sqlite:///FILE or file:FOLDER you can write, or a "
                    "tracking server that answers), or leave it out.",
                )
            done.append(f"MLflow {run.mlflow}")
    if run.wandb:
        folder = Path(run.dir)
        try:
            problem = wandb_problem(folder, unwritable=unwritable)
        except TrackingError as error:
            report.problem("tracking", error.message, error.hint)
        else:
            if problem:
                report.problem(
                    "tracking",
                    f"offline W&B runs cannot be written in {folder}: {problem}.",
                    "Point [run] dir at a folder you can write, or leave [run] wandb out.",
                )
            done.append(f"W&B offline runs in {folder / 'wandb'}")
    return ", ".join(done)


def _unwritable(path: Path, *, folder: bool) -> str | None:
    """Why ``path`` (a folder or a file) cannot be created or written; None when it can.
    Nothing is created: the nearest existing folder above it must be writable."""
    if path.exists():
        if folder and not path.is_dir():
            return f"{path} is a file, not a folder"
        if not folder and path.is_dir():
            return f"{path} is a folder, not a file"
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
            return f"{path} is not writable"
        return _disk_full(path if folder else path.parent)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, so no folder can be made inside it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return _disk_full(parent)


MIN_FREE_MB = 16
"""Free space a sweep needs on the disks of its journal, results file and run folder before it
starts: a journal record, a DuckDB block (256 KiB) and a small adapter each fit many times."""


def _disk_full(folder: Path) -> str | None:
    """Why the disk holding ``folder`` cannot take a sweep's writes; None when it can."""
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= MIN_FREE_MB * 1024 * 1024:
        return None
    return (
        f"the disk holding {folder} is full ({free / 1024 / 1024:.1f} MB free; a sweep needs at "
        f"least {MIN_FREE_MB} MB)"
    )


def _check_duckdb(path: Path, report: _Report) -> None:
    """An existing results file opens read-only as a DuckDB database (never modified)."""
    from sweeps.results.store import ResultsLockedError, ResultsStore, StoreError

    try:
        with ResultsStore(path, lock_timeout_s=2.0).connect():
            pass
    except ResultsLockedError:
        return  # another sweep is writing it: a DuckDB file in use; writers wait their turn
    except StoreError as error:
        report.problem(
            "storage",
            error.message + ".",
            (error.hint or "") + " Or point [run] results at a new file.",
        )


def _postgres_problem(url: str) -> str | None:
    """Why a PostgreSQL URL does not answer ``SELECT 1``; None when it does (nothing written)."""
    import sqlalchemy

    scheme = url.split("://", 1)[0]
    libpq = scheme in ("postgresql", "postgres") or scheme.endswith(("+psycopg2", "+psycopg"))
    try:
        engine = sqlalchemy.create_engine(
            url, connect_args={"connect_timeout": 10} if libpq else {}
        )
    except (ImportError, sqlalchemy.exc.ArgumentError) as error:
        return f"no driver for it ({error})"
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        text = str(getattr(error, "orig", None) or error).strip()
        return text.splitlines()[0] if text else type(error).__name__
    finally:
        engine.dispose()
    return None


# ---------------------------------------------------------------- the dry step


def _dry_step(context: _Context, report: _Report) -> str:
    from sweeps.trial.isolation import TrialInputError, run_trial_isolated

    config = context.config
    point = _describe(config)
    limit = config.time_limit_s or DRY_STEP_TIMEOUT_S
    # The first worker's GPUs: one, or the gpus_per_trial a sharded trial runs on.
    env = {"CUDA_VISIBLE_DEVICES": ",".join(context.gpus[: config.gpus])} if context.gpus else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paretune-preflight-") as folder:
        dry = TrialConfig(
            **{
                **config.model_dump(),
                **_sample_files(context, Path(folder)),
                "max_steps": 1,
                "early_stopping": False,
                "save": "none",
                "run_dir": folder,
                "study": None,
                "trial_number": None,
                "time_limit_s": limit,
            }
        )
        try:
            result = run_trial_isolated(dry, env=env, raise_user_errors=True)
        except TrialInputError as error:
            report.problem(
                "dry step", f"the first point ({point}) cannot run: {error.message}", error.hint
            )
            return ""
    seconds = time.perf_counter() - started
    if result.state != "complete":
        what, fix = _DRY_STEP_FAILURES[result.state]
        error = "\n    ".join((result.error or "").strip().splitlines()[-6:])
        report.problem(
            "dry step",
            what.format(point=point, limit=limit) + (f":\n    {error}" if error else "."),
            fix,
        )
        return ""
    missing = _unmeasured(context.spec, result)
    if missing:
        report.problem(
            "dry step",
            f"one step of the first point ({point}) ran, but {', '.join(missing)} came out "
            "empty or NaN: the sweep would count every trial as failed.",
            "Check the data and objectives above; `paretune trial` with the same settings "
            "shows the whole result.",
        )
        return ""
    loss = result.steps[0].loss if result.steps else math.nan
    return f"in {seconds:.1f} s ({point}: 1 step, loss {loss:.3f})"


_DRY_STEP_FAILURES = {
    "oom": (
        "the first point ({point}) ran out of memory in one optimizer step",
        "Lower [trial] batch or max_seq_len, set grad_checkpointing = true, raise [run] "
        "memory_limit_gb, or start the search with a lighter method.",
    ),
    "timeout": (
        "one optimizer step of the first point ({point}) did not finish in {limit:g} s",
        "Raise [run] timeout_s, or lower [trial] batch or max_seq_len.",
    ),
    "failed": (
        "one optimizer step of the first point ({point}) failed",
        "Every trial runs this same code: fix the cause above before the sweep pays for it.",
    ),
}


def _describe(config: TrialConfig) -> str:
    words = [config.method]
    if config.method in ADAPTER_METHODS:
        words.append(f"rank {config.rank}, targets {config.targets}")
    words.append(f"lr {config.lr:g}, batch {config.batch}")
    return ", ".join(words)


def _sample_files(context: _Context, folder: Path) -> dict[str, str]:
    """The first rows of the data files, copied under ``folder``: one optimizer step's worth
    of train rows, a batch of eval and retain rows (of an ``lm-eval:`` retain, a batch of each
    task's items: ``limit``). A source that is not a file (an ``hf:``
    dataset) and the fact probes are used whole (base-model scores are cached by what they
    are computed on; the trials reuse those of the whole probe set)."""
    config = context.config
    update: dict[str, str] = {}
    train = context.train[: config.batch * config.grad_accum]
    if train and _line_of(train[0].source) is not None:
        update["train"] = _copy_rows(train, folder / "train.jsonl")
        held_out = (context.eval or context.train)[: config.batch]
        if _line_of(held_out[0].source) is not None:
            update["eval"] = _copy_rows(held_out, folder / "eval.jsonl")
    retain = config.retain or ""
    if retain.startswith(LM_EVAL_RETAIN):  # the first batch of each task's items
        from sweeps.trial.retain_lm_eval import LmEvalSpec

        spec = LmEvalSpec.parse(retain)
        update["retain"] = replace(spec, limit=min(spec.limit or config.batch, config.batch)).text()
    elif context.retain:
        update["retain"] = _write_rows(
            [{"text": t} for t in context.retain[: config.batch]], folder / "retain.jsonl"
        )
    return update


def _line_of(source: str) -> tuple[str, int] | None:
    """(file, line number) of an example's ``file:line`` source; None for other sources."""
    file, _, number = source.rpartition(":")
    return (file, int(number)) if number.isdigit() and Path(file).is_file() else None


def _copy_rows(examples: Sequence[Any], destination: Path) -> str:
    wanted: dict[str, set[int]] = {}
    for example in examples:
        file, number = _line_of(example.source) or ("", 0)
        wanted.setdefault(file, set()).add(number)
    with destination.open("w", encoding="utf-8") as out:
        for file, numbers in wanted.items():
            with open(file, encoding="utf-8") as handle:  # numbered as the data loader does
                for number, line in enumerate(handle, start=1):
                    if number in numbers:
                        out.write(line if line.endswith("\n") else line + "\n")
    return str(destination)


def _write_rows(rows: Sequence[dict], destination: Path) -> str:
    destination.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(destination)


def _unmeasured(spec: SweepSpec, result: Any) -> list[str]:
    """The spec's objectives the dry step's result holds no number for."""
    objectives = spec.objectives
    values = {
        objectives.quality: getattr(result.quality, objectives.quality),
        objectives.forgetting: getattr(result.forgetting, objectives.forgetting),
        objectives.cost: result.dollars if objectives.cost == "dollars" else result.measured.wall_s,
    }
    return [
        name
        for name, value in values.items()
        if value is None or (isinstance(value, float) and math.isnan(value))
    ]
