"""The command line's help: readable in an 80-column terminal, and `vocabshift --help` starts at once.

Every subcommand module is loaded only when it runs (``cli.main.COMMANDS``); the root help lists the
summaries without importing any of them, so it never pulls in torch or transformers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from click.testing import CliRunner

from cli.main import COMMANDS, app, load_command

REPO = Path(__file__).resolve().parents[1]
WIDTH = 80


def _command_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]
    for name in COMMANDS:
        paths.append([name])
        for sub in getattr(load_command(name), "commands", {}):
            paths.append([name, sub])
    return paths


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(typer.main.get_command(app), [*args, "--help"], prog_name="vocabshift",
                                terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def _resolve(args: list[str]) -> click.Command:
    command: click.Command = typer.main.get_command(app)
    for name in args:
        command = command.get_command(click.Context(command), name)  # type: ignore[attr-defined]
    return command


@pytest.mark.parametrize("args", _command_paths(), ids=lambda a: " ".join(a) or "vocabshift")
def test_help_fits_80_columns_and_names_every_option_in_full(args: list[str]) -> None:
    text = _help(args)
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, f"lines wider than {WIDTH} columns: {too_wide}"
    # rich cuts with "…"; click cuts a command's summary to 45 characters with a trailing "..."
    cut = [line for line in text.splitlines()[1:] if "…" in line or line.rstrip().endswith("...")]
    assert not cut, f"help text cut short: {cut}"
    command = _resolve(args)
    for param in command.params:
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} missing or cut in {args}"


def test_root_help_lists_every_command_with_its_summary() -> None:
    text = _help([])
    for name, (_, _, summary) in COMMANDS.items():
        assert re.search(rf"^  {name}\s+{re.escape(summary)}$", text, re.M), name


def test_every_listed_command_loads_and_is_named() -> None:
    for name in COMMANDS:
        command = load_command(name)
        assert command.name == name and command.short_help == COMMANDS[name][2]
        assert command.help, f"{name} has no help text"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(typer.main.get_command(app), ["nosuch"], prog_name="vocabshift")
    assert result.exit_code == 2 and "No such command 'nosuch'" in result.output


def test_root_help_imports_no_heavy_library() -> None:
    # A fresh interpreter: the test process itself has torch loaded already.
    code = ("import sys\nfrom cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules)\n"
            "print('HEAVY', ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": str(WIDTH)})
    assert out.returncode == 0, out.stderr
    assert "Commands:" in out.stdout
    heavy = out.stdout.strip().splitlines()[-1]
    assert heavy == "HEAVY", f"`vocabshift --help` imported {heavy}"
