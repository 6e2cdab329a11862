"""Commands of the planner (registered by :mod:`tui.cli`): ``plan`` and ``models``.

Imports of the planner and the price catalogue happen inside the commands, so that
``paretune --help`` stays fast; ``paretune plan`` never imports torch.
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

import click

from tui.cli.calibrate import calibrate_plan, calibration_option, print_calibration
from tui.cli.plan_project import print_project, project_json, project_options, project_report

if TYPE_CHECKING:
    from planner import ModelArch, Plan

_METHOD_CHOICES = ("full", "lora", "qlora", "dora", "freeze")


@click.command("plan")
@click.argument("model", required=False)
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help="Plan the run this file describes: an Axolotl YAML, a torchtune recipe config, a "
    "LLaMA-Factory YAML, or a TRL SFTConfig / PEFT LoraConfig JSON. Flags given as well "
    "win over the file; keys the planner does not model are listed.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    metavar="METHOD",
    help="full, lora, qlora, dora or freeze; repeat for several (default: all five).",
)
@click.option("--seq-len", type=int, default=2048, show_default=True, help="Tokens per sequence.")
@click.option(
    "--batch",
    type=int,
    default=1,
    show_default=True,
    help="Micro-batch: sequences per GPU per forward pass.",
)
@click.option(
    "--grad-accum",
    type=int,
    default=1,
    show_default=True,
    help="Micro-batches per optimizer step; above 1 the gradients stay alive "
    "through the next forward, which can raise the peak.",
)
@click.option(
    "--grad-checkpointing/--no-grad-checkpointing",
    default=True,
    show_default=True,
    help="Recompute activations in the backward (less memory, one more forward).",
)
@click.option(
    "--optimizer",
    default="adamw",
    show_default=True,
    help="adamw (fp32 master weights), adamw_bf16, adamw8bit, paged_adamw8bit, adafactor or sgd.",
)
@click.option("--precision", default="bf16", show_default=True, help="bf16, fp16 or fp32.")
@click.option("--attention", default="sdpa", show_default=True, help="sdpa, flash or eager.")
@click.option("--rank", type=int, default=16, show_default=True, help="LoRA/QLoRA/DoRA rank.")
@click.option("--alpha", type=float, default=32.0, show_default=True, help="LoRA alpha.")
@click.option(
    "--targets",
    default="all",
    show_default=True,
    help="Adapted modules: attn, mlp, all, or comma-separated module names (q_proj,v_proj).",
)
@click.option(
    "--freeze-layers",
    type=int,
    default=2,
    show_default=True,
    help="For the freeze method: how many top decoder layers train.",
)
@click.option(
    "--optimizer-in-backward/--no-optimizer-in-backward",
    default=False,
    show_default=True,
    help="Step the optimizer per parameter inside the backward and free each gradient "
    "at once (torchtune's optimizer_in_bwd): the gradients never all exist. Needs "
    "--grad-accum 1.",
)
@click.option(
    "--unquantized-fp32/--unquantized-16bit",
    default=False,
    show_default=True,
    help="QLoRA: keep the unquantized embeddings, lm_head and norms in fp32, as peft's "
    "prepare_model_for_kbit_training does (TRL, paretune trial), or in the "
    "16-bit compute dtype (transformers' loading, torchtune).",
)
@click.option(
    "--logit-copies",
    type=int,
    default=3,
    show_default=True,
    help="fp32 copies of the seq x batch x vocab logits alive in the loss backward: 3 "
    "with transformers 5; 4 if the model returns fp32 logits (torchtune 0.1); 5 with "
    "transformers 4.31-4.44's shifted copy.",
)
@click.option(
    "--framework",
    default="hf",
    show_default=True,
    help="Plan the run as this framework runs it: hf (transformers + peft), trl, unsloth, "
    "axolotl, torchtune or llama-factory. Sets the loss, checkpointing, optimizer in "
    "backward, attention, adapter dtype and QLoRA preparation it documents; any of these "
    "flags given explicitly wins over the preset.",
)
@click.option(
    "--loss",
    default="standard",
    show_default=True,
    help="standard (full fp32 logits), chunked (16-bit logits, upcast chunk by chunk: "
    "torchtune) or fused (lm_head + loss in chunks, no full logits: Liger, TRL, Unsloth).",
)
@click.option(
    "--compile/--no-compile",
    "compiled",
    default=False,
    show_default=True,
    help="The loss runs under torch.compile (changes the chunked loss only).",
)
@click.option(
    "--offload-checkpoints/--no-offload-checkpoints",
    default=False,
    show_default=True,
    help="Checkpointed layer inputs live in host memory (Unsloth's "
    'use_gradient_checkpointing="unsloth").',
)
@click.option(
    "--adapter-fp32/--adapter-16bit",
    "adapter_fp32",
    default=True,
    show_default=True,
    help="LoRA/DoRA weights in fp32 (peft's default) or in the 16-bit compute dtype (torchtune).",
)
@click.option(
    "--gpu",
    default=None,
    help="GPU id or alias (h100, a100-80gb, rtx-4090, ...). Default: the cheapest "
    "GPU x provider x count that fits, per method.",
)
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs per run.")
@click.option(
    "--sharding",
    default="none",
    show_default=True,
    help="none (data parallel), zero1 (optimizer states partitioned), zero2 (and "
    "gradients) or zero3 (and weights: FSDP full shard).",
)
@click.option(
    "--zero-bucket-size",
    "zero_reduce_bucket_size",
    type=click.IntRange(min=0),
    default=500_000_000,
    show_default=True,
    help="zero1/zero2: the DeepSpeed config's reduce_bucket_size, in elements; DeepSpeed "
    "allocates one gradient buffer of that many 16-bit elements during the backward "
    "(two with --zero-overlap-comm). 0: no buffers.",
)
@click.option(
    "--zero-overlap-comm/--no-zero-overlap-comm",
    "zero_overlap_comm",
    default=False,
    show_default=True,
    help="zero1/zero2: the DeepSpeed config's overlap_comm (a second reduction buffer).",
)
@click.option(
    "--optimizer-offload/--no-optimizer-offload",
    "optimizer_offload",
    default=False,
    show_default=True,
    help="DeepSpeed's offload_optimizer (ZeRO-Offload): optimizer states, master weights "
    "and reduced gradients in host memory. Needs --sharding zero1, zero2 or zero3.",
)
@click.option("--provider", default=None, help="Price with this provider only.")
@click.option(
    "--dataset-tokens",
    default=None,
    metavar="TOKENS",
    help="Training tokens per epoch: 20000000, 20M, 1.5e7 or 2B [default: 10M].",
)
@click.option(
    "--examples",
    type=int,
    default=None,
    help="Number of examples (with --avg-tokens, instead of --dataset-tokens).",
)
@click.option("--avg-tokens", type=int, default=None, help="Average tokens per example.")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the data.")
@click.option(
    "--max-fit",
    is_flag=True,
    help="Also find the longest sequence and the largest micro-batch that fit.",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Also simulate one training step with fake tensors (slow; imports torch).",
)
@click.option(
    "--simulate-recipe",
    metavar="[planner|trial]",
    default=None,
    help="How --simulate runs each method: planner (as the planner defines it, so the "
    "two compare term by term) or trial (as `paretune trial` runs it: QLoRA through peft's "
    "fp32 upcast, full and freeze in fp32 under autocast, torch AdamW, the loop's own "
    "cross-entropy). Implies --simulate.  [default: planner]",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table, or one JSON object (see docs/guides/plan.md for its shape).",
)
@project_options
@calibration_option
def plan_command(
    model: str | None,
    config_file: str | None,
    methods: tuple[str, ...],
    seq_len: int,
    batch: int,
    grad_accum: int,
    grad_checkpointing: bool,
    optimizer: str,
    precision: str,
    attention: str,
    rank: int,
    alpha: float,
    targets: str,
    freeze_layers: int,
    optimizer_in_backward: bool,
    unquantized_fp32: bool,
    logit_copies: int,
    framework: str,
    loss: str,
    compiled: bool,
    offload_checkpoints: bool,
    adapter_fp32: bool,
    gpu: str | None,
    gpus: int,
    sharding: str,
    zero_reduce_bucket_size: int,
    zero_overlap_comm: bool,
    optimizer_offload: bool,
    provider: str | None,
    dataset_tokens: str | None,
    examples: int | None,
    avg_tokens: int | None,
    epochs: float,
    max_fit: bool,
    simulate: bool,
    simulate_recipe: str | None,
    output_format: str,
    calibration: str | None,
    **project_settings: Any,
) -> None:
    """Peak VRAM, fit, GPUs, hours and dollars of fine-tuning MODEL, per method.

    MODEL is a catalogue name (`paretune models`), a Hugging Face id (its config.json
    is fetched once and cached) or a local config.json / model folder; with --config it
    may come from the file. Memory is in GB = 10^9 bytes.
    Example: paretune plan llama-3.1-8b --method qlora --gpu rtx-4090
    """
    from planner import Workload, plan, resolve_model
    from planner.errors import InvalidSpecError

    recipe = _simulate_recipe(simulate_recipe, InvalidSpecError)
    simulate = simulate or simulate_recipe is not None
    tokens = _dataset_tokens(dataset_tokens, examples, avg_tokens, InvalidSpecError)
    shape: dict[str, Any] = dict(
        seq_len=seq_len, batch=batch, grad_accum=grad_accum, dataset_tokens=tokens, epochs=epochs
    )
    kinds = tuple(dict.fromkeys(m.strip().lower() for m in methods)) or _METHOD_CHOICES
    settings: dict[str, Any] = dict(
        rank=rank,
        alpha=alpha,
        targets=targets,
        optimizer=optimizer,
        precision=precision,
        grad_checkpointing=grad_checkpointing,
        attention=attention,
        gpus=gpus,
        sharding=sharding,
        zero_reduce_bucket_size=zero_reduce_bucket_size,
        zero_overlap_comm=zero_overlap_comm,
        optimizer_offload=optimizer_offload,
        freeze_layers=freeze_layers,
        optimizer_in_backward=optimizer_in_backward,
        unquantized_fp32=unquantized_fp32,
        logit_copies=logit_copies,
        loss=loss.strip().lower(),
        compiled=compiled,
        offload_checkpoints=offload_checkpoints,
        adapter_fp32=adapter_fp32,
    )
    explicit = _given_on_the_command_line(settings)
    run = None
    if config_file is not None:
        run = _read_config(config_file, framework, settings, explicit, shape)
        framework = framework if _given("framework") else run.framework
        model = model or run.model
        if not methods and "kind" in run.method:
            kinds = (run.method["kind"],)
    if model is None:
        raise InvalidSpecError(
            "plan needs a MODEL" + (f": {config_file} names none the planner knows" if run else ""),
            "Give a catalogue name, a Hugging Face id or a local folder: paretune plan MODEL.",
        )
    workload = Workload(**shape)
    arch = resolve_model(model)
    if settings["zero_reduce_bucket_size"] == "auto":
        # transformers fills a DeepSpeed config's "auto" reduce_bucket_size with
        # hidden_size x hidden_size (integrations/deepspeed.py, trainer_config_finalize).
        settings["zero_reduce_bucket_size"] = arch.hidden * arch.hidden
    chosen = _framework_methods(framework, kinds, settings, explicit, workload.grad_accum)
    specs = [c.method for c in chosen]
    result = plan(arch, workload, specs, gpu=gpu, provider=provider, max_fit=max_fit)
    result, calibrated = calibrate_plan(result, calibration, framework)
    simulated = _simulate(result, recipe) if simulate else None
    # The whole project (evals, sweep trials, start-up, storage), spot, API jobs, price age.
    project = project_report(result, project_settings, specs=specs, gpu=gpu, provider=provider)
    if output_format == "json":
        out = _plan_json(result, simulated, chosen)
        if run is not None:
            out["config"] = _config_json(run)
        out["project"] = project_json(project)
        out["calibration"] = calibrated
        click.echo(json.dumps(out, indent=2))
        if project.price_notice:
            click.echo(f"Note: {project.price_notice}", err=True)
    else:
        if run is not None:
            _echo_config(run)
        _print_table(result, simulated, recipe, gpu_given=gpu is not None, chosen=chosen)
        print_calibration(calibrated)
        print_project(project, _echo_grid)


def _given(name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source is click.core.ParameterSource.COMMANDLINE


def _given_on_the_command_line(settings: dict[str, Any]) -> set[str]:
    return {name for name in settings if _given(name)}


def _read_config(
    path: str,
    framework: str,
    settings: dict[str, Any],
    explicit: set[str],
    shape: dict[str, Any],
) -> Any:
    """Read ``path`` and fold what it sets into ``settings`` and ``shape``; what the file
    sets counts as chosen (wins over the framework preset), flags win over the file."""
    from planner.frameworks.configs import read_run_config

    run = read_run_config(path, framework=framework if _given("framework") else None)
    for name, value in run.method.items():
        if name != "kind" and name not in explicit:
            settings[name] = value
            explicit.add(name)
    for name, value in run.workload.items():
        if name in shape and not _given(name):
            shape[name] = value
    return run


def _config_json(run: Any) -> dict[str, Any]:
    return {
        "path": run.path,
        "framework": run.framework,
        "model": run.model,
        "method": run.method,
        "workload": run.workload,
        "unmodelled": list(run.unmodelled),
    }


def _echo_config(run: Any) -> None:
    """What the config file set, and which of its keys the planner does not model."""
    sets = {**run.method, **run.workload}
    words = ", ".join(
        f"{k} {v if not isinstance(v, tuple) else ','.join(v)}" for k, v in sets.items()
    )
    click.echo(
        textwrap.fill(f"from {run.path} ({run.framework}): {words}", 100, subsequent_indent="  ")
    )
    if run.unmodelled:
        line = f"not modelled (read, not used): {', '.join(run.unmodelled)}"
        click.echo(textwrap.fill(line, 100, subsequent_indent="  "))


def _framework_methods(
    framework: str,
    kinds: tuple[str, ...],
    settings: dict[str, Any],
    explicit: set[str],
    grad_accum: int,
) -> list[Any]:
    """Each method as ``framework`` runs it; chosen settings win over its preset."""
    from planner.frameworks import framework_method

    return [
        framework_method(
            framework, kind, settings=settings, explicit=explicit, grad_accum=grad_accum
        )
        for kind in kinds
    ]


# What each of the simulator's recipes (planner.simulation.simulate.RECIPES) means, for the table's
# footnote under its column.
_RECIPE_NOTES = {
    "planner": "each method as the planner defines it, so it compares term by term with peak GB",
    "trial": "each method as `paretune trial` runs it (QLoRA's unquantized weights "
    "upcast to fp32 by prepare_model_for_kbit_training, full and freeze in fp32 under "
    "bf16 autocast, torch AdamW, the loop's own cross-entropy)",
}


def _simulate_recipe(recipe: str | None, error: type[Exception]) -> str:
    """The checked ``--simulate-recipe`` (``planner`` when not given)."""
    if recipe is None:
        return "planner"
    from planner.simulation.simulate import RECIPES  # light: torch is imported only to simulate
    from pricing.errors import did_you_mean

    chosen = recipe.strip().lower()
    if chosen not in RECIPES:
        raise error(
            f"--simulate-recipe: unknown recipe {recipe!r}; it is planner (each method as the "
            "planner defines it) or trial (as `paretune trial` runs it)",
            did_you_mean(chosen, RECIPES),
        )
    return chosen


def _dataset_tokens(
    dataset_tokens: str | None, examples: int | None, avg_tokens: int | None, error: type[Exception]
) -> int:
    if (examples is None) != (avg_tokens is None):
        raise error(
            "--examples and --avg-tokens go together",
            "Give both (tokens = examples x avg-tokens), or --dataset-tokens alone.",
        )
    if examples is not None and avg_tokens is not None:
        if dataset_tokens is not None:
            raise error("give either --dataset-tokens or --examples with --avg-tokens, not both")
        for name, value in (("examples", examples), ("avg_tokens", avg_tokens)):
            if value <= 0:
                raise error(
                    f"workload: `{name}` must be a positive integer, got {value}",
                    f"Give --{name.replace('_', '-')} a whole number of at least 1.",
                )
        return examples * avg_tokens
    if dataset_tokens is None:
        return 10_000_000
    from planner.specs import parse_count

    return parse_count("dataset_tokens", dataset_tokens)


def _simulate(result: Plan, recipe: str) -> list[Any]:
    """Run the fake-tensor simulator for each method under ``recipe``."""
    try:
        from planner.simulation.simulate import simulate
    except ImportError:
        from planner.errors import InvalidSpecError

        raise InvalidSpecError(
            "--simulate needs the step simulator, which this installation lacks",
            "Run without --simulate.",
        ) from None
    return [
        simulate(result.arch, result.workload, est.method, recipe=recipe)
        for est in result.estimates
    ]


def _plan_json(result: Plan, simulated: list[Any] | None, chosen: list[Any]) -> dict[str, Any]:
    from planner.frameworks import term_notes

    out = result.to_json()
    for row, framework in zip(out["methods"], chosen, strict=True):
        row["framework"]["title"] = framework.preset.title
        row["framework"]["version"] = framework.preset.version
        row["framework"]["speed_source"] = framework.preset.speed_source or None
        row["framework"]["changes"] = [
            {"field": c.field, "value": c.value, "why": c.why, "source": c.source}
            for c in framework.changes
        ]
        row["framework"]["term_notes"] = term_notes(framework.method)
    if simulated is not None:
        for row, sim in zip(out["methods"], simulated, strict=True):
            row["simulated"] = sim.to_dict()
    return out


def _fmt_gb(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _print_table(
    result: Plan, simulated: list[Any] | None, recipe: str, *, gpu_given: bool, chosen: list[Any]
) -> None:
    from planner import TERMS
    from planner.frameworks import term_notes

    arch = result.arch
    w = result.workload
    moe = f" ({arch.active_params / 1e9:.2f}B active)" if arch.is_moe else ""
    click.echo(
        f"{arch.name}: {arch.total_params:,} parameters{moe}, {arch.layers} layers, "
        f"vocab {arch.vocab:,}"
    )
    click.echo(
        f"workload: seq {w.seq_len}, micro-batch {w.batch}, grad-accum {w.grad_accum}, "
        f"{w.tokens:,} tokens ({w.epochs:g} epoch{'' if w.epochs == 1 else 's'})"
    )
    _echo_framework(chosen)
    cheapest = "" if gpu_given else "  (no --gpu: cheapest GPU x provider x count that fits)"
    click.echo(f"memory in GB = 10^9 bytes per GPU{cheapest}\n")

    headers = [
        "method",
        "trainable",
        "peak GB",
        "fits",
        "GPU",
        "min GPUs",
        "hours",
        "$",
        "provider",
    ]
    if simulated is not None:
        headers.insert(3, f"sim GB ({recipe})")
    if any(r.max_seq_len is not None for r in result.rows):
        headers += ["max seq", "max batch"]
    rows = []
    for i, row in enumerate(result.rows):
        e = row.estimate
        fits = "-" if e.fits is None else ("✓" if e.fits else "✗")
        priced = e.fits is not False  # a run that cannot happen has no price
        cells = [
            e.method.label() + ("*" if e.notes else ""),
            _short(e.trainable_params),
            _fmt_gb(e.peak_gb),
            fits,
            _gpu_cell(e),
            "-" if e.min_gpus is None else str(e.min_gpus),
            "—" if not priced else "-" if e.hours is None else f"{e.hours:,.2f}",
            "—" if not priced else "-" if e.dollars is None else _dollars_cell(e),
            e.provider or "-",
        ]
        if simulated is not None:
            cells.insert(3, _fmt_gb(simulated[i].peak_bytes / 1e9))
        if row.max_seq_len is not None:
            cells += [f"{row.max_seq_len:,}", f"{row.max_batch:,}"]
        rows.append(cells)
    _echo_grid(headers, rows)
    _echo_row_notes(result)
    if simulated is not None:
        note = f"sim GB ({recipe}): two training steps simulated on fake tensors, "
        note += _RECIPE_NOTES[recipe]
        click.echo(textwrap.fill(note, width=100, subsequent_indent="  "))
        for row, sim in zip(result.rows, simulated, strict=True):
            if sim.notes:  # what the simulated step did not do as the plan's run would
                line = f"sim {row.estimate.method.label()}: {'; '.join(sim.notes)}"
                click.echo(textwrap.fill(line, width=100, subsequent_indent="  "))

    click.echo("\nmemory breakdown (GB per GPU)")
    term_rows = [
        [term] + [_fmt_gb(r.estimate.breakdown[term] / 1e9) for r in result.rows] for term in TERMS
    ]
    term_rows.append(["peak"] + [_fmt_gb(r.estimate.peak_gb) for r in result.rows])
    _echo_grid(["term"] + [r.estimate.method.kind for r in result.rows], term_rows)
    _echo_nvidia_smi(result)
    _echo_term_notes(result, term_notes)

    # The fine-tuning APIs, billed as they bill (whole epochs, minimum): print_project.


def _gpu_cell(e: Any) -> str:
    """GPU count and type; the sharding when the planner chose it to fit (marked ‡)."""
    if e.gpu is None:
        return "-"
    cell = f"{e.gpus}x {e.gpu}"
    if e.gpus > 1 and e.method.sharding != "none":
        cell += f" {e.method.sharding}" + ("‡" if e.sharding_chosen else "")
    return cell


def _dollars_cell(e: Any) -> str:
    """Dollars; for offers rented as whole instances, says the price is for the instance."""
    if e.instance_gpus > 1:
        instances = -(-e.gpus // e.instance_gpus)
        count = f"{instances}x " if instances > 1 else ""
        return f"{count}{e.instance_gpus}-GPU instance, {e.dollars:,.2f}"
    return f"{e.dollars:,.2f}"


def _echo_row_notes(result: Plan) -> None:
    """Why rows have no price, sharding the planner chose, notes marked *, warnings."""
    lines = []
    for row in result.rows:
        e = row.estimate
        if e.price_note:
            lines.append(f"✗ {e.method.label()}: {e.price_note}; no hours or $ for it")
        if e.sharding_chosen:
            lines.append(
                f"‡ {e.method.label()}: {e.method.sharding} chosen by the planner to fit "
                f"{e.gpus} GPUs (--sharding none asks for plain data parallel)"
            )
        lines += [f"* {e.method.label()}: {note}" for note in e.notes]
    for line in lines:
        click.echo(textwrap.fill(line, width=100, subsequent_indent="  "))
    for warning in result.warnings:
        click.echo(
            textwrap.fill(f"warning: {warning}", width=100, subsequent_indent="  "), err=True
        )


def _echo_nvidia_smi(result: Plan) -> None:
    """Which number is which: the allocator's peak, and what nvidia-smi shows on top."""
    on_gpu = [r.estimate for r in result.rows if r.estimate.context_bytes]
    if not on_gpu:
        return
    cells = ", ".join(
        f"{e.method.kind} {_fmt_gb(e.allocated_gb)} + {_fmt_gb(e.reserve_bytes / 1e9)}"
        for e in on_gpu
    )
    context = _fmt_gb(on_gpu[0].context_bytes / 1e9)
    note = (
        f"peak GB is what nvidia-smi shows: torch.cuda.max_memory_allocated + the caching "
        f"allocator's reserve ({cells} GB) + the CUDA context ({context} GB). Context and "
        "reserve are sourced constants (planner/data/constants.json), not yet per GPU "
        "generation or calibrated on measured runs"
    )
    click.echo(textwrap.fill(note, width=100, subsequent_indent="  "))


def _echo_framework(chosen: list[Any]) -> None:
    """The framework line, what its preset changed, and its speed claim."""
    if not chosen:
        return
    first = chosen[0].preset
    click.echo(f"framework: {first.title} ({first.version}), --framework {first.name}")
    seen: set[tuple[str, str]] = set()
    for framework in chosen:
        for change in framework.changes:
            key = (change.field, str(change.value))
            if key not in seen:
                seen.add(key)
                kinds = f" [{', '.join(change.kinds)}]" if change.kinds else ""
                click.echo(f"  {change.field} = {change.value}{kinds}: {change.why}")
    if chosen[0].speed_note:
        click.echo(textwrap.fill(chosen[0].speed_note, width=100, subsequent_indent="  "))


def _echo_term_notes(result: Plan, term_notes: Any) -> None:
    """Under the breakdown: which terms the framework changed, per method."""
    lines = []
    for row in result.rows:
        for term, note in term_notes(row.estimate.method).items():
            gb = _fmt_gb(row.estimate.breakdown[term] / 1e9)
            lines.append(f"  {row.estimate.method.kind}: {term} {gb} GB: {note}")
    if lines:
        click.echo("what the framework changed:")
        click.echo("\n".join(lines))


def _short(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _echo_grid(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    click.echo(line(headers))
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo(line(row))


@click.command("models")
@click.argument("query", required=False)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def models_command(query: str | None, output_format: str) -> None:
    """List the built-in model catalogue, or the entries matching QUERY.

    QUERY matches names, aliases, Hugging Face ids and families (every word must
    match): `paretune models qwen3`, `paretune models llama 70b`.
    """
    from planner import search_models

    found = search_models(query)
    if output_format == "json":
        click.echo(json.dumps([_model_json(a) for a in found], indent=2))
        return
    if not found:
        click.echo(f"no catalogue model matches {query!r}; `paretune models` lists them all")
        return
    rows = [
        [
            a.name,
            a.family,
            a.hf_id or "-",
            f"{a.total_params / 1e9:.2f}B",
            f"{a.active_params / 1e9:.2f}B" if a.is_moe else "",
            str(a.layers),
            f"{a.vocab:,}",
            ", ".join(a.aliases),
        ]
        for a in found
    ]
    _echo_grid(
        ["name", "family", "hugging face id", "params", "active", "layers", "vocab", "aliases"],
        rows,
    )


def _model_json(arch: ModelArch) -> dict[str, Any]:
    return {**arch.summary(), "aliases": list(arch.aliases)}


COMMANDS: list[click.Command] = [plan_command, models_command]
