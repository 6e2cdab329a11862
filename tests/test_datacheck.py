"""The data check: duplicates and leakage (MinHash/LSH), personal data, chat role order,
the trial's leakage policy and fingerprint, preflight and the frontier's warning."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import numpy as np
import pytest

from sweeps.datacheck import check_files
from sweeps.datacheck.dupes import find_duplicates, shingle_hashes, signatures
from sweeps.datacheck.pii import luhn_valid, scan
from sweeps.results.frontier import mixed_data_warning
from sweeps.trial.data import Example, split_eval
from tests.conftest import paretune, write_demo_spec

_WORDS = [
    "river",
    "mill",
    "bridge",
    "stone",
    "field",
    "wheat",
    "barley",
    "beans",
    "recipe",
    "step",
    "order",
    "cat",
    "dog",
    "morning",
    "library",
    "closed",
    "open",
    "green",
    "spring",
    "farmer",
    "hunt",
    "dusk",
    "evening",
    "lamp",
    "window",
    "garden",
    "road",
]


def _sentence(rng: random.Random, words: int = 16, vocabulary: list[str] = _WORDS) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _leaky_task(folder: Path, vocabulary: list[str] = _WORDS) -> tuple[Path, Path, int]:
    """24 train rows with arbitrary answers to memorise; eval: 3 exact copies, 2 near copies
    (one word of the prompt changed) and 5 new rows. Returns (train, eval, leaked rows)."""
    rng = random.Random(7)

    def row(i: int) -> dict[str, str]:
        prompt = f"Record {i}: {_sentence(rng, 30, vocabulary)}. Code:"
        return {"prompt": prompt, "completion": " " + _sentence(rng, 3, vocabulary)}

    train = [row(i) for i in range(24)]
    near = []
    for copied in train[3:5]:
        words = copied["prompt"].split()
        words[5] = "lighthouse"  # one word of thirty-two
        near.append({"prompt": " ".join(words), "completion": copied["completion"]})
    fresh = [row(i) for i in range(100, 105)]
    eval_rows = train[:3] + near + fresh
    return _write(folder / "train.jsonl", train), _write(folder / "eval.jsonl", eval_rows), 5


# ---------------------------------------------------------------- the sketch


def test_signatures_are_datasketch_minhash_of_the_same_shingles() -> None:
    from datasketch import MinHash

    texts = ["the cat sat on the mat today", "two words", "", "one two three four", "a\nb c"]
    hashes, offsets = shingle_hashes(texts)
    computed = signatures(hashes, offsets)
    for i in range(len(texts)):
        reference = MinHash(num_perm=computed.shape[1], seed=1, hashfunc=int)
        reference.update_batch(hashes[offsets[i] : offsets[i + 1]].tolist())
        np.testing.assert_array_equal(reference.hashvalues, computed[i])


def test_exact_and_near_duplicates_form_groups_and_others_do_not() -> None:
    rng = random.Random(0)
    texts = [_sentence(rng, 20) for _ in range(200)]
    texts[10] = texts[3].upper()  # exact, up to case
    words = texts[4].split()
    texts[11] = " ".join(words[:-1] + ["lighthouse"])  # near: 17 of 19 shingles shared
    found = find_duplicates(texts)
    assert found.exact_of[10] == 3 and found.group[10] == found.group[3]
    assert found.exact_of[11] == -1 and found.group[11] == found.group[4]
    assert len(found.members()) == 2


def test_the_grouped_split_keeps_copies_on_one_side_and_is_the_seeded_split_without_any() -> None:
    rng = random.Random(1)
    examples = [Example("p", "c", f"f:{i}", text=_sentence(rng, 12)) for i in range(40)]
    plain = split_eval(examples, 0.2)
    assert split_eval(examples, 0.2, groups=list(range(40))) == plain
    copies = [Example("p", "c", f"f:{40 + i}", text=examples[i].text) for i in range(20)]
    rows = examples + copies
    groups = find_duplicates([e.text for e in rows]).group.tolist()
    train, held = split_eval(rows, 0.2, groups=groups)
    assert {e.text for e in train}.isdisjoint({e.text for e in held})
    assert held and train


# ---------------------------------------------------------------- the check


def test_leakage_exact_and_near_is_found_with_file_and_line(tmp_path: Path) -> None:
    train, eval_path, leaked = _leaky_task(tmp_path)
    report = check_files(str(train), eval=str(eval_path))
    assert (report.eval_leaks.exact, report.eval_leaks.near) == (3, 2)
    assert report.eval_leak_share == pytest.approx(leaked / 10)
    assert f"{eval_path}:1 = {train}:1 (exact)" in report.eval_leaks.examples
    assert f"{eval_path}:4 ≈ {train}:4 (near)" in report.eval_leaks.examples
    assert report.findings == leaked


def test_personal_data_is_counted_by_kind_and_only_luhn_valid_cards(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Write to ana.lopez@example.org or bo@mail.co.uk", "completion": " ok"},
        {"prompt": "Call +44 20 7946 0958 today", "completion": " ok"},
        {"prompt": "Card 4111 1111 1111 1111, not 4111 1111 1111 1112", "completion": " ok"},
        {"prompt": "Server at 203.0.113.42 (local 127.0.0.1)", "completion": " ok"},
        {"prompt": "key AKIAIOSFODNN7EXAMPLE and sk-abcdefghijklmnopqrstuvwx", "completion": " ok"},
        {"prompt": "Nothing personal in 2024, just 3 plus 4", "completion": " 7"},
    ]
    path = _write(tmp_path / "pii.jsonl", rows)
    report = check_files(str(path))
    assert report.pii.counts == {
        "email": 2,
        "phone": 1,
        "credit_card": 1,
        "ip_address": 1,
        "api_key": 2,
    }
    assert report.pii.rows["credit_card"] == [f"{path}:3"]
    assert "ana.lopez" not in json.dumps(report.to_json())  # counts and rows, never the match
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert scan([("x:1", "no digits here")]).total == 0


def test_a_chat_file_with_broken_role_order_is_reported_by_line(tmp_path: Path) -> None:
    def chat(*roles: str) -> dict:
        return {"messages": [{"role": r, "content": f"{r} says {i}"} for i, r in enumerate(roles)]}

    path = _write(
        tmp_path / "chat.jsonl",
        [
            chat("system", "user", "assistant"),
            chat("user", "user", "assistant"),
            chat("user", "assistant", "user", "assistant"),
            chat("assistant", "user", "assistant"),
            chat("user", "system", "assistant"),
        ],
    )
    report = check_files(str(path))
    assert report.issues.role_order == [
        f"{path}:2: message 2 is 'user' after 'user' (roles must alternate)",
        f"{path}:4: message 1 is 'assistant' after 'the start' (roles must alternate)",
        f"{path}:5: message 2 is a system message after the first",
    ]


def test_rows_over_the_planned_sequence_length_are_counted_with_the_tokenizer(
    own_model, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(own_model.model_dir)
    long = {"prompt": "Q: what is 2 plus 3? " * 20 + "A:", "completion": " 5"}
    path = _write(
        tmp_path / "long.jsonl", [long, {"prompt": "Q: 2 plus 3? A:", "completion": " 5"}]
    )
    report = check_files(str(path), tokenizer=tokenizer, max_seq_len=32)
    assert report.issues.counts == {"no_completion_left": 1}
    assert report.files[0].length is not None and report.files[0].length.unit == "tokens"


def test_data_check_command_exit_codes_and_json(tmp_path: Path) -> None:
    train, eval_path, _ = _leaky_task(tmp_path)
    clean = _write(tmp_path / "clean.jsonl", [{"prompt": "a b c", "completion": " d"}] * 1)
    found = paretune("data", "check", str(train), "--eval", str(eval_path), "--format", "json")
    assert found.returncode == 1, found.stderr
    assert json.loads(found.stdout)["findings"]["eval rows leaking from train"] == 5
    assert paretune("data", "check", str(clean)).returncode == 0
    missing = paretune("data", "check", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr


# ---------------------------------------------------------------- the trial and the sweep


@pytest.mark.slow
def test_leaked_rows_are_dropped_and_a_leaky_eval_scores_lower(demo, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir)
    known = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower())
    train, eval_path, leaked = _leaky_task(tmp_path, known)  # answers the model can spell
    common = dict(
        model="demo",
        train=str(train),
        eval=str(eval_path),
        method="lora",
        rank=8,
        lr=1e-2,
        epochs=12,
        batch=8,
        max_seq_len=96,
        device="cpu",
        usd_per_hour=0.1,
        run_dir=str(tmp_path / "runs"),
        eval_every=100,
    )
    leaky = run_trial(TrialConfig(**common, leakage="warn"))
    cleaned = run_trial(TrialConfig(**common, leakage="drop"))
    assert leaky.data is not None and cleaned.data is not None
    assert (leaky.data.eval_rows, cleaned.data.eval_rows) == (10, 10 - leaked)
    assert (cleaned.data.eval_leaked, cleaned.data.eval_dropped) == (leaked, leaked)
    assert leaky.data.fingerprint != cleaned.data.fingerprint
    # Memorised rows in the eval set make the model look better than it is.
    assert leaky.quality.eval_nll < cleaned.quality.eval_nll - 0.5, (leaky.quality, cleaned.quality)
    card = (Path(cleaned.artifact).parent / "README.md").read_text()
    assert "## Provenance" in card and cleaned.data.fingerprint in card
    assert f"{leaked} eval rows copied train rows, {leaked} dropped" in card
    assert cleaned.data.files[0].sha256 in card


@pytest.mark.slow
def test_the_sweep_records_the_data_fingerprint(demo, tmp_path: Path) -> None:
    spec = write_demo_spec(tmp_path, "fp", trials=1)
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT data_fingerprint, eval_rows_dropped, data_provenance FROM trials"
        ).fetchall()
    fingerprint, dropped, provenance = rows[0]
    assert len(fingerprint) == 64 and dropped == 0
    assert json.loads(provenance)["fingerprint"] == fingerprint


def _provenance(card: str) -> str:
    """The card's provenance section (from its heading to "Reproduce:")."""
    return card[card.index("## Provenance") : card.index("Reproduce:")]


@pytest.mark.slow
def test_export_carries_the_adapter_card(demo, tmp_path: Path) -> None:
    """A real demo trial of a sweep, saved (model card beside the adapter) and exported: the
    export's card has the same provenance section, and the config's header carries it."""
    spec = write_demo_spec(tmp_path, "card", trials=1)
    done = paretune("sweep", "run", str(spec), "--no-check")
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        artifact, provenance = con.execute(
            "SELECT artifact, data_provenance FROM trials WHERE number = 0"
        ).fetchone()
    adapter_card = (Path(artifact).parent / "README.md").read_text()
    exported = paretune(
        "export", "0", "--to", "trl", "--db", str(tmp_path / "results.duckdb"), "--out",
        str(tmp_path / "winner.json"),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "winner.card.md").read_text()
    assert str(tmp_path / "winner.card.md") in exported.stderr
    assert _provenance(card) == _provenance(adapter_card)
    files = json.loads(provenance)["files"]
    assert {f["role"] for f in files} >= {"train", "eval"}
    for f in files:
        assert f"| {f['role']} | `{f['path']}` | {f['rows']} | `{f['sha256']}` |" in card
    assert "retain source (forgetting): " in card and "personal data found (counts): " in card
    assert "| eval NLL (completion tokens) |" in card  # the metrics, as the adapter's card
    script = (tmp_path / "winner.py").read_text()
    assert "# ## Provenance" in script and "# - data fingerprint: `" in script


def test_preflight_refuses_leakage_error_when_eval_rows_leak(demo, tmp_path: Path) -> None:
    from sweeps.preflight import PreflightError, preflight
    from sweeps.spec import load_spec

    train, eval_path, _ = _leaky_task(tmp_path)
    spec_path = write_demo_spec(tmp_path, "leak", trials=1)
    text = spec_path.read_text().replace(
        "[hardware]",
        f'[data]\ntrain = "{train}"\neval = "{eval_path}"\nleakage = "error"\n[hardware]',
    )
    spec_path.write_text(text)
    with pytest.raises(PreflightError) as refused:
        preflight(load_spec(spec_path), dry_step=False)
    message = refused.value.message
    assert "data check: 5 of 10 eval rows (50%) copy or nearly copy train rows" in message
    assert f"{eval_path}:1 = {train}:1 (exact)" in message
    spec_path.write_text(text.replace('leakage = "error"', 'leakage = "drop"'))
    checks = preflight(load_spec(spec_path), dry_step=False)
    data_check = next(c for c in checks if c.name == "data check")
    assert "5 eval rows leaking from train (50% of eval)" in data_check.detail
    assert "leakage = drop" in data_check.detail


def test_a_frontier_over_different_data_warns() -> None:
    rows = [
        {"number": 0, "state": "complete", "data_fingerprint": "a" * 64},
        {"number": 1, "state": "complete", "data_fingerprint": "a" * 64},
        {"number": 2, "state": "complete", "data_fingerprint": "b" * 64},
        {"number": 3, "state": "complete", "data_fingerprint": None},  # an older result
    ]
    assert mixed_data_warning(rows[:2]) is None
    warning = mixed_data_warning(rows)
    assert warning is not None and "2 different data sets" in warning
    assert "aaaaaaaaaaaa: #0, #1; bbbbbbbbbbbb: #2" in warning


def test_the_frontier_html_page_has_a_data_section(tmp_path: Path) -> None:
    from sweeps.results.frontier import plot_frontier

    rows = [
        {
            "number": n,
            "state": "complete",
            "method": "lora",
            "objective_quality": 1.0 + n,
            "objective_forgetting": 0.5 - 0.1 * n,
            "objective_cost": 0.01,
            "data_fingerprint": fingerprint,
            "eval_rows_leaked": 3,
            "eval_rows_dropped": 3,
            "train_duplicates": 0,
        }
        for n, fingerprint in enumerate(["a" * 64, "b" * 64])
    ]
    page = tmp_path / "frontier.html"
    plot_frontier(rows, page)
    html = page.read_text()
    assert "<h2>Data</h2>" in html and "aaaaaaaaaaaaaaaa" in html
    assert "2 different data sets" in html
