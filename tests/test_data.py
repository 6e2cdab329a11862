"""Task data: formats, the completion-only loss mask, bad rows, the split and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.trial.data import (
    DataError,
    batches,
    load_examples,
    load_texts,
    split_eval,
    tokenize_examples,
    tokenize_texts,
)


@pytest.fixture(scope="module")
def tokenizer(demo):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo.model_dir)


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_loss_is_on_completion_tokens_only(demo, tokenizer) -> None:
    examples, bad = load_examples(str(demo.train), tokenizer)
    assert not bad
    data = tokenize_examples(examples[:1], tokenizer, max_seq_len=64)
    ids, labels = data.input_ids[0], data.labels[0]
    completion = tokenizer(examples[0].completion, add_special_tokens=False)["input_ids"]
    scored = [token for token, label in zip(ids, labels, strict=False) if label != -100]
    assert scored == completion + [tokenizer.eos_token_id]
    assert ids[0] == tokenizer.bos_token_id


def test_chat_rows_without_template_render_plainly(tmp_path, tokenizer) -> None:
    assert not tokenizer.chat_template
    path = _write(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "where does Kamanek live ?"},
                    {"role": "assistant", "content": "Tolmere"},
                ]
            }
        ],
    )
    (example,), _ = load_examples(str(path), tokenizer)
    assert example.prompt == "user: where does Kamanek live ?\nassistant:"
    assert example.completion == " Tolmere"


def test_chat_rows_use_the_chat_template_when_there_is_one(tmp_path, demo) -> None:
    from transformers import AutoTokenizer

    templated = AutoTokenizer.from_pretrained(demo.model_dir)
    templated.chat_template = (
        "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    path = _write(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Tolmere"},
                ]
            }
        ],
    )
    (example,), _ = load_examples(str(path), templated)
    assert example.templated
    assert example.prompt == "<user> hi <assistant> "
    assert example.completion == "Tolmere "


def test_bad_rows_name_file_and_line(tmp_path, tokenizer) -> None:
    path = _write(
        tmp_path / "task.jsonl",
        [
            {"prompt": "a", "completion": " b"},
            "{not json",
            {"question": "a", "answer": "b"},
            {"prompt": "c", "completion": " d"},
        ],
    )
    with pytest.raises(DataError) as failed:
        load_examples(str(path), tokenizer, bad_rows="fail")
    assert f"{path}:2" in failed.value.message
    assert "skip" in failed.value.hint
    examples, bad = load_examples(str(path), tokenizer, bad_rows="skip")
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]
    assert [b.split(": ")[0] for b in bad] == [f"{path}:2", f"{path}:3"]
    assert 'expected "prompt" and "completion"' in bad[1]


def test_missing_file_and_missing_datasets_package_are_user_errors(tokenizer) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_examples("no/such/file.jsonl", tokenizer)
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="datasets"):
            load_examples("hf:someone/some-data", tokenizer)


def test_retain_rows_need_text(tmp_path) -> None:
    path = _write(tmp_path / "retain.jsonl", [{"text": "x"}, {"txt": "y"}])
    with pytest.raises(DataError, match=f"{path}:2"):
        load_texts(str(path))
    assert load_texts(str(path), bad_rows="skip")[0] == ["x"]


def test_seeded_split_is_stable_and_disjoint(demo, tokenizer) -> None:
    examples, _ = load_examples(str(demo.train), tokenizer)
    train, held = split_eval(examples, 0.1)
    again_train, again_held = split_eval(examples, 0.1)
    assert held == again_held and train == again_train
    assert len(held) == 10 and len(train) == len(examples) - 10
    assert not {e.source for e in held} & {e.source for e in train}


def test_tokenized_cache_is_keyed_by_content(tmp_path, demo, tokenizer) -> None:
    examples, _ = load_examples(str(demo.train), tokenizer)
    first = tokenize_examples(examples, tokenizer, max_seq_len=64, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert tokenize_examples(examples, tokenizer, max_seq_len=64, cache_dir=tmp_path) == first
    tokenize_examples(examples[1:], tokenizer, max_seq_len=64, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_packing_fills_rows_and_keeps_the_mask(demo, tokenizer) -> None:
    examples, _ = load_examples(str(demo.train), tokenizer)
    data = tokenize_examples(examples, tokenizer, max_seq_len=64)
    packed = list(
        batches(data, batch_size=4, pad_id=tokenizer.pad_token_id, packing=True, max_seq_len=64)
    )
    plain = list(batches(data, batch_size=4, pad_id=tokenizer.pad_token_id))
    assert sum(int(b["attention_mask"].sum()) for b in packed) == data.tokens
    assert len(packed) < len(plain)
    scored = sum(int((b["labels"] != -100).sum()) for b in packed)
    assert scored == sum(int((b["labels"] != -100).sum()) for b in plain)


def test_texts_are_scored_on_every_token(demo, tokenizer) -> None:
    texts, _ = load_texts(str(demo.retain))
    data = tokenize_texts(texts[:2], tokenizer, max_seq_len=256)
    assert data.labels == data.input_ids


def test_hugging_face_dataset_from_a_local_folder(tmp_path, tokenizer) -> None:
    pytest.importorskip("datasets", reason="the optional 'datasets' package is not installed")
    folder = tmp_path / "task"
    folder.mkdir()
    _write(folder / "train.jsonl", [{"prompt": "a", "completion": " b"}] * 3)
    examples, bad = load_examples(f"hf:{folder}:train", tokenizer)
    assert len(examples) == 3 and not bad
