"""The command line skeleton: help, version, one place for user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pricing.errors import UserError, did_you_mean, suggest


def _paretune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands() -> None:
    done = _paretune("--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: paretune" in done.stdout
    assert "tui" in done.stdout


def test_version() -> None:
    done = _paretune("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("paretune, version ")


def test_unknown_command_exits_2() -> None:
    done = _paretune("no-such-command")
    assert done.returncode == 2
    assert "No such command" in done.stderr


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from tui.cli import main; "
        "heavy = [m for m in ('torch', 'transformers', 'optuna', 'textual', 'peft') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_unknown_simulate_recipe_is_a_one_paragraph_error() -> None:
    done = _paretune("plan", "gpt2", "--simulate-recipe", "trail")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    message, hint = done.stderr.strip().splitlines()
    assert message.startswith("Error: --simulate-recipe: unknown recipe 'trail'")
    assert hint == "Did you mean 'trial'?"


def test_user_error_keeps_message_and_hint() -> None:
    error = UserError("unknown GPU 'h10'", did_you_mean("h10", ["h100-sxm", "h200", "a100-80gb"]))
    assert error.message == "unknown GPU 'h10'"
    assert "h100-sxm" in str(error)


@pytest.mark.parametrize(
    ("word", "expected"), [("h100", "h100-sxm"), ("runpd", "runpod"), ("lamda", "lambda")]
)
def test_suggest_finds_close_names(word: str, expected: str) -> None:
    assert expected in suggest(word, ["h100-sxm", "runpod", "lambda", "aws", "h200"])


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_exit_code_of_ctx_exit_is_kept() -> None:
    import click

    from tui import cli

    @click.command("exit-three")
    @click.pass_context
    def exit_three(ctx: click.Context) -> None:
        ctx.exit(3)

    cli.main.add_command(exit_three)
    try:
        with pytest.raises(SystemExit) as raised:
            cli.run(["exit-three"])
    finally:
        cli.main.commands.pop("exit-three")
    assert raised.value.code == 3
