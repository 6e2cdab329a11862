"""A user's own small checkpoint for the tests and benchmarks: a real architecture (Qwen2) with
random weights and a tokenizer trained here, not the bundled demo."""

from __future__ import annotations

import json
from pathlib import Path


def own_task_rows() -> list[dict[str, str]]:
    """The checkpoint's task: prompt/completion arithmetic."""
    return [
        {"prompt": f"Q: what is {a} plus {b}? A:", "completion": f" {a + b}"}
        for a in range(2, 10)
        for b in range(1, 6)
    ]


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


def build_own_checkpoint(root: Path) -> dict[str, str]:
    """A user's own small checkpoint, built once under ``root``: a tiny Qwen2 (random weights,
    ``save_pretrained``) with a byte-level BPE tokenizer trained on a few lines of text, and a
    prompt/completion arithmetic task (every fifth row held out for eval). Shared by the test suite's
    ``own_model`` fixture and the benchmarks. Returns the TrialConfig's model/train/eval paths."""
    model_dir = root / "model"
    paths = {"model": str(model_dir), "train": str(root / "train.jsonl")}
    paths["eval"] = str(root / "eval.jsonl")
    if (model_dir / "config.json").exists():
        return paths
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rows = own_task_rows()
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
    Path(paths["train"]).write_text("".join(x for i, x in enumerate(lines) if i % 5))
    Path(paths["eval"]).write_text("".join(lines[::5]))
    return paths
