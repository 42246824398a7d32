"""``vocabshift tokenizer train`` and ``vocabshift tokenizer stats``."""

from __future__ import annotations

import json
from typing import Any

import typer

from vocabshift.config import TokenizerTrainConfig

from .options import CORPUS_READING, ConfigOptions, as_tree, config_options, corpus_config, corpus_section

app = typer.Typer(help="Train target-language tokenizers and compare tokenizers on text.", no_args_is_help=True)

# Where the flags depart from the fields' names and types; everything else is generated from the configs.
TRAIN_OPTIONS = (
    ConfigOptions(
        TokenizerTrainConfig,
        paths=frozenset({"out"}),
        flags={"show_progress": "--progress/--no-progress"},
        excluded={"corpus": "the --corpus paths, read with the corpus flags below"},
    ),
    corpus_section(*CORPUS_READING, "shuffle", "seed", "temperature", flags={"shuffle": "--shuffle/--no-shuffle"},
                   notes={"temperature": "Given, each --corpus path is a source of its own, mixed by it (XLM-R's "
                                         "sampling); unset, the paths are read in order as one stream."}),
)
_CORPUS_HELP = ("Corpus files, directories or globs (.txt, .jsonl, .parquet, .arrow; .gz/.xz/.bz2/.zst), or "
                "datasets save_to_disk folders (DIR:SPLIT picks a split). Several may follow one --corpus.")


@app.command("train")
@config_options(*TRAIN_OPTIONS)
def train(
    corpus: list[str] = typer.Option(..., "--corpus", help=_CORPUS_HELP),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    *,
    given: dict[str, Any],
) -> None:
    """Train a tokenizer for the target language(s) in the source tokenizer's own family."""
    from vocabshift.tokenization.train import train_tokenizer

    settings = as_tree(given)
    reading = settings.pop("corpus", {})
    cfg = TokenizerTrainConfig(**settings, corpus=corpus_config(list(corpus) + list(more_corpus or []), **reading))
    result = train_tokenizer(cfg)
    typer.echo(f"wrote {result.family.value} tokenizer with {result.vocab_size} tokens to {result.out} "
               f"({result.documents} documents, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s)")


@app.command("stats")
@config_options(corpus_section("text_field", "encoding_errors", "max_documents", "max_bytes"))
def stats(
    tokenizer: list[str] = typer.Option(..., "--tokenizer", help="Tokenizer directory (repeat to compare)."),
    corpus: list[str] = typer.Option(..., "--corpus", help="Text to measure on (same formats as training)."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    *,
    given: dict[str, Any],
) -> None:
    """Fertility, tokens per character, bytes per token, UNK rate and character coverage per script."""
    from vocabshift.tokenization.stats import corpus_stats, render_stats_table

    cfg = corpus_config(list(corpus) + list(more_corpus or []), **as_tree(given).get("corpus", {}))
    results = corpus_stats(tokenizer, cfg)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        render_stats_table(results)
