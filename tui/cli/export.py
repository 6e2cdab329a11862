"""``paretune export TRIAL --to axolotl|trl|unsloth|torchtune``: a trial as a ready config."""

from __future__ import annotations

from pathlib import Path

import click

from planner.frameworks.exports import EXPORT_FORMATS
from pricing.errors import UserError
from sweeps.results.store import DEFAULT_RESULTS

__all__ = ["COMMANDS"]


class ExportUsageError(UserError):
    title = "Cannot export the trial"


@click.command("export")
@click.argument("trial", type=click.IntRange(min=0), required=False)
@click.option(
    "--to",
    "to",
    type=click.Choice(EXPORT_FORMATS),
    required=True,
    help="The framework to write for: an Axolotl YAML, a TRL SFTConfig + LoraConfig JSON "
    "(and a script beside it that runs it), an Unsloth script, a torchtune recipe config.",
)
@click.option(
    "--pick",
    is_flag=True,
    help="Export the frontier's recommended trial for --prefer instead of a TRIAL number.",
)
@click.option(
    "--prefer",
    default=None,
    metavar="quality|forgetting|cost|balanced|WEIGHTS",
    help="With --pick: what the recommended trial favours (as `paretune report`); "
    "default balanced.",
)
@click.option("--study", default=None, help="The study (needed when the file holds several).")
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="DuckDB results file.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="The file to write (default: STUDY-trial-N-FRAMEWORK.yml/.json/.py beside the "
    "results file).",
)
@click.option(
    "--force", is_flag=True, help="Overwrite --out (and a TRL script, and the card) if it exists."
)
def export_command(
    trial: int | None,
    to: str,
    pick: bool,
    prefer: str | None,
    study: str | None,
    db: Path,
    out: Path | None,
    force: bool,
) -> None:
    """Write TRIAL of a study as a ready config for full-scale training: its model, method
    (lora, qlora, dora, full, freeze as the framework says them), rank, alpha, dropout,
    target modules, learning rate, schedule and warm-up, epochs and step cap, micro-batch,
    accumulation, sequence length, train and eval files and seed. What the framework cannot
    express as the trial ran it is listed in the file and on stderr, never dropped. Beside
    it goes the trial's card (FILE.card.md, as a saved adapter's model card): the data
    files with their hashes and rows, leakage, duplicates and personal data found (counts),
    the base model's licence, the retain source and the measured forgetting.
    `paretune plan --config FILE` reads the Axolotl, torchtune and TRL exports back."""
    from sweeps.results.trial_export import export_trial

    if trial is not None and (pick or prefer):
        raise ExportUsageError(
            f"give either TRIAL ({trial}) or --pick/--prefer, not both",
            "Drop the trial number to export the recommended trial, or drop --pick/--prefer.",
        )
    if trial is None and not (pick or prefer):
        raise ExportUsageError(
            "no trial to export",
            "Give a TRIAL number, or --pick (with --prefer quality|forgetting|cost) for the "
            "frontier's recommended trial.",
        )
    done = export_trial(db, to, number=trial, study=study, prefer=prefer, out=out, force=force)
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"trial {done.number} of study {done.study} as {to}: {done.path}", err=True)
    if done.script is not None:
        click.echo(f"  and the script that runs it: {done.script}", err=True)
    if done.card is not None:
        click.echo(
            f"  and the trial's card (data and base model provenance): {done.card}", err=True
        )
    click.echo(str(done.path))


COMMANDS: list[click.Command] = [export_command]
