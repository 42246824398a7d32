"""``vocabshift prune`` and ``vocabshift extend``: vocabulary surgery on a model and its tokenizer."""

from __future__ import annotations

from pathlib import Path

import typer

from vocabshift.vocabulary import ExtendConfig, PruneConfig

from .options import corpus_config, field_help

_P = PruneConfig
_E = ExtendConfig


def prune(
    model: str = typer.Option(..., "--model", help=field_help(_P, "model")),
    out: Path = typer.Option(..., "--out", help=field_help(_P, "out")),
    keep_scripts: str = typer.Option(None, "--keep-scripts", help="Comma-separated Unicode scripts to keep, "
                                     "names or ISO 15924 codes: Latin,Ethiopic,Arab."),
    keep_corpus: list[str] = typer.Option(None, "--keep-corpus", help="Also keep tokens used at least "
                                          "--min-count times on this text. Several paths may follow."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More --keep-corpus paths."),
    min_count: int = typer.Option(1, "--min-count", help=field_help(_P, "min_count")),
    pad_to_multiple_of: int = typer.Option(None, "--pad-to-multiple-of", help=field_help(_P, "pad_to_multiple_of")),
    in_memory: bool = typer.Option(False, "--in-memory", help=field_help(_P, "in_memory")),
    force: bool = typer.Option(False, "--force", help=field_help(_P, "force")),
) -> None:
    """Drop the tokens of scripts the target languages do not use (MAFT) and/or rarely used tokens."""
    from vocabshift.vocabulary import prune as run_prune

    paths = list(keep_corpus or []) + list(more_corpus or [])
    cfg = PruneConfig(
        model=model, out=str(out),
        keep_scripts=[s.strip() for s in keep_scripts.split(",") if s.strip()] if keep_scripts else None,
        keep_corpus=corpus_config(paths) if paths else None, min_count=min_count,
        pad_to_multiple_of=pad_to_multiple_of, in_memory=in_memory, force=force,
    )
    result = run_prune(cfg)
    _summary(result.report)


def extend(
    model: str = typer.Option(..., "--model", help=field_help(_E, "model")),
    tokenizer: str = typer.Option(..., "--tokenizer", help=field_help(_E, "tokenizer")),
    out: Path = typer.Option(..., "--out", help=field_help(_E, "out")),
    max_new: int = typer.Option(None, "--max-new", help=field_help(_E, "max_new")),
    protect_corpus: list[str] = typer.Option(None, "--protect-corpus", help=field_help(_E, "protect_corpus")),
    pad_to_multiple_of: int = typer.Option(None, "--pad-to-multiple-of", help=field_help(_E, "pad_to_multiple_of")),
    in_memory: bool = typer.Option(False, "--in-memory", help=field_help(_E, "in_memory")),
    force: bool = typer.Option(False, "--force", help=field_help(_E, "force")),
) -> None:
    """Add the target tokenizer's tokens that the source vocabulary lacks (new rows start as the mean)."""
    from vocabshift.vocabulary import extend as run_extend

    cfg = ExtendConfig(model=model, tokenizer=tokenizer, out=str(out), max_new=max_new,
                       protect_corpus=corpus_config(list(protect_corpus)) if protect_corpus else None,
                       pad_to_multiple_of=pad_to_multiple_of, in_memory=in_memory, force=force)
    result = run_extend(cfg)
    _summary(result.report)


def _summary(report: dict) -> None:
    line = f"{report['stage']}: {report['source_vocab_size']:,} -> {report['vocab_size']:,} tokens"
    model = report.get("model")
    if model:
        line += (f"; {model['class']} parameters {model['parameters_before']:,} -> {model['parameters_after']:,}, "
                 f"weights {model['weights_bytes_before'] / 1e6:.1f} MB -> {model['weights_bytes_after'] / 1e6:.1f} MB")
    typer.echo(line)
