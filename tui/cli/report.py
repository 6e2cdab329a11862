"""``paretune report STUDY --out report.html``: one self-contained HTML page of a study."""

from __future__ import annotations

from pathlib import Path

import click

from sweeps.results.store import DEFAULT_RESULTS

__all__ = ["COMMANDS"]


@click.command("report")
@click.argument("study")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (its folder must exist).",
)
@click.option(
    "--prefer",
    default="balanced",
    show_default=True,
    metavar="quality|forgetting|cost|balanced|WEIGHTS",
    help="What the recommended configuration favours; or weights such as quality=2,cost=1.",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="DuckDB results file.",
)
def report_command(study: str, out: Path, prefer: str, db: Path) -> None:
    """Write STUDY as one HTML file to send: frontier charts (3-D and the three 2-D views),
    the configuration recommended for --prefer with its numbers, cost spent and predicted,
    every trial with its state, learning curves of the frontier trials, forgetting per
    method and noise bands where trials were repeated. No script, nothing fetched: the
    charts are inline SVG in the terminal UI's method colours."""
    from sweeps.results.report import write_report

    written = write_report(db, study, out, preference=prefer)
    click.echo(f"wrote {written}", err=True)


COMMANDS: list[click.Command] = [report_command]
