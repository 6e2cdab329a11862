"""Task, eval and retain data for a trial: read, check, render, tokenize, batch.

Formats (one JSON object per line):

- ``{"prompt": str, "completion": str}``: the loss is on the completion tokens only; the
  completion is followed by the tokenizer's end-of-sequence token so the model learns to stop.
- ``{"messages": [{"role": ..., "content": ...}, ...]}``: the last message is the assistant's
  answer (the completion), everything before it is the prompt. With a tokenizer that has a
  chat template the conversation is rendered with it (``add_generation_prompt=True`` for the
  prompt); without one it is rendered plainly as ``"role: content"`` lines followed by
  ``"assistant:"``, and the answer follows after a space.
- retain set: ``{"text": str}``, scored on every token.

Bad rows (not JSON, wrong keys, empty text) are reported as ``file:line: why``; with
``bad_rows="fail"`` the first one stops the trial with a :class:`DataError`, with ``"skip"``
they are skipped and counted. A Hugging Face dataset is read by name as ``hf:NAME`` or
``hf:NAME:SPLIT`` when the optional ``datasets`` package is installed.

Tokenized data is cached on disk by a hash of the file contents, the tokenizer and the
settings, so the many trials of a sweep tokenize once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pricing.errors import UserError

__all__ = [
    "DataError",
    "Example",
    "Tokenized",
    "batches",
    "load_examples",
    "load_text_rows",
    "load_texts",
    "split_eval",
    "text_limit",
    "tokenize_examples",
    "tokenize_texts",
]

_TOKENIZE_VERSION = 2  # 2: texts longer than text_limit() are cut before tokenizing
_EVAL_SPLIT_SEED = 0  # fixed, so every trial of a sweep is scored on the same held-out rows


class DataError(UserError):
    """A data file that cannot be read as the format it should be in."""

    title = "Bad data"


@dataclass(frozen=True)
class Example:
    """One task example, already rendered to text; ``source`` is ``file:line``."""

    prompt: str
    completion: str
    source: str
    templated: bool = False  # rendered by a chat template, which adds its own special tokens
    text: str = ""  # the row's own words (prompt and answer, no template): what checks compare
    roles: tuple[str, ...] = ()  # a chat row's roles in order; empty for prompt/completion rows


@dataclass(frozen=True)
class Tokenized:
    """Token ids and labels (``-100`` where no loss is taken)."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0
    skipped: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    """Rows whose text was cut before tokenizing (see :func:`text_limit`), as ``file:line: why``."""

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)


def _read_rows(path: str, *, bad_rows: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """``(source, row)`` pairs of a JSONL file or ``hf:`` dataset, and the bad-row reports."""
    if path.startswith("hf:"):
        return _read_hf(path), []
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"data file {path!r} does not exist",
            "Give a JSONL file path, or hf:NAME[:SPLIT] for a Hugging Face dataset.",
        )
    rows, bad = [], []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{file}:{number}"
            try:
                row = json.loads(line)
            except ValueError as error:
                row, why = None, str(error)
            else:
                why = f"got a JSON {type(row).__name__}"
            if not isinstance(row, dict):
                bad.append(f"{source}: not a JSON object ({why})")
                if bad_rows == "fail":
                    _fail(bad)
                continue
            rows.append((source, row))
    return rows, bad


def _fail(bad: list[str]) -> None:
    raise DataError(
        f"bad row: {bad[-1]}",
        "Fix the row, or skip bad rows (they are counted): `paretune trial --bad-rows skip`, "
        'or bad_rows = "skip" in a sweep spec\'s [trial].',
    )


def _read_hf(spec: str) -> list[tuple[str, dict]]:
    parts = spec.split(":")
    name, split = parts[1], (parts[2] if len(parts) > 2 else "train")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"reading the Hugging Face dataset {name!r} needs the 'datasets' package",
            "Install it with `pip install datasets`, or export the data to a JSONL file.",
        ) from None
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - network, unknown name or split: all user-fixable
        raise DataError(f"cannot load the dataset {name!r} split {split!r}: {error}") from None
    return [(f"{name}[{split}]:{i + 1}", dict(row)) for i, row in enumerate(loaded)]


def _render_messages(messages: list, tokenizer) -> tuple[str, str, bool]:
    """(prompt, completion, templated) of a chat; the last message is the answer."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt):
            return prompt, full[len(prompt) :], True
    lines = [f"{m['role']}: {m['content']}" for m in messages[:-1]]
    return "\n".join(lines + ["assistant:"]), " " + messages[-1]["content"], False


def _example(source: str, row: dict, tokenizer) -> Example:
    if "messages" in row:
        messages = row["messages"]
        valid = (
            isinstance(messages, list)
            and len(messages) >= 2
            and all(
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not valid:
            raise ValueError('"messages" must be a list of at least two {"role", "content"}')
        if messages[-1]["role"] != "assistant":
            raise ValueError('the last message must have role "assistant" (it is the answer)')
        prompt, completion, templated = _render_messages(messages, tokenizer)
        text = "\n".join(m["content"] for m in messages)
        roles = tuple(m["role"] for m in messages)
        return Example(prompt, completion, source, templated, text, roles)
    if set(row) >= {"prompt", "completion"}:
        prompt, completion = row["prompt"], row["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError('"prompt" and "completion" must be strings')
        if not completion.strip():
            raise ValueError('"completion" is empty')
        return Example(prompt, completion, source, text=f"{prompt}\n{completion}")
    raise ValueError(f'expected "prompt" and "completion", or "messages"; got keys {sorted(row)}')


def load_examples(
    path: str, tokenizer, *, bad_rows: str = "fail"
) -> tuple[list[Example], list[str]]:
    """Task examples of a JSONL file (or ``hf:`` dataset) and the reports of skipped rows."""
    rows, bad = _read_rows(path, bad_rows=bad_rows)
    examples = []
    for source, row in rows:
        try:
            examples.append(_example(source, row, tokenizer))
        except (ValueError, KeyError, TypeError) as error:
            bad.append(f"{source}: {error}")
            if bad_rows == "fail":
                _fail(bad)
    if not examples:
        raise DataError(f"no usable examples in {path!r}", "\n".join(bad[:5]) or None)
    return examples, bad


def load_texts(path: str, *, bad_rows: str = "fail") -> tuple[list[str], list[str]]:
    """The ``{"text"}`` rows of a retain file and the reports of skipped rows."""
    rows, bad = load_text_rows(path, bad_rows=bad_rows)
    return [text for _, text in rows], bad


def load_text_rows(path: str, *, bad_rows: str = "fail") -> tuple[list[tuple[str, str]], list[str]]:
    """``(source, text)`` of each ``{"text"}`` row of a retain file, and the skipped rows."""
    rows, bad = _read_rows(path, bad_rows=bad_rows)
    texts = []
    for source, row in rows:
        text = row.get("text")
        if isinstance(text, str) and text.strip():
            texts.append((source, text))
            continue
        bad.append(f'{source}: expected a non-empty "text" string')
        if bad_rows == "fail":
            _fail(bad)
    if not texts:
        raise DataError(f"no usable text in retain file {path!r}")
    return texts, bad


def load_facts(path: str) -> list[dict]:
    """Fact probes ``{"prompt", "answer"}`` (the demo's ``facts.jsonl``)."""
    rows, _ = _read_rows(path, bad_rows="fail")
    for source, row in rows:
        if not (isinstance(row.get("prompt"), str) and isinstance(row.get("answer"), str)):
            raise DataError(f'{source}: a fact probe needs "prompt" and "answer" strings')
    return [row for _, row in rows]


def split_eval(
    examples: list[Example], fraction: float, *, groups: Sequence[int] | None = None
) -> tuple[list[Example], list[Example]]:
    """(train, eval): a seeded split, the same for every trial on the same file.

    ``groups`` (one id per example) keeps each group on one side: the rows are shuffled with
    the fixed seed and the first ones held out, each taking its whole group along, so rows
    that are copies or near-copies of each other never straddle the split. Without groups, or
    with every row its own group, it is the plain seeded split.
    """
    if len(examples) < 2:
        raise DataError(
            f"cannot split {len(examples)} example(s) into train and eval",
            "Give more examples, or an eval file.",
        )
    group_of = list(groups) if groups is not None else list(range(len(examples)))
    order = list(range(len(examples)))
    random.Random(_EVAL_SPLIT_SEED).shuffle(order)
    held = min(len(examples) - 1, max(1, math.ceil(len(examples) * fraction)))
    held_groups: set[int] = set()
    held_rows = 0
    members: dict[int, int] = {}
    for group in group_of:
        members[group] = members.get(group, 0) + 1
    for i in order:
        if held_rows >= held:
            break
        group = group_of[i]
        if group in held_groups or held_rows + members[group] > len(examples) - 1:
            continue
        held_groups.add(group)
        held_rows += members[group]
    if not held_groups:
        raise DataError(
            "cannot hold out an eval set: every row is a copy or near-copy of the others",
            "Give an eval file of different rows.",
        )
    train = [e for i, e in enumerate(examples) if group_of[i] not in held_groups]
    return train, [e for i, e in enumerate(examples) if group_of[i] in held_groups]


# --- tokenization ----------------------------------------------------------------------------


def _tokenizer_fingerprint(tokenizer) -> str:
    """What the tokenizer does to text. The backend's padding and truncation settings are
    left out: transformers sets and clears them on every call, so they say what the last call
    asked for, not how text is tokenized (they changed the key between a trial's files)."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        described = json.loads(backend.to_str())
        described.pop("padding", None)
        described.pop("truncation", None)
        digest.update(json.dumps(described, sort_keys=True).encode())
    else:
        digest.update(repr(tokenizer).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return digest.hexdigest()


def _cache_file(kind: str, payload: object, tokenizer, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256()
    digest.update(json.dumps([_TOKENIZE_VERSION, kind, payload], sort_keys=True).encode())
    digest.update(_tokenizer_fingerprint(tokenizer).encode())
    return cache_dir / f"{kind}-{digest.hexdigest()[:24]}.json"


def _cached(file: Path | None, build) -> Tokenized:
    if file is not None and file.exists():
        stored = json.loads(file.read_text())
        return Tokenized(**stored)
    tokenized = build()
    if file is not None:
        temporary = file.with_suffix(f".{os.getpid()}.tmp")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(tokenized.__dict__))
            os.replace(temporary, file)  # concurrent trials may race; both write the same thing
        except OSError:  # a full disk or a read-only cache: the next trial tokenizes again
            temporary.unlink(missing_ok=True)
    return tokenized


def text_limit(tokenizer, max_seq_len: int) -> int:
    """Characters of one text the tokenizer is given at most: twice what ``max_seq_len`` tokens
    of the vocabulary's longest token can cover, and never less than 16 characters a token.

    Tokens past ``max_seq_len`` are dropped anyway, so the cut changes no token that is used,
    while a tokenizer given a whole 49 MB line needs about 100 bytes of memory a character
    (5 GB) and minutes, and under the trial's memory cap aborts in Rust."""
    longest = max((len(token) for token in tokenizer.get_vocab()), default=16)
    return 2 * max_seq_len * max(longest, 16)


def _bounded(text: str, limit: int, source: str | None, cut: list[str]) -> str:
    if len(text) <= limit:
        return text
    where = f"{source}: " if source else ""
    cut.append(
        f"{where}a text of {len(text):,} characters, cut to its first {limit:,} before "
        "tokenizing (only the first max_seq_len tokens are used)"
    )
    return text[:limit]


def _tokenize(tokenizer, text: str, source: str | None, **kwargs) -> list[int]:
    """The token ids of ``text``; a tokenizer that runs out of memory says on which row."""
    try:
        return tokenizer(text, **kwargs)["input_ids"]
    except MemoryError as error:
        where = f"{source}: " if source else ""
        raise MemoryError(
            f"{where}the tokenizer ran out of memory on a text of {len(text):,} characters"
            + (f" ({error})" if str(error) else "")
        ) from None


def tokenize_examples(
    examples: Sequence[Example], tokenizer, *, max_seq_len: int, cache_dir: Path | None = None
) -> Tokenized:
    """Prompt + completion + EOS; labels mask the prompt. Too long: cut at ``max_seq_len``."""
    # Sources too: the skipped and cut rows are named by file:line.
    payload = [max_seq_len, [[e.prompt, e.completion, e.templated, e.source] for e in examples]]

    def build() -> Tokenized:
        all_ids, all_labels, truncated, skipped, cut = [], [], 0, [], []
        limit = text_limit(tokenizer, max_seq_len)
        for example in examples:
            prompt_ids = _tokenize(
                tokenizer,
                _bounded(example.prompt, limit, example.source, cut),
                example.source,
                add_special_tokens=not example.templated,
            )
            completion = _bounded(example.completion, limit, example.source, cut)
            completion_ids = _tokenize(
                tokenizer, completion, example.source, add_special_tokens=False
            ) + [tokenizer.eos_token_id]
            ids = (prompt_ids + completion_ids)[:max_seq_len]
            labels = ([-100] * len(prompt_ids) + completion_ids)[:max_seq_len]
            if len(prompt_ids) + len(completion_ids) > max_seq_len:
                truncated += 1
            if all(label == -100 for label in labels[1:]):
                skipped.append(f"{example.source}: the prompt fills max_seq_len={max_seq_len}")
                continue
            all_ids.append(ids)
            all_labels.append(labels)
        return Tokenized(all_ids, all_labels, truncated, skipped, cut)

    return _cached(_cache_file("task", payload, tokenizer, cache_dir), build)


def tokenize_texts(
    texts: Sequence[str], tokenizer, *, max_seq_len: int, cache_dir: Path | None = None
) -> Tokenized:
    """Plain text scored on every token after the first (retain sets)."""
    payload = [max_seq_len, list(texts)]

    def build() -> Tokenized:
        limit, cut = text_limit(tokenizer, max_seq_len), []
        whole = [_tokenize(tokenizer, _bounded(t, limit, None, cut), None) for t in texts]
        ids = [row[:max_seq_len] for row in whole]
        truncated = sum(len(row) > max_seq_len for row in whole)
        return Tokenized(ids, [list(row) for row in ids], truncated, cut=cut)

    return _cached(_cache_file("text", payload, tokenizer, cache_dir), build)


def _packed(data: Tokenized, max_seq_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """Concatenate examples into rows of ``max_seq_len``; attention crosses example borders
    (the usual cheap packing; the loss mask still covers only completion tokens)."""
    flat_ids = [token for row in data.input_ids for token in row]
    flat_labels = [label for row in data.labels for label in row]
    ids = [flat_ids[i : i + max_seq_len] for i in range(0, len(flat_ids), max_seq_len)]
    labels = [flat_labels[i : i + max_seq_len] for i in range(0, len(flat_labels), max_seq_len)]
    return ids, labels


def batches(
    data: Tokenized,
    *,
    batch_size: int,
    pad_id: int,
    packing: bool = False,
    max_seq_len: int | None = None,
    shuffle_seed: int | None = None,
) -> Iterator[dict]:
    """Right-padded tensor batches ``{"input_ids", "attention_mask", "labels"}``."""
    import torch

    if packing:
        if max_seq_len is None:
            raise ValueError("packing needs max_seq_len")
        ids, labels = _packed(data, max_seq_len)
    else:
        ids, labels = data.input_ids, data.labels
    order = list(range(len(ids)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chosen)
        input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
        label_ids = torch.full((len(chosen), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, i in enumerate(chosen):
            n = len(ids[i])
            input_ids[row, :n] = torch.tensor(ids[i])
            label_ids[row, :n] = torch.tensor(labels[i])
            mask[row, :n] = 1
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}
