"""``paretune trial`` (registered by :mod:`tui.cli`): one real fine-tune, measured.

Heavy libraries are imported only inside the command (and the trial itself runs in a child
process), so ``paretune --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from pricing.errors import UserError

__all__ = ["COMMANDS", "TrialSpecError", "config_from_spec", "trial_command"]


class TrialSpecError(UserError):
    """A trial spec file that cannot be read as a :class:`TrialConfig`."""

    title = "Bad trial spec"


def _midpoint(param: Any) -> Any:
    """A representative value of a sweep parameter: the first choice, or a range's middle."""
    from sweeps.spec import Choice, Fixed, Range

    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return param.values[0]
    assert isinstance(param, Range)
    middle = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    if param.step:  # stay on the range's grid
        middle = param.low + round((middle - param.low) / param.step) * param.step
    return round(middle) if param.integer else middle


def config_from_spec(path: Path):
    """A :class:`TrialConfig` from a trial-only TOML (its fields, flat) or a sweep spec
    (its first method at the first choice / middle of each search range)."""
    import tomllib

    from pydantic import ValidationError

    from sweeps.trial.types import TrialConfig

    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise TrialSpecError(f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise TrialSpecError(f"{path} is not valid TOML: {error}") from None
    if "search" in raw or "data" in raw or "hardware" in raw:
        from sweeps.spec import load_spec

        spec = load_spec(path)
        method = spec.search.methods[0]
        params: dict[str, Any] = {"method": method}
        for name, param in spec.search.params.items():
            params[name] = _midpoint(param)
        if method in spec.search.lr_by_method:
            from sweeps.spec import lr_param_name

            params[lr_param_name(spec, method)] = _midpoint(spec.search.lr_by_method[method])
        return spec.trial_config(params)
    base = path.parent
    for key in ("train", "eval", "retain", "facts"):  # data paths are relative to the spec
        value = raw.get(key)
        if isinstance(value, str) and _is_path(value) and not Path(value).is_absolute():
            raw[key] = str(base / value)
    if isinstance(raw.get("model"), str) and (base / raw["model"]).is_dir():
        raw["model"] = str(base / raw["model"])
    try:
        return TrialConfig(**raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()
        )
        raise TrialSpecError(
            f"{path}: {problems}",
            "Keys are TrialConfig fields (method, rank, alpha, lr, targets, epochs, "
            "max_steps, batch, train, eval, ...); see docs/guides/trial.md.",
        ) from None


_SCHEMES = ("hf:", "lm-eval:")
"""Data values that name a source rather than a file (a Hub data set, lm-eval tasks)."""


def _is_path(value: str) -> bool:
    return not value.startswith(_SCHEMES)


_OVERRIDES = (
    "method",
    "rank",
    "alpha",
    "lr",
    "targets",
    "epochs",
    "max_steps",
    "batch",
    "seed",
    "device",
    "gpus",
    "sharding",
    "run_dir",
    "memory_limit_gb",
    "time_limit_s",
    "model",
    "train",
    "eval",
    "retain",
    "usd_per_hour",
    "gpu",
    "provider",
    "cpu_instance",
    "bad_rows",
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pm(result, path: str, digits: int = 4, value: Any = None) -> str:
    """The metric at ``path`` (e.g. ``quality.eval_nll``), with `± sd` when it was repeated."""
    if value is None:
        value = result
        for key in path.split("."):
            value = getattr(value, key)
    spread = result.sd.get(path)
    return _fmt(value, digits) + ("" if spread is None else f" ± {spread:.{digits}f}")


def _price_note(result) -> str:
    """What the trial's dollars are priced as, and why (which price the trial picked)."""
    from pricing import load_catalog

    hw, config = result.hardware, result.config
    if hw.usd_per_hour is None:
        return "not priced"
    rate = f"${hw.usd_per_hour:,.2f}/h"
    catalog = load_catalog()
    where = f" at {hw.provider}" if hw.provider else ""
    if hw.gpu is not None:
        what = f"priced as {catalog.gpu(hw.gpu).name}{where}, {rate}"
    elif hw.cpu_instance is not None:
        what = f"priced as {hw.cpu_instance}{where}, {rate}"
    else:
        what = f"priced at {rate}"
    if config is None or config.usd_per_hour is not None:
        return what + " (the hourly price given)"
    if config.gpu is not None:
        return what + " (cheapest catalogue offer for the GPU given)"
    if config.cpu_instance is not None:
        return what + " (catalogue price of the CPU instance given)"
    if hw.gpu is not None:
        return what + " (cheapest catalogue offer for the detected GPU)"
    return what + " (your own CPU: no price given; --usd-per-hour or --cpu-instance prices it)"


def _table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    q, f, m, p = result.quality, result.forgetting, result.measured, result.predicted
    title = f"trial: {result.method} -> {result.state}"
    if result.repeats:
        seeds = [r.seed for r in result.repeats]
        title += f" (mean ± sd of {len(seeds)} runs, seeds {seeds[0]}-{seeds[-1]})"
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("fine-tuned", justify="right")
    table.add_column("base", justify="right")
    table.add_column("predicted", justify="right")
    recall = (
        f.base_fact_recall - f.fact_recall_drop
        if f.base_fact_recall is not None and f.fact_recall_drop is not None
        else None
    )
    rows = [
        ("eval NLL", _pm(result, "quality.eval_nll"), _fmt(q.base_eval_nll), ""),
        ("exact match", _pm(result, "quality.exact_match", 3), _fmt(q.base_exact_match, 3), ""),
        ("overfit gap", _pm(result, "quality.overfit_gap"), "", ""),
        ("generalization gap", _pm(result, "quality.generalization_gap"), "", ""),
        (
            f"retain ΔNLL ({f.retain_source or '-'})",
            _pm(result, "forgetting.retain_delta_nll"),
            "",
            "",
        ),
        (f"retain KL ({f.retain_source or '-'})", _pm(result, "forgetting.retain_kl"), "", ""),
    ]
    if f.self_retain_delta_nll is not None:
        rows += [
            ("retain ΔNLL (self-samples)", _pm(result, "forgetting.self_retain_delta_nll"), "", ""),
            ("retain KL (self-samples)", _pm(result, "forgetting.self_retain_kl"), "", ""),
        ]
    if f.base_fact_recall is not None:
        rows.append(("fact recall", _fmt(recall, 3), _fmt(f.base_fact_recall, 3), ""))
    rows += [
        ("peak GB", _fmt(m.peak_gb, 3), "", _fmt(p.peak_gb, 3)),
        *(
            [
                (
                    f"per rank ({result.hardware.ranks}): peak GB max / mean",
                    f"{_fmt(m.peak_gb, 3)} / {_fmt(m.peak_gb_mean, 3)}",
                    "",
                    "",
                ),
                (
                    "per rank: states GB max / mean",
                    f"{_fmt(m.states_gb, 4)} / {_fmt(m.states_gb_mean, 4)}",
                    "",
                    _fmt(p.states_gb, 4),
                ),
            ]
            if result.hardware.ranks > 1
            else []
        ),
        (
            "wall s (train s)",
            f"{_fmt(m.wall_s, 1)} ({_fmt(m.train_s, 1)})",
            "",
            _fmt(p.hours * 3600, 1) if p.hours is not None else "-",
        ),
        ("tokens/s", _pm(result, "measured.tokens_per_s", 0), "", ""),
        ("dollars", _pm(result, "dollars", 6), "", _fmt(p.dollars, 6)),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    if result.state == "complete":
        console.print(_price_note(result))
    if result.artifact:
        console.print(f"artifact: {result.artifact}")
    if result.command:
        console.print(f"reproduce: {result.command}")
    if result.error:
        console.print(f"[red]{result.error}[/red]")


def _check_model_path(model: str) -> None:
    """A model given as a path (./x, /x, ~/x) must exist: said at once, before any loading,
    and not as a Hub id's naming rules."""
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise TrialSpecError(
            f"--model {model}: no such folder or file",
            "Pass a folder saved with save_pretrained, a Hugging Face id (org/name) or 'demo'.",
        )


def _check_data_not_empty(config) -> None:
    """A local data file with no rows at all is said at once, not after the model loads."""
    for flag, path in (
        ("--train", config.train),
        ("--eval", config.eval),
        ("--retain", config.retain),
    ):
        if not isinstance(path, str) or ":" in path.split("/")[0]:
            continue  # not given, or hf:NAME / lm-eval:TASK
        file = Path(path).expanduser()
        if file.is_file() and not _holds_text(file):
            raise TrialSpecError(
                f"{flag} {path}: the file is empty",
                "Give one JSON object per line: prompt/completion or messages for a task, "
                "text for retain data.",
            )


def _holds_text(file: Path) -> bool:
    """Whether ``file`` holds anything but whitespace (read until the first such byte)."""
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            if chunk.strip():
                return True
    return False


def _check_prices(config) -> None:
    """Unknown catalogue ids fail here, before a child process starts (exit code 2)."""
    from pricing import load_catalog

    catalog = load_catalog()
    if config.gpu is not None:
        catalog.gpu(config.gpu)
    if config.provider is not None:
        catalog.check_provider(config.provider)
    if config.cpu_instance is not None:
        catalog.cpu_instance(config.cpu_instance)
    if config.gpu is not None and config.cpu_instance is not None:
        raise TrialSpecError(
            "--gpu and --cpu-instance are exclusive",
            "Price the run as a GPU (--gpu, --provider) or as a CPU instance, not both.",
        )


@click.command("trial")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trial TOML (TrialConfig fields) or a sweep spec (its first point).",
)
@click.option("--demo", is_flag=True, help="Fine-tune the bundled demo model on the demo task.")
@click.option("--model", help="Model: 'demo', a local folder or a Hugging Face id.")
@click.option("--train", help="Task JSONL (prompt/completion or messages), or hf:NAME[:SPLIT].")
@click.option("--eval", "eval_", help="Held-out JSONL (default: a seeded split of --train).")
@click.option(
    "--retain",
    help='Retain JSONL ({"text"} rows) forgetting is measured on, or lm-eval:TASKS[?limit=N] '
    "(the accuracy drop on lm-evaluation-harness tasks); default: the base model's "
    "self-samples, the demo's world text on the demo.",
)
@click.option("--method", type=click.Choice(["full", "lora", "qlora", "dora", "freeze"]))
@click.option("--rank", type=int, help="LoRA/DoRA/QLoRA rank (default 8).")
@click.option("--alpha", type=float, help="LoRA alpha (default 16).")
@click.option("--lr", type=float, help="Peak learning rate (default 2e-4).")
@click.option("--targets", help="attn, mlp, all, or comma-separated module names (default all).")
@click.option("--epochs", type=float, help="Epochs over the training set (default 1).")
@click.option("--max-steps", type=int, help="Optimizer steps; overrides --epochs.")
@click.option("--batch", type=int, help="Micro-batch size (default 8).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--gpus",
    type=click.IntRange(min=1),
    help="Ranks to shard the trial over (torchrun + FSDP2): GPUs on CUDA (the first N "
    "visible ones), processes on CPU (default 1).",
)
@click.option(
    "--sharding",
    type=click.Choice(["fsdp", "zero2", "zero3"]),
    help="How --gpus N shards the model: fsdp (FSDP2 full shard; the default). zero2 and zero3 "
    "(DeepSpeed) are not supported yet.",
)
@click.option(
    "--bad-rows",
    type=click.Choice(["fail", "skip"]),
    help="A data row that is not a usable example: stop (fail, the default) or skip it.",
)
@click.option("--run-dir", help="Where artifacts go (default runs/).")
@click.option("--memory-limit-gb", type=float, help="Cap the trial process's address space.")
@click.option("--time-limit-s", type=float, help="Stop the trial after this many seconds.")
@click.option(
    "--usd-per-hour",
    type=click.FloatRange(min=0),
    help="Hourly price of the hardware (overrides the catalogue).",
)
@click.option("--gpu", help="Catalogue GPU to price the run as (its cheapest offer).")
@click.option("--provider", help="Catalogue provider whose price is used (with --gpu).")
@click.option("--cpu-instance", help="Catalogue CPU instance to price a CPU run as.")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run it N times with seeds seed, seed+1, ...: each metric as mean ± sd (dollars and "
    "times: the sum).",
)
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def trial_command(
    spec_path: Path | None,
    demo: bool,
    output: str,
    eval_: str | None,
    repeats: int,
    **flags: Any,
) -> None:
    """Run one real fine-tune and report quality, forgetting, memory, time and dollars.

    Forgetting is measured on --retain, else on the demo's world text, else on the base
    model's own samples. Dollars are priced by --usd-per-hour, --gpu (and --provider) or
    --cpu-instance; by default on a GPU the detected GPU's cheapest catalogue offer, on a
    CPU local-cpu ($0). --demo trains LoRA r8 at lr 2e-3 for 150 steps unless told otherwise.

    With --repeats N the JSON adds `repeats` (each run) and `sd` (each metric's standard
    deviation over the runs, by its path); the metrics themselves are the means.

    Exit code 0 when the trial completes, 1 when it ends oom, failed or timeout (the JSON
    still says which), 2 for bad input.
    """
    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.repeats import run_repeats
    from sweeps.trial.types import TrialConfig

    if spec_path is None and not demo and not flags.get("train") and not flags.get("model"):
        raise TrialSpecError(
            "say what to fine-tune", "Pass --demo, --spec FILE, or --model and --train."
        )
    if spec_path is not None and demo:
        raise TrialSpecError("--spec and --demo are exclusive", "Pass one of them.")
    config = config_from_spec(spec_path) if spec_path is not None else TrialConfig()
    flags["eval"] = eval_
    overrides = {k: v for k, v in flags.items() if k in _OVERRIDES and v is not None}
    if demo:
        from sweeps.trial.demo import DEMO_TRIAL

        overrides = {**DEMO_TRIAL, **overrides}
    if overrides:
        from pydantic import ValidationError

        try:
            config = TrialConfig(**{**config.model_dump(), **overrides})
        except ValidationError as error:
            first = error.errors()[0]
            raise TrialSpecError(
                # The flag as typed (--max-steps), not the field (max_steps).
                f"--{'-'.join(str(p) for p in first['loc']).replace('_', '-')}: {first['msg']}"
            ) from None
    _check_model_path(config.model)
    _check_data_not_empty(config)
    _check_prices(config)
    from sweeps.trial.sharded import check_sharding

    check_sharding(config)
    # The demo's model is tiny: one thread trains it as fast as two, and on a busy machine a
    # second OpenMP thread spins against the other processes (measured on 2 shared cores at
    # load 3: 3.6 s of training on one thread, 74-145 s on two). OMP_NUM_THREADS set by the
    # user wins.
    env = {"OMP_NUM_THREADS": "1"} if demo and "OMP_NUM_THREADS" not in os.environ else None

    def runner(config, **kwargs):
        return run_repeats(run_trial_isolated, config, repeats, **kwargs)

    result = _run_with_progress(config, runner, env)
    if output == "json":
        payload = result.model_dump(mode="json")
        click.echo(json.dumps(payload, indent=2))
    else:
        _table(result)
    if result.state != "complete":
        # SystemExit, not click's Exit: the entry point runs click with standalone_mode=False,
        # where click turns Exit into a return value and the code would be lost.
        sys.exit(1)


def _run_with_progress(config, runner, env: dict[str, str] | None = None):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{config.method} trial", total=config.max_steps, status="loading")

        def on_step(step) -> None:
            status = f"step {step.step} loss {step.loss:.3f}"
            if step.eval_nll is not None:
                status += f" eval {step.eval_nll:.3f}"
            progress.update(task, completed=step.step, status=status)

        return runner(config, on_step=on_step, env=env, raise_user_errors=True)


COMMANDS: list[click.Command] = [trial_command]
