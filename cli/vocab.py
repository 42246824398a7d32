"""``vocabshift prune`` and ``vocabshift extend``: vocabulary surgery on a model and its tokenizer."""

from __future__ import annotations

from typing import Any

import typer

from vocabshift.vocabulary_config import ExtendConfig, PruneConfig

from .options import ConfigOptions, config_options, corpus_config, field_help

# Where the flags depart from the fields' names and types; everything else is generated from the configs.
PRUNE_OPTIONS = ConfigOptions(PruneConfig, paths=frozenset({"out"}), comma_separated=frozenset({"keep_scripts"}),
                              excluded={"keep_corpus": "the --keep-corpus paths"})
EXTEND_OPTIONS = ConfigOptions(ExtendConfig, paths=frozenset({"out"}),
                               excluded={"protect_corpus": "the --protect-corpus paths"})


@config_options(PRUNE_OPTIONS)
def prune(
    keep_corpus: list[str] = typer.Option(None, "--keep-corpus", help=field_help(PruneConfig, "keep_corpus")
                                          + " Several paths may follow."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More --keep-corpus paths."),
    *,
    given: dict[str, Any],
) -> None:
    """Drop the tokens of scripts the target languages do not use (MAFT) and/or rarely used tokens."""
    from vocabshift.vocabulary import prune as run_prune

    paths = list(keep_corpus or []) + list(more_corpus or [])
    cfg = PruneConfig(**given, keep_corpus=corpus_config(paths) if paths else None)
    result = run_prune(cfg)
    _summary(result.report)


@config_options(EXTEND_OPTIONS)
def extend(
    protect_corpus: list[str] = typer.Option(None, "--protect-corpus", help=field_help(ExtendConfig, "protect_corpus")),
    *,
    given: dict[str, Any],
) -> None:
    """Add the target tokenizer's tokens that the source vocabulary lacks (new rows start as the mean)."""
    from vocabshift.vocabulary import extend as run_extend

    cfg = ExtendConfig(**given, protect_corpus=corpus_config(list(protect_corpus)) if protect_corpus else None)
    result = run_extend(cfg)
    _summary(result.report)


def _summary(report: dict) -> None:
    line = f"{report['stage']}: {report['source_vocab_size']:,} -> {report['vocab_size']:,} tokens"
    model = report.get("model")
    if model:
        line += (f"; {model['class']} parameters {model['parameters_before']:,} -> {model['parameters_after']:,}, "
                 f"weights {model['weights_bytes_before'] / 1e6:.1f} MB -> {model['weights_bytes_after'] / 1e6:.1f} MB")
    typer.echo(line)
