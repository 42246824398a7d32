"""``vocabshift tokenizer train`` and ``vocabshift tokenizer stats``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import CorpusConfig

from .options import corpus_config, field_help

app = typer.Typer(help="Train target-language tokenizers and compare tokenizers on text.", no_args_is_help=True)

_C = CorpusConfig
_T = TokenizerTrainConfig


@app.command("train")
def train(
    source: str = typer.Option(..., "--source", help=field_help(_T, "source")),
    corpus: list[str] = typer.Option(..., "--corpus", help="Corpus files, directories or globs (.txt, .jsonl, "
                                     ".parquet, .arrow; .gz/.xz/.bz2/.zst), or datasets save_to_disk folders "
                                     "(DIR:SPLIT picks a split). Several may follow one --corpus."),
    vocab_size: int = typer.Option(..., "--vocab-size", help=field_help(_T, "vocab_size")),
    out: Path = typer.Option(..., "--out", help=field_help(_T, "out")),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    min_frequency: int = typer.Option(2, help=field_help(_T, "min_frequency")),
    character_coverage: float = typer.Option(0.9995, help=field_help(_T, "character_coverage")),
    max_piece_length: int = typer.Option(16, help=field_help(_T, "max_piece_length")),
    threads: int = typer.Option(None, help=field_help(_T, "threads")),
    text_field: str = typer.Option("text", help=field_help(_C, "text_field")),
    encoding_errors: str = typer.Option("strict", help=field_help(_C, "encoding_errors")),
    max_bytes: int = typer.Option(None, help=field_help(_C, "max_bytes")),
    max_lines: int = typer.Option(None, help=field_help(_C, "max_lines")),
    max_documents: int = typer.Option(None, help=field_help(_C, "max_documents")),
    shuffle: bool = typer.Option(False, help=field_help(_C, "shuffle")),
    seed: int = typer.Option(0, help=field_help(_C, "seed")),
    temperature: float = typer.Option(None, help="Mix the corpus paths as separate sources with XLM-R-style "
                                      "temperature sampling (q ∝ p^(1/T)); without it they are read in order."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=field_help(_T, "show_progress")),
    force: bool = typer.Option(False, "--force", help=field_help(_T, "force")),
) -> None:
    """Train a tokenizer for the target language(s) in the source tokenizer's own family."""
    from vocabshift.tokenization.train import train_tokenizer

    cfg = TokenizerTrainConfig(
        source=source,
        corpus=corpus_config(list(corpus) + list(more_corpus or []), text_field=text_field,
                             encoding_errors=encoding_errors, max_bytes=max_bytes, max_lines=max_lines,
                             max_documents=max_documents, shuffle=shuffle, seed=seed, temperature=temperature),
        vocab_size=vocab_size, out=str(out), min_frequency=min_frequency,
        character_coverage=character_coverage, max_piece_length=max_piece_length, threads=threads,
        show_progress=progress, force=force,
    )
    result = train_tokenizer(cfg)
    typer.echo(f"wrote {result.family.value} tokenizer with {result.vocab_size} tokens to {result.out} "
               f"({result.documents} documents, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s)")


@app.command("stats")
def stats(
    tokenizer: list[str] = typer.Option(..., "--tokenizer", help="Tokenizer directory (repeat to compare)."),
    corpus: list[str] = typer.Option(..., "--corpus", help="Text to measure on (same formats as training)."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    text_field: str = typer.Option("text", help=field_help(_C, "text_field")),
    encoding_errors: str = typer.Option("strict", help=field_help(_C, "encoding_errors")),
    max_documents: int = typer.Option(None, help=field_help(_C, "max_documents")),
    max_bytes: int = typer.Option(None, help=field_help(_C, "max_bytes")),
) -> None:
    """Fertility, tokens per character, bytes per token, UNK rate and character coverage per script."""
    from vocabshift.tokenization.stats import corpus_stats, render_stats_table

    cfg = corpus_config(list(corpus) + list(more_corpus or []), text_field=text_field,
                        encoding_errors=encoding_errors, max_documents=max_documents, max_bytes=max_bytes)
    results = corpus_stats(tokenizer, cfg)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        render_stats_table(results)
