"""Length and format statistics of task rows: tokens per row (the model's tokenizer where one
is given, else words), empty answers, chat rows whose roles are out of order, and rows longer
than the planned sequence length (the trial cuts them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LengthStats",
    "RowIssues",
    "lengths",
    "role_order_problem",
    "row_issues",
    "token_counts",
]

_CHAT_ROLES = {"system", "user", "assistant", "tool"}
_BATCH = 4096  # rows per tokenizer call


@dataclass(frozen=True)
class LengthStats:
    """Tokens (or words) per row: what was counted, and its spread."""

    unit: str  # "tokens" (the model's tokenizer) or "words"
    rows: int
    mean: float
    p50: int
    p95: int
    max: int


@dataclass
class RowIssues:
    """Rows with a format problem, as ``file:line: why`` (counts, and up to ``keep`` each)."""

    empty_completion: list[str] = field(default_factory=list)
    role_order: list[str] = field(default_factory=list)
    over_max_seq_len: list[str] = field(default_factory=list)
    no_completion_left: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    keep: int = 5

    def add(self, kind: str, report: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown: list[str] = getattr(self, kind)
        if len(shown) < self.keep:
            shown.append(report)


def role_order_problem(roles: Sequence[str]) -> str | None:
    """Why a chat's roles are out of order, or None: an optional system message first, then
    user and assistant turns alternating from a user turn (tool results after an assistant
    turn), ending with the assistant's answer."""
    expected = "user"
    for position, role in enumerate(roles, start=1):
        if role not in _CHAT_ROLES:
            return f"message {position} has role {role!r} (expected one of {sorted(_CHAT_ROLES)})"
        if role == "system":
            if position != 1:
                return f"message {position} is a system message after the first"
            continue
        if role == "tool":
            if position == 1 or roles[position - 2] not in ("assistant", "tool"):
                return f"message {position} is a tool result not after an assistant turn"
            expected = "assistant"
            continue
        if role != expected:
            previous = roles[position - 2] if position > 1 else "the start"
            return f"message {position} is {role!r} after {previous!r} (roles must alternate)"
        expected = "assistant" if role == "user" else "user"
    return None


def row_issues(
    examples: Sequence[Any],
    token_counts: Sequence[tuple[int, int]] | None,
    max_seq_len: int | None,
    *,
    keep: int = 5,
) -> RowIssues:
    """Format problems of task ``examples`` (:class:`sweeps.trial.data.Example`);
    ``token_counts`` is each row's (prompt, completion) tokens when a tokenizer was given."""
    issues = RowIssues(keep=keep)
    for i, example in enumerate(examples):
        if not example.completion.strip():
            issues.add("empty_completion", f"{example.source}: the answer is empty")
        if example.roles:
            problem = role_order_problem(example.roles)
            if problem is not None:
                issues.add("role_order", f"{example.source}: {problem}")
        if token_counts is None or max_seq_len is None:
            continue
        prompt, completion = token_counts[i]
        if prompt >= max_seq_len:
            issues.add(
                "no_completion_left",
                f"{example.source}: the prompt alone is {prompt} tokens; nothing of the answer "
                f"fits in max_seq_len={max_seq_len}",
            )
        elif prompt + completion > max_seq_len:
            issues.add(
                "over_max_seq_len",
                f"{example.source}: {prompt + completion} tokens, cut to {max_seq_len}",
            )
    return issues


def token_counts(examples: Sequence[Any], tokenizer) -> list[tuple[int, int]]:
    """(prompt, answer + end-of-sequence) tokens of each example, counted as the trial
    tokenizes them (a chat-templated prompt carries its own special tokens)."""
    prompts: list[int] = [0] * len(examples)
    for templated in (False, True):
        chosen = [i for i, e in enumerate(examples) if e.templated == templated]
        for start in range(0, len(chosen), _BATCH):
            part = chosen[start : start + _BATCH]
            ids = tokenizer([examples[i].prompt for i in part], add_special_tokens=not templated)
            for i, row in zip(part, ids["input_ids"], strict=True):
                prompts[i] = len(row)
    answers: list[int] = []
    for start in range(0, len(examples), _BATCH):
        part = [e.completion for e in examples[start : start + _BATCH]]
        answers += [len(row) + 1 for row in tokenizer(part, add_special_tokens=False)["input_ids"]]
    return list(zip(prompts, answers, strict=True))


def lengths(values: Sequence[int], unit: str) -> LengthStats:
    """Mean, median, 95th percentile and maximum of per-row lengths."""
    if not values:
        return LengthStats(unit, 0, 0.0, 0, 0, 0)
    ordered = sorted(values)

    def quantile(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    mean = sum(ordered) / len(ordered)
    return LengthStats(unit, len(ordered), mean, quantile(0.5), quantile(0.95), ordered[-1])
