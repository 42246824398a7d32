"""``vocabshift eval``: compare an adapted model with its baseline; every flag is an :class:`EvalConfig` field."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import typer

from vocabshift.corpus import CorpusConfig
from vocabshift.eval.config import EvalConfig

from .options import corpus_config, field_help

_E, _C = EvalConfig, CorpusConfig


def _h(name: str) -> str:
    f = next(f for f in dataclasses.fields(_E) if f.name == name)
    shown = "" if f.default is None or f.default is dataclasses.MISSING else f" [default: {f.default}]"
    return field_help(_E, name) + shown


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


def eval(  # noqa: A001  (the subcommand is called eval)
    model: str = typer.Option(..., "--model", help=field_help(_E, "model")),
    corpus: list[str] = typer.Option(..., "--corpus", help="Held-out text: files, directories or globs (.txt, "
                                     ".jsonl, .parquet, .arrow; .gz/.xz/.bz2/.zst), or datasets save_to_disk "
                                     "folders (DIR:SPLIT). Several may follow one --corpus. "
                                     "NAME=PATH (repeatable) scores one more named corpus each (e.g. --corpus "
                                     "bible=heldout.txt --corpus udhr=udhr.spa.txt); the first is the main one."),
    source_corpus: list[str] = typer.Option(None, "--source-corpus", help=field_help(_E, "source_corpus")),
    lm_eval_task: Path = typer.Option(None, "--lm-eval-task", help=field_help(_E, "lm_eval_task")),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    baseline: str = typer.Option(None, "--baseline", help=field_help(_E, "baseline")),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON on stdout."),
    out: Path = typer.Option(None, "--out", help=field_help(_E, "out")),
    force: bool = typer.Option(False, "--force", help=field_help(_E, "force")),
    objective: str = typer.Option("auto", "--objective", help=_h("objective")),
    protocol: str = typer.Option("document", "--protocol", help=_h("protocol")),
    seq_len: int = typer.Option(None, "--seq-len", help=_h("seq_len")),
    stride: int = typer.Option(None, "--stride", help=_h("stride")),
    max_documents: int = typer.Option(None, "--max-documents", help=_h("max_documents")),
    max_sequences: int = typer.Option(64, "--max-sequences", help=_h("max_sequences")),
    bootstrap: int = typer.Option(1000, "--bootstrap", help=_h("bootstrap")),
    batch_size: int = typer.Option(8, "--batch-size", help=_h("batch_size")),
    mlm_probability: float = typer.Option(0.15, "--mlm-probability", help=_h("mlm_probability")),
    speed_words: int = typer.Option(1000, "--speed-words", help=_h("speed_words")),
    speed_text: str = typer.Option(None, "--speed-text", help=_h("speed_text")),
    speed_warmup: int = typer.Option(1, "--speed-warmup", help=_h("speed_warmup")),
    speed_repeats: int = typer.Option(5, "--speed-repeats", help=_h("speed_repeats")),
    speed_max_repeats: int = typer.Option(30, "--speed-max-repeats", help=_h("speed_max_repeats")),
    speed_max_seconds: float = typer.Option(30.0, "--speed-max-seconds", help=_h("speed_max_seconds")),
    speed_tolerance: float = typer.Option(0.05, "--speed-tolerance", help=_h("speed_tolerance")),
    speed_new_tokens: int = typer.Option(32, "--speed-new-tokens", help=_h("speed_new_tokens")),
    neighbours: int = typer.Option(20, "--neighbours", help=_h("neighbours")),
    neighbours_k: int = typer.Option(5, "--neighbours-k", help=_h("neighbours_k")),
    seed: int = typer.Option(0, "--seed", help=_h("seed")),
    device: str = typer.Option("auto", "--device", help=_h("device")),
    dtype: str = typer.Option("float32", "--dtype", help=_h("dtype")),
    metrics_jsonl: str = typer.Option(None, "--metrics", help=_h("metrics_jsonl")),
    text_field: str = typer.Option("text", "--text-field", help=field_help(_C, "text_field")),
    encoding_errors: str = typer.Option("strict", "--encoding-errors", help=field_help(_C, "encoding_errors")),
) -> None:
    """Fertility and coverage per script, held-out bits per byte (per document, with intervals), size, speed and
    nearest source tokens."""
    from vocabshift.eval.corpora import parse_corpus_specs
    from vocabshift.eval.evaluate import evaluate_model
    from vocabshift.eval.report import render_summary

    specs = parse_corpus_specs(list(corpus) + list(more_corpus or []))
    cfg = EvalConfig(
        model=model, baseline=baseline,
        corpus=corpus_config(specs.paths, text_field=text_field, encoding_errors=encoding_errors),
        corpus_name=specs.name, extra_corpora=specs.extra, source_corpus=list(source_corpus or []) or None,
        lm_eval_task=None if lm_eval_task is None else str(lm_eval_task),
        objective=objective, protocol=protocol, seq_len=seq_len, stride=stride, max_documents=max_documents,
        max_sequences=max_sequences, bootstrap=bootstrap,
        batch_size=batch_size, mlm_probability=mlm_probability, speed_words=speed_words, speed_text=speed_text,
        speed_warmup=speed_warmup, speed_repeats=speed_repeats, speed_max_repeats=speed_max_repeats,
        speed_max_seconds=speed_max_seconds, speed_tolerance=speed_tolerance, speed_new_tokens=speed_new_tokens,
        neighbours=neighbours, neighbours_k=neighbours_k,
        seed=seed, device=device, dtype=dtype, metrics_jsonl=metrics_jsonl, out=None if out is None else str(out),
        force=force,
    )
    with _quiet_logs(as_json):
        result = evaluate_model(cfg)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_summary(result)
        if out is not None:
            typer.echo(f"wrote the report to {out / 'report.md'}")
