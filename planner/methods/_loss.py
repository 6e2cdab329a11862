"""The causal-LM loss in the three ways frameworks compute it (``MethodSpec.loss``).

One home, called by the measured trial and the step simulator, so that a trial measures
what the planned framework would allocate:

- ``standard``: the full logits, upcast to fp32 for ``cross_entropy`` (transformers);
- ``chunked``: the full 16-bit logits, upcast and reduced ``chunks`` pieces at a time
  (torchtune's ``CEWithChunkedOutputLoss``, uncompiled);
- ``fused``: the lm_head and the loss run on ``chunk_tokens`` tokens at a time under
  activation checkpointing, so the full logits never exist (TRL's ``chunked_nll``); on a
  CUDA device with ``liger-kernel`` installed, Liger's fused linear cross-entropy.
"""

from __future__ import annotations

from typing import Any

from planner.errors import InvalidSpecError

__all__ = ["LOSS_CHUNKS", "LOSS_CHUNK_TOKENS", "token_loss_sum"]

LOSS_CHUNKS = 8  # torchtune CEWithChunkedOutputLoss(num_output_chunks=8)
LOSS_CHUNK_TOKENS = 256  # TRL _CHUNKED_LM_HEAD_CHUNK_SIZE (sft_trainer.py, v1.9.0)


def token_loss_sum(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    labels: Any,
    *,
    loss: str = "standard",
) -> tuple[Any, Any]:
    """(sum of the token losses, what the caller keeps alive until its next step).

    ``labels`` are already shifted: ``labels[:, t]`` is the target of position ``t``, for
    the first ``seq - 1`` positions; ``-100`` is ignored. The second value is the logits
    for ``standard`` and ``chunked`` (a loop that holds them pays for them), else None.
    """
    if loss == "fused":
        return _fused(model, input_ids, attention_mask, labels), None
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    if loss == "chunked":
        return _chunked(logits[:, :-1], labels), logits
    if loss != "standard":
        raise InvalidSpecError(f"loss: unknown loss {loss!r}; it is standard, chunked or fused")
    import torch

    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return total, logits


def _chunked(logits: Any, labels: Any) -> Any:
    import torch

    total = logits.new_zeros((), dtype=torch.float32)
    for part, target in zip(
        logits.chunk(LOSS_CHUNKS, dim=1), labels.chunk(LOSS_CHUNKS, dim=1), strict=True
    ):
        total = total + torch.nn.functional.cross_entropy(
            part.float().reshape(-1, part.shape[-1]),
            target.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
    return total


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformers decoder (no head) and the lm_head of a CausalLM, peft-wrapped or not."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config
    if getattr(config, "final_logit_softcapping", None):
        raise InvalidSpecError(
            f"loss: fused cross-entropy does not apply {config.model_type}'s final logit "
            "soft-capping",
            "Use loss chunked or standard for this model.",
        )
    return causal_lm.base_model, causal_lm.get_output_embeddings()


def _fused(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
    import torch

    decoder, head = _decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels.reshape(-1)
    liger = _liger_loss(hidden)
    if liger is not None and getattr(head, "bias", None) is None:
        return liger(head.weight, hidden, targets)

    # A plain Linear head is applied functionally: calling the module once per chunk (and
    # again in each recomputation) would look like several forwards of it to module hooks.
    plain = type(head) is torch.nn.Linear

    def chunk_loss(h: Any, y: Any) -> Any:
        logits = torch.nn.functional.linear(h, head.weight, head.bias) if plain else head(h)
        return torch.nn.functional.cross_entropy(
            logits.float(), y, ignore_index=-100, reduction="sum"
        )

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], LOSS_CHUNK_TOKENS):
        part = slice(start, start + LOSS_CHUNK_TOKENS)
        total = total + torch.utils.checkpoint.checkpoint(
            chunk_loss, hidden[part], targets[part], use_reentrant=False
        )
    return total


def _liger_loss(hidden: Any) -> Any:
    """Liger's fused linear cross-entropy (sum reduction) on a CUDA tensor, if installed."""
    if hidden.device.type != "cuda":
        return None
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum")
