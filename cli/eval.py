"""``vocabshift eval``: compare an adapted model with its baseline; the flags are generated from :class:`EvalConfig`."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from vocabshift.eval.config import EvalConfig

from .options import ConfigOptions, as_tree, config_options, corpus_config, corpus_section

# Where the flags depart from the fields' names and types; everything else is generated from EvalConfig.
OPTIONS = (
    ConfigOptions(
        EvalConfig,
        flags={"metrics_jsonl": "--metrics"},
        paths=frozenset({"out", "lm_eval_task"}),
        excluded={"corpus": "the --corpus paths, read with the corpus flags below",
                  "corpus_name": "NAME of --corpus NAME=PATH (the first corpus)",
                  "extra_corpora": "--corpus NAME=PATH after the first"},
    ),
    corpus_section("text_field", "encoding_errors"),  # eval's own max_documents caps every corpus
)


@contextlib.contextmanager
def _quiet_logs(enabled: bool) -> Iterator[None]:
    """With ``--json`` stdout carries only JSON: info logs (printed by rich on stdout) are held back."""
    logger = logging.getLogger("vocabshift")
    level = logger.level
    if enabled:
        logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@config_options(*OPTIONS)
def eval(  # noqa: A001  (the subcommand is called eval)
    corpus: list[str] = typer.Option(..., "--corpus", help="Held-out text: files, directories or globs (.txt, "
                                     ".jsonl, .parquet, .arrow; .gz/.xz/.bz2/.zst), or datasets save_to_disk "
                                     "folders (DIR:SPLIT). Several may follow one --corpus. "
                                     "NAME=PATH (repeatable) scores one more named corpus each (e.g. --corpus "
                                     "bible=heldout.txt --corpus udhr=udhr.spa.txt); the first is the main one."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON on stdout."),
    *,
    given: dict[str, Any],
) -> None:
    """Fertility and coverage per script, held-out bits per byte (per document, with intervals), size, speed and
    nearest source tokens."""
    from vocabshift.eval.corpora import parse_corpus_specs
    from vocabshift.eval.evaluate import evaluate_model
    from vocabshift.eval.report import render_summary

    specs = parse_corpus_specs(list(corpus) + list(more_corpus or []))
    settings = as_tree(given)
    reading = settings.pop("corpus", {})
    cfg = EvalConfig(**settings, corpus=corpus_config(specs.paths, **reading), corpus_name=specs.name,
                     extra_corpora=specs.extra)
    with _quiet_logs(as_json):
        result = evaluate_model(cfg)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_summary(result)
        if cfg.out is not None:
            typer.echo(f"wrote the report to {Path(cfg.out) / 'report.md'}")
