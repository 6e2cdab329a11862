"""Shared fixtures: the bundled demo (built once per machine, then read from the cache)."""

from __future__ import annotations

import os

import pytest

# The test models are tiny: torch gains nothing from more than one CPU thread on them, and on a
# 2-core machine running a test process plus trial child processes, extra OpenMP threads only
# spin against each other (trials measured several times slower). Child processes inherit it.
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from sweeps.trial.demo import DemoAssets, ensure_demo


@pytest.fixture(scope="session")
def demo() -> DemoAssets:
    """The demo world and its pretrained tiny Llama (``PARETUNE_CACHE_DIR`` or the user cache)."""
    return ensure_demo()


# --- a user's own small checkpoint (not the demo, not Llama) -------------------------------------

import json  # noqa: E402 - appended below the demo fixture
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

_OWN_TEXT = """\
The river runs past the old mill and under the stone bridge before it reaches the sea.
In spring the fields turn green, and farmers plant wheat, barley and beans.
A good recipe lists the ingredients first and then explains each step in order.
Cats sleep for most of the day and hunt at dusk; dogs like to walk in the morning.
The library opens at nine and closes at six, except on Sundays when it is closed.
def add(a, b):
    return a + b
Numbers can be added, subtracted, multiplied and divided; 3 plus 4 is 7.
Hello, how are you today? I am fine, thank you, and you?
"""


@dataclass(frozen=True)
class OwnModel:
    """A small local checkpoint as a user would bring one: folder, task and eval files."""

    model_dir: Path
    train: Path
    eval: Path


def _own_task_rows() -> list[dict[str, str]]:
    return [
        {"prompt": f"Q: what is {a} plus {b}? A:", "completion": f" {a + b}"}
        for a in range(2, 10)
        for b in range(1, 6)
    ]


@pytest.fixture(scope="session")
def own_model(tmp_path_factory) -> OwnModel:
    """A tiny Qwen2 (random weights) with a byte-level BPE tokenizer trained here on a few
    lines of text, saved with ``save_pretrained``, and a prompt/completion arithmetic task."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("own-model")
    rows = _own_task_rows()
    corpus = _OWN_TEXT.splitlines() + [r["prompt"] + r["completion"] for r in rows]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=384,
            special_tokens=["<|endoftext|>", "<|pad|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    model_dir = root / "model"
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    lines = [json.dumps(r) + "\n" for r in rows]
    (root / "train.jsonl").write_text("".join(x for i, x in enumerate(lines) if i % 5))
    (root / "eval.jsonl").write_text("".join(lines[::5]))  # every fifth row held out
    return OwnModel(model_dir=model_dir, train=root / "train.jsonl", eval=root / "eval.jsonl")
