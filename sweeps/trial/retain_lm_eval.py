"""``lm-eval:TASKS``: forgetting as the accuracy drop on lm-evaluation-harness tasks.

    retain = "lm-eval:hellaswag,arc_easy"                   # a sweep spec's [data]
    paretune trial --retain 'lm-eval:arc_easy?limit=200'    # one trial
    retain = "lm-eval:my_task?include=tasks&limit=50"       # a folder of task YAMLs of your own

The fine-tuned model (base plus adapter, as it is in memory) is wrapped in lm-eval's ``HFLM``
and scored with lm-eval's own task definitions (prompts, choices, metric); the base model is
scored the same way once and cached (:class:`sweeps.trial.retain.RetainSource`).

After the colon: task, group or tag names of lm-eval, or paths of task YAML files, separated
by commas; then optionally ``?key=value&...``:

- ``limit=N``: the first N items of each task (lm-eval's ``--limit``); default all.
- ``include=DIR``: a folder of task YAMLs of your own (lm-eval's ``--include_path``).
- ``metric=NAME``: the per-item metric taken as correctness, 0 or 1 (default ``acc``; e.g.
  ``acc_norm`` for length-normalised choices, ``exact_match`` for generation tasks).

Numbers (drop = base minus fine-tuned, so forgetting is positive, as ``fact_recall_drop``):

- per named task (a group's items pooled): the accuracy drop on the same items, with a 95%
  interval by Newcombe's hybrid score method for paired proportions (Newcombe 1998,
  "Improved confidence intervals for the difference between binomial proportions based on
  paired data", Statistics in Medicine 17:2635, method 10: Wilson intervals of both
  accuracies, combined with the correlation of the paired outcomes, shrunk toward 0 as
  Newcombe does). Unlike the normal (Wald) interval it is not empty when no answer changed,
  stays informative with few changed answers, and lies within [-1, 1].
- ``retain_acc_drop``: the mean of the named tasks' drops; its interval combines theirs by
  MOVER (Zou & Donner 2008, "Construction of confidence limits about effect measures",
  Statistics in Medicine 27:1693), the tasks' items taken as independent.
- ``retain_delta_nll``: NLL(fine-tuned) - NLL(base) of the correct answer given the task's
  prompt, in nats per answer token, pooled over the items of loglikelihood and
  multiple-choice tasks (lm-eval computes those log-likelihoods anyway; None with
  generation tasks only). ``retain_kl`` stays None: lm-eval returns no next-token
  distributions to compare.

The cache key (as the other sources': base weights, tokenizer, device, precision) adds the
task list, limit, metric, batch size, the lm-eval version (it fixes the built-in tasks) and
the contents of an ``include`` folder or a task YAML given by path; every item's ``doc_hash`` is checked against the base's,
so scores are never paired across changed data. lm-eval reads a built-in task's data from the
Hugging Face Hub or its cache: offline, use tasks already cached or your own task reading a
local file (``dataset_path: json``; ``data_files`` resolve against the working directory).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from pricing.errors import UserError, did_you_mean
from sweeps.trial.retain import RETAIN_VERSION, RetainScores, RetainSource, weights_fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.trial.types import TrialConfig

__all__ = [
    "LM_EVAL_MINIMUM",
    "LM_EVAL_PREFIX",
    "LmEvalError",
    "LmEvalRetain",
    "LmEvalScores",
    "LmEvalSpec",
    "TaskDrop",
    "lm_eval_items",
    "lm_eval_source",
    "paired_drop_interval",
    "wilson_interval",
]

LM_EVAL_PREFIX = "lm-eval:"
LM_EVAL_MINIMUM = "0.4.12"  # the oldest release tested; keep in step with pyproject's extra
Z_95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal
_INSTALL_HINT = "Install it with: pip install 'paretune[lm-eval]'"
_KEYS = {"limit", "include", "metric"}


class LmEvalError(UserError):
    """An ``lm-eval:`` retain source that cannot be used: lm-eval missing, a bad setting,
    an unknown task, or a task without a per-item accuracy."""

    title = "lm-eval retain source"


# --- the setting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LmEvalSpec:
    """``lm-eval:TASK[,TASK...][?limit=N&include=DIR&metric=NAME]``, parsed."""

    tasks: tuple[str, ...]
    limit: int | None = None
    include: str | None = None
    metric: str = "acc"

    @classmethod
    def parse(cls, retain: str) -> LmEvalSpec:
        if not retain.startswith(LM_EVAL_PREFIX):
            raise LmEvalError(f"retain {retain!r} does not start with {LM_EVAL_PREFIX!r}")
        body, _, query = retain[len(LM_EVAL_PREFIX) :].partition("?")
        tasks = tuple(part.strip() for part in body.split(","))
        example = "For example 'lm-eval:hellaswag,arc_easy?limit=100'."
        if not all(tasks):
            raise LmEvalError(f"retain {retain!r}: a task name is empty", example)
        if len(set(tasks)) != len(tasks):
            raise LmEvalError(f"retain {retain!r}: a task is named twice", example)
        settings = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        unknown = sorted(set(settings) - _KEYS)
        if unknown:
            raise LmEvalError(
                f"retain {retain!r}: unknown setting {unknown[0]!r}",
                did_you_mean(unknown[0], _KEYS),
            )
        limit = settings.get("limit")
        if limit is not None and not (limit.isdigit() and int(limit) > 0):
            raise LmEvalError(
                f"retain {retain!r}: `limit` must be a positive integer, got {limit!r}"
            )
        if "include" in settings and not Path(settings["include"]).is_dir():
            raise LmEvalError(
                f"retain {retain!r}: `include` folder {settings['include']!r} does not exist",
                "Give a folder of task YAML files (relative to the working directory).",
            )
        return cls(
            tasks=tasks,
            limit=int(limit) if limit is not None else None,
            include=settings.get("include"),
            metric=settings.get("metric") or "acc",
        )

    def text(self) -> str:
        """The ``lm-eval:...`` value that :meth:`parse` reads back as this spec."""
        settings = {"limit": self.limit, "include": self.include}
        settings["metric"] = self.metric if self.metric != "acc" else None
        query = urlencode({k: v for k, v in settings.items() if v is not None}, safe="/.:,")
        return LM_EVAL_PREFIX + ",".join(self.tasks) + (f"?{query}" if query else "")


# --- what it returns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDrop:
    """One named task (a group's items pooled): accuracies on the same items and the drop."""

    task: str
    items: int
    base_acc: float
    acc: float
    drop: float
    low: float
    high: float


@dataclass(frozen=True)
class LmEvalScores(RetainScores):
    """:class:`RetainScores` with the accuracy drop: ``retain_acc_drop`` (mean over the named
    tasks) and its 95% interval, the base's mean accuracy, and every task's :class:`TaskDrop`.
    ``retain_kl`` is None; ``retain_delta_nll`` and ``base_retain_nll`` are None when no task
    gives log-likelihoods; ``tokens`` counts the answer tokens they are averaged over."""

    retain_delta_nll: float | None
    retain_kl: float | None
    base_retain_nll: float | None
    retain_acc_drop: float = 0.0
    retain_acc_drop_low: float = 0.0
    retain_acc_drop_high: float = 0.0
    base_retain_acc: float = 0.0
    tasks: tuple[TaskDrop, ...] = ()

    def forgetting_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``Forgetting(...)``: the base fields, the accuracy drop with
        its interval, and ``retain_tasks`` (each task's :class:`TaskDrop` as a dict)."""
        return {
            **super().forgetting_fields(),
            "retain_acc_drop": self.retain_acc_drop,
            "retain_acc_drop_low": self.retain_acc_drop_low,
            "retain_acc_drop_high": self.retain_acc_drop_high,
            "base_retain_acc": self.base_retain_acc,
            "retain_tasks": [asdict(task) for task in self.tasks],
        }


# --- intervals ---------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion (Wilson 1927, JASA 22:209)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_drop_interval(
    base_correct: Sequence[int], correct: Sequence[int], *, z: float = Z_95
) -> tuple[float, float, float]:
    """``(drop, low, high)``: accuracy(base) - accuracy(fine-tuned) on the same items, with
    Newcombe's (1998) method-10 interval for a difference of paired proportions."""
    n = len(base_correct)
    if n == 0 or n != len(correct):
        raise ValueError(
            f"need two equally long, non-empty outcome lists, got {n} and {len(correct)}"
        )
    both = sum(1 for x, y in zip(base_correct, correct, strict=True) if x and y)
    base_only = sum(1 for x, y in zip(base_correct, correct, strict=True) if x and not y)
    tuned_only = sum(1 for x, y in zip(base_correct, correct, strict=True) if y and not x)
    neither = n - both - base_only - tuned_only
    p1, p2 = (both + base_only) / n, (both + tuned_only) / n
    l1, u1 = wilson_interval(both + base_only, n, z=z)
    l2, u2 = wilson_interval(both + tuned_only, n, z=z)
    margins = (
        (both + base_only) * (tuned_only + neither) * (both + tuned_only) * (base_only + neither)
    )
    cross = both * neither - base_only * tuned_only
    # The correlation of the paired outcomes, with Newcombe's adjustment toward 0 (as in
    # Fagerland, Lydersen & Laake 2014, Statistics in Medicine 33:2850, "square-and-add").
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    drop = p1 - p2
    return (
        drop,
        max(-1.0, drop - math.sqrt(max(below, 0.0))),
        min(1.0, drop + math.sqrt(max(above, 0.0))),
    )


def _mean_interval(drops: Sequence[TaskDrop]) -> tuple[float, float, float]:
    """Mean of independent drops, its interval by MOVER from theirs (Zou & Donner 2008)."""
    count = len(drops)
    mean = sum(d.drop for d in drops) / count
    below = math.sqrt(sum((d.drop - d.low) ** 2 for d in drops)) / count
    above = math.sqrt(sum((d.high - d.drop) ** 2 for d in drops)) / count
    return mean, max(-1.0, mean - below), min(1.0, mean + above)


# --- lm-eval, imported late --------------------------------------------------------------------


def _lm_eval():
    """The lm_eval package, or a :class:`LmEvalError` saying how to install or upgrade it.
    The version is read before the import: an older lm-eval fails to import with transformers 5."""
    from importlib.metadata import PackageNotFoundError

    from packaging.version import Version

    try:
        installed = _lm_eval_version()
    except PackageNotFoundError:
        installed = None
    if installed is not None and Version(installed) < Version(LM_EVAL_MINIMUM):
        raise _too_old(installed)
    try:
        import lm_eval
        import lm_eval.evaluator
        import lm_eval.models.huggingface
        import lm_eval.tasks
    except ImportError as error:
        raise LmEvalError(
            "The retain source 'lm-eval:...' scores forgetting with lm-evaluation-harness, "
            f"which is not installed here ({error}). It is an optional dependency of paretune, "
            "left out of the default install because it brings pandas, scikit-learn and "
            "datasets; the other retain sources (a retain file, self-samples) work without it.",
            _INSTALL_HINT,
        ) from None
    return lm_eval


def _too_old(installed: str) -> LmEvalError:
    return LmEvalError(
        f"lm-eval {installed} is installed; the 'lm-eval:' retain source needs "
        f"{LM_EVAL_MINIMUM} or later (its TaskManager.load, and support for transformers 5).",
        "Upgrade it with: pip install -U 'paretune[lm-eval]'",
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval's INFO and WARNING lines (one warns that a model object was passed, as here)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _task_manager(spec: LmEvalSpec):
    """A TaskManager that knows every task of ``spec``. lm-eval's own ~15k task files take
    seconds to index: they are left out when the ``include`` folder and YAML paths suffice."""
    tasks = _lm_eval().tasks
    with _quiet():
        manager = tasks.TaskManager(include_path=spec.include, include_defaults=False)
        if all(_known(manager, name) for name in spec.tasks):
            return manager
        manager = tasks.TaskManager(include_path=spec.include)
    for name in spec.tasks:
        if not _known(manager, name):
            raise LmEvalError(
                f"lm-eval has no task, group or tag {name!r}",
                did_you_mean(name, manager.all_tasks)
                + " (`lm-eval ls tasks` lists them; a task of your own: ?include=DIR or a YAML path)",
            )
    return manager


def _known(manager, name: str) -> bool:
    return name in manager.all_tasks or (name.endswith((".yaml", ".yml")) and Path(name).is_file())


def _load_tasks(manager, name: str) -> dict[str, Any]:
    """The leaf tasks of one named task, group or tag (their data read now)."""
    load = manager.load  # outside the try: an AttributeError here is a version mismatch
    try:
        with _quiet():
            loaded = load([name])
    except Exception as error:  # noqa: BLE001 - a task's data or YAML, not paretune's code
        raise LmEvalError(
            f"lm-eval could not load task {name!r}: {type(error).__name__}: {error}",
            "A built-in task reads its data set from the Hugging Face Hub or its cache; "
            "offline, use one already cached, or a task of your own reading local files "
            "(dataset_path: json, dataset_kwargs: {data_files: ...}).",
        ) from None
    tasks = loaded["tasks"]
    for task in tasks.values():
        if task.get_config("num_fewshot") is None:  # as lm-eval's simple_evaluate does
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)  # lm-eval's default few-shot seed
    return loaded


# --- the source --------------------------------------------------------------------------------


class LmEvalRetain(RetainSource):
    """``lm-eval:TASKS``: the base's and the fine-tuned model's per-item outcomes on lm-eval
    tasks, compared on the same items (see the module docstring for the numbers)."""

    def __init__(
        self,
        *,
        spec: LmEvalSpec,
        task_manager,
        tokenizer,
        batch: int,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.task_manager = task_manager
        self.tokenizer = tokenizer
        self.batch = batch

    def items(self) -> dict[str, int]:
        """How many items each named task scores (``limit`` applied), its data read now."""
        return _item_counts(self.spec, self.task_manager)

    def _build_base(self, model) -> dict[str, Any]:
        outcomes = self._outcomes(model)
        items = {
            name: sum(len(t["correct"]) for t in tasks.values()) for name, tasks in outcomes.items()
        }
        meta = {
            "tasks": list(self.spec.tasks),
            "limit": self.spec.limit,
            "metric": self.spec.metric,
            "lm_eval": _lm_eval_version(),
            "items": items,
        }
        return {"outcomes": outcomes, "meta": meta}

    def _score(self, model, base: dict[str, Any]) -> LmEvalScores:
        tuned = self._outcomes(model)
        drops, before, after = [], _new_items(), _new_items()
        for name in self.spec.tasks:
            task_before, task_after = self._paired(base["outcomes"][name], tuned[name])
            drop, low, high = paired_drop_interval(task_before["correct"], task_after["correct"])
            items = len(task_before["correct"])
            base_acc = sum(task_before["correct"]) / items
            drops.append(TaskDrop(name, items, base_acc, base_acc - drop, drop, low, high))
            for key in before:
                before[key] += task_before[key]
                after[key] += task_after[key]
        mean, low, high = _mean_interval(drops)
        base_nll, delta_nll, tokens = _answer_nll(before, after)
        return LmEvalScores(
            source=self.name,
            retain_delta_nll=delta_nll,
            retain_kl=None,
            base_retain_nll=base_nll,
            tokens=tokens,
            retain_acc_drop=mean,
            retain_acc_drop_low=low,
            retain_acc_drop_high=high,
            base_retain_acc=sum(d.base_acc for d in drops) / len(drops),
            tasks=tuple(drops),
        )

    def _paired(self, base_tasks: dict, tuned_tasks: dict) -> tuple[dict, dict]:
        """One named task's items, base and fine-tuned, leaf tasks concatenated in the same
        order; refused when they are not the items the base was scored on."""
        before, after = _new_items(), _new_items()
        for task, base_items in base_tasks.items():
            tuned_items = tuned_tasks.get(task)
            if tuned_items is None or tuned_items["doc_hash"] != base_items["doc_hash"]:
                raise LmEvalError(
                    f"the items of lm-eval task {task!r} are not those the base model was "
                    "scored on (its data changed since)",
                    f"Remove {self.cache_dir} to score the base model again.",
                )
            for key in before:
                before[key] += base_items[key]
                after[key] += tuned_items[key]
        return before, after

    def _outcomes(self, model) -> dict[str, dict[str, dict[str, list]]]:
        """Per named task, per leaf task: the items' doc ids and hashes, correctness, and the
        correct answer's log-likelihood and token count (None where the task has none)."""
        evaluate = _lm_eval().evaluator.evaluate
        was_training = model.training
        try:
            lm = self._wrap(model)
            outcomes: dict[str, dict[str, dict[str, list]]] = {}
            for name in self.spec.tasks:
                loaded = _load_tasks(self.task_manager, name)
                with _quiet():
                    results = evaluate(
                        lm=lm,
                        task_dict=loaded,
                        limit=self.spec.limit,
                        bootstrap_iters=0,
                        log_samples=True,
                    )
                outcomes[name] = {
                    task: self._items(task, task_object, results["samples"][task], lm)
                    for task, task_object in sorted(loaded["tasks"].items())
                }
        finally:
            model.train(was_training)
        return outcomes

    def _wrap(self, model):
        """lm-eval's HFLM around the live model (a copy of the tokenizer: HFLM may set its
        padding token), computing in the trial's precision (HFLM sets its own autocast)."""
        import torch

        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
        with _quiet():
            return _lm_eval().models.huggingface.HFLM(
                pretrained=model,
                tokenizer=copy.deepcopy(self.tokenizer),
                batch_size=self.batch,
                mixed_precision_dtype=dtypes[self.precision],
            )

    def _items(self, task: str, task_object, samples: list[dict], lm) -> dict[str, list]:
        metric = self.spec.metric
        if not samples:
            raise LmEvalError(f"lm-eval task {task!r} has no items (its test split is empty)")
        samples = sorted(
            (s for s in samples if s["filter"] == samples[0]["filter"]), key=lambda s: s["doc_id"]
        )
        items = _new_items()
        for sample in samples:
            value = sample.get(metric)
            if value not in (0, 1):  # 0, 1, 0.0, 1.0, True, False
                raise LmEvalError(
                    f"lm-eval task {task!r} gives no 0/1 {metric!r} per item (it reports "
                    f"{', '.join(sample.get('metrics', [])) or 'nothing'})",
                    "Choose a metric it has, e.g. 'lm-eval:TASK?metric=acc_norm'; perplexity-only "
                    "tasks cannot give an accuracy drop.",
                )
            gold = _gold_index(task_object, sample)
            items["doc_id"].append(int(sample["doc_id"]))
            items["doc_hash"].append(sample["doc_hash"])
            items["correct"].append(int(value))
            items["gold_ll"].append(
                None if gold is None else float(sample["filtered_resps"][gold][0])
            )
            items["gold_tokens"].append(
                None if gold is None else _answer_tokens(lm, *sample["arguments"][gold][:2])
            )
        return items


def _new_items() -> dict[str, list]:
    """Per-item outcomes, one list per field, in doc order."""
    return {"doc_id": [], "doc_hash": [], "correct": [], "gold_ll": [], "gold_tokens": []}


def _answer_nll(before: dict, after: dict) -> tuple[float | None, float | None, int]:
    """Base NLL of the correct answers and its change, nats per answer token, over the items
    that have a log-likelihood; and how many answer tokens that is."""
    base_ll = tuned_ll = 0.0
    tokens = 0
    for ll_base, ll_tuned, count in zip(
        before["gold_ll"], after["gold_ll"], before["gold_tokens"], strict=True
    ):
        if ll_base is not None and ll_tuned is not None and count:
            base_ll, tuned_ll, tokens = base_ll + ll_base, tuned_ll + ll_tuned, tokens + count
    if not tokens:
        return None, None, 0
    return -base_ll / tokens, (base_ll - tuned_ll) / tokens, tokens


def _gold_index(task, sample: dict) -> int | None:
    """Which of an item's log-likelihood requests scores the correct answer, as lm-eval's own
    multiple-choice scoring finds it; None for generation tasks and several correct answers."""
    output = task.get_config("output_type")
    if output == "loglikelihood":
        return 0
    if output != "multiple_choice" or getattr(task, "multiple_input", False):
        return None
    choices = task.doc_to_choice(sample["doc"])
    target = sample["target"]
    if isinstance(target, str):
        return choices.index(target) if target in choices else None
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(choices):
        return target
    return None  # a list: several correct answers


def _answer_tokens(lm, context: str, continuation: str) -> int:
    """How many tokens lm-eval scored for ``continuation`` (it splits as it encodes)."""
    if not context:
        return len(lm.tok_encode(continuation))
    return len(lm._encode_pair(context, continuation)[1])


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# --- the factory -------------------------------------------------------------------------------


def _item_counts(spec: LmEvalSpec, manager) -> dict[str, int]:
    counts = {}
    for name in spec.tasks:
        leaves = _load_tasks(manager, name)["tasks"].values()
        sizes = [len(task.eval_docs) for task in leaves]
        counts[name] = sum(min(size, spec.limit or size) for size in sizes)
    return counts


def lm_eval_items(retain: str) -> dict[str, int]:
    """How many items each named task of ``retain`` (``lm-eval:...``) scores, with no model:
    lm-eval installed, every task known and its data read (from the Hub or its cache, or a
    task's local files), as a trial would. Raises :class:`LmEvalError` otherwise."""
    spec = LmEvalSpec.parse(retain)
    return _item_counts(spec, _task_manager(spec))


def _folder_digest(folder: str | None) -> str | None:
    """A content hash of a task folder (its YAMLs, code and any data kept beside them)."""
    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _yaml_digests(tasks: Sequence[str]) -> list[str | None]:
    return [
        hashlib.sha256(Path(t).read_bytes()).hexdigest() if t.endswith((".yaml", ".yml")) else None
        for t in tasks
    ]


def lm_eval_source(
    config: TrialConfig,
    *,
    tokenizer,
    device,
    precision: str,
    model_path: str | Path | None = None,
    cache_dir: Path | None = None,
) -> LmEvalRetain:
    """The ``lm-eval:`` retain source of ``config.retain`` (arguments as
    :func:`sweeps.trial.retain.retain_source_for`). Checks that lm-eval is installed and knows
    every task (indexing its tasks: seconds), without loading any data; raises
    :class:`LmEvalError` otherwise."""
    from sweeps.trial.retain import _cache_root, _device_label, _folder, _tokenizer_key

    spec = LmEvalSpec.parse(config.retain or "")
    manager = _task_manager(spec)  # lm-eval missing or a task unknown: fail now, not after training
    if model_path is None:
        if config.model == "demo":
            from sweeps.trial.demo import ensure_demo

            model_path = ensure_demo().model_dir
        else:
            model_path = config.model
    key = [
        RETAIN_VERSION,
        weights_fingerprint(model_path, cache_root=cache_dir),
        _tokenizer_key(tokenizer),
        _device_label(device),
        precision,
        "lm-eval",
        _lm_eval_version(),
        list(spec.tasks),
        spec.limit,
        spec.metric,
        _folder_digest(spec.include),
        _yaml_digests(spec.tasks),
        config.batch,
    ]
    return LmEvalRetain(
        name=config.retain,
        cache_dir=_folder(_cache_root(cache_dir), "lm-eval", key),
        device=device,
        precision=precision,
        spec=spec,
        task_manager=manager,
        tokenizer=tokenizer,
        batch=config.batch,
    )
