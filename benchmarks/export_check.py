"""Load every `paretune export` format with the framework's own parser, each in its own folder.

    python benchmarks/export_check.py [--envs DIR] [--only axolotl,trl,torchtune,unsloth]

For each framework the pinned wheel and the pure-Python packages its config code imports are
installed with ``pip install --no-deps --target ENVS/NAME`` (never a torch: the check stops if
one lands there), and each export of a set of sample runs (every method, Llama, Qwen and SmolLM
models) is loaded in a child Python whose ``PYTHONPATH`` puts that folder in front of this
environment (torch, transformers, peft, accelerate and datasets come from here):

- axolotl: ``axolotl.utils.config.validate_config`` (its pydantic ``AxolotlInputConfig``, with
  the dataset entries as ``SFTDataset``); prints the validated model, adapter, rank and targets.
- torchtune: ``OmegaConf.load`` and ``torchtune.config.validate``: every ``_component_`` is
  imported and the config's arguments are bound to its signature.
- trl: ``trl.SFTConfig(**fields)`` (``use_cpu=True`` and ``bf16`` off: this machine has no
  bf16 GPU) and ``peft.LoraConfig(**peft_config)``; the script beside it is compiled.
- unsloth: it does not import without a GPU, so the script is compiled and its calls are read
  with ``ast``: each keyword given to ``FastLanguageModel.from_pretrained`` and
  ``get_peft_model`` must be a named parameter of those functions in the installed Unsloth
  source (``use_dora``, which Unsloth reads from ``**kwargs``, excepted), and the
  ``SFTConfig(...)`` keywords build a real ``SFTConfig`` with the TRL that Unsloth pins.

Each check also loads a copy with one wrong value (a negative control) that must be refused,
so a check that accepts everything is caught. Prints one row per framework and run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.frameworks.exports import RunToExport, export_run  # noqa: E402

PACKAGES: dict[str, list[str]] = {
    "axolotl": ["axolotl==0.19.0", "addict"],
    "torchtune": [
        "torchtune==0.6.1",
        "torchao==0.11.0",  # the last torchao with the NF4 tensor torchtune 0.6 imports
        "torchdata==0.11.0",
        "omegaconf",
        "antlr4-python3-runtime==4.9.3",
        "sentencepiece",
        "tiktoken",
        "blobfile",
    ],
    "trl": ["trl==1.16.0"],
    "unsloth": ["unsloth==2026.10.9", "trl==1.15.0"],  # Unsloth pins trl<=1.15
}

SAMPLES: dict[str, RunToExport] = {
    "lora qwen attn": RunToExport(
        model="Qwen/Qwen2.5-0.5B", method="lora", rank=16, alpha=32.0, targets="attn",
        modules=(("q_proj", "attn"), ("k_proj", "attn"), ("v_proj", "attn"), ("o_proj", "attn")),
        lr_schedule="linear", warmup_ratio=0.1, train="data/train.jsonl", eval="data/eval.jsonl",
        seq_len=512, batch=4, grad_accum=2, seed=7,
    ),
    "qlora llama all": RunToExport(
        model="meta-llama/Llama-3.2-1B", method="qlora", rank=8, alpha=16.0, targets="all",
        optimizer="paged_adamw8bit", grad_checkpointing=True, loss="chunked", max_steps=40,
        train="data/train.jsonl", seq_len=1024, batch=2, grad_accum=4,
    ),
    "dora llama q,v": RunToExport(
        model="meta-llama/Llama-3.2-1B", method="dora", rank=4, alpha=8.0,
        targets="q_proj,v_proj", train="data/chat.jsonl", data_format="messages",
        precision="bf16", loss="fused",
    ),
    "freeze qwen": RunToExport(
        model="Qwen/Qwen2.5-0.5B", method="freeze", freeze_trainable_layers=3, layers=24,
        train="data/train.jsonl", lr=1e-5, optimizer="adafactor",
    ),
    "full smollm": RunToExport(
        model="HuggingFaceTB/SmolLM2-135M", method="full", train="hf:tatsu-lab/alpaca",
        epochs=2.0, lr=1e-5, lr_schedule="constant", precision="fp32",
    ),
}  # fmt: skip

# Each child loads one file with the framework's parser and prints one JSON line.
CHILD = r'''
import ast, json, py_compile, sys
from pathlib import Path

framework, path = sys.argv[1], Path(sys.argv[2])

def axolotl():
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    cfg = validate_config(DictDefault(yaml.safe_load(path.read_text())))
    targets = "all-linear" if cfg.get("lora_target_linear") else cfg.get("lora_target_modules")
    return f"{cfg['base_model']} adapter={cfg.get('adapter')} r={cfg.get('lora_r')} targets={targets}"

def torchtune():
    from omegaconf import OmegaConf
    from torchtune import config
    cfg = OmegaConf.load(path)
    config.validate(cfg)
    return cfg.model._component_.rsplit(".", 1)[-1]

def trl():
    import trl as trl_package
    from peft import LoraConfig
    data = json.loads(path.read_text())
    extra = ("model_name_or_path", "load_in_4bit", "train_file", "eval_file", "peft_config",
             "freeze_trainable_layers")
    fields = {k: v for k, v in data.items() if k not in extra}
    fields.update(bf16=False, use_cpu=True)
    sft = trl_package.SFTConfig(**fields)
    lora = LoraConfig(**data["peft_config"]) if data.get("peft_config") else None
    py_compile.compile(str(path.with_suffix(".py")), doraise=True)
    return f"SFTConfig max_length={sft.max_length} lr={sft.learning_rate}" + (
        f", LoraConfig r={lora.r}" if lora else "")

def _parameters(file, cls, name):
    tree = ast.parse(Path(file).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    a = item.args
                    return {x.arg for x in a.args + a.kwonlyargs}
    raise LookupError(f"{cls}.{name} not in {file}")

def unsloth():
    import importlib.util
    import trl as trl_package
    py_compile.compile(str(path), doraise=True)
    root = Path(importlib.util.find_spec("unsloth").submodule_search_locations[0])
    known = {
        "FastLanguageModel.from_pretrained":
            _parameters(root / "models" / "loader.py", "FastLanguageModel", "from_pretrained"),
        "FastLanguageModel.get_peft_model":
            _parameters(root / "models" / "llama.py", "FastLlamaModel", "get_peft_model")
            | {"use_dora"},  # read from **kwargs (models/llama.py)
    }
    seen = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        called = ast.unparse(node.func)
        keywords = {k.arg for k in node.keywords}
        if called in known:
            unknown = keywords - known[called]
            if unknown:
                raise TypeError(f"{called} has no parameter {sorted(unknown)}")
            seen.add(called)
        if called == "SFTConfig":
            fields = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            fields.update(bf16=False, use_cpu=True)
            trl_package.SFTConfig(**fields)
            seen.add(called)
    if "FastLanguageModel.from_pretrained" not in seen or "SFTConfig" not in seen:
        raise LookupError(f"the script does not call {sorted(set(known) | {'SFTConfig'} - seen)}")
    return ", ".join(sorted(seen))

def torchtune_builders():
    """Every builder the export table names (one recipe per model and method, in a folder)."""
    from omegaconf import OmegaConf
    from torchtune import config
    files = sorted(path.glob("*.yaml"))
    for file in files:
        config.validate(OmegaConf.load(file))
    return f"{len(files)} recipes: every model builder, tokenizer and checkpointer binds"

try:
    print(json.dumps({"ok": True, "said": globals()[framework]()}))
except Exception as error:  # the framework's refusal, reported to the parent
    print(json.dumps({"ok": False, "said": f"{type(error).__name__}: {str(error)[:300]}"}))
'''

BROKEN = {  # one wrong value per format: the parser must refuse the copy
    "axolotl": lambda text: text.replace("sequence_len:", "sequence_len: long\nx_sequence_len:"),
    "torchtune": lambda text: text.replace("model:\n", "model:\n  not_an_argument: 1\n", 1),
    "trl": lambda text: text.replace("{", '{\n  "not_a_field": 1,', 1),
    "unsloth": lambda text: text.replace(
        "FastLanguageModel.from_pretrained(", "FastLanguageModel.from_pretrained(not_a_parameter=1,"
    ),
}


def install(name: str, envs: Path) -> tuple[Path, int]:
    """The framework's folder of packages (installed once) and the size of its wheels."""
    target = envs / name
    wheels = envs / f"{name}-wheels"
    if not (target / ".installed").exists():
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run(
            [*pip, "download", "--no-deps", "-d", str(wheels), *PACKAGES[name]], check=True
        )
        files = sorted(str(w) for w in wheels.iterdir())
        subprocess.run([*pip, "install", "--no-deps", "--upgrade", "--target", str(target), *files], check=True)  # fmt: skip
        if (target / "torch").exists():
            raise SystemExit(f"{name}: a torch was installed into {target}; remove it")
        (target / ".installed").touch()
    size = sum(w.stat().st_size for w in wheels.iterdir()) if wheels.exists() else 0
    return target, size


def check(name: str, target: Path, file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(file)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "said": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _every_torchtune_builder(target: Path, out: Path) -> bool:
    """Each model of the torchtune table, as LoRA, QLoRA (where torchtune has it) and full."""
    from planner.estimation.catalog import list_models
    from planner.frameworks.exports._torchtune import TORCHTUNE_MODELS

    folder = out / "torchtune-builders"
    folder.mkdir()
    hub = {arch.name: arch.hf_id or arch.name for arch in list_models()}
    for name, builder in TORCHTUNE_MODELS.items():
        for method in ("lora", "qlora", "full") if builder.qlora else ("lora", "full"):
            run = RunToExport(model=hub[name], method=method, train="data/train.jsonl")
            (folder / f"{name}-{method}.yaml").write_text(export_run(run, "torchtune").text)
    result = check("torchtune_builders", target, folder)
    print(f"{'torchtune':<10} {'every builder':<17} {'ok' if result['ok'] else 'FAILED':<7} "
          f"{'-':<8} {result['said']}")  # fmt: skip
    return bool(result["ok"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--envs", type=Path, default=Path(tempfile.gettempdir()) / "paretune-export-check"
    )
    parser.add_argument("--only", default="axolotl,trl,torchtune,unsloth")
    args = parser.parse_args()
    args.envs.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="exports-"))
    failures = 0
    print(f"{'framework':<10} {'run':<17} {'export':<7} {'control':<8} what the parser said")
    for name in args.only.split(","):
        target, size = install(name, args.envs)
        print(f"# {name}: {', '.join(PACKAGES[name])} ({size / 1e6:.1f} MB of wheels, no torch)")
        for label, run in SAMPLES.items():
            try:
                written = export_run(run, name)
            except Exception as error:  # a refusal (torchtune without a builder)
                print(f"{name:<10} {label:<17} {'refused':<7} {'-':<8} {error}")
                continue
            file = out / f"{name}-{label.replace(' ', '_').replace(',', '')}{written.suffix}"
            file.write_text(written.text)
            if written.script:
                file.with_suffix(".py").write_text(written.script)
            result = check(name, target, file)
            broken = file.with_name("broken-" + file.name)
            broken.write_text(BROKEN[name](written.text))
            if written.script:
                broken.with_suffix(".py").write_text(written.script)
            control = check(name, target, broken)
            good = result["ok"] and not control["ok"]
            failures += not good
            print(
                f"{name:<10} {label:<17} {'ok' if result['ok'] else 'FAILED':<7} "
                f"{'refused' if not control['ok'] else 'ACCEPTED':<8} {result['said']}"
            )
        if name == "torchtune":
            failures += not _every_torchtune_builder(target, out)
    print(f"exports in {out}; {failures} failing")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
