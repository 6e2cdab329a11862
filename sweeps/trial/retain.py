"""Retain sources: what a trial's forgetting is measured on, behind one interface.

    source = retain_source_for(config, tokenizer=tokenizer, device=device, precision=precision)
    if not source.ready():              # the base model's data cached on disk? (loads it)
        source.prepare(base_model)      # sample and score the base once, then cache
    scores = source.score(fine_tuned)   # RetainScores: retain_delta_nll, retain_kl, extras
    source.name                         # 'self-samples', 'file:retain.jsonl' or 'demo'

The sources, picked by :func:`retain_source_for`:

- ``file:<path>``: the config's retain file (``{"text"}`` rows), scored on every token.
- ``demo``: the bundled demo's world text and its fact probes (recall drop as an extra).
- ``self-samples`` (default, any causal LM, no data from the user): continuations that the
  base model samples from a fixed, shipped set of neutral prompts (``retain_prompts.jsonl``:
  general knowledge, instructions, code, arithmetic, conversation). The prompts are plain
  text, never rendered with a chat template: a base model has none, and what is measured is
  the drift of the model's own distribution, for which any fixed text context serves; plain
  text keeps the prompts the same for every model.

Every source so far scores fixed token sequences under teacher forcing:

- ``retain_delta_nll`` = NLL(fine-tuned) - NLL(base), mean nats per scored token.
- ``retain_kl`` = mean over the scored positions of KL(p_base(.|prefix) || p_ft(.|prefix)),
  the base distribution kept as its top-k tokens plus one "all other tokens" bucket
  (:func:`sweeps.trial.metrics.base_topk`, k = ``KL_TOP_K``): exact when the vocabulary fits
  in k, otherwise a lower bound; about 2 KiB per scored token on disk.

On self-samples (tokens x ~ p_base, sampled by ancestral sampling at temperature 1 with no
top-k/top-p, in a loop of our own so that a checkpoint's ``generation_config`` -- repetition
penalty, top-p -- cannot change the distribution), both numbers estimate the per-token
KL(p_base || p_ft) on the base model's own distribution:

- ``retain_delta_nll`` is the mean of log p_base(x) - log p_ft(x) over the sampled tokens:
  the plain Monte Carlo estimate (unbiased per token, needs only the base's token
  log-probabilities, and may come out slightly negative by sampling noise);
- ``retain_kl`` takes the expectation over each next token exactly (from the stored top-k),
  leaving only the prefixes sampled: the Rao-Blackwellised estimate of the same quantity,
  never negative and of lower variance.

The cheap Monte Carlo estimate is therefore already recorded, as ``retain_delta_nll``;
recording it again as ``retain_kl`` would make two objectives one number. At a temperature
other than 1 the samples come from the tempered base, and both numbers measure drift on
that distribution instead.

The base model's data (the samples, its NLL, its top-k) is computed once per (base weights,
model config, tokenizer, settings, device, precision) and cached under
``<cache>/retain/<source>/<key>/`` (``PARETUNE_CACHE_DIR`` or the user cache directory, as
the demo). Weights are keyed by content: a local checkpoint's weight files by their SHA-256
(memoised per path, size and mtime, so a 15 GB checkpoint is read once), a Hub id by the
commit of its snapshot in the Hugging Face cache, an in-memory model by its state dict.
Concurrent trials are safe: one builds under a file lock, the others then read the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sweeps.trial.data import Tokenized

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.trial.types import TrialConfig

__all__ = [
    "RETAIN_VERSION",
    "DemoRetain",
    "RetainFile",
    "RetainScores",
    "RetainSource",
    "SelfSampleSettings",
    "SubsetScores",
    "SelfSamples",
    "load_retain_prompts",
    "retain_source_for",
    "weights_fingerprint",
]

RETAIN_VERSION = 3  # 3: the base data keeps per-batch NLL sums (a rung's retain ΔNLL)
"""Bump when what a source stores or how it scores changes; it keys every cache folder."""

_PROMPTS_FILE = "retain_prompts.jsonl"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_HASH_CHUNK = 16 * 2**20


# --- what a source returns -----------------------------------------------------------------------


@dataclass(frozen=True)
class RetainScores:
    """Forgetting of one fine-tuned model against its base, on one retain source.

    ``extras`` holds source-specific numbers named as :class:`sweeps.trial.types.Forgetting`
    fields (the demo's ``fact_recall_drop`` and ``base_fact_recall``)."""

    source: str
    retain_delta_nll: float
    retain_kl: float
    base_retain_nll: float
    tokens: int
    extras: dict[str, float | None] = field(default_factory=dict)

    def forgetting_fields(self) -> dict[str, float | None]:
        """Keyword arguments for ``Forgetting(...)``."""
        return {
            "retain_delta_nll": self.retain_delta_nll,
            "retain_kl": self.retain_kl,
            "base_retain_nll": self.base_retain_nll,
            **self.extras,
        }


@dataclass(frozen=True)
class SubsetScores:
    """Forgetting on a fixed subset of a retain source (its first ``rows`` rows), as the
    sweep's early stopping scores it at each rung: the same measures as :class:`RetainScores`,
    on fewer tokens. The base's NLL of the subset is read from the per-batch NLL sums kept with
    the base data (no base model is at hand mid-training); ``retain_delta_nll`` is None only
    for a subset with no scored token."""

    rows: int
    tokens: int
    retain_delta_nll: float | None
    retain_kl: float


# --- the interface -------------------------------------------------------------------------------


class RetainSource(ABC):
    """Where forgetting is measured: base data prepared once (cached), then every trial scored.

    Contract: :meth:`ready` says whether the base model's data is available without a model
    (loading it from the cache if there); :meth:`prepare` computes it from the base model
    when it is not, and caches it; :meth:`score` compares a fine-tuned model with it. Both
    run the model in eval mode without gradients, under autocast in the trial's precision,
    and leave its training mode as it was. ``built`` is True when this instance computed the
    base data rather than reading it from the cache.

    A new source is one subclass: its ``name`` and ``cache_dir``, and the two extension
    points :meth:`_build_base` (from the base model, a dict ``torch.save`` can store) and
    :meth:`_score` (a fine-tuned model against that dict).
    """

    name: str
    cache_dir: Path

    def __init__(self, *, name: str, cache_dir: Path, device: Any, precision: str) -> None:
        self.name = name
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.precision = precision
        self.built = False
        self._base: dict[str, Any] | None = None

    @property
    def base(self) -> dict[str, Any]:
        """The base model's data (after :meth:`ready` or :meth:`prepare`)."""
        if self._base is None:
            raise RuntimeError(f"retain source {self.name!r}: call prepare(base_model) first")
        return self._base

    def ready(self) -> bool:
        """True when the base data is loaded or cached (then :meth:`prepare` needs no model)."""
        if self._base is None and (self.cache_dir / "base.pt").exists():
            import torch

            self._base = torch.load(self.cache_dir / "base.pt", weights_only=True)
        return self._base is not None

    def prepare(self, base_model) -> None:
        """Compute and cache the base model's data, unless it is cached already."""
        if self.ready():
            return
        from filelock import FileLock

        self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache_dir) + ".lock"):
            if self.ready():  # another process built it while this one waited
                return
            started = time.perf_counter()
            with self._inference():
                base = self._build_base(base_model)
            base.setdefault("meta", {})["build_s"] = round(time.perf_counter() - started, 3)
            self._store(base)
            self._base, self.built = base, True

    def score(self, model) -> RetainScores:
        """Forgetting of ``model`` (the fine-tuned one) against the base data."""
        base = self.base
        with self._inference():
            return self._score(model, base)

    def score_subset(self, model, rows: int) -> SubsetScores | None:
        """Forgetting of ``model`` on the first ``rows`` rows (whole batches) of the prepared
        base data: cheap enough to run at every rung of a sweep's early stopping. None for a
        source that cannot score part of itself (lm-eval tasks)."""
        return None

    @abstractmethod
    def _build_base(self, model) -> dict[str, Any]:
        """The base model's data, computed from it (called once per cache key)."""

    @abstractmethod
    def _score(self, model, base: dict[str, Any]) -> RetainScores:
        """The fine-tuned ``model`` against ``base``."""

    @contextmanager
    def _inference(self) -> Iterator[None]:
        import torch

        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        with (
            torch.no_grad(),
            torch.autocast(
                self.device.type,
                dtype=dtypes[self.precision],
                enabled=self.precision != "fp32",
            ),
        ):
            yield

    def _store(self, base: dict[str, Any]) -> None:
        """``base.pt`` and a readable ``meta.json``, renamed into place atomically."""
        import torch

        building = Path(
            tempfile.mkdtemp(prefix=f".building-{self.cache_dir.name}-", dir=self.cache_dir.parent)
        )
        try:
            torch.save(base, building / "base.pt")
            meta = {"source": self.name, **base.get("meta", {})}
            (building / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(building, self.cache_dir)
        except OSError:
            if not (self.cache_dir / "base.pt").exists():
                raise
        finally:
            shutil.rmtree(building, ignore_errors=True)


# --- sources scored under teacher forcing on fixed token sequences -------------------------------


class _TeacherForced(RetainSource):
    """Scored on fixed sequences (labels ``-100`` where not scored): ΔNLL and top-k KL; with
    fact probes, also the drop in their greedy recall."""

    def __init__(
        self,
        *,
        name: str,
        cache_dir: Path,
        tokenizer,
        device: Any,
        precision: str,
        batch: int,
        facts: Sequence[dict] = (),
    ) -> None:
        super().__init__(name=name, cache_dir=cache_dir, device=device, precision=precision)
        self.tokenizer = tokenizer
        self.batch = batch
        self.facts = list(facts)

    @abstractmethod
    def _sequences(self, model) -> Tokenized:
        """The token sequences to score (the base model is given; most sources ignore it)."""

    def sequences(self) -> Tokenized:
        """The scored sequences of the prepared base data."""
        base = self.base
        return Tokenized(base["input_ids"], base["labels"])

    def _batches(self, sequences: Tokenized) -> Iterator[dict]:
        from sweeps.trial.data import batches

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        return batches(sequences, batch_size=self.batch, pad_id=pad_id)

    def _build_base(self, model) -> dict[str, Any]:
        from sweeps.trial.metrics import KL_TOP_K, fact_recall, nll_and_topk

        sequences = self._sequences(model)
        nll, tokens, topk = nll_and_topk(model, self._batches(sequences), k=KL_TOP_K)
        recall = fact_recall(model, self.tokenizer, self.facts) if self.facts else None
        meta = {"rows": len(sequences.input_ids), "tokens_scored": tokens, "base_retain_nll": nll}
        return {
            "input_ids": sequences.input_ids,
            "labels": sequences.labels,
            "nll": nll,
            "tokens": tokens,
            "topk": topk,
            "fact_recall": recall,
            "meta": meta,
        }

    def _score(self, model, base: dict[str, Any]) -> RetainScores:
        from sweeps.trial.metrics import fact_recall, nll_and_kl

        sequences = Tokenized(base["input_ids"], base["labels"])
        nll, _, kl = nll_and_kl(model, self._batches(sequences), base["topk"])
        extras: dict[str, float | None] = {}
        if self.facts and base.get("fact_recall") is not None:
            recall = fact_recall(model, self.tokenizer, self.facts)
            extras = {
                "fact_recall_drop": base["fact_recall"] - recall,
                "base_fact_recall": base["fact_recall"],
            }
        return RetainScores(
            source=self.name,
            retain_delta_nll=nll - base["nll"],
            retain_kl=kl,
            base_retain_nll=base["nll"],
            tokens=base["tokens"],
            extras=extras,
        )

    def score_subset(self, model, rows: int) -> SubsetScores | None:
        import itertools
        import math

        from sweeps.trial.metrics import nll_and_kl

        base = self.base
        count = min(len(base["topk"]), math.ceil(rows / self.batch))
        sequences = Tokenized(base["input_ids"], base["labels"])
        batches = list(itertools.islice(self._batches(sequences), count))
        topk = base["topk"][:count]
        with self._inference():
            nll, tokens, kl = nll_and_kl(model, batches, topk)
        base_nll = sum(float(kept["nll_sum"]) for kept in topk) / tokens if tokens else None
        return SubsetScores(
            rows=min(count * self.batch, len(base["input_ids"])),  # whole batches
            tokens=tokens,
            retain_delta_nll=None if base_nll is None else nll - base_nll,
            retain_kl=kl,
        )


class RetainFile(_TeacherForced):
    """``file:<path>``: the ``{"text"}`` rows of a retain file, every token scored."""

    def __init__(self, *, tokenized: Tokenized, bad_rows: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.tokenized = tokenized
        self.bad_rows = list(bad_rows)

    def _sequences(self, model) -> Tokenized:
        return self.tokenized


class DemoRetain(RetainFile):
    """``demo``: the bundled demo's world text and (on its own task) its fact probes."""


# --- self-samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSampleSettings:
    """How the base model's own samples are drawn; every field keys the cache.

    Continuation tokens scored: at most ``prompts * samples_per_prompt * max_new_tokens``
    (40 * 4 * 48 = 7,680 by default: a KL estimate's standard error of a few percent,
    seconds of a 7B model on one GPU, about 16 MB of top-k on disk)."""

    prompts: int = 40  # the first N shipped prompts (kinds interleaved); at most all 40
    samples_per_prompt: int = 4  # more: lower variance of the estimates, longer sampling
    max_new_tokens: int = 48  # each sample stops at EOS or here
    temperature: float = 1.0  # 1.0: samples of p_base itself, so both numbers estimate the KL
    seed: int = 0
    batch: int = 32  # rows per sampling and scoring forward pass

    def __post_init__(self) -> None:
        for name in ("prompts", "samples_per_prompt", "max_new_tokens", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ValueError(f"`temperature` must be positive, got {self.temperature!r}")


def load_retain_prompts() -> list[dict[str, str]]:
    """The shipped neutral prompts, ``{"kind", "prompt"}``, kinds interleaved."""
    text = resources.files("sweeps.trial").joinpath(_PROMPTS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class SelfSamples(_TeacherForced):
    """``self-samples``: the base model's own continuations of neutral prompts."""

    def __init__(self, *, settings: SelfSampleSettings, prompts: Sequence[str], **kwargs) -> None:
        super().__init__(batch=settings.batch, **kwargs)
        self.settings = settings
        self.prompts = list(prompts)
        self._sample_s = 0.0

    def _sequences(self, model) -> Tokenized:
        prompt_ids = [self.tokenizer(p)["input_ids"] for p in self.prompts]
        started = time.perf_counter()
        continuations = _sample(
            model,
            prompt_ids,
            self.settings,
            eos_id=self.tokenizer.eos_token_id,
            pad_id=self.tokenizer.pad_token_id,
            device=self.device,
        )
        self._sample_s = time.perf_counter() - started
        rows = [p for p in prompt_ids for _ in range(self.settings.samples_per_prompt)]
        return Tokenized(
            [p + c for p, c in zip(rows, continuations, strict=True)],
            [[-100] * len(p) + c for p, c in zip(rows, continuations, strict=True)],
        )

    def _build_base(self, model) -> dict[str, Any]:
        base = super()._build_base(model)
        sequences = Tokenized(base["input_ids"], base["labels"])
        base["meta"].update(
            settings=asdict(self.settings),
            sample_s=round(self._sample_s, 3),
            prompt_tokens=sum(label == -100 for row in sequences.labels for label in row),
            forward_tokens=sequences.tokens,
        )
        return base


def _accepts(model, argument: str) -> bool:
    import inspect

    return argument in inspect.signature(model.forward).parameters


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _sample(
    model,
    prompt_ids: list[list[int]],
    settings: SelfSampleSettings,
    *,
    eos_id: int | None,
    pad_id: int | None,
    device,
) -> list[list[int]]:
    """``samples_per_prompt`` continuations of each prompt (rows in prompt order), each cut
    after its EOS; ancestral sampling from softmax(logits / temperature), nothing else."""
    import torch

    generator = torch.Generator(device=device).manual_seed(settings.seed)
    rows = [ids for ids in prompt_ids for _ in range(settings.samples_per_prompt)]
    was_training = model.training
    model.eval()
    try:
        sampled: list[list[int]] = []
        for start in range(0, len(rows), settings.batch):
            chunk = rows[start : start + settings.batch]
            sampled += _sample_batch(model, chunk, settings, generator, eos_id, pad_id, device)
    finally:
        model.train(was_training)
    return sampled


def _sample_batch(
    model, rows, settings: SelfSampleSettings, generator, eos_id, pad_id, device
) -> list[list[int]]:
    import torch

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):  # left-padded, so every row's next token is the last column
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        mask[i, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    extra: dict[str, Any] = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    with_positions = _accepts(model, "position_ids")
    # transformers 5.x renamed the key/value cache argument ``past_key_values`` to ``cache``.
    cache_argument = "cache" if _accepts(model, "cache") else "past_key_values"
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        use_cache=True,
        **({"position_ids": positions} if with_positions else {}),
        **extra,
    )
    position = positions[:, -1:]
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    tokens = []
    for step in range(settings.max_new_tokens):
        probs = torch.softmax(out.logits[:, -1].float() / settings.temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        tokens.append(token)
        if eos_id is not None:
            done |= token[:, 0] == eos_id
        if bool(done.all()) or step == settings.max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        position = position + 1
        out = model(
            input_ids=token,
            attention_mask=mask,
            use_cache=True,
            **{cache_argument: _cache_of(out)},
            **({"position_ids": position} if with_positions else {}),
            **extra,
        )
    continuations = []
    for row in torch.cat(tokens, dim=1).tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]  # EOS was sampled too: it is scored
        continuations.append(row)
    return continuations


# --- cache keys ----------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _weight_file_hash(path: Path, memo_file: Path) -> str:
    """SHA-256 of a weight file, memoised by (path, size, mtime)."""
    real = path.resolve()
    stat = real.stat()
    entry = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if entry not in memo:
        memo[entry] = _sha256_file(real)
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(memo, indent=0, sort_keys=True))
        os.replace(temporary, memo_file)  # concurrent writers: one memo entry may be lost
    return memo[entry]


def _hub_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache folder of a Hub id's snapshot, if it is on this machine."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - not a repo id, or no cache: keyed by the name alone
        return None
    return Path(found).parent if isinstance(found, str) else None


def _module_fingerprint(model) -> str:
    import torch

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return "module:" + digest.hexdigest()


def weights_fingerprint(model, *, cache_root: Path | None = None) -> str:
    """A content key of a model: a local folder or Hub id by its files, a module by its
    state dict. Weight files are hashed once per (path, size, mtime)."""
    if not isinstance(model, str | Path):
        return _module_fingerprint(model)
    folder = Path(model)
    if not folder.is_dir():
        # A Hub snapshot's folder is named by its commit, which fixes every file in it (and
        # does not change when the weights finish downloading after the tokenizer).
        snapshot = _hub_snapshot(str(model))
        if snapshot is None:
            return f"name:{model}"  # a Hub id not in the local cache: its name is all we know
        return f"hub:{model}@{snapshot.name}"
    memo = _cache_root(cache_root) / "retain" / "weight-hashes.json"
    files = []
    for path in sorted(folder.iterdir()):
        if path.name == "config.json":
            files.append((path.name, _sha256_file(path)))
        elif path.is_file() and path.name.endswith(_WEIGHT_SUFFIXES):
            files.append((path.name, _weight_file_hash(path, memo)))
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return "files:" + digest


def _tokenizer_key(tokenizer) -> str:
    from sweeps.trial.data import _tokenizer_fingerprint

    ids = [tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id]
    return _tokenizer_fingerprint(tokenizer) + json.dumps(ids)


def _device_label(device) -> str:
    if device.type != "cuda":
        return device.type
    import torch

    # Different GPUs round differently: a base scored on one would not give ΔNLL = 0 on another.
    return f"cuda:{torch.cuda.get_device_name(device)}"


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from sweeps.trial.demo import demo_cache_root

    return demo_cache_root()


def _folder(root: Path, kind: str, parts: list[Any]) -> Path:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return root / "retain" / kind / digest[:24]


# --- the factory ---------------------------------------------------------------------------------


def retain_source_for(
    config: TrialConfig,
    *,
    tokenizer,
    device,
    precision: str,
    model_path: str | Path | None = None,
    settings: SelfSampleSettings | None = None,
    cache_dir: Path | None = None,
    source: Literal["auto", "self-samples"] = "auto",
) -> RetainSource:
    """The retain source of a trial: the config's retain file (``file:<path>``), else the
    demo's world text on the demo model (``demo``), else the base model's ``self-samples``.

    ``model_path`` is the base model's folder or Hub id (default: the demo's folder for
    ``model="demo"``, else ``config.model``); ``device`` a ``torch.device``; ``precision``
    the trial's compute precision (``fp32``, ``bf16`` or ``fp16``). ``source="self-samples"``
    gives the self-samples whatever the config says, without fact probes (the demo measures
    both, to compare its world text with them). Reads the retain and fact files and hashes
    the base weights; raises :class:`sweeps.trial.data.DataError` for a bad retain or fact
    file."""
    if config.retain is not None and config.retain.startswith("lm-eval:"):
        # lm-evaluation-harness tasks: the accuracy drop (sweeps/trial/retain_lm_eval.py).
        from sweeps.trial.retain_lm_eval import lm_eval_source

        return lm_eval_source(
            config,
            tokenizer=tokenizer,
            device=device,
            precision=precision,
            model_path=model_path,
            cache_dir=cache_dir,
        )
    from sweeps.trial.data import load_facts, load_texts, tokenize_texts
    from sweeps.trial.metrics import KL_TOP_K

    root = _cache_root(cache_dir)
    demo = None
    if config.model == "demo":
        from sweeps.trial.demo import ensure_demo

        demo = ensure_demo()
    model_path = model_path or (demo.model_dir if demo is not None else config.model)
    # As the trial has always read them: the demo's fact probes on the demo's own task.
    facts_path = config.facts or (demo.facts if demo is not None and not config.train else None)
    facts = load_facts(str(facts_path)) if facts_path and source == "auto" else []
    common = {"tokenizer": tokenizer, "device": device, "precision": precision, "facts": facts}
    key = [
        RETAIN_VERSION,
        weights_fingerprint(model_path, cache_root=cache_dir),
        _tokenizer_key(tokenizer),
        _device_label(device),
        precision,
        KL_TOP_K,
        facts,
    ]
    retain_path = config.retain or (demo.retain if demo is not None else None)
    if retain_path is not None and source == "auto":
        texts, bad = load_texts(str(retain_path), bad_rows=config.bad_rows)
        tokenized = tokenize_texts(
            texts, tokenizer, max_seq_len=config.max_seq_len, cache_dir=root / "tokenized"
        )
        kind, name = ("file", f"file:{config.retain}") if config.retain else ("demo", "demo")
        key += [kind, tokenized.input_ids, config.batch]
        return (RetainFile if config.retain else DemoRetain)(
            name=name,
            cache_dir=_folder(root, kind, key),
            tokenized=tokenized,
            bad_rows=bad,
            batch=config.batch,
            **common,
        )
    settings = settings or SelfSampleSettings()
    available = load_retain_prompts()
    prompts = [row["prompt"] for row in available[: min(settings.prompts, len(available))]]
    key += ["self-samples", asdict(settings), prompts]
    return SelfSamples(
        name="self-samples",
        cache_dir=_folder(root, "self-samples", key),
        settings=settings,
        prompts=prompts,
        **common,
    )
