"""The sweep spec: one TOML file that says what to search, where it runs and what it may spend.

A spec is read with :func:`load_spec` (``tomllib``, then validated: unknown keys are
rejected and every error names its key path, e.g. ``search.rank.low must be >= 1, got 0``)
and written back, commented, with :func:`write_spec` (what the terminal UI's "sweep this
plan" uses). :meth:`SweepSpec.trial_config` turns one point of the search space into the
:class:`~sweeps.trial.types.TrialConfig` that a trial runs.

Each search parameter is written in one of three forms::

    rank = 8                                 # fixed: every trial uses 8
    targets = ["attn", "mlp", "all"]         # categorical: the sampler picks one
    rank = { low = 4, high = 64, log = true }  # a range (log scale, optional integer step)

Relative data paths (``[data]``) are read from the spec file's folder; run paths
(``[run]``: storage, results, run folder) from the current directory.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pricing.errors import UserError
from sweeps.results.store import DEFAULT_RESULTS
from sweeps.trial.types import METHODS, TrialConfig

__all__ = [
    "ADAPTER_METHODS",
    "COST_METRICS",
    "FORGETTING_METRICS",
    "QUALITY_METRICS",
    "Choice",
    "EarlyStoppingSection",
    "Fixed",
    "Param",
    "Range",
    "SpecError",
    "SweepSpec",
    "load_spec",
    "spec_from_text",
    "write_spec",
]

ADAPTER_METHODS = ("lora", "qlora", "dora")
"""Methods that train low-rank adapters: rank, alpha, rsLoRA and targets apply to them."""

# metric name -> direction; the store and the frontier work on "smaller is better" values.
QUALITY_METRICS = {"eval_nll": "minimize", "exact_match": "maximize"}
FORGETTING_METRICS = {
    "retain_delta_nll": "minimize",
    "retain_kl": "minimize",
    "fact_recall_drop": "minimize",
    "retain_acc_drop": "minimize",
}
LM_EVAL_RETAIN = "lm-eval:"
"""The prefix of a ``[data] retain`` that names lm-evaluation-harness tasks."""
COST_METRICS = {"dollars": "minimize", "hours": "minimize"}

MAX_SPEC_BYTES = 256 * 1024
"""The largest spec file read (the shipped examples are under 4 KiB)."""
MAX_SPEC_DEPTH = 16
"""The deepest nesting of tables, dotted keys and arrays a spec may have (the examples: 4).
Checked before parsing: a 50,000-part dotted key takes the TOML parser minutes and gigabytes,
and deeply nested arrays overflow its recursion."""
MAX_NAME_LENGTH = 128
"""The longest study name: it names files (``<name>.journal``) and a folder."""


class SpecError(UserError):
    """A sweep spec that cannot be read or does not validate."""

    title = "Bad sweep spec"


# ---------------------------------------------------------------- search-space parameters


@dataclass(frozen=True)
class Fixed:
    """Every trial uses ``value``."""

    value: Any


@dataclass(frozen=True)
class Choice:
    """The sampler picks one of ``values``."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A numeric range ``[low, high]``; ``log`` samples on a log scale; ints when ``integer``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


Param = Fixed | Choice | Range


@dataclass(frozen=True)
class _ParamKind:
    type: type
    low: float | None = None  # inclusive lower bound of any value
    low_exclusive: bool = False
    high: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] | None = None
    adapter_only: bool = False
    help: str = ""


# The searchable hyperparameters: TrialConfig field (or alpha_ratio) -> what it may hold.
SEARCHABLE: dict[str, _ParamKind] = {
    "rank": _ParamKind(
        int, low=1, adapter_only=True, help="adapter rank; higher: more capacity, more memory"
    ),
    "alpha_ratio": _ParamKind(
        float, low=0, low_exclusive=True, adapter_only=True, help="LoRA alpha = alpha_ratio x rank"
    ),
    "lr": _ParamKind(float, low=0, low_exclusive=True, help="peak learning rate"),
    "targets": _ParamKind(
        str, adapter_only=True, help="modules given adapters: 'attn', 'mlp', 'all' or names"
    ),
    "epochs": _ParamKind(float, low=0, low_exclusive=True, help="passes over the training set"),
    "max_steps": _ParamKind(int, low=1, help="stop after this many optimizer steps"),
    "use_rslora": _ParamKind(bool, adapter_only=True, help="scale by alpha/sqrt(rank) (rsLoRA)"),
    "dropout": _ParamKind(float, low=0, high=1, help="adapter dropout"),
    "batch": _ParamKind(int, low=1, help="micro-batch size"),
    "grad_accum": _ParamKind(int, low=1, help="gradient accumulation steps"),
    "warmup_ratio": _ParamKind(float, low=0, high=1, help="fraction of steps warming up"),
    "weight_decay": _ParamKind(float, low=0, help="AdamW weight decay"),
    "freeze_trainable_layers": _ParamKind(
        int, low=1, help="method 'freeze': train the top k layers"
    ),
    "lr_schedule": _ParamKind(
        str,
        choices=("cosine", "linear", "constant"),
        help="the learning rate after warmup: cosine or linear decay to 0, or constant",
    ),
    "optimizer": _ParamKind(
        str,
        choices=("adamw", "adamw8bit", "paged_adamw8bit", "adafactor", "sgd"),
        help="adamw; adamw8bit, paged_adamw8bit: 8-bit states (bitsandbytes; paged ones move "
        "to host memory under pressure); adafactor: factored states; sgd",
    ),
}

# TrialConfig fields a spec sets elsewhere, so [trial] may not set them.
_SET_ELSEWHERE = {
    "model",
    "train",
    "eval",
    "retain",
    "leakage",
    "method",
    "alpha",
    "device",
    "gpus",
    "sharding",
    "gpu",
    "provider",
    "usd_per_hour",
    "cpu_instance",
    "study",
    "trial_number",
    "run_dir",
    "save",
    "time_limit_s",
    "memory_limit_gb",
    "seed",
    "framework",
    "rung_min_steps",
    "rung_eta",
    "rung_retain_rows",
    "calibration",
}


def _set_where(key: str) -> str:
    """Where a spec sets a trial setting [trial] may not: ``[data] train``, ..."""
    sections = {
        "model": "the top-level model key",
        "framework": "the top-level framework key",
        "train": "[data] train",
        "eval": "[data] eval",
        "retain": "[data] retain",
        "method": "[search] methods",
        "alpha": "[search] alpha_ratio (alpha = alpha_ratio x rank)",
        "device": "[hardware] device",
        "gpus": "[hardware] gpus_per_trial",
        "sharding": "[hardware] gpus_per_trial (sharded with FSDP)",
        "gpu": "[hardware] gpu",
        "provider": "[hardware] provider",
        "usd_per_hour": "[hardware] usd_per_hour",
        "cpu_instance": "[hardware] cpu_instance",
        "rung_min_steps": "[search.early_stopping] min_steps",
        "rung_eta": "[search.early_stopping] eta",
        "rung_retain_rows": "[search.early_stopping] retain_rows",
        "calibration": "[run] calibration (the gate's and the trials' profile)",
    }
    return sections.get(key, "the sweep itself")


def _fmt(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _check_value(path: str, kind: _ParamKind, value: Any) -> Any:
    """Validate one value of a parameter; return it converted to the parameter's type."""
    if kind.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {_fmt(value)}")
        return value
    if kind.type is str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path} must be a non-empty string, got {_fmt(value)}")
        if kind.choices and value not in kind.choices:
            raise ValueError(f"{path} must be one of {', '.join(kind.choices)}; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path} must be a number, got {_fmt(value)}")
    if kind.type is int and not float(value).is_integer():
        raise ValueError(f"{path} must be a whole number, got {value}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{path} must be finite, got {value}")
    if kind.low is not None:
        if kind.low_exclusive and value <= kind.low:
            raise ValueError(f"{path} must be > {_fmt(kind.low)}, got {value}")
        if not kind.low_exclusive and value < kind.low:
            raise ValueError(f"{path} must be >= {_fmt(kind.low)}, got {value}")
    if kind.high is not None and value >= kind.high:
        raise ValueError(f"{path} must be < {_fmt(kind.high)}, got {value}")
    return int(value) if kind.type is int else float(value)


def parse_param(path: str, kind: _ParamKind, raw: Any) -> Param:
    """Read one parameter written as a scalar, a list or a ``{low, high, log, step}`` table."""
    if isinstance(raw, (Fixed, Choice, Range)):
        raw = _param_to_raw(raw)
    if isinstance(raw, list):
        if not raw:
            raise ValueError(f"{path} must list at least one value")
        values = tuple(_check_value(f"{path}[{i}]", kind, v) for i, v in enumerate(raw))
        if len(set(values)) != len(values):
            raise ValueError(f"{path} lists a value twice: {list(raw)}")
        return Fixed(values[0]) if len(values) == 1 else Choice(values)
    if isinstance(raw, Mapping):
        if kind.type not in (int, float):
            raise ValueError(
                f"{path} is not numeric: give one value or a list of values, not a range"
            )
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            raise ValueError(
                f"{path}.{sorted(unknown)[0]} is not a range key (use low, high, log, step)"
            )
        for key in ("low", "high"):
            if key not in raw:
                raise ValueError(f"{path}.{key} is missing (a range needs low and high)")
        low = _check_value(f"{path}.low", kind, raw["low"])
        high = _check_value(f"{path}.high", kind, raw["high"])
        if high < low:
            raise ValueError(f"{path}.high must be >= {path}.low ({low}), got {high}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ValueError(f"{path}.log must be true or false, got {_fmt(log)}")
        if log and low <= 0:
            raise ValueError(f"{path}.low must be > 0 on a log scale, got {low}")
        step = raw.get("step")
        if step is not None:
            if (
                isinstance(step, bool)
                or not isinstance(step, (int, float))
                or not math.isfinite(step)
                or step <= 0
            ):
                raise ValueError(f"{path}.step must be a positive number, got {_fmt(step)}")
            if log:
                raise ValueError(f"{path}: step and log cannot be combined")
        if low == high:
            return Fixed(low)
        return Range(low, high, log=log, step=step, integer=kind.type is int)
    return Fixed(_check_value(path, kind, raw))


def _param_to_raw(param: Param) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return list(param.values)
    table: dict[str, Any] = {"low": param.low, "high": param.high}
    if param.log:
        table["log"] = True
    if param.step is not None:
        table["step"] = param.step
    return table


# ---------------------------------------------------------------- sections


def _at_subpath(error: ValueError) -> PydanticCustomError:
    """An error whose text starts with the key path below the section it was raised in."""
    return PydanticCustomError("spec_subpath", "{text}", {"text": str(error)})


class _Section(BaseModel):
    # allow_inf_nan=False: `usd_per_hour = inf` would be accepted, then every trial discarded.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSection(_Section):
    """What to train on; None everywhere means the bundled demo's data."""

    train: str | None = Field(None, description="JSONL task file or HF dataset name")
    eval: str | None = Field(None, description="held-out JSONL; None: a seeded split of train")
    retain: str | None = Field(
        None,
        description="forgetting probe: a {'text'} JSONL, 'lm-eval:TASKS', or none for the "
        "base model's self-samples",
    )
    leakage: Literal["error", "drop", "warn"] = Field(
        "drop",
        description="eval rows that copy or nearly copy train rows (MinHash Jaccard >= 0.8): "
        "drop removes them before any trial and records the count, error refuses the sweep at "
        "preflight, warn keeps them (counted); without an eval file the held-out split keeps "
        "copies on one side",
    )


class HardwareSection(_Section):
    """Where trials run and what they are priced and gated as."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where trials run: cuda, cpu, or auto (a CUDA GPU when one is visible)"
    )
    gpu: str | None = Field(None, description="catalogue GPU id: the feasibility gate and price")
    provider: str | None = Field(None, description="catalogue provider for the hourly price")
    usd_per_hour: float | None = Field(None, ge=0, description="override of the hourly price")
    cpu_instance: str | None = Field(None, description="catalogue CPU instance for CPU runs")
    gpus: list[int] = Field(
        default_factory=list,
        description="GPU indices: one worker each, or one per gpus_per_trial of them",
    )
    gpus_per_trial: int = Field(
        1,
        ge=1,
        description="devices one trial is sharded over (torchrun + FSDP2): consecutive groups "
        "of gpus, one worker each; on CPU, processes per trial",
    )
    memory_gb: float | None = Field(None, gt=0, description="override of the GPU's memory")

    @field_validator("gpus")
    @classmethod
    def _gpus_distinct(cls, gpus: list[int]) -> list[int]:
        if any(g < 0 for g in gpus):
            raise ValueError(f"GPU indices must be >= 0, got {gpus}")
        if len(set(gpus)) != len(gpus):
            raise ValueError(f"GPU indices must be distinct, got {gpus}")
        return gpus

    @model_validator(mode="after")
    def _gpus_in_groups(self) -> HardwareSection:
        if self.gpus and len(self.gpus) % self.gpus_per_trial:
            raise ValueError(
                f"gpus_per_trial {self.gpus_per_trial} does not divide the {len(self.gpus)} "
                f"GPUs {self.gpus}: list a multiple of {self.gpus_per_trial} GPUs"
            )
        return self


class EarlyStoppingSection(_Section):
    """Early stopping of the sweep's trials at rungs (``[search.early_stopping]``): see
    :mod:`sweeps.early_stopping` for the rule and the docs' early-stopping guide."""

    method: Literal["mo-asha"] = Field(
        "mo-asha",
        description="mo-asha: multi-objective asynchronous successive halving (non-dominated "
        "sorting at each rung)",
    )
    eta: int = Field(
        3,
        ge=2,
        description="rungs at min_steps x eta^k; the top 1/eta of the trials at a rung go on "
        "(and any that the frontier does not dominate there)",
    )
    min_steps: int | None = Field(
        None,
        ge=1,
        description="the first rung, in optimizer steps; default: the smallest max_steps / eta^2, "
        "at least 10 (required when trials run by epochs)",
    )
    retain_rows: int = Field(
        32,
        ge=1,
        description="retain rows (the first ones) scored at each rung for the forgetting estimate",
    )


def _early_stopping_table(raw: Mapping[str, Any]) -> EarlyStoppingSection:
    """``[search.early_stopping]``, or a ValueError naming the key that is wrong."""
    try:
        return EarlyStoppingSection.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(map(str, first["loc"]))
        if first["type"] == "extra_forbidden":
            known = ", ".join(EarlyStoppingSection.model_fields)
            raise ValueError(f"early_stopping.{key} is not a key of it (use {known})") from None
        message = first["msg"].lower()
        got = "" if "got" in message else f", got {_fmt(first.get('input'))}"
        raise ValueError(f"early_stopping.{key}: {message}{got}") from None


class SearchSection(_Section):
    """The search space: methods, then any of :data:`SEARCHABLE` as fixed, list or range."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )

    methods: tuple[str, ...] = ("lora",)
    params: dict[str, Param] = Field(default_factory=dict)
    lr_by_method: dict[str, Param] = Field(default_factory=dict)
    early_stopping: EarlyStoppingSection | Literal[False] | None = Field(
        None,
        description='stop unpromising trials at rungs: a table { method = "mo-asha", eta = 3, '
        "min_steps = N, retain_rows = 32 }, or false for off; omitted: on with the defaults "
        "where trials have max_steps and at least 2 rungs below it, else off",
    )
    warm_start: str | None = Field(
        None,
        description="name of an earlier study on the same model and task (in this study's "
        "storage or the results file) whose trials seed the cost-aware sampler",
    )

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        try:
            return cls._parse_raw(raw)
        except ValueError as error:
            raise _at_subpath(error) from None

    @classmethod
    def _parse_raw(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise ValueError("must be a table")
        if "params" in raw or "lr_by_method" in raw:  # already parsed (constructed in code)
            return raw
        raw = dict(raw)
        early_stopping = raw.pop("early_stopping", None)
        if early_stopping is True:
            early_stopping = {}
        if early_stopping is not None and not (
            early_stopping is False or isinstance(early_stopping, Mapping)
        ):
            raise ValueError(
                "early_stopping must be false (off) or a table such as "
                '{ method = "mo-asha", eta = 3, min_steps = 10 }, got ' + _fmt(early_stopping)
            )
        if isinstance(early_stopping, Mapping):
            early_stopping = _early_stopping_table(early_stopping)
        warm_start = raw.pop("warm_start", None)
        if warm_start is not None and (not isinstance(warm_start, str) or not warm_start.strip()):
            raise ValueError(
                f'warm_start must be the name of an earlier study, e.g. "my-first-sweep"; '
                f"got {warm_start!r}"
            )
        methods = raw.pop("methods", ["lora"])
        if isinstance(methods, str):
            methods = [methods]
        if not isinstance(methods, list) or not methods:
            raise ValueError('methods must be a non-empty list, e.g. ["lora", "dora"]')
        for i, m in enumerate(methods):
            if m not in METHODS:
                raise ValueError(f"methods[{i}] must be one of {', '.join(METHODS)}; got {m!r}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {methods}")
        params: dict[str, Param] = {}
        lr_by_method: dict[str, Param] = {}
        for name, value in raw.items():
            if name not in SEARCHABLE:
                raise ValueError(
                    f"{name} is not a searchable parameter (use one of "
                    f"{', '.join(['methods', *SEARCHABLE])}; other trial settings go in [trial])"
                )
            kind = SEARCHABLE[name]
            if name == "lr" and isinstance(value, Mapping) and set(value) & set(METHODS):
                for method, sub in value.items():
                    if method not in methods:
                        raise ValueError(f"lr.{method}: {method!r} is not in methods {methods}")
                    lr_by_method[method] = parse_param(f"lr.{method}", kind, sub)
                missing = [m for m in methods if m not in lr_by_method]
                if missing:
                    raise ValueError(f"lr.{missing[0]} is missing (lr is given per method)")
                continue
            params[name] = parse_param(name, kind, value)
        return {
            "methods": tuple(methods),
            "params": params,
            "lr_by_method": lr_by_method,
            "early_stopping": early_stopping,
            "warm_start": warm_start,
        }

    def param(self, name: str) -> Param | None:
        return self.params.get(name)


class TrialSection(_Section):
    """Any other :class:`TrialConfig` setting, fixed for every trial."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    repeats: int = Field(
        1,
        ge=1,
        description="runs of each trial, with seeds seed, seed+1, ...: Optuna is told each "
        "objective's mean, the cost is their sum, and the frontier marks trials whose "
        "difference is inside the runs' standard deviation",
    )

    @model_validator(mode="before")
    @classmethod
    def _known(cls, raw: Any) -> Any:
        try:
            return cls._check_known(raw)
        except ValueError as error:
            raise _at_subpath(error) from None

    @classmethod
    def _check_known(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise ValueError("must be a table")
        settings = {key: value for key, value in raw.items() if key not in cls.model_fields}
        for key in settings:
            if key in _SET_ELSEWHERE:
                raise ValueError(f"{key} is set by {_set_where(key)}, not in [trial]")
            if key not in TrialConfig.model_fields:
                raise ValueError(
                    f"{key} is not a trial setting (see `paretune trial --help` for the list)"
                )
            _check_finite(key, raw[key])
        try:
            TrialConfig(**settings)
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return raw


def _check_finite(path: str, value: Any) -> None:
    """Raise if ``value`` (or a number in it) is inf or nan: no trial setting can use one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} must be finite, got {value}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(f"{path}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(f"{path}.{key}", item)


class ObjectivesSection(_Section):
    """The three objectives the sweep trades off."""

    quality: Literal["eval_nll", "exact_match"] = Field(
        "eval_nll",
        description="eval_nll: completion NLL on the eval set (minimised); exact_match: "
        "greedy exact-match accuracy (maximised)",
    )
    forgetting: Literal["retain_delta_nll", "retain_kl", "fact_recall_drop", "retain_acc_drop"] = (
        Field(
            "retain_delta_nll",
            description="retain_delta_nll: NLL increase on the retain set; retain_kl: mean "
            "KL(base || fine-tuned) there (not with an lm-eval retain); fact_recall_drop: fact "
            "probes lost; retain_acc_drop: accuracy lost on lm-eval tasks (retain = "
            '"lm-eval:TASKS" only) (all minimised)',
        )
    )
    cost: Literal["dollars", "hours"] = Field(
        "dollars",
        description="dollars: wall-clock hours x devices x hourly price; hours: wall-clock "
        "hours x devices (both minimised)",
    )

    def names(self) -> tuple[str, str, str]:
        return (self.quality, self.forgetting, self.cost)

    def directions(self) -> list[str]:
        return [
            QUALITY_METRICS[self.quality],
            FORGETTING_METRICS[self.forgetting],
            COST_METRICS[self.cost],
        ]


class BudgetSection(_Section):
    """When to stop launching trials; at least one limit is required."""

    dollars: float | None = Field(None, gt=0, description="stop before spending more")
    hours: float | None = Field(None, gt=0, description="stop before more trial-hours")
    trials: int | None = Field(None, gt=0, description="trials to run (infeasible ones excluded)")

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSection:
        if self.dollars is None and self.hours is None and self.trials is None:
            raise ValueError("set at least one of dollars, hours or trials")
        return self


class RunSection(_Section):
    """Where the study and the results live, and what each trial keeps."""

    dir: str = Field("runs", description="run folder: journal, artifacts (relative to cwd)")
    storage: str | None = Field(
        None, description="journal file path or postgresql:// URL; default <dir>/<name>.journal"
    )
    results: str = Field(DEFAULT_RESULTS.as_posix(), description="DuckDB results file")
    save: Literal["frontier", "all", "none"] = Field(
        "frontier",
        description="artifacts kept: frontier (only the Pareto-optimal trials'), all, or none",
    )
    timeout_s: float | None = Field(None, gt=0, description="per-trial wall-clock limit")
    memory_limit_gb: float | None = Field(None, gt=0, description="per-trial memory cap")
    max_retries: int = Field(2, ge=0, description="re-runs of a trial whose worker died")
    breaker: int = Field(
        3,
        ge=0,
        description="stop the sweep after this many trials in a row fail with the same error "
        "(a broken setup, not a bad point); 0: never",
    )
    mlflow: str | None = Field(
        None,
        description="MLflow tracking URI (sqlite:///mlflow.db, file:./mlruns or a tracking "
        "server's http(s):// address): each finished trial is logged as an MLflow run, a "
        "child of one run per study; needs the mlflow extra",
    )
    mlflow_experiment: str | None = Field(
        None, min_length=1, description="MLflow experiment the runs go to; default: the study name"
    )
    wandb: Literal["offline"] | None = Field(
        None,
        description='"offline": each finished trial is also written as an offline W&B run in '
        "<dir>/wandb (`wandb sync` uploads them); needs the wandb extra",
    )
    calibration: str | None = Field(
        None,
        description="calibration profile the feasibility gate, the budget's cost predictions "
        "and each trial's predicted peak, hours and dollars are corrected by: a profile "
        'written by `paretune calibrate` (a path), or "none" for the planner\'s defaults; '
        "default: the active profile, if `paretune calibrate` wrote one (as `paretune plan "
        "--calibration`)",
    )

    @field_validator("mlflow")
    @classmethod
    def _mlflow_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                'must be an MLflow tracking URI such as "sqlite:///mlflow.db", '
                '"file:./mlruns" or "http://host:5000"; leave it out to log nothing'
            )
        return value

    @field_validator("calibration")
    @classmethod
    def _calibration_choice(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                'must be a calibration profile\'s path or "none"; leave it out to use the '
                "active profile"
            )
        return value

    @field_validator("storage")
    @classmethod
    def _storage_kind(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" in value and not value.startswith(("postgresql", "postgres://")):
            raise ValueError(f"must be a journal file path or a postgresql:// URL, got {value!r}")
        return value


class SweepSpec(_Section):
    """A whole sweep; construct it in code or with :func:`load_spec`."""

    name: str = Field(..., min_length=1, description="study name (one study per name)")
    model: str = Field("demo", description="'demo', a Hugging Face id, or a local model folder")
    framework: str = Field(
        "hf",
        description="what the full-scale run will train with: hf (transformers + peft), trl, "
        "unsloth, axolotl, torchtune or llama-factory. The feasibility gate, the predicted "
        "VRAM, hours and dollars and each trial's recorded prediction use that framework's "
        "planner preset; the trials run paretune's trainer with the framework's loss and "
        "dropout (preflight lists what else differs)",
    )
    sampler: Literal["tpe", "cost-aware", "nsga2", "gp", "random"] = Field(
        "cost-aware",
        description="Optuna sampler: cost-aware (multi-objective TPE that weighs each point's "
        "predicted dollars; see sweeps.cost_aware), tpe (multi-objective TPE), nsga2 "
        "(NSGA-II), gp (Gaussian process, needs scipy) or random; none proposes a point a "
        "trial already holds",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the sampler and every trial")
    data: DataSection = Field(default_factory=DataSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    search: SearchSection = Field(default_factory=SearchSection)
    trial: TrialSection = Field(default_factory=TrialSection)
    objectives: ObjectivesSection = Field(default_factory=ObjectivesSection)
    budget: BudgetSection = Field(default_factory=lambda: BudgetSection(trials=10))
    run: RunSection = Field(default_factory=RunSection)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        # The name is a path component (<dir>/<name>.journal, artifacts in <dir>/<name>/):
        # '.' and '..' would put artifacts beside or above the run folder.
        if not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"use letters, digits, '-', '_' or '.', got {name!r}")
        if not name.strip("."):
            raise ValueError(f"must not be only dots (it names a folder), got {name!r}")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
        return name

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, name: str) -> str:
        from planner.errors import InvalidSpecError
        from planner.frameworks import preset

        try:
            return preset(name).name
        except InvalidSpecError as error:
            known = error.message.rsplit("; ", 1)[-1]
            raise ValueError(
                f"unknown framework {name!r}; {known}. {error.hint or ''}".strip()
            ) from None

    @model_validator(mode="after")
    def _not_set_twice(self) -> SweepSpec:
        for key in self.trial.model_extra or {}:
            if key in self.search.params or (key == "lr" and self.search.lr_by_method):
                raise ValueError(f"trial.{key} is also set in [search]; keep one of them")
        return self

    @model_validator(mode="after")
    def _warm_start_sampler(self) -> SweepSpec:
        if self.search.warm_start is not None and self.sampler != "cost-aware":
            raise ValueError(
                f"search.warm_start seeds the cost-aware sampler, but sampler = "
                f'{self.sampler!r}; set sampler = "cost-aware", or remove warm_start'
            )
        return self

    @model_validator(mode="after")
    def _forgetting_fits_retain(self) -> SweepSpec:
        forgetting, retain = self.objectives.forgetting, self.data.retain
        lm_eval = retain is not None and retain.startswith(LM_EVAL_RETAIN)
        if forgetting == "retain_kl" and lm_eval:
            raise ValueError(
                f'objectives.forgetting = "retain_kl" cannot be measured on data.retain = '
                f"{retain!r}: lm-evaluation-harness scores each answer, and returns no "
                "next-token distributions to compare the fine-tuned model's with the base's, so "
                "every trial would end without a forgetting score. Use forgetting = "
                '"retain_acc_drop" (the accuracy lost on those tasks) or "retain_delta_nll" (the '
                "NLL increase of their correct answers), or a retain file or self-samples for "
                "retain_kl"
            )
        if forgetting == "retain_acc_drop" and not lm_eval:
            raise ValueError(
                'objectives.forgetting = "retain_acc_drop" is the accuracy lost on '
                'lm-evaluation-harness tasks, and needs data.retain = "lm-eval:TASKS" '
                f"(got {'no retain' if retain is None else repr(retain)}). Set one, e.g. "
                'retain = "lm-eval:arc_easy?limit=200", or use forgetting = "retain_delta_nll"'
            )
        return self

    @model_validator(mode="after")
    def _early_stopping_has_rungs(self) -> SweepSpec:
        section = self.search.early_stopping
        if not isinstance(section, EarlyStoppingSection):
            return self
        where = "search.early_stopping"
        if self.trial.repeats > 1:
            raise ValueError(
                f"{where} needs trial.repeats = 1 (got {self.trial.repeats}): a rung compares one "
                "run of each trial. Set early_stopping = false, or repeats = 1"
            )
        steps = self._max_steps_range()
        if steps is None:
            if section.min_steps is None:
                raise ValueError(
                    f"{where}.min_steps is needed: the trials run by epochs (no max_steps), so "
                    "the rungs cannot be placed by default. Give min_steps, or max_steps"
                )
            return self
        if section.min_steps is not None and section.min_steps >= steps[1]:
            raise ValueError(
                f"{where}.min_steps = {section.min_steps} leaves no rung: every trial ends by "
                f"step {steps[1]} (max_steps). Give a min_steps below it, or early_stopping = false"
            )
        return self

    def _max_steps_range(self) -> tuple[int, int] | None:
        """The smallest and largest ``max_steps`` a trial may have (None: trials run by epochs)."""
        param = self.search.params.get("max_steps")
        if param is None:
            fixed = (self.trial.model_extra or {}).get("max_steps")
            return None if fixed is None else (int(fixed), int(fixed))
        if isinstance(param, Fixed):
            return int(param.value), int(param.value)
        if isinstance(param, Choice):
            return int(min(param.values)), int(max(param.values))
        return int(param.low), int(param.high)

    def early_stopping(self) -> EarlyStoppingSection | None:
        """The early stopping the sweep applies, ``min_steps`` filled in; None when off.

        Without ``[search.early_stopping]`` it is on where every trial has ``max_steps`` and
        :func:`sweeps.early_stopping.default_min_steps` leaves at least two rungs below the
        smallest (and ``trial.repeats`` is 1); ``early_stopping = false`` turns it off."""
        from sweeps.early_stopping import default_min_steps, rung_steps

        section = self.search.early_stopping
        if section is False or (section is None and self.trial.repeats > 1):
            return None
        section = section or EarlyStoppingSection()
        if section.min_steps is not None:
            return section
        steps = self._max_steps_range()
        if steps is None:
            return None
        min_steps = default_min_steps(steps[0], section.eta)
        if (
            self.search.early_stopping is None
            and len(rung_steps(min_steps, section.eta, steps[0])) < 2
        ):
            return None
        return section.model_copy(update={"min_steps": min_steps})

    # -- derived values

    def to_raw(self) -> dict[str, Any]:
        """The spec as plain TOML-shaped data (what :func:`spec_from_text` reads back)."""
        raw = self.model_dump(mode="json", exclude={"search", "trial"}, exclude_none=True)
        search: dict[str, Any] = {"methods": list(self.search.methods)}
        search.update({k: _param_to_raw(v) for k, v in self.search.params.items()})
        if self.search.lr_by_method:
            search["lr"] = {k: _param_to_raw(v) for k, v in self.search.lr_by_method.items()}
        stopping = self.search.early_stopping
        if stopping is not None:
            search["early_stopping"] = (
                False if stopping is False else stopping.model_dump(exclude_none=True)
            )
        if self.search.warm_start is not None:
            search["warm_start"] = self.search.warm_start
        raw["search"] = search
        raw["trial"] = dict(self.trial.model_extra or {})
        return raw

    @property
    def storage_url(self) -> str:
        """The Optuna storage: a postgresql:// URL or a journal file path."""
        return self.run.storage or str(Path(self.run.dir) / f"{self.name}.journal")

    @property
    def is_distributed(self) -> bool:
        return self.storage_url.startswith(("postgresql", "postgres://"))

    def trial_config(
        self, params: Mapping[str, Any], *, trial_number: int | None = None
    ) -> TrialConfig:
        """The :class:`TrialConfig` for one point: sampled ``params`` over the fixed ones."""
        method = params["method"]
        values: dict[str, Any] = {}
        for name, param in self.search.params.items():
            if isinstance(param, Fixed):
                values[name] = param.value
        lr_name = lr_param_name(self, method)
        for name, value in params.items():
            if name == lr_name:
                values["lr"] = value
            elif name in SEARCHABLE:
                values[name] = value
        if "lr" not in values and method in self.search.lr_by_method:
            fixed = self.search.lr_by_method[method]
            if isinstance(fixed, Fixed):
                values["lr"] = fixed.value
        if method not in ADAPTER_METHODS:
            for name in ("rank", "alpha_ratio", "targets", "use_rslora"):
                values.pop(name, None)
        ratio = values.pop("alpha_ratio", None)
        if ratio is not None:
            values["alpha"] = float(ratio) * int(
                values.get("rank", TrialConfig.model_fields["rank"].default)
            )
        if self.framework != "hf":
            from sweeps.trial.prediction import framework_trial_values

            given = set(self.trial.model_extra or {}) | set(self.search.params)
            for name, value in framework_trial_values(self.framework, method, given).items():
                values.setdefault(name, value)
            if self.hardware.gpus_per_trial > 1 and values.get("loss") == "fused":
                # The fused linear cross-entropy does not run on a sharded trial yet; chunked
                # cross-entropy does not build the whole logits either, and the plan follows
                # the trial's loss (the preflight says so).
                values["loss"] = "chunked"
        hw = self.hardware
        stopping = self.early_stopping()
        if stopping is not None:
            values.update(
                rung_min_steps=stopping.min_steps,
                rung_eta=stopping.eta,
                rung_retain_rows=stopping.retain_rows,
            )
        return TrialConfig(
            **{**dict(self.trial.model_extra or {}), **values},
            model=self.model,
            train=self.data.train,
            eval=self.data.eval,
            retain=self.data.retain,
            leakage=self.data.leakage,
            method=method,
            device=hw.device,
            gpus=hw.gpus_per_trial,
            gpu=hw.gpu,
            provider=hw.provider,
            usd_per_hour=hw.usd_per_hour,
            cpu_instance=hw.cpu_instance,
            seed=self.seed,
            framework=self.framework,
            run_dir=str(Path(self.run.dir) / self.name),
            save="none"
            if self.run.save == "none"
            else "adapter"
            if method in ADAPTER_METHODS
            else "full",
            time_limit_s=self.run.timeout_s,
            memory_limit_gb=self.run.memory_limit_gb,
            study=self.name,
            trial_number=trial_number,
        )


def lr_param_name(spec: SweepSpec, method: str) -> str:
    """The Optuna parameter name of the learning rate (per method when ranges differ)."""
    return f"lr_{method}" if spec.search.lr_by_method else "lr"


# ---------------------------------------------------------------- reading and writing


def _error_text(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        msg = item["msg"]
        if item["type"] == "spec_subpath":
            text = item["ctx"]["text"]
            lines.append(f"{loc} {text}" if text.startswith("must") else f"{loc}.{text}")
        elif item["type"] == "value_error":
            lines.append(
                f"{loc}: {msg.removeprefix('Value error, ')}"
                if loc
                else msg.removeprefix("Value error, ")
            )
        elif item["type"] == "extra_forbidden":
            lines.append(f"{loc} is not a known key" + _did_you_mean_key(item["loc"]))
        elif item["type"] == "missing":
            lines.append(f"{loc} is missing")
        else:
            lines.append(f"{loc}: {msg} (got {item.get('input')!r})")
    return "; ".join(lines)


def _did_you_mean_key(loc: tuple) -> str:
    """`` (did you mean 'budget'?)`` for an unknown key near a known one at that place."""
    from difflib import get_close_matches

    model: Any = SweepSpec
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        model = field.annotation if field is not None else None
    known = list(getattr(model, "model_fields", {}))
    close = get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def spec_from_text(text: str, *, source: str = "<spec>", base_dir: Path | None = None) -> SweepSpec:
    """Parse and validate TOML text; relative data paths resolve against ``base_dir``.

    Text over :data:`MAX_SPEC_BYTES` or nested deeper than :data:`MAX_SPEC_DEPTH` is refused
    before it is parsed.
    """
    _check_bounds(text, source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(
            f"{source} is not valid TOML: {error}", "Check the line it names."
        ) from None
    if base_dir is not None and isinstance(raw.get("data"), dict):
        for key in ("train", "eval", "retain"):
            value = raw["data"].get(key)
            if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
                raw["data"][key] = str((base_dir / value).resolve())
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(
            f"{source}: {_error_text(error)}",
            "Fix the key named above; `examples/demo.toml` shows every section.",
        ) from None


def _looks_like_path(value: str) -> bool:
    return value.endswith((".jsonl", ".json", ".txt", ".parquet")) or value.startswith(
        ("./", "../")
    )


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file; raises :class:`SpecError` naming the bad key."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)  # no more: a huge file is refused unread
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(*_too_large(str(path)))
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(
            f"no sweep spec at {path}", "Copy one from examples/ (demo.toml)."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read the sweep spec {path}: {error}") from None
    return spec_from_text(text, source=str(path), base_dir=path.parent)


def _too_large(source: str) -> tuple[str, str]:
    return (
        f"{source} is larger than {MAX_SPEC_BYTES // 1024} KiB, the most a sweep spec may be",
        "A spec is a short TOML file (examples/demo.toml is under 4 KiB); check it is the "
        "file you meant.",
    )


def _check_bounds(text: str, source: str) -> None:
    """Refuse text too large or too deeply nested to parse in bounded time and memory."""
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError(*_too_large(source))
    line = _NestingScan(text, MAX_SPEC_DEPTH).first_too_deep()
    if line is not None:
        raise SpecError(
            f"{source} nests tables, dotted keys or arrays more than {MAX_SPEC_DEPTH} levels "
            f"deep (line {line})",
            "A sweep spec needs 4 levels at most; examples/demo.toml shows every section.",
        )


class _NestingScan:
    """Where a TOML text first nests deeper than ``limit``, found without parsing it.

    It counts what the parser would build: a table header's key parts (``[a.b]``: 2, an array
    of tables one more), a key's parts (``a.b.c = 1``: 3 below its table) and each array or
    inline table; strings and comments count nothing. The count is an upper bound of the
    parsed document's depth; malformed text is left for the parser to report.
    """

    def __init__(self, text: str, limit: int) -> None:
        self.text, self.limit = text, limit
        self.line = 1
        self.header = 0  # depth of the current [table]
        self.stack: list[tuple[str, int]] = []  # open "[" / "{" of values and their depths
        self.key_mode = True  # reading a key (up to its "=")
        self.parts = 1  # parts of the key being read
        self.value_depth = 0  # depth of the value after the last "="

    def first_too_deep(self) -> int | None:
        text, i, line_start = self.text, 0, True
        while i < len(text):
            char = text[i]
            if char == "\n":
                self.line += 1
                if not self.stack:
                    self.key_mode, self.parts, line_start = True, 1, True
                i += 1
            elif char in " \t\r":
                i += 1
            elif char == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
            elif char in "\"'":
                i = self._skip_string(i)
                line_start = False
            elif line_start and not self.stack and char == "[":
                i = self._header(i)
                self.key_mode, line_start = False, False
                if self.header > self.limit:
                    return self.line
            else:
                line_start = False
                if not self._token(char):
                    return self.line
                i += 1
        return None

    def _token(self, char: str) -> bool:
        """Take one structural character; False once the nesting passes the limit."""
        top = self.stack[-1] if self.stack else None
        if self.key_mode:
            base = top[1] if top else self.header
            if char == ".":
                self.parts += 1
            elif char == "=":
                self.key_mode, self.value_depth = False, base + self.parts
            elif char == "}" and self.stack:  # an empty inline table, or a trailing comma
                self.stack.pop()
                self.key_mode = False
            return base + self.parts <= self.limit
        if char in "[{":
            depth = top[1] + 1 if top and top[0] == "[" else self.value_depth
            self.stack.append((char, depth))
            if char == "{":
                self.key_mode, self.parts = True, 1
            return depth <= self.limit
        if char in "]}" and self.stack:
            self.stack.pop()
        elif char == "," and top and top[0] == "{":
            self.key_mode, self.parts = True, 1
        return True

    def _header(self, i: int) -> int:
        """Read a ``[table]`` or ``[[array.of.tables]]`` header from ``i``; return its end."""
        text = self.text
        double = text.startswith("[[", i)
        i += 2 if double else 1
        parts = 1
        while i < len(text) and text[i] not in "]\n":
            if text[i] in "\"'":
                i = self._skip_string(i)
                continue
            parts += text[i] == "."
            i += 1
        self.header = parts + double
        if i < len(text) and text[i] == "]":
            return i + 2 if double else i + 1
        return i  # malformed: the parser says so

    def _skip_string(self, i: int) -> int:
        """The index just past the string (basic, literal, or either multi-line) opening at i."""
        text = self.text
        quote = text[i]
        multi = text.startswith(quote * 3, i)
        j = i + (3 if multi else 1)
        while j < len(text):
            char = text[j]
            if char == "\\" and quote == '"':
                j += 2
                continue
            if char == "\n" and not multi:
                break  # unterminated: the parser says so
            if text.startswith(quote * 3 if multi else quote, j):
                j += 3 if multi else 1
                while multi and j < len(text) and text[j] == quote:  # content ending in quotes
                    j += 1
                break
            j += 1
        self.line += text.count("\n", i, min(j, len(text)))
        return j


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def _line(key: str, value: Any, comment: str) -> str:
    return f"{key} = {_toml_value(value)}" + (f"  # {comment}" if comment else "")


def write_spec(spec: SweepSpec, path: str | Path) -> Path:
    """Write ``spec`` as a commented TOML file that :func:`load_spec` reads back equal."""
    path = Path(path)
    out: list[str] = [
        f"# Sweep spec. Run it with:  paretune sweep run {path.name}",
        "# Rerunning the same command resumes the study; `paretune sweep status` shows progress.",
        "",
        _line("name", spec.name, "study name: one study per name"),
        _line("model", spec.model, "'demo', a Hugging Face id, or a local model folder"),
        _line(
            "framework",
            spec.framework,
            "planned as: hf, trl, unsloth, axolotl, torchtune, llama-factory",
        ),
        _line("sampler", spec.sampler, "cost-aware (default), tpe, nsga2, gp, random"),
        _line("seed", spec.seed, ""),
        "",
        "[data]  # omit a key to use the bundled demo's data",
    ]
    for key, comment in (
        ("train", "JSONL task file"),
        ("eval", "held-out JSONL"),
        ("retain", "{'text'} JSONL or lm-eval:TASKS; omit: self-samples"),
    ):
        value = getattr(spec.data, key)
        out.append(
            _line(key, value, comment) if value is not None else f'# {key} = "..."  # {comment}'
        )
    out.append(
        _line("leakage", spec.data.leakage, "eval rows copying train rows: drop, error or warn")
    )
    out += ["", "[hardware]"]
    hw_help = {name: f.description or "" for name, f in HardwareSection.model_fields.items()}
    for name in HardwareSection.model_fields:
        value = getattr(spec.hardware, name)
        if value is None or value == []:
            out.append(f"# {name} = ...  # {hw_help[name]}")
        else:
            out.append(_line(name, value, hw_help[name]))
    out += [
        "",
        "[search]  # each parameter: a value (fixed), a list (choice) or { low, high, log }",
    ]
    out.append(_line("methods", list(spec.search.methods), ", ".join(METHODS)))
    for name, param in spec.search.params.items():
        out.append(_line(name, _param_to_raw(param), SEARCHABLE[name].help))
    for method, param in spec.search.lr_by_method.items():
        out.append(_line(f"lr.{method}", _param_to_raw(param), f"learning rate for {method}"))
    stopping = spec.search.early_stopping
    if stopping is None:
        out.append(
            '# early_stopping = { method = "mo-asha", eta = 3, min_steps = 10 }  # or false; '
            "default: on where trials have at least 2 rungs"
        )
    else:
        out.append(
            _line(
                "early_stopping",
                False if stopping is False else stopping.model_dump(exclude_none=True),
                "stop unpromising trials at rungs (MO-ASHA); false: off",
            )
        )
    if spec.search.warm_start is not None:
        out.append(_line("warm_start", spec.search.warm_start, "seed from this earlier study"))
    out += ["", "[trial]  # other trial settings, fixed for every trial"]
    if spec.trial.repeats != 1:
        out.append(_line("repeats", spec.trial.repeats, "runs per trial (seeds seed, seed+1, ...)"))
    for key, value in (spec.trial.model_extra or {}).items():
        out.append(_line(key, value, ""))
    obj = spec.objectives
    out += [
        "",
        "[objectives]",
        _line("quality", obj.quality, "eval_nll (lower is better) or exact_match"),
        _line(
            "forgetting",
            obj.forgetting,
            "retain_delta_nll, retain_kl, fact_recall_drop or retain_acc_drop (lm-eval retain)",
        ),
        _line("cost", obj.cost, "dollars or hours"),
        "",
        "[budget]  # the sweep stops launching before any limit would be passed",
    ]
    for key, comment in (
        ("dollars", "total spend"),
        ("hours", "total trial hours"),
        ("trials", "trials run"),
    ):
        value = getattr(spec.budget, key)
        out.append(
            _line(key, value, comment) if value is not None else f"# {key} = ...  # {comment}"
        )
    run = spec.run
    out += ["", "[run]", _line("dir", run.dir, "run folder (journal, artifacts)")]
    out.append(
        _line("storage", run.storage, "journal file or postgresql:// URL")
        if run.storage
        else '# storage = "postgresql://user@host/db"  # default: a journal file in dir'
    )
    out.append(_line("results", run.results, "DuckDB results file"))
    out.append(_line("save", run.save, "artifacts kept: frontier, all or none"))
    if run.timeout_s is not None:
        out.append(_line("timeout_s", run.timeout_s, "per-trial limit"))
    if run.memory_limit_gb is not None:
        out.append(_line("memory_limit_gb", run.memory_limit_gb, "per-trial memory cap"))
    out.append(_line("max_retries", run.max_retries, "re-runs of a trial whose worker died"))
    out.append(
        _line("breaker", run.breaker, "stop after this many same failures in a row; 0: never")
    )
    out.append(
        _line("mlflow", run.mlflow, "MLflow tracking URI: one run per trial")
        if run.mlflow
        else '# mlflow = "sqlite:///mlflow.db"  # log each trial as an MLflow run'
    )
    if run.mlflow_experiment is not None:
        out.append(_line("mlflow_experiment", run.mlflow_experiment, "default: the study name"))
    out.append(
        _line("wandb", run.wandb, "offline W&B runs in dir/wandb")
        if run.wandb
        else '# wandb = "offline"  # also write each trial as an offline W&B run'
    )
    out.append(
        _line("calibration", run.calibration, "calibration profile of the predictions")
        if run.calibration
        else '# calibration = "none"  # default: the active profile of `paretune calibrate`'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
