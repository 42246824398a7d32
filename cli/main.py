"""Entry point of the ``vocabshift`` command.

Errors from the library (:class:`vocabshift.errors.VocabshiftError`) print as one line and exit with
status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import click
import typer
from typer.core import TyperGroup

# Each subcommand's module is imported only when that subcommand runs (or shows its help), so that
# `vocabshift --help` starts at once: the stage configs behind the options are torch-free, not free. The
# one-line summaries below are what `vocabshift --help` lists (a test loads every command and checks
# that its summary fits an 80-column terminal).
COMMANDS: dict[str, tuple[str, str, str]] = {  # name: (module within this package, attribute, summary)
    "adapt": (".adapt", "adapt", "Adapt a model to new languages from one recipe (all stages)."),
    "prune": (".vocab", "prune", "Drop tokens of unused scripts (MAFT) or rare tokens."),
    "extend": (".vocab", "extend", "Add the target tokenizer's tokens the source lacks."),
    "init": (".init", "init", "Give a model the target vocabulary, with initialized rows."),
    "train": (".train", "train", "Continue pretraining: LoRA adapters + embeddings."),
    "export": (".export", "export", "Merge a training run into a plain checkpoint (or GGUF)."),
    "eval": (".eval", "eval", "Compare an adapted model with its baseline."),
    "tokenizer": (".tokenizer", "app", "Train target-language tokenizers and compare them."),
    "vectors": (".vectors", "app", "Train and align static word vectors."),
    "data": (".data", "app", "Data manifests: corpora, vectors, dictionaries, models."),
}


def load_command(name: str) -> click.Command:
    """The click command of subcommand ``name``, importing its module now."""
    import importlib

    module, attribute, summary = COMMANDS[name]
    # relative: the package is `cli` in the source tree and `vocabshift_cli` once installed
    target = getattr(importlib.import_module(module, __package__), attribute)
    if isinstance(target, typer.Typer):
        target._add_completion = False  # one completion setting, the root's (off)
        command = typer.main.get_command(target)
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    command.short_help = summary
    _plain_help(command)
    return command


def _plain_help(command: click.Command) -> None:
    """Click's plain help for the command and its subcommands: it wraps to the terminal and never cuts an
    option name (rich's boxed tables cut them in an 80-column terminal)."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        if sub.help and not sub.short_help:  # the whole first paragraph, wrapped, not cut at 45 characters
            sub.short_help = " ".join(sub.help.strip().split("\n\n")[0].split())
        _plain_help(sub)


class LazyGroup(TyperGroup):
    """The root group: subcommands from :data:`COMMANDS`, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The summaries, without importing every subcommand (click's default would load each one).
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


app = typer.Typer(
    name="vocabshift",
    cls=LazyGroup,
    help="Adapt pretrained transformer language models to new languages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        from vocabshift import __version__

        typer.echo(f"vocabshift {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step decides."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    """Adapt pretrained transformer language models to new languages."""
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING if quiet else logging.INFO
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=debug)], force=True)
    logging.getLogger("vocabshift").setLevel(level)


def _raise_stopped(signum: int, frame: object) -> None:
    from vocabshift.errors import Stopped

    raise Stopped(signum)


def _interrupt_in_chain(err: BaseException) -> KeyboardInterrupt | None:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return current
        current = current.__cause__ or current.__context__
    return None


def _exit_interrupted(err: KeyboardInterrupt) -> None:
    signum = getattr(err, "signum", signal.SIGINT)
    typer.echo("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}", err=True)
    sys.exit(128 + signum)


def _process_started() -> float:
    try:
        import psutil  # accelerate's dependency

        return float(psutil.Process().create_time())
    except Exception:  # no psutil, or no /proc: the moment main() started
        return time.time()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and exit status 1."""
    import vocabshift.outputs

    # An output written after this command started comes from a concurrent run: never replaced (see
    # outputs.py). Run as a program, the command started with the process (imports take seconds, and a
    # run started at the same moment may finish in them); called from Python, it starts now.
    vocabshift.outputs.COMMAND_STARTED = _process_started() if argv is None else time.time()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded unless the user asks
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"--verbose", "-v", "--debug"} & set(argv):
        # transformers' own "Loading weights" / "Writing model shards" bars; vocabshift logs its own progress
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term == signal.SIG_DFL:
        # SIGTERM (kill, timeout, schedulers) unwinds like Ctrl-C: temporary outputs are removed, locks
        # released, training checkpoints written; the default would end the process on the spot.
        signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        _run(argv)
    finally:  # main() called in a longer-lived process (tests, notebooks) leaves it as it was
        vocabshift.outputs.COMMAND_STARTED = None
        if previous_term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous_term)


def _run(argv: list[str]) -> None:
    from vocabshift.errors import VocabshiftError

    try:
        # Standalone mode: usage errors print click's message and exit 2; library errors come out here.
        app(args=argv, prog_name="vocabshift", standalone_mode=True)
    except VocabshiftError as err:
        if "--debug" in argv:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as err:
        _exit_interrupted(err)
    except SystemExit as err:
        # typer turns a KeyboardInterrupt into exit status 130; a SIGTERM must still say so (143).
        interrupt = _interrupt_in_chain(err)
        if interrupt is None:
            raise
        _exit_interrupted(interrupt)
    except Exception as err:
        if "--debug" in argv:
            raise
        from vocabshift.outputs import disk_full_error

        full = disk_full_error(err, "the output")
        if full is not None:
            typer.echo(f"error: {full}", err=True)
            sys.exit(1)
        typer.echo(f"error: unexpected {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
