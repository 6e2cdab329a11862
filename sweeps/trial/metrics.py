"""What a trial measures about a model: quality on the task and forgetting of what it knew.

Definitions (shared with ``DESIGN.md``, Metrics):

- ``completion_nll``: mean negative log-likelihood (nats per token) of the completion tokens
  only; prompt and padding tokens carry the label ``-100`` and are not scored.
- ``exact_match``: the share of prompts whose greedy continuation, cut at the end-of-sequence
  token or the first newline, equals the reference answer after normalisation (case,
  punctuation and whitespace are ignored).
- ``fact_recall``: the share of fact probes whose greedy continuation *starts with* the
  answer (a fact probe is a sentence prefix; the model may go on talking after the answer).
- ``retain_kl``: mean per-token KL(p_base || p_ft) under teacher forcing on the retain text.
  The base distribution is kept as its top-k tokens plus one "all other tokens" bucket, so it
  can be cached on disk for every trial of a study; KL between the coarsened distributions
  is a lower bound of the full KL (data-processing inequality) and equals it whenever the
  vocabulary fits in k (the demo's does).

Scoring a retain set against its base takes one forward pass per batch, not one per number:
:func:`nll_and_topk` gives the base's NLL and top-k together, :func:`nll_and_kl` a fine-tuned
model's NLL and its KL from that top-k together.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "KL_TOP_K",
    "base_topk",
    "completion_nll",
    "exact_match",
    "fact_recall",
    "greedy_continuations",
    "nll_and_kl",
    "nll_and_topk",
    "normalize_answer",
    "retain_kl",
]

KL_TOP_K = 256
"""Base-model tokens kept per position for ``retain_kl`` (the rest form one bucket)."""

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace (the usual exact-match normaliser)."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def completion_nll(model, batches: Iterable[dict]) -> tuple[float, int]:
    """Mean NLL over the labelled tokens of ``batches`` and how many tokens were scored."""
    import torch

    device = _device_of(model)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            input_ids = batch["input_ids"].to(device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device))
            logits = logits.logits[:, :-1].float()
            labels = batch["labels"][:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(nll)
            count += int((labels != -100).sum())
    model.train(was_training)
    return (total / count if count else float("nan")), count


def greedy_continuations(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch: int = 32,
    add_special_tokens: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), decoded without specials."""
    import torch

    device = _device_of(model)
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start : start + batch])
            encoded = tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
            ).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            for row in new_tokens.tolist():
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return outputs


def exact_match(continuations: Sequence[str], answers: Sequence[str]) -> float:
    """Share of continuations (first line) equal to their answer after normalisation."""
    if not answers:
        return float("nan")
    hits = sum(
        normalize_answer(text.strip().split("\n")[0]) == normalize_answer(answer)
        for text, answer in zip(continuations, answers, strict=True)
    )
    return hits / len(answers)


def _starts_with(text: str, answer: str) -> bool:
    said, expected = normalize_answer(text).split(), normalize_answer(answer).split()
    return bool(expected) and said[: len(expected)] == expected


def fact_recall(model, tokenizer, facts: Sequence[dict], *, max_new_tokens: int = 4) -> float:
    """Share of ``{"prompt", "answer"}`` probes whose greedy continuation starts with the answer."""
    if not facts:
        return float("nan")
    longest = max(len(tokenizer(f["answer"], add_special_tokens=False)["input_ids"]) for f in facts)
    said = greedy_continuations(
        model,
        tokenizer,
        [f["prompt"] for f in facts],
        max_new_tokens=max(max_new_tokens, longest),
    )
    return sum(_starts_with(s, f["answer"]) for s, f in zip(said, facts, strict=True)) / len(facts)


def _shifted(batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    return batch["input_ids"].to(device), batch["labels"][:, 1:].to(device) != -100


def base_topk(model, batches: Iterable[dict], *, k: int = KL_TOP_K) -> list[dict]:
    """The base model's next-token distribution on every scored position: top-k + the rest."""
    import torch

    device = _device_of(model)
    kept = []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            input_ids, scored = _shifted(batch, device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device))
            logprobs = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1)[scored]
            top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
            kept.append(
                {"indices": top.indices.to(torch.int32).cpu(), "logprobs": top.values.cpu()}
            )
    return kept


def _log_rest(logprobs_topk: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(p_topk)), clamped so an (almost) full top-k does not give log(0)."""
    import torch

    mass = torch.logsumexp(logprobs_topk, dim=-1).exp().clamp(max=1 - 1e-6)
    return torch.log1p(-mass)


def _kl_from_topk(logprobs: torch.Tensor, kept: dict, device) -> torch.Tensor:
    """KL(p_base || p_model) per position, the base as its top-k plus one bucket for the rest."""
    indices = kept["indices"].to(device).long()
    base_lp = kept["logprobs"].to(device)
    model_lp = logprobs.gather(-1, indices)
    kl = (base_lp.exp() * (base_lp - model_lp)).sum(-1)
    if indices.shape[-1] < logprobs.shape[-1]:
        base_rest, model_rest = _log_rest(base_lp), _log_rest(model_lp)
        kl = kl + base_rest.exp() * (base_rest - model_rest)
    return kl


def retain_kl(model, batches: Iterable[dict], base: list[dict]) -> float:
    """Mean per-token KL(p_base || p_model) on the retain text, from :func:`base_topk`."""
    import torch

    device = _device_of(model)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch, kept in zip(batches, base, strict=True):
            input_ids, scored = _shifted(batch, device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device))
            logprobs = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1)[scored]
            kl = _kl_from_topk(logprobs, kept, device)
            total += float(kl.sum())
            count += int(kl.numel())
    model.train(was_training)
    return total / count if count else float("nan")


def _scored_logprobs(model, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token log-probabilities at the labelled positions, and the labels there.

    The positions are picked before the softmax, so prompt and padding positions cost no
    memory of the vocabulary's width."""
    import torch

    input_ids, scored = _shifted(batch, device)
    logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).logits
    labels = batch["labels"][:, 1:].to(device)[scored]
    return torch.log_softmax(logits[:, :-1][scored].float(), dim=-1), labels


def _nll_sum(logprobs: torch.Tensor, labels: torch.Tensor) -> float:
    return -float(logprobs.gather(-1, labels.unsqueeze(-1)).sum())


def nll_and_topk(
    model, batches: Iterable[dict], *, k: int = KL_TOP_K
) -> tuple[float, int, list[dict]]:
    """The base model on a retain set in one forward pass per batch: (mean NLL of the labelled
    tokens, how many, :func:`base_topk`'s top-k per scored position). Each batch's entry also
    holds ``nll_sum``, the base's summed NLL of that batch's labelled tokens, so that part of
    the set can be scored against the base without the base model (whether or not every label
    is in the top-k)."""
    import torch

    device = _device_of(model)
    total, count, kept = 0.0, 0, []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            logprobs, labels = _scored_logprobs(model, batch, device)
            nll_sum = _nll_sum(logprobs, labels)
            total += nll_sum
            count += int(labels.numel())
            top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
            kept.append(
                {
                    "indices": top.indices.to(torch.int32).cpu(),
                    "logprobs": top.values.cpu(),
                    "nll_sum": nll_sum,
                }
            )
    model.train(was_training)
    return (total / count if count else float("nan")), count, kept


def nll_and_kl(model, batches: Iterable[dict], base: list[dict]) -> tuple[float, int, float]:
    """A fine-tuned model on a retain set in one forward pass per batch: (mean NLL of the
    labelled tokens, how many, mean per-token KL(p_base || p_model) from ``base``, the output
    of :func:`nll_and_topk` or :func:`base_topk` on the same batches). Equal to
    :func:`completion_nll` and :func:`retain_kl`, at half their cost."""
    import torch

    device = _device_of(model)
    nll_total, kl_total, count = 0.0, 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch, kept in zip(batches, base, strict=True):
            logprobs, labels = _scored_logprobs(model, batch, device)
            nll_total += _nll_sum(logprobs, labels)
            count += int(labels.numel())
            kl_total += float(_kl_from_topk(logprobs, kept, device).sum())
    model.train(was_training)
    if not count:
        return float("nan"), 0, float("nan")
    return nll_total / count, count, kl_total / count
