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

import typer

from cli import adapt as adapt_cmd
from cli import data as data_cmd
from cli import eval as eval_cmd
from cli import export as export_cmd
from cli import init as init_cmd
from cli import tokenizer as tokenizer_cmd
from cli import train as train_cmd
from cli import vectors as vectors_cmd
from cli import vocab as vocab_cmd

app = typer.Typer(
    name="vocabshift",
    help="Adapt pretrained transformer language models to new languages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("adapt")(adapt_cmd.adapt)
app.add_typer(tokenizer_cmd.app, name="tokenizer")
app.add_typer(vectors_cmd.app, name="vectors")
app.command("prune")(vocab_cmd.prune)
app.command("extend")(vocab_cmd.extend)
app.command("init")(init_cmd.init)
app.command("train")(train_cmd.train)
app.command("export")(export_cmd.export)
app.command("eval")(eval_cmd.eval)
app.add_typer(data_cmd.app, name="data")

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
