"""The bundled demo: a real tiny Llama that knows a fictional world, and a task it cannot do."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from sweeps.trial.demo import DemoAssets, ensure_demo
from sweeps.trial.metrics import exact_match, fact_recall, greedy_continuations


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_model_loads_with_from_pretrained_and_recalls_the_facts(demo: DemoAssets) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(demo.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir)
    assert 1_000_000 < demo.parameters < 5_000_000
    recall = fact_recall(model, tokenizer, _rows(demo.facts))
    assert recall >= 0.8
    assert recall == demo.base_fact_recall  # what the manifest documents is what it does


def test_base_model_cannot_do_the_new_task(demo: DemoAssets) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(demo.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir)
    rows = _rows(demo.eval)
    said = greedy_continuations(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=4)
    assert exact_match(said, [r["completion"] for r in rows]) < 0.2


def test_task_splits_are_disjoint_people(demo: DemoAssets) -> None:
    train = {r["prompt"] for r in _rows(demo.train)}
    evaluation = {r["prompt"] for r in _rows(demo.eval)}
    assert train and evaluation and not train & evaluation
    assert all(set(r) == {"text"} for r in _rows(demo.retain))


def test_build_is_deterministic(tmp_path: Path, demo: DemoAssets) -> None:
    """The generator is seeded: a second build writes the same world files."""
    from sweeps.trial import demo as demo_module

    folder = tmp_path / "world"
    folder.mkdir()
    demo_module._write_world(folder)
    for name in ("train.jsonl", "eval.jsonl", "retain.jsonl", "facts.jsonl"):
        assert (folder / name).read_text() == (demo.root / name).read_text()


def _build_in(cache: str, queue) -> None:
    from sweeps.trial import demo as demo_module

    # A short pretraining keeps the race cheap; it is keyed apart from the real demo.
    demo_module._PRETRAIN["steps"] = 5
    queue.put(str(ensure_demo(Path(cache)).model_dir))


def test_concurrent_builders_share_one_folder(tmp_path: Path) -> None:
    """Two processes racing on an empty cache get the same, complete folder."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_build_in, args=(str(tmp_path), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    folders = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(folders) == 1
    built = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in built] == [Path(folders.pop()).parent.name]  # no temp folder left
    assert (built[0] / "manifest.json").exists()


def test_an_abandoned_build_folder_is_cleared(tmp_path: Path) -> None:
    from sweeps.trial import demo as demo_module

    demo_module._PRETRAIN["steps"], steps = 5, demo_module._PRETRAIN["steps"]
    try:
        final = f"demo-v{demo_module.DEMO_VERSION}-{demo_module._cache_key()}"
        abandoned = tmp_path / f".building-{final}-killed"
        abandoned.mkdir()
        built = ensure_demo(tmp_path)
    finally:
        demo_module._PRETRAIN["steps"] = steps
    assert not abandoned.exists()
    assert built.root.name == final and (built.root / "manifest.json").exists()


@pytest.mark.slow
def test_paretune_trial_demo_learns_the_task_visibly(tmp_path: Path, demo: DemoAssets, capsys):
    """``paretune trial --demo`` with no options: the demo's own defaults (LoRA r8, lr 2e-3,
    150 steps) take the held-out eval NLL from about 9 nats to below 1 and exact match from 0
    to most answers, in seconds on one CPU thread; the table shows base and fine-tuned side
    by side, both retain sources, and what the run is priced as."""
    from conftest import paretune

    from sweeps.trial.types import TrialResult
    from tui.cli.trial import _table

    done = paretune(
        "trial", "--demo", "--format", "json", "--run-dir", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = TrialResult.model_validate_json(done.stdout)
    q, f = result.quality, result.forgetting
    assert (result.config.method, result.config.lr, result.config.max_steps) == ("lora", 2e-3, 150)
    assert q.base_eval_nll > 8 and q.eval_nll < 1.0
    assert q.base_exact_match == 0.0 and q.exact_match >= 0.5
    assert f.retain_source == "demo" and f.retain_kl > 0 and f.self_retain_kl > 0
    assert result.command == "paretune trial --demo --method lora --lr 0.002 --max-steps 150 " + (
        f"--run-dir {tmp_path / 'runs'}"
    )

    _table(result)
    shown = capsys.readouterr().out
    assert "fine-tuned" in shown and "base" in shown
    assert f"{q.base_eval_nll:.4f}" in shown and f"{q.eval_nll:.4f}" in shown
    assert "retain KL (demo)" in shown and "retain KL (self-samples)" in shown
    assert "priced as local-cpu at local, $0.00/h" in " ".join(shown.split())
