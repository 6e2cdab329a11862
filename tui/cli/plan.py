"""Commands of the planner (registered by :mod:`tui.cli`): ``plan`` and ``models``.

Imports of the planner and the price catalogue happen inside the commands, so that
``paretune --help`` stays fast; ``paretune plan`` never imports torch.
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from planner import ModelArch, Plan

_METHOD_CHOICES = ("full", "lora", "qlora", "dora", "freeze")


@click.command("plan")
@click.argument("model")
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
    help="none (data parallel), zero2 or zero3 (FSDP full shard).",
)
@click.option("--provider", default=None, help="Price with this provider only.")
@click.option(
    "--dataset-tokens",
    type=int,
    default=None,
    help="Training tokens per epoch [default: 10,000,000].",
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
def plan_command(
    model: str,
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
    gpu: str | None,
    gpus: int,
    sharding: str,
    provider: str | None,
    dataset_tokens: int | None,
    examples: int | None,
    avg_tokens: int | None,
    epochs: float,
    max_fit: bool,
    simulate: bool,
    simulate_recipe: str | None,
    output_format: str,
) -> None:
    """Peak VRAM, fit, GPUs, hours and dollars of fine-tuning MODEL, per method.

    MODEL is a catalogue name (`paretune models`), a Hugging Face id (its config.json
    is fetched once and cached) or a local config.json / model folder. Memory is in
    GB = 10^9 bytes. Example: paretune plan llama-3.1-8b --method qlora --gpu rtx-4090
    """
    from planner import MethodSpec, Workload, plan, resolve_model
    from planner.errors import InvalidSpecError

    recipe = _simulate_recipe(simulate_recipe, InvalidSpecError)
    simulate = simulate or simulate_recipe is not None
    tokens = _dataset_tokens(dataset_tokens, examples, avg_tokens, InvalidSpecError)
    workload = Workload(
        seq_len=seq_len, batch=batch, grad_accum=grad_accum, dataset_tokens=tokens, epochs=epochs
    )
    kinds = tuple(dict.fromkeys(m.strip().lower() for m in methods)) or _METHOD_CHOICES
    specs = [
        MethodSpec(
            kind=kind,
            rank=rank,
            alpha=alpha,
            targets=targets,
            optimizer=optimizer,
            precision=precision,
            grad_checkpointing=grad_checkpointing,
            attention=attention,
            gpus=gpus,
            sharding=sharding,
            freeze_layers=freeze_layers,
            optimizer_in_backward=optimizer_in_backward,
            unquantized_fp32=unquantized_fp32,
            logit_copies=logit_copies,
        )
        for kind in kinds
    ]
    arch = resolve_model(model)
    result = plan(arch, workload, specs, gpu=gpu, provider=provider, max_fit=max_fit)
    simulated = _simulate(result, recipe) if simulate else None
    if output_format == "json":
        click.echo(json.dumps(_plan_json(result, simulated), indent=2))
    else:
        _print_table(result, simulated, recipe, gpu_given=gpu is not None)


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
    dataset_tokens: int | None, examples: int | None, avg_tokens: int | None, error: type[Exception]
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
    return 10_000_000 if dataset_tokens is None else dataset_tokens


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


def _plan_json(result: Plan, simulated: list[Any] | None) -> dict[str, Any]:
    out = result.to_json()
    if simulated is not None:
        for row, sim in zip(out["methods"], simulated, strict=True):
            row["simulated"] = sim.to_dict()
    return out


def _fmt_gb(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _print_table(
    result: Plan, simulated: list[Any] | None, recipe: str, *, gpu_given: bool
) -> None:
    from planner import TERMS

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
    chosen = "" if gpu_given else "  (no --gpu: cheapest GPU x provider x count that fits)"
    click.echo(f"memory in GB = 10^9 bytes per GPU{chosen}\n")

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
        cells = [
            e.method.label(),
            _short(e.trainable_params),
            _fmt_gb(e.peak_gb),
            fits,
            "-" if e.gpu is None else f"{e.gpus}x {e.gpu}",
            "-" if e.min_gpus is None else str(e.min_gpus),
            "-" if e.hours is None else f"{e.hours:,.2f}",
            "-" if e.dollars is None else f"{e.dollars:,.2f}",
            e.provider or "-",
        ]
        if simulated is not None:
            cells.insert(3, _fmt_gb(simulated[i].peak_bytes / 1e9))
        if row.max_seq_len is not None:
            cells += [f"{row.max_seq_len:,}", f"{row.max_batch:,}"]
        rows.append(cells)
    _echo_grid(headers, rows)
    if simulated is not None:
        note = f"sim GB ({recipe}): two training steps simulated on fake tensors, "
        note += _RECIPE_NOTES[recipe]
        click.echo(textwrap.fill(note, width=100, subsequent_indent="  "))

    click.echo("\nmemory breakdown (GB per GPU)")
    term_rows = [
        [term] + [_fmt_gb(r.estimate.breakdown[term] / 1e9) for r in result.rows] for term in TERMS
    ]
    term_rows.append(["peak"] + [_fmt_gb(r.estimate.peak_gb) for r in result.rows])
    _echo_grid(["term"] + [r.estimate.method.kind for r in result.rows], term_rows)

    if result.apis:
        click.echo("\nthe same tokens on fine-tuning APIs")
        _echo_grid(
            ["provider", "model", "method", "$"],
            [[q.provider, q.model, q.method, f"{q.dollars:,.2f}"] for q in result.apis],
        )


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
