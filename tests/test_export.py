"""`paretune export TRIAL --to axolotl|trl|unsloth|torchtune`: a trial as a ready config.

Trials are written to a real DuckDB results file through the store, each with the whole
``TrialConfig`` a trial records; the exports are read back with ``read_run_config`` (what
`paretune plan --config` reads), parsed as YAML/JSON/Python, and the TRL one is given to
TRL's own ``SFTConfig`` and peft's ``LoraConfig``.
"""

from __future__ import annotations

import ast
import json
import py_compile
from pathlib import Path

import pytest
import yaml

from planner.estimation.catalog import resolve_model
from planner.frameworks.configs import read_run_config
from planner.frameworks.exports import RunToExport, export_run
from sweeps.results.store import ResultsStore
from sweeps.results.trial_export import TrialExportError, export_trial
from sweeps.trial.types import TrialConfig
from tests.conftest import paretune

STUDY = "exp"

# number: (TrialConfig fields, objectives (quality, forgetting, cost) or None, state)
TRIALS: dict[int, tuple[dict, tuple[float, float, float] | None, str]] = {
    0: (
        {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "rank": 16, "alpha": 32.0,
         "targets": "attn", "lr": 3e-4, "batch": 4, "grad_accum": 2, "max_seq_len": 512,
         "seed": 7, "dropout": 0.05, "lr_schedule": "linear", "warmup_ratio": 0.1},
        (1.0, 0.10, 0.02), "complete",
    ),
    1: (
        {"model": "meta-llama/Llama-3.2-1B", "method": "qlora", "rank": 8, "alpha": 16.0,
         "targets": "all", "lr": 2e-4, "batch": 2, "grad_accum": 4, "max_seq_len": 1024,
         "optimizer": "paged_adamw8bit", "grad_checkpointing": True, "loss": "chunked",
         "max_steps": 40, "seed": 3},
        (0.9, 0.30, 0.01), "complete",
    ),
    2: (
        {"model": "meta-llama/Llama-3.2-1B", "method": "dora", "rank": 4, "alpha": 8.0,
         "targets": "q_proj,v_proj", "batch": 8, "max_seq_len": 256},
        (1.2, 0.05, 0.03), "complete",
    ),
    3: (
        {"model": "Qwen/Qwen2.5-0.5B", "method": "freeze", "freeze_trainable_layers": 3,
         "batch": 2, "max_seq_len": 256, "lr": 1e-5},
        (1.5, 0.40, 0.05), "complete",
    ),
    4: ({}, None, "oom"),  # failed before it recorded a config
    5: (
        {"model": "Qwen/Qwen2.5-0.5B", "method": "full", "batch": 1, "max_seq_len": 2048,
         "lr": 1e-5, "epochs": 2.0},
        (0.8, 0.50, 0.20), "complete",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    train, evaluation = root / "train.jsonl", root / "eval.jsonl"
    train.write_text(json.dumps({"prompt": "Q: 2+2? A:", "completion": " 4"}) + "\n")
    evaluation.write_text(json.dumps({"prompt": "Q: 3+3? A:", "completion": " 6"}) + "\n")
    store = ResultsStore(root / "results.duckdb")
    store.write_study({"study": STUDY, "model": "mixed", "sampler": "tpe"})
    rows = []
    for number, (fields, objectives, state) in TRIALS.items():
        config = None
        if fields:
            config = TrialConfig(
                **fields, train=str(train), eval=str(evaluation), study=STUDY, trial_number=number
            ).model_dump()
        quality, forgetting, cost = objectives or (None, None, None)
        rows.append(
            {
                "study": STUDY,
                "number": number,
                "state": state,
                "method": (config or {}).get("method"),
                "config": json.dumps(config) if config else None,
                "objective_quality": quality,
                "objective_forgetting": forgetting,
                "objective_cost": cost,
                "steps_done": 100 if state == "complete" else None,
            }
        )
    store.write_trials(rows, [])
    return root / "results.duckdb"


def _export(db: Path, number: int, to: str, tmp_path: Path) -> Path:
    suffix = {"axolotl": ".yml", "torchtune": ".yaml", "trl": ".json", "unsloth": ".py"}[to]
    return export_trial(db, to, number=number, out=tmp_path / f"t{number}-{to}{suffix}").path


def _modules(model: str, targets: str) -> set[str]:
    """The module names ``targets`` means on ``model`` (as the trial resolved them)."""
    arch = resolve_model(model)
    if targets in ("attn", "mlp", "all"):
        return {s.name for s in arch.linear_shapes() if targets in ("all", s.group)}
    return set(targets.split(","))


# -- the round trip: export -> plan --config gives back what the trial ran -------------------


@pytest.mark.parametrize("to", ["axolotl", "trl", "torchtune"])
@pytest.mark.parametrize("number", [0, 1, 2, 3, 5])
def test_round_trip(results: Path, tmp_path: Path, to: str, number: int) -> None:
    fields = TRIALS[number][0]
    if to == "torchtune" and fields["model"].startswith("Qwen") and fields["method"] == "qlora":
        pytest.skip("torchtune has no Qwen QLoRA builder")
    path = _export(results, number, to, tmp_path)
    run = read_run_config(path)
    assert run.framework == to
    assert resolve_model(run.model).name == resolve_model(fields["model"]).name
    method = fields["method"]
    if to == "torchtune" and method == "freeze":
        method = "full"  # torchtune has no frozen layers: the export says so in a note
    assert run.method["kind"] == method
    if method == "freeze":
        assert run.method["freeze_layers"] == fields["freeze_trainable_layers"]
    if method in ("lora", "qlora", "dora"):
        assert run.method["rank"] == fields["rank"]
        assert run.method["alpha"] == fields["alpha"]
        got = run.method["targets"]
        got_names = _modules(fields["model"], "all") if got == "all" else set(got)
        assert got_names == _modules(fields["model"], fields["targets"])
    assert run.workload["seq_len"] == fields["max_seq_len"]
    assert run.workload["batch"] == fields["batch"]
    assert run.workload["grad_accum"] == fields.get("grad_accum", 1)


def test_plan_reads_an_export_back(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "qlora.yml"
    done = paretune("export", "1", "--to", "axolotl", "--db", str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    planned = paretune("plan", "--config", str(out), "--format", "json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["config"]["framework"] == "axolotl"
    assert plan["config"]["method"]["kind"] == "qlora" and plan["config"]["method"]["rank"] == 8
    assert plan["config"]["workload"]["seq_len"] == 1024


# -- each format holds the trial's values ----------------------------------------------------


def test_axolotl_yaml_holds_the_trial(results: Path, tmp_path: Path) -> None:
    text = _export(results, 0, "axolotl", tmp_path).read_text()
    data = yaml.safe_load(text)
    assert data["base_model"] == "Qwen/Qwen2.5-0.5B" and data["adapter"] == "lora"
    assert data["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert data["learning_rate"] == 3e-4 and data["lr_scheduler"] == "linear"
    assert data["warmup_ratio"] == 0.1 and data["lora_dropout"] == 0.05 and data["seed"] == 7
    assert data["datasets"][0]["path"].endswith("train.jsonl")
    assert data["test_datasets"][0]["path"].endswith("eval.jsonl")
    assert data["datasets"][0]["type"]["field_output"] == "completion"


def test_freeze_names_the_top_layers(results: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(_export(results, 3, "axolotl", tmp_path).read_text())
    layers = resolve_model("Qwen/Qwen2.5-0.5B").layers
    top = "|".join(str(n) for n in range(layers - 3, layers))
    assert data["unfrozen_parameters"] == [rf"^model\.layers\.({top})\."]
    assert "adapter" not in data


def test_torchtune_recipe_holds_the_trial(results: Path, tmp_path: Path) -> None:
    path = _export(results, 1, "torchtune", tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["model"]["_component_"] == "torchtune.models.llama3_2.qlora_llama3_2_1b"
    assert data["model"]["lora_attn_modules"] == ["q_proj", "k_proj", "v_proj", "output_proj"]
    assert data["model"]["apply_lora_to_mlp"] is True
    assert data["loss"]["_component_"].endswith("CEWithChunkedOutputLoss")
    assert data["max_steps_per_epoch"] == 40 and data["seed"] == 3
    assert data["lr_scheduler"]["num_warmup_steps"] == 2  # 5% of 40 steps
    assert data["optimizer"]["_component_"] == "bitsandbytes.optim.PagedAdamW8bit"
    assert data["dataset"]["data_files"].endswith("train.jsonl")
    assert data["enable_activation_checkpointing"] is True
    # what torchtune cannot take is said in the file, not dropped
    assert "do not evaluate" in path.read_text() and "eval.jsonl" in path.read_text()


def test_trl_json_builds_sftconfig_and_loraconfig(results: Path, tmp_path: Path) -> None:
    from peft import LoraConfig

    from planner.frameworks.exports import TRL_EXTRA_KEYS

    path = _export(results, 2, "trl", tmp_path)
    config = json.loads(path.read_text())
    lora = LoraConfig(**config["peft_config"])
    assert lora.r == 4 and lora.lora_alpha == 8.0 and lora.use_dora is True
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert config["model_name_or_path"] == "meta-llama/Llama-3.2-1B"
    script = path.with_suffix(".py")
    py_compile.compile(str(script), doraise=True)
    trl = pytest.importorskip("trl")
    fields = {k: v for k, v in config.items() if k not in TRL_EXTRA_KEYS}
    fields.pop("bf16", None)  # this machine has no bf16 GPU; the field itself is TRL's
    sft = trl.SFTConfig(**fields, use_cpu=True)
    assert sft.max_length == 256 and sft.per_device_train_batch_size == 8
    assert sft.learning_rate == 2e-4 and sft.completion_only_loss is True


def test_unsloth_script_calls(results: Path, tmp_path: Path) -> None:
    path = _export(results, 1, "unsloth", tmp_path)
    py_compile.compile(str(path), doraise=True)

    def value(node: ast.expr) -> object:
        try:
            return ast.literal_eval(node)
        except ValueError:  # a name the script defines (model=model, ...)
            return ast.unparse(node)

    calls = {
        ast.unparse(node.func): {k.arg: value(k.value) for k in node.keywords}
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and any(k.arg for k in node.keywords)
    }
    loaded = calls["FastLanguageModel.from_pretrained"]
    assert loaded["model_name"] == "meta-llama/Llama-3.2-1B" and loaded["load_in_4bit"] is True
    assert loaded["max_seq_length"] == 1024
    peft = calls["FastLanguageModel.get_peft_model"]
    assert peft["r"] == 8 and peft["target_modules"] == "all-linear" and peft["random_state"] == 3
    args = calls["SFTConfig"]
    assert args["max_steps"] == 40 and args["gradient_accumulation_steps"] == 4
    assert args["optim"] == "paged_adamw_8bit"
    assert calls["SFTTrainer"]["processing_class"] == "tokenizer"
    # Unsloth has no chunked loss: said in the script's header
    assert "loss chunked" in path.read_text().split("\n\n")[0]


def test_pick_exports_the_recommended_trial(results: Path, tmp_path: Path) -> None:
    from sweeps.results.report import PREFERENCES, recommend

    rows = ResultsStore(results).trials(STUDY)
    picked = set()
    for prefer in ("quality", "forgetting", "cost"):
        expected = int(recommend(rows, PREFERENCES[prefer]).trial["number"])
        done = export_trial(
            results, "axolotl", prefer=prefer, out=tmp_path / f"{prefer}.yml", study=STUDY
        )
        assert done.number == expected
        picked.add(done.number)
    assert len(picked) > 1  # the preferences pick different trials of this study
    done = paretune("export", "--pick", "--to", "trl", "--db", str(results), "--out",
                    str(tmp_path / "balanced.json"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"trial {int(recommend(rows, PREFERENCES['balanced']).trial['number'])} " in done.stderr


def test_notes_for_what_a_framework_cannot_say() -> None:
    run = RunToExport(model="meta-llama/Llama-3.2-1B", method="lora", targets="q_proj,up_proj",
                      epochs=1.5, lr_schedule="constant", precision="fp16")  # fmt: skip
    notes = " | ".join(export_run(run, "torchtune").notes)
    assert "all three MLP projections" in notes and "whole epochs" in notes
    assert "cosine" in notes and "fp16" in notes
    assert "Llama-style" in " ".join(
        export_run(RunToExport(model="my-model", targets="mlp"), "axolotl").notes
    )


# -- refusals: one paragraph, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["7", "--to", "axolotl"], "has no trial 7"),
        (["0", "--to", "axolotl", "--study", "nope"], "no study 'nope'"),
        (["4", "--to", "trl"], "recorded no config"),
        (["0", "--to", "llamafile"], "'--to'"),
        (["0", "--to", "axolotl", "--out", "{tmp}/missing/x.yml"], "does not exist"),
        (["0", "--to", "axolotl", "--out", "{tmp}/x.json"], ".yml or .yaml"),
        (["0", "--to", "axolotl", "--pick"], "not both"),
        (["--to", "axolotl"], "no trial to export"),
        pytest.param(
            ["0", "--to", "axolotl", "--out", "/proc/paretune-export.yml"],
            "cannot write",
            marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc"),
        ),
    ],
)
def test_refusals(results: Path, tmp_path: Path, args: list[str], said: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = paretune("export", *args, "--db", str(results))
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr


def test_existing_out_needs_force(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    export_trial(results, "trl", number=0, out=out)
    with pytest.raises(TrialExportError, match="already exists"):
        export_trial(results, "trl", number=0, out=out)
    out.unlink()  # the script beside it still exists: refused too
    with pytest.raises(TrialExportError, match=r"x\.py already exists"):
        export_trial(results, "trl", number=0, out=out)
    assert export_trial(results, "trl", number=0, out=out, force=True).path == out
    (tmp_path / "x.py").unlink()
    out.unlink()  # the card beside it still exists: refused too
    with pytest.raises(TrialExportError, match=r"x\.card\.md already exists"):
        export_trial(results, "trl", number=0, out=out)


def test_a_trial_without_a_data_check_gets_a_card_that_says_so(
    results: Path, tmp_path: Path
) -> None:
    done = export_trial(results, "axolotl", number=2, out=tmp_path / "t.yml")
    assert done.card == tmp_path / "t.card.md"
    card = done.card.read_text()
    assert card.startswith("# dora fine-tune of meta-llama/Llama-3.2-1B\n")
    assert "- trial 2 of study exp: complete" in card
    assert "- data: no data check recorded for this trial" in card
    assert "| eval NLL (completion tokens) | - | - |" in card  # not measured: not made up
    assert "# - data: no data check recorded for this trial" in done.path.read_text()


def test_torchtune_refuses_a_model_it_has_no_builder_for(tmp_path: Path) -> None:
    with pytest.raises(TrialExportError, match="has none for"):
        db = tmp_path / "r.duckdb"
        store = ResultsStore(db)
        store.write_study({"study": "s"})
        config = TrialConfig(model="HuggingFaceTB/SmolLM2-135M", train="t.jsonl").model_dump()
        store.write_trials(
            [{"study": "s", "number": 0, "state": "complete", "config": json.dumps(config)}], []
        )
        export_trial(db, "torchtune", number=0, out=tmp_path / "x.yaml")


# -- the terminal UI: Ctrl+E on the Trial tab ------------------------------------------------


async def test_ui_exports_the_shown_trial_beside_the_results(results: Path) -> None:
    from tui.app import ParetuneApp

    app = ParetuneApp(db=results, start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        screen = app.screen
        await pilot.press("ctrl+e")  # no trial shown yet: a warning, nothing written
        await pilot.pause()
        assert app.screen is screen
        screen.open_trial(STUDY, 2)
        await app.workers.wait_for_complete()
        await pilot.pause()
        for expected in ("exp-trial-2-axolotl.yml", "exp-trial-2-axolotl-2.yml"):
            await pilot.press("ctrl+e")
            await pilot.pause()
            assert type(app.screen).__name__ == "ExportTrialScreen"
            await pilot.press("enter")  # the first framework: Axolotl
            await app.workers.wait_for_complete()
            await pilot.pause()
            written = results.parent / expected
            assert yaml.safe_load(written.read_text())["peft_use_dora"] is True
        notices = [n.message for n in app._notifications]
        assert any(str(results.parent / "exp-trial-2-axolotl-2.yml") in m for m in notices)
        assert any("Open a trial first" in m for m in notices)


def test_demo_trial_takes_its_data_files_from_the_data_check(tmp_path: Path) -> None:
    """A demo trial's config names no files; the files its data check read are exported."""
    db = tmp_path / "r.duckdb"
    store = ResultsStore(db)
    store.write_study({"study": "demo"})
    files = [
        {"role": "train", "path": "/cache/demo/train.jsonl", "sha256": "ab", "rows": 48},
        {"role": "eval", "path": "/cache/demo/eval.jsonl", "sha256": "cd", "rows": 16},
    ]
    store.write_trials(
        [
            {
                "study": "demo",
                "number": 0,
                "state": "failed",
                "config": json.dumps(TrialConfig(targets="mlp").model_dump()),
                "data_provenance": json.dumps({"fingerprint": "f", "files": files}),
            }
        ],
        [],
    )
    path = export_trial(db, "axolotl", number=0, out=tmp_path / "demo.yml").path
    data, text = yaml.safe_load(path.read_text()), path.read_text()
    assert data["datasets"][0]["path"] == "/cache/demo/train.jsonl"
    assert data["test_datasets"][0]["path"] == "/cache/demo/eval.jsonl"
    assert data["lora_target_modules"] == ["gate_proj", "up_proj", "down_proj"]
    assert "it ended failed" in text and "bundled demo model" in text and "Llama-style" in text
