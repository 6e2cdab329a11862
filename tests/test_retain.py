"""Retain sources on real models: a user's own Qwen2 checkpoint (self-samples, a retain file)
and the bundled demo; real sampling, real fine-tuning steps, real caches on disk."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sweeps.trial.retain import (
    DemoRetain,
    RetainFile,
    SelfSamples,
    SelfSampleSettings,
    load_retain_prompts,
    retain_source_for,
    weights_fingerprint,
)
from sweeps.trial.types import TrialConfig

torch = pytest.importorskip("torch")

# Small enough for a second or two on one CPU thread, large enough to see forgetting.
_SMALL = SelfSampleSettings(prompts=10, samples_per_prompt=3, max_new_tokens=16, batch=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder), tokenizer


@pytest.fixture(scope="module")
def base(own_model):
    return _load(own_model.model_dir)


@pytest.fixture(scope="module")
def fine_tuned(base, own_model):
    """A copy of the base after a few real AdamW steps on text unrelated to the prompts."""
    model, tokenizer = base
    tuned = copy.deepcopy(model)
    rows = [json.loads(line) for line in own_model.train.read_text().splitlines()]
    texts = [r["prompt"] + r["completion"] for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=1e-2)
    tuned.train()
    losses = []
    for _ in range(8):
        loss = tuned(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.5  # it really trained
    return tuned.eval()


def _self_samples(own_model, tokenizer, cache: Path, settings=_SMALL) -> SelfSamples:
    config = TrialConfig(model=str(own_model.model_dir), train=str(own_model.train))
    source = retain_source_for(
        config,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        precision="fp32",
        settings=settings,
        cache_dir=cache,
    )
    assert isinstance(source, SelfSamples)
    return source


def test_shipped_prompts_cover_every_kind_early() -> None:
    prompts = load_retain_prompts()
    kinds = {"knowledge", "instruction", "code", "arithmetic", "conversation"}
    assert len(prompts) >= 30
    assert {p["kind"] for p in prompts[:5]} == kinds
    assert all(p["prompt"].strip() for p in prompts)


def test_self_samples_are_drawn_once_and_then_read_from_the_cache(own_model, base, tmp_path):
    model, tokenizer = base
    first = _self_samples(own_model, tokenizer, tmp_path)
    assert first.name == "self-samples"
    assert not first.ready()
    with pytest.raises(RuntimeError, match="prepare"):
        first.score(model)
    first.prepare(model)
    assert first.built
    cached = first.cache_dir / "base.pt"
    stamp = cached.stat().st_mtime_ns
    meta = json.loads((first.cache_dir / "meta.json").read_text())
    assert meta["rows"] == 10 * 3 and meta["settings"]["max_new_tokens"] == 16

    samples = first.sequences()
    continuations = [[t for t in row if t != -100] for row in samples.labels]
    assert len(continuations) == 30
    assert all(1 <= len(c) <= 16 for c in continuations)
    assert len({tuple(c) for c in continuations}) > 25  # sampled, not greedy

    second = _self_samples(own_model, tokenizer, tmp_path)
    assert second.cache_dir == first.cache_dir
    assert second.ready()  # from disk, no model needed
    second.prepare(model)
    assert not second.built
    assert cached.stat().st_mtime_ns == stamp
    assert second.sequences() == samples

    reseeded = SelfSampleSettings(**{**_SMALL.__dict__, "seed": 1})
    other = _self_samples(own_model, tokenizer, tmp_path, reseeded)
    assert other.cache_dir != first.cache_dir
    other.prepare(model)
    assert other.sequences().input_ids != samples.input_ids


def test_sampling_is_seeded(own_model, base, tmp_path):
    model, tokenizer = base
    one = _self_samples(own_model, tokenizer, tmp_path / "a")
    two = _self_samples(own_model, tokenizer, tmp_path / "b")
    one.prepare(model)
    two.prepare(model)
    assert two.built and one.sequences() == two.sequences()


@pytest.fixture(scope="module")
def gpt2(base):
    """A random tiny GPT-2: learned absolute positions, so a wrong position shows."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = base
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("which", ["fine_tuned", "gpt2"])
def test_cold_sampling_of_padded_batches_equals_greedy_decoding_of_each_prompt(
    which, base, request
):
    """Left padding, masks and positions are right: at a temperature near 0 every row of a
    padded batch continues exactly as ``generate`` continues its prompt alone. (Qwen2 on its
    trained copy: the random one's greedy output hardly depends on the context; its rotary
    positions are relative, GPT-2's are absolute.)"""
    from sweeps.trial.retain import _sample

    _, tokenizer = base
    model = request.getfixturevalue(which)
    prompts = [p["prompt"] for p in load_retain_prompts()[:6]]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    assert len({len(i) for i in ids}) > 1  # the batch really is padded
    cold = SelfSampleSettings(samples_per_prompt=1, max_new_tokens=10, temperature=1e-4, batch=6)
    sampled = _sample(
        model,
        ids,
        cold,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        device=torch.device("cpu"),
    )
    for prompt_ids, continuation in zip(ids, sampled, strict=True):
        greedy = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=10,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt_ids) :].tolist()
        assert continuation == greedy


def test_the_base_against_itself_forgets_nothing(own_model, base, tmp_path):
    model, tokenizer = base
    source = _self_samples(own_model, tokenizer, tmp_path)
    source.prepare(model)
    scores = source.score(model)
    assert scores.source == "self-samples"
    assert scores.tokens > 0 and scores.base_retain_nll > 0
    assert abs(scores.retain_delta_nll) < 1e-6
    assert abs(scores.retain_kl) < 1e-6
    assert model.training is False


def test_a_fine_tuned_copy_forgets(own_model, base, fine_tuned, tmp_path):
    model, tokenizer = base
    source = _self_samples(own_model, tokenizer, tmp_path)
    source.prepare(model)
    scores = source.score(fine_tuned)
    assert scores.retain_delta_nll > 0.05
    assert scores.retain_kl > 0.05
    fields = scores.forgetting_fields()
    assert fields["retain_delta_nll"] == scores.retain_delta_nll
    from sweeps.trial.types import Forgetting

    assert Forgetting(**fields).retain_kl == scores.retain_kl


def test_one_forward_pass_gives_what_the_two_separate_passes_give(base, fine_tuned):
    """nll_and_topk / nll_and_kl score a retain set in one pass per batch: the same numbers
    as completion_nll, base_topk and retain_kl, with a top-k smaller than the vocabulary (the
    rest bucket) and with all of it."""
    from sweeps.trial.data import batches, tokenize_texts
    from sweeps.trial.metrics import (
        base_topk,
        completion_nll,
        nll_and_kl,
        nll_and_topk,
        retain_kl,
    )

    model, tokenizer = base
    texts = [p["prompt"] for p in load_retain_prompts()[:12]]
    data = tokenize_texts(texts, tokenizer, max_seq_len=64)

    def rows():
        return batches(data, batch_size=5, pad_id=tokenizer.pad_token_id)

    for k in (16, len(tokenizer)):
        nll, tokens, topk = nll_and_topk(model, rows(), k=k)
        assert (nll, tokens) == pytest.approx(completion_nll(model, rows()), rel=1e-5)
        separate = base_topk(model, rows(), k=k)
        for one, other in zip(topk, separate, strict=True):
            assert torch.equal(one["indices"], other["indices"])
            assert torch.allclose(one["logprobs"], other["logprobs"], atol=1e-5)
        tuned_nll, tuned_tokens, kl = nll_and_kl(fine_tuned, rows(), topk)
        assert (tuned_nll, tuned_tokens) == pytest.approx(
            completion_nll(fine_tuned, rows()), rel=1e-5
        )
        assert kl == pytest.approx(retain_kl(fine_tuned, rows(), topk), rel=1e-5)
        assert kl > 0.05 and tuned_nll > nll


def test_a_rungs_subset_is_scored_as_the_whole_source_scores_it(
    own_model, base, fine_tuned, tmp_path
):
    """Early stopping's forgetting estimate at a rung (``score_subset``): on all the rows it is
    the source's own score; on fewer rows it scores whole batches of them; the base's NLL of the
    subset comes from the per-batch NLL sums kept with the base data."""
    from sweeps.trial.data import batches, tokenize_texts
    from sweeps.trial.metrics import completion_nll, nll_and_topk

    model, tokenizer = base
    source = _self_samples(own_model, tokenizer, tmp_path)
    source.prepare(model)
    whole, everything = source.score(fine_tuned), source.score_subset(fine_tuned, 10_000)
    assert everything is not None and everything.rows == len(source.base["input_ids"])
    assert everything.tokens == whole.tokens
    assert everything.retain_kl == pytest.approx(whole.retain_kl, rel=1e-5)
    # The base's NLL of the subset comes from its per-batch sums: a random model's samples are
    # often outside its top-k (KL_TOP_K < its vocabulary), and the subset still has a delta.
    assert everything.retain_delta_nll == pytest.approx(whole.retain_delta_nll, rel=1e-5)
    first = source.score_subset(fine_tuned, 1)
    assert first is not None and first.rows == source.batch and first.tokens < whole.tokens
    assert first.retain_delta_nll is not None
    assert model.training is False

    data = tokenize_texts(
        [p["prompt"] for p in load_retain_prompts()[:12]], tokenizer, max_seq_len=64
    )
    rows = list(batches(data, batch_size=5, pad_id=tokenizer.pad_token_id))
    nll, tokens, topk = nll_and_topk(model, rows, k=2)  # the sums need no label in the top-k
    per_batch = [completion_nll(model, [row]) for row in rows]
    assert [kept["nll_sum"] for kept in topk] == pytest.approx([n * t for n, t in per_batch])
    assert sum(kept["nll_sum"] for kept in topk) / tokens == pytest.approx(nll, rel=1e-5)


def test_weights_are_keyed_by_content(own_model, base, fine_tuned, tmp_path):
    model, tokenizer = base
    assert weights_fingerprint(model) == weights_fingerprint(copy.deepcopy(model))
    assert weights_fingerprint(model) != weights_fingerprint(fine_tuned)
    on_disk = weights_fingerprint(own_model.model_dir, cache_root=tmp_path)
    assert on_disk == weights_fingerprint(own_model.model_dir, cache_root=tmp_path)
    assert (tmp_path / "retain" / "weight-hashes.json").exists()
    saved = tmp_path / "tuned"
    fine_tuned.save_pretrained(saved)
    assert weights_fingerprint(saved, cache_root=tmp_path) != on_disk


def test_a_hub_id_is_keyed_by_the_commit_of_its_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_fingerprint("someone/tiny-model") == "name:someone/tiny-model"
    repo = tmp_path / "hub" / "models--someone--tiny-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert weights_fingerprint("someone/tiny-model") == f"hub:someone/tiny-model@{commit}"


def test_a_retain_file_is_the_source_when_given(own_model, base, fine_tuned, tmp_path):
    model, tokenizer = base
    retain = tmp_path / "retain.jsonl"
    texts = ["The library opens at nine.", "Cats sleep for most of the day.", "3 plus 4 is 7."]
    retain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = TrialConfig(model=str(own_model.model_dir), train=str(own_model.train))
    source = retain_source_for(
        config.model_copy(update={"retain": str(retain)}),
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        precision="fp32",
        cache_dir=tmp_path,
    )
    assert isinstance(source, RetainFile)
    assert source.name == f"file:{retain}"
    source.prepare(model)
    assert source.score(model).retain_delta_nll == pytest.approx(0.0, abs=1e-6)
    tuned = source.score(fine_tuned)
    assert tuned.retain_kl > 0.05 and tuned.extras == {}


@pytest.mark.slow
def test_the_demo_keeps_its_world_text_and_fact_recall(demo, tmp_path):
    model, tokenizer = _load(demo.model_dir)
    source = retain_source_for(
        TrialConfig(), tokenizer=tokenizer, device=torch.device("cpu"), precision="fp32",
        cache_dir=tmp_path,
    )  # fmt: skip
    assert isinstance(source, DemoRetain) and source.name == "demo"
    source.prepare(model)
    scores = source.score(model)
    assert scores.retain_delta_nll == pytest.approx(0.0, abs=1e-6)
    assert scores.extras["base_fact_recall"] == pytest.approx(demo.base_fact_recall)
    assert scores.extras["fact_recall_drop"] == pytest.approx(0.0)

    # The demo model with the user's own task keeps the world text, without fact probes.
    own_task = TrialConfig(train=str(demo.train))
    source = retain_source_for(
        own_task, tokenizer=tokenizer, device=torch.device("cpu"), precision="fp32",
        cache_dir=tmp_path,
    )  # fmt: skip
    assert source.name == "demo" and source.facts == []


@pytest.mark.slow
def test_on_a_small_vocabulary_both_numbers_estimate_the_same_kl(demo, tmp_path):
    """The demo's vocabulary fits in the top-k, so ``retain_kl`` is the exact expected KL on
    the sampled prefixes and ``retain_delta_nll`` its plain Monte Carlo estimate: they agree
    when the samples come from p_base itself, within the Monte Carlo error of ~3,000 sampled
    tokens (within 6% with one CPU's demo model, 15% with another's; at temperature 0.7 the
    samples are not from p_base and the two differ systematically)."""
    model, tokenizer = _load(demo.model_dir)
    assert len(tokenizer) <= 256
    config = TrialConfig(model=str(demo.model_dir), train=str(demo.train))
    source = retain_source_for(
        config, tokenizer=tokenizer, device=torch.device("cpu"), precision="fp32",
        cache_dir=tmp_path,
    )  # fmt: skip
    assert isinstance(source, SelfSamples)
    source.prepare(model)
    rows = [json.loads(line) for line in demo.train.read_text().splitlines()]
    batch = tokenizer([r["prompt"] + r["completion"] for r in rows], return_tensors="pt",
                      padding=True)  # fmt: skip
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    tuned = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=1e-3)
    tuned.train()
    for _ in range(5):
        tuned(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    scores = source.score(tuned.eval())
    assert scores.retain_kl > 0.15  # five steps moved the model: a KL worth estimating
    assert scores.retain_delta_nll == pytest.approx(scores.retain_kl, rel=0.2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_path_in_bf16(own_model, tmp_path):
    device = torch.device("cuda", torch.cuda.current_device())
    model, tokenizer = _load(own_model.model_dir)
    model = model.to(device=device, dtype=torch.bfloat16)
    source = retain_source_for(
        TrialConfig(model=str(own_model.model_dir), train=str(own_model.train)),
        tokenizer=tokenizer, device=device, precision="bf16", settings=_SMALL, cache_dir=tmp_path,
    )  # fmt: skip
    source.prepare(model)
    assert abs(source.score(model).retain_delta_nll) < 1e-3
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    scores = source.score(tuned)
    assert scores.retain_kl > 0 and scores.retain_delta_nll > 0
