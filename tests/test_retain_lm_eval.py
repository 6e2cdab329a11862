"""The ``lm-eval:`` retain source: lm-evaluation-harness run for real on a tiny model, offline.

The task is ``tests/data/lm_eval/retain_mc.yaml``: 20 multiple-choice items read from the
JSONL beside it (lm-eval resolves ``data_files`` against the working directory, so the tests
run from that folder).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from pricing.errors import UserError
from sweeps.trial.retain_lm_eval import (
    LmEvalError,
    LmEvalSpec,
    paired_drop_interval,
    wilson_interval,
)
from sweeps.trial.types import TrialConfig

TASKS = Path(__file__).parent / "data" / "lm_eval"
TASK = "paretune_retain_mc"
RETAIN = f"lm-eval:{TASK}?include=."


# --- the setting -------------------------------------------------------------------------------


def test_spec_reads_tasks_and_settings(monkeypatch) -> None:
    monkeypatch.chdir(TASKS)
    spec = LmEvalSpec.parse("lm-eval:hellaswag, arc_easy?limit=50&include=.&metric=acc_norm")
    assert spec == LmEvalSpec(("hellaswag", "arc_easy"), limit=50, include=".", metric="acc_norm")
    assert LmEvalSpec.parse("lm-eval:arc_easy") == LmEvalSpec(("arc_easy",))


@pytest.mark.parametrize(
    ("retain", "says"),
    [
        ("lm-eval:", "empty"),
        ("lm-eval:arc_easy,,hellaswag", "empty"),
        ("lm-eval:arc_easy,arc_easy", "twice"),
        ("lm-eval:arc_easy?limit=0", "`limit` must be a positive integer"),
        ("lm-eval:arc_easy?limit=ten", "`limit` must be a positive integer"),
        ("lm-eval:arc_easy?limt=10", "unknown setting 'limt'"),
        ("lm-eval:arc_easy?include=no-such-folder", "does not exist"),
    ],
)
def test_spec_refuses_bad_settings(retain: str, says: str) -> None:
    with pytest.raises(LmEvalError, match=says) as error:
        LmEvalSpec.parse(retain)
    assert isinstance(error.value, UserError)


# --- intervals ---------------------------------------------------------------------------------


def test_wilson_interval_matches_hand_computed_values() -> None:
    # 0 of 10: upper limit z^2 / (n + z^2) = 3.8415 / 13.8415.
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and math.isclose(high, 0.27753, abs_tol=1e-5)
    # 5 of 20 (p = 0.25): centre 0.29000..., half-width 0.17850...
    low, high = wilson_interval(5, 20)
    assert math.isclose(low, 0.11186, abs_tol=1e-5) and math.isclose(high, 0.46871, abs_tol=1e-5)


def test_paired_interval_unchanged_answers_give_zero_inside_a_narrow_interval() -> None:
    outcomes = [1] * 5 + [0] * 15
    drop, low, high = paired_drop_interval(outcomes, outcomes)
    assert drop == 0.0
    assert -0.2 < low < 0 < high < 0.2
    assert math.isclose(low, -high, abs_tol=1e-12)


def test_paired_interval_hand_computed_and_mirrored() -> None:
    # 20 items: 4 right both times, 3 right only before, 1 right only after, 12 wrong both times.
    base = [1] * 4 + [1] * 3 + [0] * 1 + [0] * 12
    tuned = [1] * 4 + [0] * 3 + [1] * 1 + [0] * 12
    drop, low, high = paired_drop_interval(base, tuned)
    assert math.isclose(drop, 0.1)
    # Wilson: 7/20 -> (0.18117, 0.56715); 5/20 -> (0.11186, 0.46871). a*d - b*c = 45 > n/2,
    # phi = (45 - 10) / sqrt(7 * 13 * 5 * 15) = 0.40061.
    p1, p2, (l1, u1), (l2, u2) = 0.35, 0.25, wilson_interval(7, 20), wilson_interval(5, 20)
    phi = 35 / math.sqrt(7 * 13 * 5 * 15)
    below = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    above = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert math.isclose(low, 0.1 - below) and math.isclose(high, 0.1 + above)
    assert -0.2 < low < 0 < 0.1 < high < 0.4  # 3 against 1 changed answers: not conclusive
    swapped = paired_drop_interval(tuned, base)
    assert math.isclose(swapped[0], -drop)
    assert math.isclose(swapped[1], -high) and math.isclose(swapped[2], -low)


def test_paired_interval_every_answer_lost() -> None:
    drop, low, high = paired_drop_interval([1] * 20, [0] * 20)
    assert drop == 1.0 and 0.7 < low < 1.0 and high == 1.0


# --- lm-eval missing ---------------------------------------------------------------------------


def test_missing_lm_eval_is_a_user_error_naming_the_extra(monkeypatch) -> None:
    import torch

    from sweeps.trial.retain import retain_source_for

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    config = TrialConfig(model="some-org/some-model", retain="lm-eval:arc_easy")
    with pytest.raises(LmEvalError) as error:
        retain_source_for(
            config, tokenizer=None, device=torch.device("cpu"), precision="fp32", cache_dir=Path()
        )
    assert isinstance(error.value, UserError)
    assert "pip install 'paretune[lm-eval]'" in str(error.value)
    assert "\n" not in error.value.message  # one paragraph, then the hint


# --- the real harness on a tiny model ----------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Nothing fetched: offline switches set, data sets cached under ``tmp_path``, and the
    working directory the task folder (its YAML reads ``retain_mc.jsonl`` from there)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(TASKS)
    return tmp_path


def _load(own_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(own_model.model_dir)
    model = AutoModelForCausalLM.from_pretrained(own_model.model_dir, dtype=torch.float32)
    return model, tokenizer


def _source(own_model, tokenizer, cache: Path, retain: str = RETAIN):
    import torch

    from sweeps.trial.retain import retain_source_for

    config = TrialConfig(model=str(own_model.model_dir), retain=retain, batch=8)
    return retain_source_for(
        config, tokenizer=tokenizer, device=torch.device("cpu"), precision="fp32", cache_dir=cache
    )


@pytest.mark.slow
def test_base_against_itself_drops_nothing_and_matches_lm_eval(offline, own_model) -> None:
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from sweeps.trial.retain_lm_eval import LmEvalRetain, LmEvalScores

    model, tokenizer = _load(own_model)
    model.train()  # as a trial leaves it; scoring must give it back so
    source = _source(own_model, tokenizer, offline / "cache")
    assert isinstance(source, LmEvalRetain) and source.name == RETAIN
    assert not source.ready()
    source.prepare(model)
    assert source.built and model.training
    scores = source.score(model)
    assert model.training
    assert isinstance(scores, LmEvalScores) and scores.source == RETAIN
    (task,) = scores.tasks
    assert task.task == TASK and task.items == 20
    assert scores.retain_acc_drop == 0.0 == task.drop
    assert scores.retain_acc_drop_low < 0 < scores.retain_acc_drop_high
    assert scores.retain_delta_nll == 0.0 and scores.retain_kl is None
    assert scores.base_retain_nll > 0 and scores.tokens >= 20  # one answer token or more each
    fields = scores.forgetting_fields()
    assert fields["retain_acc_drop"] == 0.0 and fields["base_retain_acc"] == task.base_acc

    # The base accuracy is lm-eval's own figure for this model and task.
    reference = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8),
        tasks=[TASK],
        task_manager=TaskManager(include_path=".", include_defaults=False),
        bootstrap_iters=0,
    )
    assert task.base_acc == pytest.approx(reference["results"][TASK]["acc,none"])

    # Keyed like the other sources: a second trial reads the base from the cache.
    again = _source(own_model, tokenizer, offline / "cache")
    assert again.cache_dir == source.cache_dir and again.ready() and not again.built
    # ... and a different limit is a different cache entry, scoring only the first items.
    limited = _source(own_model, tokenizer, offline / "cache", retain=RETAIN + "&limit=5")
    assert limited.cache_dir != source.cache_dir and not limited.ready()
    limited.prepare(model)
    assert limited.score(model).tasks[0].items == 5


@pytest.mark.slow
def test_adapter_that_changes_the_model_gives_a_drop_with_an_interval(offline, own_model) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _load(own_model)
    source = _source(own_model, tokenizer, offline / "cache")
    source.prepare(model)

    # Base plus a LoRA adapter, live in memory: zero-initialised B leaves the model as it was...
    tuned = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    unchanged = source.score(tuned)
    assert unchanged.retain_acc_drop == 0.0 and unchanged.retain_delta_nll == pytest.approx(
        0, abs=1e-6
    )

    # ... and large random adapter weights change its answers.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    scores = source.score(tuned)
    assert scores.retain_acc_drop != 0.0
    assert scores.retain_acc_drop_low < scores.retain_acc_drop < scores.retain_acc_drop_high
    assert scores.retain_acc_drop_low >= -1 and scores.retain_acc_drop_high <= 1
    assert scores.retain_delta_nll != 0.0 and scores.retain_kl is None
    (task,) = scores.tasks
    assert task.drop == pytest.approx(task.base_acc - task.acc) == scores.retain_acc_drop


@pytest.mark.slow
def test_unknown_task_names_the_close_ones(offline, own_model) -> None:
    _, tokenizer = _load(own_model)
    with pytest.raises(LmEvalError, match="no task, group or tag 'helaswag'") as error:
        _source(own_model, tokenizer, offline / "cache", retain="lm-eval:helaswag")
    assert "hellaswag" in (error.value.hint or "")  # lm-eval's own task index, searched


@pytest.mark.slow
def test_task_given_as_a_yaml_path(offline, own_model) -> None:
    model, tokenizer = _load(own_model)
    source = _source(own_model, tokenizer, offline / "cache", retain="lm-eval:retain_mc.yaml")
    source.prepare(model)
    scores = source.score(model)
    assert [(t.task, t.items, t.drop) for t in scores.tasks] == [("retain_mc.yaml", 20, 0.0)]
