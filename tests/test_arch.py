"""Architectures: exact parameter counts against transformers, and where configs come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner import ModelArch, list_models, resolve_model, search_models
from planner.errors import ModelConfigError, UnknownModelError
from planner.estimation.arch import arch_from_config

CATALOGUE = list_models()


def _transformers_count(config: dict) -> int:
    """transformers' own count: the model built on the meta device, tied weights once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def test_catalogue_has_the_families_it_promises() -> None:
    assert len(CATALOGUE) >= 25
    types = {a.model_type for a in CATALOGUE}
    assert {
        "llama",
        "qwen2",
        "qwen3",
        "mistral",
        "mixtral",
        "gemma2",
        "gemma3_text",
        "phi3",
        "gpt2",
        "qwen3_moe",
        "qwen2_moe",
        "bloom",
    } <= types
    names = [a.name for a in CATALOGUE]
    assert len(names) == len(set(names))
    for name in (
        "llama-2-7b",
        "llama-3.1-405b",
        "llama-3.2-1b",
        "llama-3.3-70b",
        "qwen2.5-0.5b",
        "qwen2.5-72b",
        "qwen3-0.6b",
        "mixtral-8x22b",
        "gemma-2-9b",
        "gemma-3-27b",
        "phi-3-mini",
        "phi-4",
        "smollm2-135m",
        "gpt2",
    ):
        assert name in names


@pytest.mark.parametrize("arch", CATALOGUE, ids=lambda a: a.name)
def test_parameter_count_matches_transformers_exactly(arch: ModelArch) -> None:
    assert arch.total_params == _transformers_count(arch.hf_config)


# Published counts (research notes: built with transformers on the meta device).
REFERENCE = {
    "meta-llama/Llama-3.1-8B": (8_030_261_248, None),
    "meta-llama/Llama-3.1-70B": (70_553_706_496, None),
    "meta-llama/Llama-2-7b-hf": (6_738_415_616, None),
    "Qwen/Qwen2.5-7B": (7_615_616_512, None),
    "Qwen/Qwen2.5-0.5B": (494_032_768, None),
    "mistralai/Mistral-7B-v0.1": (7_241_732_096, None),
    "mistralai/Mixtral-8x7B-v0.1": (46_702_792_704, 12_879_925_248),
    "google/gemma-2-9b": (9_241_705_984, None),
    "microsoft/Phi-3-mini-4k-instruct": (3_821_079_552, None),
}


@pytest.mark.parametrize("hf_id", sorted(REFERENCE))
def test_reference_counts_and_active_params(hf_id: str) -> None:
    arch = resolve_model(hf_id)  # catalogue hit by Hub id: no network
    total, active = REFERENCE[hf_id]
    assert arch.total_params == total
    assert arch.active_params == (active if active is not None else total)


def test_moe_active_params_drop_the_unrouted_experts() -> None:
    arch = resolve_model("qwen3-30b-a3b")
    experts = [s for s in arch.linear_shapes() if s.name.startswith("experts.")]
    per_expert = sum(s.params // s.count for s in experts)
    assert arch.total_params - arch.active_params == (128 - 8) * per_expert
    assert 3.0e9 < arch.active_params < 3.5e9  # "A3B"


def test_hf_config_builds_the_same_model_in_transformers() -> None:
    from transformers import AutoConfig

    arch = resolve_model("qwen3-8b")
    cfg = AutoConfig.for_model(**arch.hf_config)
    assert cfg.model_type == "qwen3"
    assert cfg.num_key_value_heads == arch.kv_heads and cfg.head_dim == arch.head_dim


def test_names_aliases_and_ids_resolve_case_insensitively() -> None:
    a = resolve_model("llama-3.1-8b")
    assert resolve_model("LLaMA3.1-8B") is a
    assert resolve_model("meta-llama/llama-3.1-8b") is a
    assert a.hf_id == "meta-llama/Llama-3.1-8B"


def test_search_matches_every_word() -> None:
    found = {a.name for a in search_models("llama 70b")}
    assert found == {"llama-2-70b", "llama-3.1-70b", "llama-3.3-70b"}
    assert search_models("no-such-family") == ()
    assert len(search_models(None)) == len(CATALOGUE)


def test_unknown_name_suggests_close_catalogue_names() -> None:
    with pytest.raises(UnknownModelError) as caught:
        resolve_model("qwen2.5-7")
    assert "qwen2.5-7b" in (caught.value.hint or "")


def test_local_config_file_and_folder(tmp_path: Path) -> None:
    config = dict(resolve_model("smollm2-135m").hf_config)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    by_folder = resolve_model(str(folder))
    by_file = resolve_model(str(folder / "config.json"))
    assert by_folder.name == by_file.name == "my-model"
    assert by_folder.total_params == by_file.total_params == 134_515_008


def test_gemma3_multimodal_config_plans_its_text_tower(tmp_path: Path) -> None:
    text = dict(resolve_model("gemma-3-4b").hf_config)
    text.pop("model_type")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gemma3", "text_config": text}))
    assert resolve_model(str(path)).total_params == resolve_model("gemma-3-4b").total_params


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hidden_size": None}, "hidden_size"),
        ({"hidden_size": "4096"}, "hidden_size"),
        ({"num_hidden_layers": 0}, "layers"),
        ({"num_key_value_heads": 5}, "num_key_value_heads"),
        ({"model_type": "mamba"}, "mamba"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ],
)
def test_malformed_config_names_the_field(tmp_path: Path, change: dict, field: str) -> None:
    config = {**resolve_model("llama-2-7b").hf_config, **change}
    config = {k: v for k, v in config.items() if v is not None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelConfigError) as caught:
        resolve_model(str(path))
    assert field in caught.value.message


def test_config_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ModelConfigError, match="JSON"):
        resolve_model(str(path))


def test_arch_from_config_rejects_a_non_object() -> None:
    with pytest.raises(ModelConfigError):
        arch_from_config([1, 2], name="x")  # type: ignore[arg-type]


def _hub_cache(root: Path, repo_id: str, config: dict) -> None:
    """The layout huggingface_hub writes for a downloaded file."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))


def _resolve_offline(cache: Path, name: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from planner import resolve_model\n"
        "from pricing.errors import UserError\n"
        "try:\n"
        f"    a = resolve_model({name!r})\n"
        "    print(a.name, a.hf_id, a.total_params)\n"
        "except UserError as e:\n"
        "    print('ERROR', e.message); sys.exit(2)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_hub_id_reads_the_cached_config_offline(tmp_path: Path) -> None:
    config = dict(resolve_model("qwen2.5-0.5b").hf_config)
    config["num_hidden_layers"] = 2  # not a catalogue model: must come from the cache
    _hub_cache(tmp_path, "someone/tiny-qwen", config)
    done = _resolve_offline(tmp_path, "someone/tiny-qwen")
    assert done.returncode == 0, done.stdout + done.stderr
    name, hf_id, total = done.stdout.split()
    assert (name, hf_id) == ("tiny-qwen", "someone/tiny-qwen")
    expected = arch_from_config(config, name="x").total_params
    assert int(total) == expected


def test_hub_id_offline_and_uncached_fails_clearly(tmp_path: Path) -> None:
    done = _resolve_offline(tmp_path, "someone/not-downloaded")
    assert done.returncode == 2
    assert "unreachable" in done.stdout and "not cached" in done.stdout


def test_hub_id_offline_falls_back_to_the_catalogue(tmp_path: Path) -> None:
    done = _resolve_offline(tmp_path, "Qwen/Qwen2.5-7B")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[0] == "qwen2.5-7b"
