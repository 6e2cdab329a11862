"""The ``paretune`` command line.

Each package contributes its commands through a ``COMMANDS`` list in its own CLI
module (``tui.cli.prices``, ``tui.cli.plan``, ``tui.cli.trial``, ``tui.cli.sweep``,
``tui.cli.data``);
this module assembles them and renders every :class:`pricing.errors.UserError` in one
place: message and hint on stderr, exit code 2, no traceback (``--debug`` shows it).

Heavy libraries (torch, transformers, optuna, textual) are imported inside commands,
so ``paretune --help`` and ``paretune plan`` start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pricing.errors import UserError

_COMMAND_MODULES = (
    "tui.cli.prices",
    "tui.cli.plan",
    "tui.cli.trial",
    "tui.cli.sweep",
    "tui.cli.data",
    "tui.cli.calibrate",
    "tui.cli.report",
    "tui.cli.export",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paretune")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0+source"


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(_version(), "--version", prog_name="paretune")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Plan, sweep and chart LLM fine-tunes by quality, forgetting and cost.

    With no command, opens the terminal UI on the plan screen. Memory is reported in
    GB = 10^9 bytes throughout.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        os.environ["PARETUNE_DEBUG"] = "1"
    if ctx.invoked_subcommand is None:
        ctx.invoke(tui_command)


@main.command("tui")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="DuckDB results file (default: runs/results.duckdb if it exists).",
)
def tui_command(db: Path | None) -> None:
    """Open the terminal UI (plan, sweeps, SQL, frontier)."""
    from tui.app import run_app

    run_app(db=db)


# The command modules import only click at module level: the libraries behind a command are
# imported when it runs.
from tui.cli import (  # noqa: E402 - after ``main`` exists
    calibrate,
    data,
    export,
    plan,
    prices,
    report,
    sweep,
    trial,
)

for _module in (prices, plan, trial, sweep, data, calibrate, report, export):
    for _command in _module.COMMANDS:
        main.add_command(_command)


def render_error(error: UserError) -> None:
    """Print a user error as one readable paragraph on stderr."""
    click.secho(f"Error: {error.message}", fg="red", err=True)
    if error.hint:
        click.echo(error.hint, err=True)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``main`` and render user errors in one place."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        # Without standalone mode click returns the code of `ctx.exit(n)` instead of exiting.
        code = main.main(args=argv, prog_name="paretune", standalone_mode=False)
    except UserError as error:
        if debug:
            raise
        render_error(error)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `paretune sql ... | head`
        sys.exit(0)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    run()
