"""``paretune data check``: duplicates, leakage, personal data and format of a data set.

Exit codes: 0 clean, 1 findings, 2 a file that cannot be read (missing, or no usable row).
"""

from __future__ import annotations

import json

import click

__all__ = ["COMMANDS", "data_group"]


@click.group("data")
def data_group() -> None:
    """Check training data before paying for a fine-tune."""


@data_group.command("check")
@click.argument("train", metavar="FILE")
@click.option("--eval", "eval_path", default=None, help="Held-out JSONL to check for leakage.")
@click.option(
    "--retain",
    multiple=True,
    help="Retain ({'text'}) JSONL whose rows should not be in the training set; repeatable.",
)
@click.option(
    "--model",
    default=None,
    help="Count tokens with this model's tokenizer (a local folder or a cached Hugging Face id).",
)
@click.option(
    "--max-seq-len",
    type=click.IntRange(min=1),
    default=None,
    help="Planned sequence length: rows longer than it are reported (needs --model).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0),
    default=0.8,
    show_default=True,
    help="Estimated Jaccard similarity (word 3-grams) from which two rows are near duplicates.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def check_command(
    train: str,
    eval_path: str | None,
    retain: tuple[str, ...],
    model: str | None,
    max_seq_len: int | None,
    threshold: float,
    fmt: str,
) -> None:
    """Check FILE (and --eval, --retain): exact and near duplicates (MinHash/LSH), eval or
    retain rows copied from FILE, personal data (e-mail, phone, card numbers, IP addresses,
    API keys: counts and rows, never the matches), tokens per row, empty answers, chat role
    order, and rows longer than --max-seq-len.

    Exit code 0: clean; 1: findings; 2: a file cannot be read.
    """
    from rich.console import Console

    from sweeps.datacheck import check_files
    from sweeps.datacheck.report import render_tables

    report = check_files(
        train,
        eval=eval_path,
        retain=retain,
        tokenizer=_tokenizer(model) if model else None,
        max_seq_len=max_seq_len,
        threshold=threshold,
    )
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_tables(report, Console())
    click.get_current_context().exit(1 if report.findings else 0)


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    from sweeps.trial.data import DataError

    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise DataError(
            f"cannot load the tokenizer of {model!r}: {error}",
            "Give a local model folder or a Hugging Face id in the local cache, or leave out "
            "--model to count words.",
        ) from None


COMMANDS: list[click.Command] = [data_group]
