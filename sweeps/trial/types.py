"""The contract between one trial, the sweep around it, the store and the UI.

:class:`TrialConfig` says everything needed to run one real fine-tune and reproduce it;
:class:`TrialResult` is everything measured about it. Both validate on construction
(unknown keys are rejected) and serialise to plain JSON (``model_dump(mode="json")``),
which is what ``paretune trial --format json`` prints, what a trial's child process
sends to its parent, and what the DuckDB store flattens into typed columns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sweeps.outcome import Outcome

__all__ = [
    "METHODS",
    "DataFile",
    "DataProvenance",
    "Forgetting",
    "Hardware",
    "Measured",
    "Predicted",
    "Quality",
    "RepeatResult",
    "RetainTaskDrop",
    "RungReport",
    "StepLog",
    "TrialConfig",
    "TrialResult",
    "TrialState",
]

METHODS = ("full", "lora", "qlora", "dora", "freeze")
Method = Literal["full", "lora", "qlora", "dora", "freeze"]
TrialState = Literal[
    Outcome.COMPLETE,
    Outcome.ARTIFACT_LOST,
    Outcome.OOM,
    Outcome.FAILED,
    Outcome.TIMEOUT,
    Outcome.PRUNED,
]
"""The outcomes one trial's own run can end in (the sweep records others: see :class:`Outcome`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialConfig(_Strict):
    """One fine-tune, fully specified. ``model="demo"`` uses the bundled demo model and data."""

    # What to train, on what.
    model: str = Field("demo", description="'demo', a Hugging Face id, or a local model folder")
    train: str | None = Field(None, description="JSONL task file, or HF dataset name; None: demo")
    eval: str | None = Field(None, description="held-out JSONL; None: a seeded split of train")
    retain: str | None = Field(
        None,
        description="forgetting probe: a {'text'} JSONL or 'lm-eval:TASKS'; None: the demo's "
        "world text on the demo, else the base model's self-samples",
    )
    facts: str | None = Field(
        None, description="fact probes JSONL ({'prompt', 'answer'}); None: the demo's on the demo"
    )
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="split when eval is None")
    max_seq_len: int = Field(
        256, gt=0, description="tokens per example (longer ones are cut); packed row length"
    )
    packing: bool = Field(
        False, description="concatenate examples into rows of max_seq_len (no padding)"
    )
    bad_rows: Literal["skip", "fail"] = Field(
        "fail", description="a malformed data row: fail stops the trial, skip skips and counts it"
    )
    leakage: Literal["error", "drop", "warn"] = Field(
        "drop",
        description="eval rows that copy or nearly copy train rows: drop removes them before "
        "training (counted), error stops, warn keeps them (counted)",
    )

    # The method and its hyperparameters.
    method: Method = "lora"
    rank: int = Field(8, gt=0, description="LoRA/DoRA/QLoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale alpha/rank, or /sqrt(rank))")
    dropout: float = Field(0.0, ge=0, lt=1)
    use_rslora: bool = False
    targets: str = Field("all", description="'attn', 'mlp', 'all', or comma-separated names")
    freeze_trainable_layers: int = Field(2, gt=0, description="method 'freeze': top k layers")
    lr: float = Field(2e-4, gt=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit", "adafactor", "sgd"] = "adamw"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch: int = Field(8, gt=0, description="micro-batch size")
    grad_accum: int = Field(1, gt=0)
    grad_checkpointing: bool = Field(
        False, description="recompute activations in backward: less memory, one more forward pass"
    )
    loss: Literal["standard", "chunked", "fused"] = Field(
        "standard",
        description="standard: full fp32 logits; chunked: 16-bit logits upcast 8 chunks at a "
        "time (torchtune); fused: lm_head + loss on 256-token chunks, no full logits (TRL; "
        "Liger's kernel on CUDA when liger-kernel is installed)",
    )
    seed: int = 0
    framework: Literal["hf", "trl", "unsloth", "axolotl", "torchtune", "llama-factory"] = Field(
        "hf",
        description="the framework the planner's predictions are for (planner.frameworks); "
        "the trial itself runs paretune's transformers + peft trainer, with the framework's "
        "loss and dropout",
    )

    # Evaluation.
    eval_every: int | None = Field(
        None,
        gt=0,
        description="score the eval set every N optimizer steps; unset: every 10 steps, or "
        "20 times in a run of more than 200 steps",
    )
    early_stopping: bool = Field(
        False, description="stop once eval_nll stops improving; keep the best eval step's weights"
    )
    early_stopping_patience: int = Field(
        3, gt=0, description="stop after this many evals without a new best eval_nll"
    )
    max_new_tokens: int = Field(16, gt=0, description="greedy generation length for exact match")

    # Rungs of the sweep's early stopping (set by [search.early_stopping]; None: no rungs).
    rung_min_steps: int | None = Field(
        None,
        gt=0,
        description="first rung: at steps min, min x eta, ... below the last step the trial "
        "reports its eval NLL and forgetting estimate, and the sweep may stop it there",
    )
    rung_eta: int = Field(3, ge=2, description="rungs are this factor apart")
    rung_retain_rows: int = Field(
        32, gt=0, description="retain rows (the first ones) scored at each rung"
    )

    # Where and how it runs.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="compute precision; auto: bf16 on a GPU with bf16, fp16 on an older one, fp32 "
        "on CPU",
    )
    gpus: int = Field(
        1,
        ge=1,
        description="ranks one trial runs on: GPUs on CUDA, processes on CPU; more than 1 shards "
        "the model over them (torchrun, FSDP2)",
    )
    sharding: Literal["fsdp", "zero2", "zero3"] = Field(
        "fsdp",
        description="how a trial on several ranks is sharded: fsdp (FSDP2's fully_shard: "
        "weights, gradients and optimizer states, ZeRO stage 3's partitioning)",
    )
    time_limit_s: float | None = Field(None, gt=0)
    memory_limit_gb: float | None = Field(None, gt=0, description="child address-space cap")
    save: Literal["adapter", "full", "none"] = "adapter"
    run_dir: str = "runs"

    # Pricing of the hardware it runs on (catalogue ids, or an override).
    gpu: str | None = Field(None, description="catalogue GPU id the run is priced as")
    provider: str | None = None
    usd_per_hour: float | None = Field(None, ge=0, description="override of the hourly price")
    cpu_instance: str | None = Field(None, description="catalogue CPU instance for CPU runs")

    # Bookkeeping when run by a sweep.
    calibration: str | None = Field(
        None,
        description="calibration profile (a path) the trial's predicted peak, hours and dollars "
        "are corrected by, as its sweep's gate corrects them; None: the planner's defaults",
    )
    study: str | None = None
    trial_number: int | None = None

    @field_validator("targets")
    @classmethod
    def _targets_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("`targets` must be 'attn', 'mlp', 'all' or module names, got ''")
        return value.strip()


class StepLog(_Strict):
    """One logged optimizer step (and, every ``eval_every`` steps, the eval NLL)."""

    step: int
    epoch: float
    loss: float
    lr: float
    tokens_per_s: float
    peak_gb: float
    eval_nll: float | None = None


class RungReport(_Strict):
    """What a trial reports at a rung of the sweep's early stopping: eval NLL, the forgetting
    measures on a fixed subset of its retain source, and what it has cost so far."""

    step: int
    eval_nll: float
    retain_delta_nll: float | None = Field(
        None, description="on the subset: NLL(fine-tuned) - NLL(base), as retain_delta_nll"
    )
    retain_kl: float | None = Field(None, description="on the subset, as retain_kl")
    retain_rows: int = Field(0, description="retain rows in the subset (0: none scored)")
    wall_s: float = Field(description="seconds since the trial started")
    dollars: float = Field(description="wall_s at the trial's hourly price")
    devices: int = 1
    max_steps: int | None = Field(None, description="the trial's last step")
    projected_wall_s: float | None = Field(
        None,
        description="seconds the trial will have taken at max_steps, at its pace so far: "
        "wall_s plus the steps left at the mean time per step since loading",
    )
    projected_dollars: float | None = Field(
        None, description="projected_wall_s at the trial's hourly price"
    )


class Quality(_Strict):
    eval_nll: float | None = None
    base_eval_nll: float | None = None
    exact_match: float | None = None
    base_exact_match: float | None = None
    train_nll: float | None = None
    overfit_gap: float | None = None
    generalization_gap: float | None = None
    best_step: int | None = None


class RetainTaskDrop(_Strict):
    """One lm-eval task of an ``lm-eval:`` retain source: accuracies on the same items."""

    task: str
    items: int
    base_acc: float
    acc: float
    drop: float = Field(description="base_acc - acc")
    low: float = Field(description="95% interval of the drop, lower end (Newcombe, paired)")
    high: float = Field(description="95% interval of the drop, upper end")


class Forgetting(_Strict):
    retain_delta_nll: float | None = None
    retain_kl: float | None = None
    fact_recall_drop: float | None = None
    base_retain_nll: float | None = None
    base_fact_recall: float | None = None
    retain_source: str | None = Field(
        None,
        description="what forgetting is measured on: 'self-samples', 'file:<path>', 'demo', "
        "'lm-eval:TASKS'",
    )
    retain_acc_drop: float | None = Field(
        None,
        description="lm-eval sources: accuracy(base) - accuracy(fine-tuned), the mean over the "
        "named tasks",
    )
    retain_acc_drop_low: float | None = Field(
        None, description="lm-eval sources: 95% interval of retain_acc_drop, lower end"
    )
    retain_acc_drop_high: float | None = Field(
        None, description="lm-eval sources: 95% interval of retain_acc_drop, upper end"
    )
    base_retain_acc: float | None = Field(
        None, description="lm-eval sources: the base model's accuracy, the mean over the tasks"
    )
    retain_tasks: list[RetainTaskDrop] | None = Field(
        None, description="lm-eval sources: each named task's accuracies, drop and interval"
    )
    self_retain_delta_nll: float | None = Field(
        None, description="the demo only: retain_delta_nll on the base model's self-samples"
    )
    self_retain_kl: float | None = Field(
        None, description="the demo only: retain_kl on the base model's self-samples"
    )


class Measured(_Strict):
    # peak_gb is the trial's own memory: CUDA max allocated, or on CPU the peak resident set
    # above the process's baseline after imports (comparable with the planner's prediction);
    # process_peak_gb is the whole process's peak resident set, libraries included.
    peak_gb: float | None = None
    peak_reserved_gb: float | None = None
    process_peak_gb: float | None = None
    wall_s: float | None = None
    load_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    steps: int | None = None
    # A sharded trial's peak_gb and states_gb are the largest over its ranks, and the
    # *_mean fields the mean; states_gb is what the trial's tensors hold on a rank: its
    # parameters', gradients' and optimizer states' bytes (each rank's local shards).
    peak_gb_mean: float | None = Field(None, description="sharded trials: mean peak over ranks")
    states_gb: float | None = Field(
        None,
        description="parameters + gradients + optimizer states held by the (largest) rank, GB",
    )
    states_gb_mean: float | None = Field(
        None, description="sharded trials: mean over ranks of states_gb"
    )
    rank_peak_gb: list[float] | None = Field(None, description="sharded trials: each rank's peak")
    rank_states_gb: list[float] | None = Field(
        None, description="sharded trials: each rank's states_gb"
    )


class Predicted(_Strict):
    """The planner's prediction for the same configuration."""

    peak_gb: float | None = None
    hours: float | None = None
    dollars: float | None = None
    flops: float | None = Field(None, description="training FLOPs of the whole run")
    seq_len: int | None = Field(None, description="the sequence length the planner sized")
    breakdown: dict[str, int] | None = Field(
        None, description="bytes per memory term (planner.estimation.memory.TERMS)"
    )
    states_gb: float | None = Field(
        None,
        description="parameters + gradients + optimizer states per rank at rest "
        "(planner.estimation.memory.state_bytes), comparable with measured.states_gb",
    )
    calibration: dict[str, Any] | None = Field(
        None,
        description="the calibration profile peak_gb, hours and dollars were corrected by "
        "(path, sha256, version, ...; calibrated, label, warnings); None: the planner's "
        "defaults. breakdown and flops are never corrected",
    )


class Hardware(_Strict):
    device: str = "cpu"
    device_name: str | None = None
    devices: int = Field(1, description="devices priced: the GPUs of the trial (1 on CPU)")
    ranks: int = Field(1, description="processes the trial ran on (torch.distributed ranks)")
    gpu: str | None = None
    provider: str | None = None
    cpu_instance: str | None = None
    usd_per_hour: float | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class RepeatResult(_Strict):
    """One run of a repeated trial, with its own seed: what it measured (no loss curve)."""

    repeat: int = Field(..., ge=0, description="0, 1, ...: the run's seed is the trial's + repeat")
    seed: int
    state: TrialState
    error: str | None = None
    quality: Quality = Field(default_factory=Quality)
    forgetting: Forgetting = Field(default_factory=Forgetting)
    measured: Measured = Field(default_factory=Measured)
    dollars: float | None = None


class DataFile(_Strict):
    """One data file a trial read: what it was for, where, its bytes' hash and usable rows."""

    role: str = Field(description="train, eval or retain")
    path: str
    sha256: str | None = Field(None, description="of the file's bytes; None: an hf: dataset")
    rows: int


class DataProvenance(_Strict):
    """What a trial trained and was scored on, after the data check (counts, never matches)."""

    fingerprint: str = Field(
        description="SHA-256 of the train, eval and retain rows after cleaning and the counts "
        "dropped: trials with equal fingerprints saw the same data"
    )
    files: list[DataFile] = Field(default_factory=list)
    split: Literal["file", "grouped"] = Field(
        description="file: eval from its own file; grouped: held out of train with copies and "
        "near copies kept on one side"
    )
    leakage: Literal["error", "drop", "warn"] = "drop"
    train_rows: int
    eval_rows: int
    eval_leaked: int = Field(0, description="eval rows that copy or nearly copy a train row")
    eval_dropped: int = Field(0, description="of those, removed before training (leakage=drop)")
    train_duplicates: int = Field(0, description="train rows copying an earlier train row")
    train_exact_duplicates: int = 0
    train_near_duplicates: int = 0
    retain_in_train: int = Field(0, description="retain rows that copy or nearly copy train rows")
    personal_data: dict[str, int] = Field(
        default_factory=dict, description="matches per kind (email, phone, ...), all files"
    )


class TrialResult(_Strict):
    """Everything measured about one trial; ``state`` is the outcome (serialised as its string)."""

    state: TrialState
    method: Method
    params: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    quality: Quality = Field(default_factory=Quality)
    forgetting: Forgetting = Field(default_factory=Forgetting)
    measured: Measured = Field(default_factory=Measured)
    predicted: Predicted = Field(default_factory=Predicted)
    dollars: float | None = None
    hardware: Hardware = Field(default_factory=Hardware)
    artifact: str | None = None
    error: str | None = None
    steps: list[StepLog] = Field(default_factory=list)
    command: str | None = Field(None, description="the `paretune trial ...` that reproduces it")
    config: TrialConfig | None = None
    data: DataProvenance | None = Field(
        None, description="the data trained and scored on: files, hashes, cleaning, fingerprint"
    )
    repeats: list[RepeatResult] = Field(
        default_factory=list,
        description="a trial run with several seeds: each run; then quality, forgetting, "
        "throughput and MFU are their means, times, tokens and dollars their sums (each run is "
        "paid for), peak memory their largest, and steps and artifact the first run's",
    )
    stopped_at_step: int | None = Field(
        None,
        description="a trial the sweep's early stopping stopped (state pruned): the rung's step",
    )
    sd: dict[str, float] = Field(
        default_factory=dict,
        description="a repeated trial: the sample standard deviation over its runs of each "
        "metric, by its path ('quality.eval_nll', 'forgetting.retain_delta_nll', 'dollars')",
    )
