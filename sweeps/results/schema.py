"""The results file's schema, in one place: every table, column and view, typed and described.

Each :class:`Column` names its DuckDB type, what it holds, and where its value comes from
(``source``: paths into the record of one trial, step or study, the first non-null wins).
From these lists come the tables' DDL (:meth:`Table.ddl`), the rows written from an Optuna
study (:func:`sweeps.results.store.trial_row` reads each column's ``source``), the views'
SQL, and the tables users read (:func:`schema_markdown`).

Importing this module imports nothing beyond the standard library (and
:mod:`sweeps.outcome`), so a documentation build can call :func:`schema_markdown` without
torch, Optuna or DuckDB installed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweeps.outcome import Outcome

__all__ = [
    "TRIAL_PARAMETERS",
    "json_value",
    "CALIBRATION",
    "FRONTIER",
    "RESULT_ROOTS",
    "STEPS",
    "STUDIES",
    "TABLES",
    "TRIAL_REPEATS",
    "TRIALS",
    "UNSTORED_RESULT_FIELDS",
    "VERSIONS",
    "VIEWS",
    "Column",
    "Table",
    "View",
    "ViewColumn",
    "MIGRATIONS",
    "PREDICTED_TERMS",
    "SCHEMA_VERSION",
    "Migration",
    "create_statements",
    "migration_statements",
    "schema_markdown",
]


TRIAL_PARAMETERS = (
    "method",
    "rank",
    "alpha",
    "use_rslora",
    "targets",
    "lr",
    "epochs",
    "max_steps",
    "batch",
    "grad_accum",
    "dropout",
    "warmup_ratio",
    "weight_decay",
    "optimizer",
    "lr_schedule",
    "freeze_trainable_layers",
    "max_seq_len",
    "seed",
)
"""``trials`` columns that say what the trial was asked to do, in the order a user reads them."""


def json_value(value: Any) -> Any:
    """A JSON column's value as DuckDB gives it back (text) decoded; None where the text is
    not JSON; anything else unchanged."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``source`` says where the value comes from: one or more paths into the record the row is
    built from (``"result.quality.eval_nll"``), joined by ``" or "``; the first that is not
    null is the value (a missing key is null). ``adapter_only`` columns are null unless the
    trial's method trains an adapter (lora, qlora, dora).
    """

    name: str
    type: str
    description: str
    source: str
    not_null: bool = False
    adapter_only: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(path.strip() for path in self.source.split(" or "))

    @functools.cached_property
    def _keys(self) -> tuple[tuple[str, ...], ...]:
        """Each path's keys, split once (a sync reads every column of every logged step)."""
        return tuple(tuple(path.split(".")) for path in self.paths)

    def value(self, record: Mapping[str, Any]) -> Any:
        """This column's value in ``record``: the first of its paths that is not null."""
        for keys in self._keys:
            found = _walk(record, keys)
            if found is not None:
                return found
        return None


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    return _walk(record, tuple(path.split(".")))


def _walk(record: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = record
    for key in keys:
        if type(node) is dict or isinstance(node, Mapping):  # a dict without the ABC's check
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


PREDICTED_TERMS = (
    "weights",
    "adapter_weights",
    "gradients",
    "optimizer_states",
    "activations",
    "logits_loss",
    "framework_overhead",
)
"""The planner's memory terms (``planner.estimation.memory.TERMS``, held equal by a test;
spelled out here so that this module imports nothing from the planner)."""

_PREDICTED_TERMS = tuple(
    Column(
        f"predicted_{term}_bytes",
        "BIGINT",
        f"planner: bytes of the {term.replace('_', ' ')} term of the predicted peak",
        f"predicted.breakdown.{term}",
    )
    for term in PREDICTED_TERMS
)


@dataclass(frozen=True)
class Table:
    """A table: its key, its columns, and the parts of the record its rows are built from
    (``sources``: root name -> what it is)."""

    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    sources: Mapping[str, str]
    added: tuple[str, ...] = ()
    """Columns added after the first release and before schema versions: an unversioned file
    gains them on its first write. Columns added since are named by a :class:`Migration`."""

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def ddl(self) -> list[str]:
        """``CREATE TABLE IF NOT EXISTS``, then one ``ADD COLUMN IF NOT EXISTS`` per added column."""
        body = [f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}" for c in self.columns] + [
            f"PRIMARY KEY ({', '.join(self.key)})"
        ]
        joined = ",\n  ".join(body)
        return [f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {joined}\n)"] + [
            f"ALTER TABLE {self.name} ADD COLUMN IF NOT EXISTS {name} {self.column(name).type}"
            for name in self.added
        ]


@dataclass(frozen=True)
class ViewColumn:
    """One column of a view: its SQL expression over the table the view reads."""

    name: str
    type: str
    description: str
    expression: str


@dataclass(frozen=True)
class View:
    name: str
    description: str
    columns: tuple[Column | ViewColumn, ...]
    sql: str

    def ddl(self) -> list[str]:
        return [f"CREATE OR REPLACE VIEW {self.name} AS\n{self.sql.strip()}"]


# ---------------------------------------------------------------- studies

STUDIES = Table(
    name="studies",
    description="one row per study",
    key=("study",),
    sources={
        "study": "the Optuna study: its name and its directions (lower case)",
        "attrs": "the study's user attributes, as the sweep set them",
        "spec": "the sweep spec the study runs under (user attribute spec)",
        "storage": "the Optuna storage's URL, without its password",
        "created_at": "user attribute created_at, as a timestamp",
        "now": "the time the row is written",
    },
    columns=(
        Column("study", "VARCHAR", "study name", "study.name", not_null=True),
        Column(
            "storage",
            "VARCHAR",
            "Optuna storage it lives in (journal path or URL without password)",
            "storage",
        ),
        Column("model", "VARCHAR", "model fine-tuned", "spec.model"),
        Column("sampler", "VARCHAR", "tpe, nsga2, gp or random", "spec.sampler"),
        Column(
            "quality_metric",
            "VARCHAR",
            "objective 1: eval_nll or exact_match",
            "attrs.objectives.0",
        ),
        Column(
            "forgetting_metric",
            "VARCHAR",
            "objective 2: retain_delta_nll, retain_kl, fact_recall_drop or retain_acc_drop",
            "attrs.objectives.1",
        ),
        Column("cost_metric", "VARCHAR", "objective 3: dollars or hours", "attrs.objectives.2"),
        Column("directions", "VARCHAR[]", "Optuna direction of each objective", "study.directions"),
        Column("gpu", "VARCHAR", "target GPU id (feasibility gate, price)", "spec.hardware.gpu"),
        Column("provider", "VARCHAR", "provider whose price is used", "spec.hardware.provider"),
        Column("budget_dollars", "DOUBLE", "dollar budget", "spec.budget.dollars"),
        Column("budget_hours", "DOUBLE", "trial-hour budget", "spec.budget.hours"),
        Column(
            "budget_trials",
            "INTEGER",
            "trial budget (of the spec as last run)",
            "spec.budget.trials",
        ),
        Column(
            "calibration",
            "JSON",
            "the calibration profile the sweep's predictions used, as last run ([run] "
            "calibration): path, sha256 of the file, format version, created, runs, devices; "
            "null: the planner's defaults (each trial's own is trials.calibration)",
            "attrs.calibration",
        ),
        Column("created_at", "TIMESTAMP", "when the study was created", "created_at"),
        Column("synced_at", "TIMESTAMP", "when this row was last written", "now"),
        Column(
            "spec",
            "JSON",
            "the whole sweep spec (as last run: a rerun with a changed spec updates it)",
            "spec",
        ),
    ),
)

# ---------------------------------------------------------------- trials

TRIALS = Table(
    name="trials",
    description="one row per Optuna trial",
    key=("study", "number"),
    sources={
        "study": "the study's name",
        "trial": "the Optuna trial: number, params, datetime_start, datetime_complete",
        "attrs": "the trial's user attributes, as the sweep set them (its worker, the gate's "
        "prediction, the outcome and error, the artifact kept, the command)",
        "system_attrs": "Optuna's system attributes of the trial (failed_trial: the trial a "
        "heartbeat retry re-runs)",
        "result": "the TrialResult the trial's process returned (user attribute result); "
        "absent until the trial ends",
        "config": "the TrialConfig: the result's, else (while it runs) user attribute config",
        "predicted": "the planner's prediction: the result's, else (until the trial ends) the "
        "gate's (user attributes predicted_peak_gb, predicted_hours, predicted_dollars, "
        "calibration)",
        "versions": "the package versions the trial recorded (result.hardware.versions); "
        "null when none were",
        "state": "the outcome: user attribute state, else from Optuna's state (a FAIL of a "
        "trial with a worker recorded is lost: Optuna's heartbeat check failed it)",
        "objectives": "the trial's Optuna values as minimised: negated where the direction is "
        "maximize, null where not finite (quality, forgetting, cost)",
    },
    added=(
        "measured_process_peak_gb",
        "retain_source",
        "self_retain_delta_nll",
        "self_retain_kl",
        "retain_acc_drop",
        "retain_acc_drop_low",
        "retain_acc_drop_high",
        "base_retain_acc",
        "retain_tasks",
        "repeats",
        "objective_quality_sd",
        "objective_forgetting_sd",
        "objective_cost_sd",
        "metric_sd",
        "repeat_results",
    ),
    columns=(
        Column("study", "VARCHAR", "study name", "study", not_null=True),
        Column(
            "number", "INTEGER", "Optuna trial number (0, 1, ...)", "trial.number", not_null=True
        ),
        Column(
            "state",
            "VARCHAR",
            "the trial's outcome: " + ", ".join(Outcome) + " (see trial states)",
            "state",
        ),
        Column(
            "error",
            "VARCHAR",
            "why it did not complete (OOM message, exception, gate reason)",
            "attrs.error or result.error",
        ),
        Column(
            "retry_of",
            "INTEGER",
            "number of the trial this one re-runs (its worker died or was stopped)",
            "attrs.retry_of or system_attrs.failed_trial",
        ),
        Column(
            "method",
            "VARCHAR",
            "full, lora, qlora, dora or freeze",
            "config.method or result.method or trial.params.method",
        ),
        Column(
            "rank", "INTEGER", "adapter rank (adapter methods)", "config.rank", adapter_only=True
        ),
        Column("alpha", "DOUBLE", "LoRA alpha", "config.alpha", adapter_only=True),
        Column("use_rslora", "BOOLEAN", "rsLoRA scaling", "config.use_rslora", adapter_only=True),
        Column("targets", "VARCHAR", "adapter target modules", "config.targets", adapter_only=True),
        Column("lr", "DOUBLE", "peak learning rate", "config.lr"),
        Column("epochs", "DOUBLE", "passes over the training set", "config.epochs"),
        Column("max_steps", "INTEGER", "optimizer-step cap", "config.max_steps"),
        Column("batch", "INTEGER", "micro-batch size", "config.batch"),
        Column("grad_accum", "INTEGER", "gradient accumulation steps", "config.grad_accum"),
        Column("dropout", "DOUBLE", "adapter dropout", "config.dropout"),
        Column("warmup_ratio", "DOUBLE", "warm-up fraction", "config.warmup_ratio"),
        Column("weight_decay", "DOUBLE", "weight decay", "config.weight_decay"),
        Column("optimizer", "VARCHAR", "optimizer", "config.optimizer"),
        Column("lr_schedule", "VARCHAR", "learning-rate schedule", "config.lr_schedule"),
        Column(
            "freeze_trainable_layers",
            "INTEGER",
            "method freeze: layers trained",
            "config.freeze_trainable_layers",
        ),
        Column("max_seq_len", "INTEGER", "sequence length", "config.max_seq_len"),
        Column("seed", "INTEGER", "trial seed", "config.seed"),
        Column("params", "JSON", "the parameters Optuna sampled, by Optuna name", "trial.params"),
        Column(
            "objective_quality",
            "DOUBLE",
            "objective 1, smaller is better (exact_match negated)",
            "objectives.quality",
        ),
        Column(
            "objective_forgetting",
            "DOUBLE",
            "objective 2, smaller is better",
            "objectives.forgetting",
        ),
        Column("objective_cost", "DOUBLE", "objective 3, smaller is better", "objectives.cost"),
        Column(
            "repeats",
            "INTEGER",
            "runs of a repeated trial ([trial] repeats; seeds seed, seed+1, ...): its metrics are "
            "their means, its times and dollars their sums; null: one run",
            "attrs.repeats",
        ),
        Column(
            "objective_quality_sd",
            "DOUBLE",
            "a repeated trial: standard deviation of objective 1 over its runs",
            "attrs.objective_sd.0",
        ),
        Column(
            "objective_forgetting_sd",
            "DOUBLE",
            "a repeated trial: standard deviation of objective 2 over its runs",
            "attrs.objective_sd.1",
        ),
        Column(
            "objective_cost_sd",
            "DOUBLE",
            "a repeated trial: standard deviation of objective 3, the runs' sum (sqrt(runs) x "
            "one run's)",
            "attrs.objective_sd.2",
        ),
        Column(
            "metric_sd",
            "JSON",
            "a repeated trial: each metric's standard deviation over its runs, by result path "
            "('quality.eval_nll', 'forgetting.retain_delta_nll', 'dollars', ...)",
            "result.sd",
        ),
        Column(
            "repeat_results",
            "JSON",
            "a repeated trial: one object per run (its seed, state, objectives and metrics); "
            "the view trial_repeats has them as rows",
            "attrs.repeat_results",
        ),
        Column(
            "data_fingerprint",
            "VARCHAR",
            "SHA-256 of the train, eval and retain rows after the data check's cleaning and the "
            "counts dropped: trials with different fingerprints trained or scored on different "
            "data (the frontier warns)",
            "result.data.fingerprint",
        ),
        Column(
            "eval_rows_leaked",
            "INTEGER",
            "eval rows that copy or nearly copy a train row (MinHash Jaccard >= 0.8)",
            "result.data.eval_leaked",
        ),
        Column(
            "eval_rows_dropped",
            "INTEGER",
            "of those, dropped before training ([data] leakage = drop)",
            "result.data.eval_dropped",
        ),
        Column(
            "train_duplicates",
            "INTEGER",
            "train rows that copy (exactly or nearly) an earlier train row",
            "result.data.train_duplicates",
        ),
        Column(
            "data_provenance",
            "JSON",
            "the data files (path, sha256, rows), split, leakage policy, counts of duplicates, "
            "leaks and personal data found (never the matches)",
            "result.data",
        ),
        Column(
            "eval_nll",
            "DOUBLE",
            "mean completion NLL on the held-out task set",
            "result.quality.eval_nll",
        ),
        Column(
            "base_eval_nll", "DOUBLE", "the same for the base model", "result.quality.base_eval_nll"
        ),
        Column(
            "exact_match",
            "DOUBLE",
            "greedy exact-match accuracy on the task",
            "result.quality.exact_match",
        ),
        Column(
            "base_exact_match",
            "DOUBLE",
            "the same for the base model",
            "result.quality.base_exact_match",
        ),
        Column("train_nll", "DOUBLE", "final training NLL", "result.quality.train_nll"),
        Column(
            "overfit_gap",
            "DOUBLE",
            "final eval NLL - best eval NLL seen",
            "result.quality.overfit_gap",
        ),
        Column(
            "generalization_gap",
            "DOUBLE",
            "eval NLL - train NLL",
            "result.quality.generalization_gap",
        ),
        Column("best_step", "INTEGER", "step with the best eval NLL", "result.quality.best_step"),
        Column(
            "retain_delta_nll",
            "DOUBLE",
            "retain-set NLL(fine-tuned) - NLL(base)",
            "result.forgetting.retain_delta_nll",
        ),
        Column(
            "retain_kl",
            "DOUBLE",
            "mean per-token KL(base || fine-tuned) on the retain set",
            "result.forgetting.retain_kl",
        ),
        Column(
            "fact_recall_drop",
            "DOUBLE",
            "drop in exact-match recall of facts the base knew",
            "result.forgetting.fact_recall_drop",
        ),
        Column(
            "base_retain_nll",
            "DOUBLE",
            "retain-set NLL of the base model",
            "result.forgetting.base_retain_nll",
        ),
        Column(
            "retain_source",
            "VARCHAR",
            "what forgetting is measured on: self-samples, file:<path> or demo",
            "result.forgetting.retain_source",
        ),
        Column(
            "self_retain_delta_nll",
            "DOUBLE",
            "the demo only: retain_delta_nll on the base model's self-samples",
            "result.forgetting.self_retain_delta_nll",
        ),
        Column(
            "self_retain_kl",
            "DOUBLE",
            "the demo only: retain_kl on the base model's self-samples",
            "result.forgetting.self_retain_kl",
        ),
        Column(
            "retain_acc_drop",
            "DOUBLE",
            "lm-eval retain sources: accuracy(base) - accuracy(fine-tuned), the mean over the tasks",
            "result.forgetting.retain_acc_drop",
        ),
        Column(
            "retain_acc_drop_low",
            "DOUBLE",
            "lower end of the 95% interval of retain_acc_drop (Newcombe per task, MOVER mean)",
            "result.forgetting.retain_acc_drop_low",
        ),
        Column(
            "retain_acc_drop_high",
            "DOUBLE",
            "upper end of the 95% interval of retain_acc_drop",
            "result.forgetting.retain_acc_drop_high",
        ),
        Column(
            "base_retain_acc",
            "DOUBLE",
            "lm-eval retain sources: the base model's accuracy, the mean over the tasks",
            "result.forgetting.base_retain_acc",
        ),
        Column(
            "retain_tasks",
            "JSON",
            "lm-eval retain sources: per task, a list of {task, items, base_acc, acc, drop, low, "
            "high}",
            "result.forgetting.retain_tasks",
        ),
        Column(
            "predicted_peak_gb",
            "DOUBLE",
            "planner: peak memory on the target GPU (GB = 1e9 bytes)",
            "predicted.peak_gb",
        ),
        Column("predicted_hours", "DOUBLE", "planner: hours on the target GPU", "predicted.hours"),
        Column(
            "predicted_dollars", "DOUBLE", "planner: dollars on the target GPU", "predicted.dollars"
        ),
        Column(
            "calibration",
            "JSON",
            "the calibration profile predicted_peak_gb, predicted_hours and predicted_dollars "
            "were corrected by: path, sha256 (of the file), version, created, runs, devices, "
            "calibrated (whether a group of it applied), label (what was done, or why not), "
            "warnings (extrapolation); null: the planner's defaults. The predicted_*_bytes terms "
            "and predicted_flops are never corrected (what `paretune calibrate` fits from)",
            "predicted.calibration",
        ),
        *_PREDICTED_TERMS,
        Column(
            "predicted_flops",
            "DOUBLE",
            "planner: training FLOPs of the whole run (what a calibration divides by the "
            "measured training seconds)",
            "predicted.flops",
        ),
        Column(
            "predicted_seq_len",
            "INTEGER",
            "planner: the sequence length it sized (the longest example, or max_seq_len when "
            "packed)",
            "predicted.seq_len",
        ),
        Column(
            "predicted_states_gb",
            "DOUBLE",
            "planner: weights + gradients + optimizer states per rank between steps (compare "
            "measured_states_gb)",
            "predicted.states_gb",
        ),
        Column(
            "gpu_memory_gb",
            "DOUBLE",
            "memory of the target GPU the gate compared with",
            "attrs.gpu_memory_gb",
        ),
        Column(
            "measured_peak_gb",
            "DOUBLE",
            "measured peak memory of the trial: CUDA allocated, or CPU resident above the baseline",
            "result.measured.peak_gb",
        ),
        Column(
            "measured_peak_reserved_gb",
            "DOUBLE",
            "measured peak reserved memory (CUDA)",
            "result.measured.peak_reserved_gb",
        ),
        Column(
            "measured_process_peak_gb",
            "DOUBLE",
            "peak resident memory of the trial process",
            "result.measured.process_peak_gb",
        ),
        Column(
            "measured_peak_gb_mean",
            "DOUBLE",
            "sharded trials: the mean over ranks of each rank's peak (measured_peak_gb is the "
            "largest)",
            "result.measured.peak_gb_mean",
        ),
        Column(
            "measured_states_gb",
            "DOUBLE",
            "parameters + gradients + optimizer states a rank holds after a step (the largest "
            "rank's local shards)",
            "result.measured.states_gb",
        ),
        Column(
            "measured_states_gb_mean",
            "DOUBLE",
            "sharded trials: the mean over ranks of measured_states_gb",
            "result.measured.states_gb_mean",
        ),
        Column(
            "measured_rank_peak_gb",
            "JSON",
            "sharded trials: each rank's peak, rank 0 first",
            "result.measured.rank_peak_gb",
        ),
        Column(
            "measured_rank_states_gb",
            "JSON",
            "sharded trials: each rank's measured_states_gb, rank 0 first",
            "result.measured.rank_states_gb",
        ),
        Column("wall_s", "DOUBLE", "trial wall-clock seconds", "result.measured.wall_s"),
        Column("load_s", "DOUBLE", "model and data loading seconds", "result.measured.load_s"),
        Column("train_s", "DOUBLE", "training seconds", "result.measured.train_s"),
        Column("eval_s", "DOUBLE", "evaluation seconds", "result.measured.eval_s"),
        Column("tokens", "BIGINT", "training tokens processed", "result.measured.tokens"),
        Column("tokens_per_s", "DOUBLE", "training throughput", "result.measured.tokens_per_s"),
        Column("mfu", "DOUBLE", "model FLOP utilisation", "result.measured.mfu"),
        Column(
            "steps_done",
            "INTEGER",
            "optimizer steps run (while running: the last step written so far)",
            "result.measured.steps",
        ),
        Column(
            "dollars",
            "DOUBLE",
            "measured cost: wall hours x hourly price x devices",
            "result.dollars",
        ),
        Column(
            "stopped_at_step",
            "INTEGER",
            "state pruned: the rung (optimizer step) where early stopping stopped it; its "
            "eval_nll is the one scored there",
            "result.stopped_at_step",
        ),
        Column(
            "rungs",
            "JSON",
            "early stopping: the trial's report at each rung it reached (step, eval_nll, "
            "retain_delta_nll and retain_kl on the retain subset, retain_rows, wall_s, dollars) "
            "and the decision there (continues, reason)",
            "attrs.rungs",
        ),
        Column("device", "VARCHAR", "cpu or cuda", "result.hardware.device"),
        Column("device_name", "VARCHAR", "device model name", "result.hardware.device_name"),
        Column("devices", "INTEGER", "devices used", "result.hardware.devices"),
        Column(
            "ranks",
            "INTEGER",
            "processes the trial ran on (torch.distributed ranks; 1: not sharded)",
            "result.hardware.ranks",
        ),
        Column(
            "gpu",
            "VARCHAR",
            "catalogue GPU id it was priced as",
            "result.hardware.gpu or config.gpu",
        ),
        Column("provider", "VARCHAR", "provider it was priced at", "result.hardware.provider"),
        Column(
            "cpu_instance",
            "VARCHAR",
            "catalogue CPU instance (CPU runs)",
            "result.hardware.cpu_instance",
        ),
        Column("usd_per_hour", "DOUBLE", "hourly price used", "result.hardware.usd_per_hour"),
        Column("torch_version", "VARCHAR", "torch version", "versions.torch"),
        Column("transformers_version", "VARCHAR", "transformers version", "versions.transformers"),
        Column("peft_version", "VARCHAR", "peft version", "versions.peft"),
        Column("versions", "JSON", "all recorded package versions", "versions"),
        Column("worker_host", "VARCHAR", "host of the worker that ran it", "attrs.worker_host"),
        Column("worker_pid", "INTEGER", "process id of that worker", "attrs.worker_pid"),
        Column(
            "cuda_visible_devices",
            "VARCHAR",
            "GPU pinning of the trial's process",
            "attrs.cuda_visible_devices",
        ),
        Column("started_at", "TIMESTAMP", "when the trial started", "trial.datetime_start"),
        Column("finished_at", "TIMESTAMP", "when it finished", "trial.datetime_complete"),
        Column(
            "artifact",
            "VARCHAR",
            "saved adapter/model folder (NULL: none kept, or deleted by the artifact policy)",
            "attrs.artifact or result.artifact",
        ),
        Column(
            "command",
            "VARCHAR",
            "the `paretune trial ...` command that reproduces it",
            "result.command or attrs.command",
        ),
        Column("config", "JSON", "the full TrialConfig", "config"),
    ),
)

RESULT_ROOTS: Mapping[str, str] = {
    "result": "",
    "state": "state",
    "config": "config",
    "predicted": "predicted",
    "versions": "hardware.versions",
}
"""Parts of a ``trials`` record that hold a field of the trial's ``TrialResult`` (once it has
one): record root -> the field's path in the result (``""``: the whole result)."""

UNSTORED_RESULT_FIELDS: Mapping[str, str] = {
    "params": "the column params holds what Optuna sampled (trial.params)",
    "steps": "one row each in the steps table",
    "forgetting.base_fact_recall": "not stored: fact_recall_drop is (base recall minus "
    "fine-tuned recall)",
    "repeats": "the column repeat_results (from the sweep's record of each run, with its "
    "objectives), one row each in the view trial_repeats",
    **{
        f"data.{name}": "in the column data_provenance (JSON)"
        for name in (
            "files",
            "split",
            "leakage",
            "train_rows",
            "eval_rows",
            "train_exact_duplicates",
            "train_near_duplicates",
            "retain_in_train",
            "personal_data",
        )
    },
}
"""Fields of ``TrialResult`` that no ``trials`` column reads, and where they go instead."""

# ---------------------------------------------------------------- steps

STEPS = Table(
    name="steps",
    description="one row per logged optimizer step of a trial",
    key=("study", "number", "step"),
    sources={
        "study": "the study's name",
        "trial": "the Optuna trial (number)",
        "step": "one StepLog of the trial (result.steps, or while it runs the steps so far)",
    },
    columns=(
        Column("study", "VARCHAR", "study name", "study", not_null=True),
        Column("number", "INTEGER", "trial number", "trial.number", not_null=True),
        Column("step", "INTEGER", "optimizer step", "step.step", not_null=True),
        Column("epoch", "DOUBLE", "fractional epoch", "step.epoch"),
        Column("loss", "DOUBLE", "training loss", "step.loss"),
        Column("lr", "DOUBLE", "learning rate at this step", "step.lr"),
        Column("tokens_per_s", "DOUBLE", "throughput", "step.tokens_per_s"),
        Column("peak_gb", "DOUBLE", "peak memory so far", "step.peak_gb"),
        Column("eval_nll", "DOUBLE", "eval NLL when scored at this step", "step.eval_nll"),
    ),
)

TABLES = (STUDIES, TRIALS, STEPS)

# ---------------------------------------------------------------- views

_OBJECTIVES = ("objective_quality", "objective_forgetting", "objective_cost")

_PARETO_OPTIMAL = f"""
SELECT t.* FROM trials t
WHERE t.state = '{Outcome.COMPLETE}'
  AND {" AND ".join(f"t.{c} IS NOT NULL" for c in _OBJECTIVES)}
  AND NOT EXISTS (
    SELECT 1 FROM trials o
    WHERE o.study = t.study AND o.state = '{Outcome.COMPLETE}' AND o.number <> t.number
      AND {" AND ".join(f"o.{c} <= t.{c}" for c in _OBJECTIVES)}
      AND ({" OR ".join(f"o.{c} < t.{c}" for c in _OBJECTIVES)}))
"""

# Two frontier trials are within each other's noise when, in every objective, they are equal
# or differ by less than the larger of their two standard deviations (measured by repeats);
# without any standard deviation of an objective, a pair is never marked. The same rule as
# sweeps.results.frontier.indistinguishable_pairs, which the tests hold this view to.
_WITHIN_NOISE = " AND ".join(
    f"(f.{c}_sd IS NOT NULL OR g.{c}_sd IS NOT NULL)"
    f" AND (g.{c} = f.{c} OR abs(g.{c} - f.{c}) < greatest(f.{c}_sd, g.{c}_sd))"
    for c in _OBJECTIVES
)

FRONTIER = View(
    name="frontier",
    description="every trials column, for the complete trials no other complete trial of the "
    "same study beats or equals on all three objective_* columns (the Pareto-optimal trials), "
    "and one more column",
    columns=(
        *TRIALS.columns,
        ViewColumn(
            "indistinguishable_from",
            "INTEGER[]",
            "the other frontier trials of the study that this one cannot be told apart from: "
            "in each objective equal, or closer than the larger of the two trials' standard "
            "deviations (objective_*_sd, measured with repeats); empty without repeats",
            "",
        ),
    ),
    sql=f"""
WITH front AS ({_PARETO_OPTIMAL.strip()})
SELECT f.*, coalesce((
    SELECT list(g.number ORDER BY g.number)::INTEGER[] FROM front g
    WHERE g.study = f.study AND g.number <> f.number AND {_WITHIN_NOISE}
  ), []::INTEGER[]) AS indistinguishable_from
FROM front f
""",
)


def _trials_column(name: str) -> ViewColumn:
    column = TRIALS.column(name)
    return ViewColumn(column.name, column.type, column.description, column.name)


_CALIBRATION_COLUMNS = (
    *(
        _trials_column(name)
        for name in (
            "study",
            "number",
            "method",
            "rank",
            "batch",
            "max_seq_len",
            "gpu",
            "device",
            "device_name",
            "predicted_peak_gb",
            "measured_peak_gb",
        )
    ),
    ViewColumn(
        "framework",
        "VARCHAR",
        "whose behaviour the predictions are for (the sweep's framework; hf: transformers + "
        "peft, what the trials run); `paretune calibrate` fits only hf rows",
        "coalesce(json_extract_string(config, '$.framework'), 'hf')",
    ),
    ViewColumn(
        "peak_ratio",
        "DOUBLE",
        "measured / predicted peak memory",
        "measured_peak_gb / NULLIF(predicted_peak_gb, 0)",
    ),
    _trials_column("predicted_hours"),
    ViewColumn("measured_hours", "DOUBLE", "trial wall-clock hours", "wall_s / 3600.0"),
    ViewColumn(
        "hours_ratio",
        "DOUBLE",
        "measured / predicted hours",
        "(wall_s / 3600.0) / NULLIF(predicted_hours, 0)",
    ),
    ViewColumn(
        "measured_train_hours",
        "DOUBLE",
        "the trial's training hours (train_s; without loading and evaluation): what a "
        "calibration's throughput is fitted to",
        "train_s / 3600.0",
    ),
    ViewColumn(
        "train_hours_ratio",
        "DOUBLE",
        "measured training hours / predicted hours",
        "(train_s / 3600.0) / NULLIF(predicted_hours, 0)",
    ),
    _trials_column("predicted_dollars"),
    _trials_column("dollars"),
    ViewColumn(
        "dollars_ratio",
        "DOUBLE",
        "measured / predicted dollars",
        "dollars / NULLIF(predicted_dollars, 0)",
    ),
    ViewColumn(
        "calibrated",
        "BOOLEAN",
        "whether a calibration profile's group corrected the predictions (false: the "
        "planner's defaults)",
        "coalesce(CAST(json_extract(calibration, '$.calibrated') AS BOOLEAN), false)",
    ),
    ViewColumn(
        "calibration_sha256",
        "VARCHAR",
        "sha256 of the calibration profile the predictions used (null: none)",
        "json_extract_string(calibration, '$.sha256')",
    ),
    _trials_column("calibration"),
)

CALIBRATION = View(
    name="calibration",
    description="predicted vs measured peak memory, hours and dollars of the complete trials "
    "that have a prediction, with ratios",
    columns=_CALIBRATION_COLUMNS,
    sql="SELECT "
    + ",\n       ".join(
        c.expression if c.expression == c.name else f"{c.expression} AS {c.name}"
        for c in _CALIBRATION_COLUMNS
    )
    + f"""
FROM trials
WHERE state = '{Outcome.COMPLETE}' AND (predicted_peak_gb IS NOT NULL OR predicted_hours IS NOT NULL)
""",
)

_REPEAT_FIELDS = (
    ("repeat", "INTEGER", "run of the trial: 0, 1, ..."),
    ("seed", "INTEGER", "its seed: the trial's seed + repeat"),
    ("state", "VARCHAR", "its outcome (a run that does not complete ends the trial)"),
    ("error", "VARCHAR", "why it did not complete"),
    ("objective_quality", "DOUBLE", "objective 1 of this run, smaller is better"),
    ("objective_forgetting", "DOUBLE", "objective 2 of this run, smaller is better"),
    ("objective_cost", "DOUBLE", "objective 3 of this run (the trial's is the runs' sum)"),
    ("eval_nll", "DOUBLE", "mean completion NLL on the held-out task set"),
    ("exact_match", "DOUBLE", "greedy exact-match accuracy on the task"),
    ("retain_delta_nll", "DOUBLE", "retain-set NLL(fine-tuned) - NLL(base)"),
    ("retain_kl", "DOUBLE", "mean per-token KL(base || fine-tuned) on the retain set"),
    ("fact_recall_drop", "DOUBLE", "drop in exact-match recall of facts the base knew"),
    ("wall_s", "DOUBLE", "this run's wall-clock seconds"),
    ("measured_peak_gb", "DOUBLE", "this run's measured peak memory"),
    ("dollars", "DOUBLE", "this run's measured cost"),
)

TRIAL_REPEATS = View(
    name="trial_repeats",
    description="one row per run of a repeated trial (the trials row holds their means, sums "
    "and standard deviations); trials of one run have none",
    columns=(
        _trials_column("study"),
        _trials_column("number"),
        *(ViewColumn(name, kind, text, f"r.{name}") for name, kind, text in _REPEAT_FIELDS),
    ),
    sql="SELECT t.study, t.number, "
    + ", ".join(f"r.{name} AS {name}" for name, _, _ in _REPEAT_FIELDS)
    + "\nFROM trials t, unnest(from_json(t.repeat_results, '[{"
    + ", ".join(f'"{name}": "{kind}"' for name, kind, _ in _REPEAT_FIELDS)
    + "}]')) AS u(r)\nWHERE t.repeat_results IS NOT NULL",
)

VIEWS = (FRONTIER, CALIBRATION, TRIAL_REPEATS)


def create_statements() -> list[str]:
    """Every statement that makes a results file current: tables, added columns, views."""
    return [statement for part in (*TABLES, *VIEWS) for statement in part.ddl()]


# ---------------------------------------------------------------- versions


@dataclass(frozen=True)
class Migration:
    """One numbered change of the results file's schema.

    ``columns`` are the ``(table, column)`` pairs it adds (their types come from the tables
    above); the views are re-created after every migration. A file records each migration it
    has had in its ``schema_version`` table.
    """

    version: int
    description: str
    columns: tuple[tuple[str, str], ...] = ()

    def statements(self) -> list[str]:
        by_name = {table.name: table for table in TABLES}
        return [
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} "
            f"{by_name[table].column(column).type}"
            for table, column in self.columns
        ]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tables studies, trials, steps and views frontier, calibration, trial_repeats, as "
        "paretune wrote them before schema versions (a file without a schema_version table "
        "is brought to this by adding the columns it lacks)",
    ),
    Migration(2, "view frontier: column indistinguishable_from"),
    Migration(
        3,
        "trials: the data check's columns (data_fingerprint, eval_rows_leaked, "
        "eval_rows_dropped, train_duplicates, data_provenance)",
        columns=tuple(
            ("trials", name)
            for name in (
                "data_fingerprint",
                "eval_rows_leaked",
                "eval_rows_dropped",
                "train_duplicates",
                "data_provenance",
            )
        ),
    ),
    Migration(
        4,
        "trials: the planner's memory terms, FLOPs and sequence length of each prediction "
        "(what `paretune calibrate` fits from)",
        tuple(
            ("trials", name)
            for name in (
                *(f"predicted_{term}_bytes" for term in PREDICTED_TERMS),
                "predicted_flops",
                "predicted_seq_len",
            )
        ),
    ),
    Migration(
        5,
        "trials: sharded trials' ranks and per-rank memory (measured_peak_gb_mean, "
        "measured_states_gb, measured_states_gb_mean, measured_rank_peak_gb, "
        "measured_rank_states_gb) and the planner's states per rank "
        "(predicted_states_gb)",
        tuple(
            ("trials", name)
            for name in (
                "ranks",
                "measured_peak_gb_mean",
                "measured_states_gb",
                "measured_states_gb_mean",
                "measured_rank_peak_gb",
                "measured_rank_states_gb",
                "predicted_states_gb",
            )
        ),
    ),
    Migration(
        6,
        "trials: early stopping's columns (stopped_at_step of a pruned trial, rungs: each "
        "rung's report and decision)",
        (("trials", "stopped_at_step"), ("trials", "rungs")),
    ),
    Migration(
        7,
        "studies and trials: calibration, the calibration profile the predictions used (path, "
        "sha256, version); view calibration: columns framework, measured_train_hours, "
        "train_hours_ratio, calibrated, calibration_sha256 and calibration",
        (("studies", "calibration"), ("trials", "calibration")),
    ),
)
"""Every schema version, in order. A change of the schema appends one: new columns are named
here and added to their table above; a changed view needs only the description."""

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema this paretune writes."""

VERSIONS = Table(
    name="schema_version",
    description="one row per schema migration the file has had (the largest version is its "
    "schema); written by paretune itself, not from a sweep's records",
    key=("version",),
    sources={"migration": "an entry of sweeps.results.schema.MIGRATIONS"},
    columns=(
        Column("version", "INTEGER", "schema version", "migration.version", not_null=True),
        Column(
            "applied",
            "TIMESTAMP",
            "when the file got it (UTC)",
            "migration.applied",
            not_null=True,
        ),
        Column("paretune", "VARCHAR", "the paretune version that applied it", "migration.paretune"),
        Column("description", "VARCHAR", "what it changed", "migration.description"),
    ),
)
"""The table a results file records its migrations in."""


def migration_statements(current: int | None) -> list[str]:
    """What brings a file at schema version ``current`` (None: a file without versions, or
    a new one) to :data:`SCHEMA_VERSION`: its tables' and columns' DDL, then the views."""
    if current is None:
        tables = [statement for table in TABLES for statement in table.ddl()]
        later = [m for m in MIGRATIONS if m.version > 1]
    else:
        tables = []
        later = [m for m in MIGRATIONS if m.version > current]
    columns = [statement for migration in later for statement in migration.statements()]
    views = [statement for view in VIEWS for statement in view.ddl()]
    return [*VERSIONS.ddl(), *tables, *columns, *views]


# ---------------------------------------------------------------- documentation


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(columns: tuple[Column | ViewColumn, ...]) -> list[str]:
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {_cell(c.description)} |" for c in columns]
    return lines


def schema_markdown() -> str:
    """The results file's tables, views and trial states as Markdown tables (for the docs)."""
    lines: list[str] = []
    for table in TABLES:
        key = table.key[0] if len(table.key) == 1 else f"({', '.join(table.key)})"
        lines += [f"**`{table.name}`**: {table.description}; key `{key}`", ""]
        lines += [*_markdown_table(table.columns), ""]
    for view in VIEWS:
        lines += [f"**`{view.name}`** (view): {view.description}", ""]
        own = view.columns[len(TRIALS.columns) :] if view is FRONTIER else view.columns
        if own:
            lines += [*_markdown_table(own), ""]
    lines += [f"**`{VERSIONS.name}`**: {VERSIONS.description}; key `version`", ""]
    lines += [*_markdown_table(VERSIONS.columns), ""]
    lines += ["**Schema versions** (this paretune writes the last one)", ""]
    lines += ["| version | change |", "|---|---|"]
    lines += [f"| {m.version} | {_cell(m.description)} |" for m in MIGRATIONS]
    lines += [""]
    lines += ["**Trial states** (the `state` column of `trials`)", ""]
    lines += ["| state | meaning |", "|---|---|"]
    lines += [f"| `{outcome}` | {_cell(outcome.description)} |" for outcome in Outcome]
    return "\n".join(lines) + "\n"
