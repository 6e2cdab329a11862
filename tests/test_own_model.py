"""A user's own checkpoint (a tiny random Qwen2 with a BPE tokenizer of its own, not the demo),
end to end: forgetting is measured on every trial with no retain file, through the base
model's self-samples, and lands in the results file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest
from conftest import paretune

from sweeps.trial.recipe import run_trial
from sweeps.trial.types import TrialConfig


@pytest.mark.slow
def test_a_sweep_of_your_own_model_measures_forgetting_without_a_retain_file(
    own_model, tmp_path: Path
) -> None:
    """``paretune sweep run`` on a local folder with the default objectives (eval_nll,
    retain_delta_nll, dollars) and no retain file: every trial completes with both
    forgetting figures measured on self-samples (they used to end failed, "objective ...
    not measured")."""
    spec = tmp_path / "own.toml"
    spec.write_text(f"""
name = "own"
model = "{own_model.model_dir}"
seed = 0
[data]
train = "{own_model.train}"
eval = "{own_model.eval}"
[hardware]
device = "cpu"
cpu_instance = "local-cpu"
[search]
methods = ["lora"]
rank = [2, 8]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
max_steps = 3
[trial]
batch = 8
eval_every = 3
max_seq_len = 64
max_new_tokens = 4
[budget]
trials = 2
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
timeout_s = 300
""")
    done = paretune("sweep", "run", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as connection:
        rows = connection.sql(
            "SELECT state, retain_source, retain_delta_nll, retain_kl, self_retain_kl, dollars, "
            "objective_forgetting FROM trials WHERE study = 'own' ORDER BY number"
        ).fetchall()
    assert len(rows) == 2
    for state, source, delta_nll, kl, self_kl, dollars, objective in rows:
        assert (state, source) == ("complete", "self-samples")
        assert math.isfinite(delta_nll) and objective == delta_nll
        assert kl > 0  # three real LoRA steps move the model's distribution
        assert self_kl is None  # the comparison with self-samples is the demo's alone
        assert dollars == 0.0  # local-cpu


def test_a_retain_file_of_your_own_is_the_source_and_its_bad_rows_count(
    own_model, tmp_path: Path
) -> None:
    retain = tmp_path / "retain.jsonl"
    texts = ["The library opens at nine.", "Cats sleep for most of the day.", "3 plus 4 is 7."]
    retain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts) + "{broken\n")
    result = run_trial(
        TrialConfig(
            model=str(own_model.model_dir),
            train=str(own_model.train),
            eval=str(own_model.eval),
            retain=str(retain),
            bad_rows="skip",
            lr=1e-2,
            max_steps=2,
            batch=8,
            max_new_tokens=4,
            device="cpu",
            save="none",
            run_dir=str(tmp_path / "runs"),
        )
    )
    f = result.forgetting
    assert result.state == "complete"
    assert f.retain_source == f"file:{retain}"
    assert f.retain_kl > 0 and math.isfinite(f.retain_delta_nll) and f.base_retain_nll > 0
    assert f.self_retain_kl is None and f.fact_recall_drop is None
    assert result.params["bad_rows_skipped"] == 1
    card = (tmp_path / "runs").rglob("README.md")
    assert f"retain ΔNLL (file:{retain})" in next(card).read_text()


@pytest.mark.slow
def test_export_of_your_own_model_carries_its_card(own_model, tmp_path: Path) -> None:
    """A sweep trial on a local checkpoint whose card states a licence, with an e-mail address
    in the train data and an eval row copied from train; `paretune export` writes the card:
    the licence, the files' hashes and rows, the leak dropped, the personal data as a count
    only, the retain source and the forgetting the trial measured."""
    import hashlib
    import shutil

    model = tmp_path / "my-model"
    shutil.copytree(own_model.model_dir, model)
    (model / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# mine\n")
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    rows = own_model.train.read_text().splitlines()
    secret = "write to jane.doe@example.org"
    rows.append(json.dumps({"prompt": f"Q: {secret}? A:", "completion": " ok"}))
    train.write_text("\n".join(rows) + "\n")
    evaluation.write_text(own_model.eval.read_text() + rows[0] + "\n")  # a leaked row
    spec = tmp_path / "own.toml"
    spec.write_text(f"""
name = "own-card"
model = "{model}"
seed = 0
[data]
train = "{train}"
eval = "{evaluation}"
[hardware]
device = "cpu"
cpu_instance = "local-cpu"
[search]
methods = ["lora"]
rank = [2]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
max_steps = 2
[trial]
batch = 8
eval_every = 2
max_seq_len = 64
max_new_tokens = 4
[budget]
trials = 1
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "results.duckdb"}"
save = "none"
timeout_s = 300
""")
    done = paretune("sweep", "run", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    db = tmp_path / "results.duckdb"
    exported = paretune("export", "0", "--to", "axolotl", "--db", str(db), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    config = Path(exported.stdout.strip())
    card = config.with_suffix(".card.md").read_text()
    with duckdb.connect(str(db), read_only=True) as connection:
        fingerprint, delta_nll, kl = connection.execute(
            "SELECT data_fingerprint, retain_delta_nll, retain_kl FROM trials"
        ).fetchall()[0]
    assert f"- base model: `{model}`; licence: apache-2.0" in card
    for role, path in (("train", train), ("eval", evaluation)):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        count = len(path.read_text().splitlines())
        assert f"| {role} | `{path}` | {count} | `{sha}` |" in card
    assert f"- data fingerprint: `{fingerprint}`" in card
    assert "- leakage (drop): 1 eval rows copied train rows, 1 dropped" in card
    assert f"- rows trained on: {len(rows)}; scored on: {count - 1} (eval file)" in card
    assert "- personal data found (counts): email 1" in card
    forgetting = f"retain source (forgetting): self-samples; retain ΔNLL {delta_nll:.4f}"
    assert f"{forgetting}, KL {kl:.4f}" in card
    assert "jane.doe" not in card and "jane.doe" not in config.read_text()  # never the match
    header = config.read_text().split("\nbase_model:")[0]
    assert "# - base model: " in header and "licence: apache-2.0" in header
