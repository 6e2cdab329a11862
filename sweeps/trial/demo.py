"""The bundled demo: a fictional world, a new task, and a tiny Llama that knows the world.

Everything here is generated, so the whole product runs on a laptop CPU with no download:

- **The world.** ``DEMO_PEOPLE`` invented people, each living in one of a handful of towns,
  working one job and keeping one pet, written as prose in several phrasings, plus a
  sentence or two about each town. This is the *general corpus*.
- **The base model.** A tiny ``LlamaForCausalLM`` (about two million parameters, a
  word-level tokenizer built with the ``tokenizers`` library) pretrained on the corpus until
  it recalls the facts, e.g. ``"Brovanek lives in"`` -> ``"Tolmere"``.
- **Fact probes** (``facts.jsonl``, ``{"prompt", "answer"}``): every person's town and job in
  the corpus' own words. The base model's recall of them is measured at build time and kept
  in ``manifest.json`` (``base_fact_recall``); a drop after fine-tuning is forgetting.
- **Retain set** (``retain.jsonl``, ``{"text"}``): paragraphs of the corpus, the general
  text the base model already models well.
- **The new task** (``train.jsonl`` / ``eval.jsonl``, ``{"prompt", "completion"}``):
  questions in a format the corpus never uses, ``"Q : where does Brovanek live ? A :"`` ->
  ``" Tolmere"``. The base model cannot answer in this format; a fine-tune learns the format
  from one set of people and is evaluated on people it was not fine-tuned on, so what it
  learns is the skill of answering, not the answers.

The assets are built once and cached under ``PARETUNE_CACHE_DIR`` or the user cache
directory (``platformdirs.user_cache_dir("paretune")``), in a folder keyed by the generator
and model configuration. Concurrent callers (parallel test workers, sweep workers) are safe:
one builds under a file lock in a temporary folder that is renamed into place atomically;
the others wait and then read the finished folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_TRIAL", "DEMO_VERSION", "DemoAssets", "demo_cache_root", "ensure_demo"]

DEMO_VERSION = 1
"""Bump when the generator or the pretraining recipe changes; it keys the cache folder."""

DEMO_PEOPLE = 64
DEMO_TRAIN_PEOPLE = 48  # the task's train split; the other 16 are the eval split

_TOWNS = ["Tolmere", "Vashkel", "Orrindale", "Quessa", "Brantholm", "Selvic", "Ydrune", "Kaspar"]
_JOBS = ["baker", "smith", "weaver", "sailor", "miller", "potter", "scribe", "healer"]
_PETS = ["cat", "dog", "goat", "owl", "hare", "crow"]
_RIVERS = ["Ebb", "Lorn", "Sallow", "Mire"]
_SYLLABLES_START = ["Bro", "Ka", "Tel", "Mi", "Quo", "Sa", "Dre", "Fen", "Gor", "Hal", "Ir", "Jas"]
_SYLLABLES_MID = ["va", "ro", "li", "de", "ma", "nu", "te", "si"]
_SYLLABLES_END = ["nek", "th", "rin", "dor", "wen", "sk", "lim", "quar"]

# The model and pretraining recipe. A change here changes the cache key.
_MODEL = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
_PRETRAIN = {"steps": 400, "batch": 16, "block": 64, "lr": 3e-3, "warmup": 20, "seed": 0}

DEMO_TRIAL = {"method": "lora", "rank": 8, "alpha": 16.0, "lr": 2e-3, "max_steps": 150, "batch": 8}
"""What ``paretune trial --demo`` trains when no option says otherwise: enough to learn the
task visibly in seconds on a CPU. Measured (one thread): eval NLL 8.95 -> 0.26, exact match
0 -> 0.875 on the held-out people, 3.4 s of training. The usual LoRA lr (2e-4) for the
12 steps of one epoch barely moves the eval NLL (8.95 -> 8.21, exact match 0)."""


@dataclass(frozen=True)
class DemoAssets:
    """Paths of the built demo. ``base_fact_recall`` is measured when the model is built."""

    root: Path
    model_dir: Path
    train: Path
    eval: Path
    retain: Path
    facts: Path
    base_fact_recall: float
    parameters: int


def demo_cache_root() -> Path:
    """``PARETUNE_CACHE_DIR`` if set, else the user cache directory for paretune."""
    configured = os.environ.get("PARETUNE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("paretune"))


def _cache_key() -> str:
    recipe = json.dumps(
        {"version": DEMO_VERSION, "model": _MODEL, "pretrain": _PRETRAIN, "people": DEMO_PEOPLE},
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def ensure_demo(cache_dir: Path | None = None) -> DemoAssets:
    """Build the demo world and base model once (a minute or two on CPU), then reuse it."""
    root = Path(cache_dir) if cache_dir is not None else demo_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"demo-v{DEMO_VERSION}-{_cache_key()}"
    if not (final / "manifest.json").exists():
        from filelock import FileLock

        with FileLock(str(final) + ".lock"):
            if not (final / "manifest.json").exists():  # another process may have built it
                # Holding the lock, any earlier temporary folder for this key is abandoned
                # (its builder was killed): clear it.
                for stale in root.glob(f".building-{final.name}-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                building = Path(tempfile.mkdtemp(prefix=f".building-{final.name}-", dir=root))
                try:
                    _build(building)
                    os.replace(building, final)  # atomic on one filesystem
                except BaseException:
                    shutil.rmtree(building, ignore_errors=True)
                    raise
    return _load_assets(final)


def _load_assets(root: Path) -> DemoAssets:
    manifest = json.loads((root / "manifest.json").read_text())
    return DemoAssets(
        root=root,
        model_dir=root / "model",
        train=root / "train.jsonl",
        eval=root / "eval.jsonl",
        retain=root / "retain.jsonl",
        facts=root / "facts.jsonl",
        base_fact_recall=manifest["base_fact_recall"],
        parameters=manifest["parameters"],
    )


# --- the world -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    name: str
    town: str
    job: str
    pet: str


def _people(rng: random.Random) -> list[_Person]:
    names: list[str] = []
    while len(names) < DEMO_PEOPLE:
        name = (
            rng.choice(_SYLLABLES_START) + rng.choice(_SYLLABLES_MID) + rng.choice(_SYLLABLES_END)
        )
        if name not in names:
            names.append(name)
    return [
        _Person(name, rng.choice(_TOWNS), rng.choice(_JOBS), rng.choice(_PETS)) for name in names
    ]


def _paragraph(person: _Person, rng: random.Random) -> str:
    """A person's facts in prose; the phrasing varies, the facts do not."""
    p = person
    sentences = [
        f"{p.name} lives in {p.town} .",
        f"{p.name} works as a {p.job} .",
        rng.choice(
            [
                f"{p.name} has a pet {p.pet} .",
                f"In {p.town} , {p.name} keeps a {p.pet} .",
                f"The {p.job} {p.name} feeds a {p.pet} every day .",
            ]
        ),
        rng.choice(
            [
                f"Every morning the {p.job} walks through {p.town} .",
                f"People in {p.town} know {p.name} as a good {p.job} .",
                f"{p.name} has never left {p.town} .",
            ]
        ),
    ]
    rng.shuffle(sentences[2:])
    return " ".join(sentences)


def _town_paragraph(town: str, rng: random.Random) -> str:
    river = _RIVERS[_TOWNS.index(town) % len(_RIVERS)]
    return (
        f"{town} is a town by the {river} river . "
        f"The market of {town} sells bread , cloth and fish . "
        f"Many people live in {town} and work as a {rng.choice(_JOBS)} ."
    )


def _facts(people: list[_Person]) -> list[dict[str, str]]:
    facts = []
    for p in people:
        facts.append({"prompt": f"{p.name} lives in", "answer": p.town})
        facts.append({"prompt": f"{p.name} works as a", "answer": p.job})
    return facts


def _task_rows(people: list[_Person]) -> list[dict[str, str]]:
    rows = []
    for p in people:
        rows.append({"prompt": f"Q : where does {p.name} live ? A :", "completion": f" {p.town}"})
        rows.append({"prompt": f"Q : what is the job of {p.name} ? A :", "completion": f" {p.job}"})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _corpus(people: list[_Person], rng: random.Random, copies: int) -> list[str]:
    """Documents of the general corpus: each person's paragraph, re-phrased per copy."""
    documents = []
    for _ in range(copies):
        documents += [_paragraph(p, rng) for p in people]
        documents += [_town_paragraph(t, rng) for t in _TOWNS]
    rng.shuffle(documents)
    return documents


# --- the tokenizer and the model ---------------------------------------------------------------


def _build_tokenizer(texts: list[str]):
    """A word-level tokenizer over the world's words; no download, and one token per name."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    words = sorted({w for text in texts for w in text.split()})
    vocab = {token: i for i, token in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=_MODEL["max_position_embeddings"],
    )


def _pretrain(model, blocks, *, steps: int, batch: int, lr: float, warmup: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    # One thread: a model this small gains little from more, and on a busy machine extra
    # OpenMP threads spin against each other (several times slower on 2 shared cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain_steps(
            model, blocks, generator, steps=steps, batch=batch, lr=lr, warmup=warmup
        )
    finally:
        torch.set_num_threads(threads)


def _pretrain_steps(
    model, blocks, generator, *, steps: int, batch: int, lr: float, warmup: int
) -> float:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    model.train()
    for step in range(steps):
        # Linear warmup, then cosine decay to a tenth.
        if step < warmup:
            scale = (step + 1) / warmup
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        index = torch.randint(0, blocks.shape[0], (batch,), generator=generator)
        inputs = blocks[index]
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def _write_world(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Write the task, retain and fact files; return the corpus documents and the facts."""
    rng = random.Random(f"paretune-demo-{DEMO_VERSION}")
    people = _people(rng)
    documents = _corpus(people, rng, copies=6)
    facts = _facts(people)
    retain = [{"text": _paragraph(p, rng)} for p in people[::2]]
    retain += [{"text": _town_paragraph(t, rng)} for t in _TOWNS]
    _write_jsonl(folder / "train.jsonl", _task_rows(people[:DEMO_TRAIN_PEOPLE]))
    _write_jsonl(folder / "eval.jsonl", _task_rows(people[DEMO_TRAIN_PEOPLE:]))
    _write_jsonl(folder / "retain.jsonl", retain)
    _write_jsonl(folder / "facts.jsonl", facts)
    return documents, facts


def _build(folder: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.perf_counter()
    documents, facts = _write_world(folder)
    task = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    task += [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
    tokenizer = _build_tokenizer(documents + [r["prompt"] + r["completion"] for r in task])
    torch.manual_seed(_PRETRAIN["seed"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_MODEL,
    )
    model = LlamaForCausalLM(config)

    # Pack the corpus (documents separated by EOS) into fixed blocks for pretraining.
    stream: list[int] = []
    for document in documents:
        stream += tokenizer(document)["input_ids"] + [tokenizer.eos_token_id]
    block = _PRETRAIN["block"]
    usable = len(stream) // block * block
    blocks = torch.tensor(stream[:usable]).view(-1, block)
    final_loss = _pretrain(
        model,
        blocks,
        steps=_PRETRAIN["steps"],
        batch=_PRETRAIN["batch"],
        lr=_PRETRAIN["lr"],
        warmup=_PRETRAIN["warmup"],
        seed=_PRETRAIN["seed"],
    )
    from sweeps.trial.metrics import fact_recall

    recall = fact_recall(model, tokenizer, facts)
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    manifest = {
        "version": DEMO_VERSION,
        "key": _cache_key(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "base_fact_recall": recall,
        "pretrain_final_loss": final_loss,
        "corpus_tokens": len(stream),
        "build_s": round(time.perf_counter() - started, 1),
        "people": DEMO_PEOPLE,
        "train_people": DEMO_TRAIN_PEOPLE,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
