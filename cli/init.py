"""``vocabshift init``: initialize the embeddings of a target vocabulary with one registered method."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from vocabshift.errors import ConfigError
from vocabshift.init.apply import InitConfig

from .options import corpus_config, field_help

_C = InitConfig


def _parse_options(items: list[str]) -> dict:
    """``key=value`` pairs; values are read as YAML scalars (10 -> int, 0.1 -> float, true -> bool)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects key=value, got {item!r}")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return options


def _list_methods() -> None:
    import dataclasses

    from vocabshift.init.registry import list_init_methods

    typer.echo("Which method when (measured, docs/init.md and docs/benchmarks.md):\n"
               "  extending a decoder, with target text: distill (closest to the source at step 0, and it keeps\n"
               "    new tied rows from taking probability from the source language); without text: fvt\n"
               "  replacing the vocabulary: fvt or focus (distill and omp not yet measured there)\n"
               "  static vectors + a dictionary: omp, wechsel, ofa; a factorized embedding: ofa, factorized\n")
    for m in list_init_methods():
        typer.echo(f"{m.name:<11} {m.description}")
        typer.echo(f"{'':<11} paper: {m.reference_url}; copies shared tokens by default: {m.copy_overlap}")
        for f in dataclasses.fields(m.config):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            typer.echo(f"{'':<11}   {f.name}={default}  {f.metadata.get('help', '')}")


def init(
    method: str = typer.Option(None, "--method", help=field_help(_C, "method")),
    model: str = typer.Option(None, "--model", help=field_help(_C, "model")),
    out: Path = typer.Option(None, "--out", help=field_help(_C, "out")),
    tokenizer: str = typer.Option(None, "--tokenizer", help=field_help(_C, "tokenizer")),
    source_vectors: str = typer.Option(None, "--source-vectors", help=field_help(_C, "source_vectors")),
    target_vectors: str = typer.Option(None, "--target-vectors", help=field_help(_C, "target_vectors")),
    dictionary: str = typer.Option(None, "--dictionary", help=field_help(_C, "dictionary")),
    aligned: bool = typer.Option(False, "--aligned", help=field_help(_C, "aligned")),
    alignment: str = typer.Option(None, "--alignment", help=field_help(_C, "alignment")),
    corpus: list[str] = typer.Option(None, "--corpus", help=field_help(_C, "corpus") + " Several paths may follow."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More --corpus paths."),
    skip_documents: int = typer.Option(0, "--skip-documents", help=field_help(_C, "skip_documents")),
    option: list[str] = typer.Option(None, "--option", "-o", help="A method option as key=value (repeatable), "
                                     "e.g. -o top_k=10 -o temperature=0.1; see --list."),
    copy_overlap: bool = typer.Option(None, "--copy-overlap/--no-copy-overlap", help=field_help(_C, "copy_overlap")),
    pad_to_multiple_of: int = typer.Option(None, "--pad-to-multiple-of", help=field_help(_C, "pad_to_multiple_of")),
    seed: int = typer.Option(0, "--seed", help=field_help(_C, "seed")),
    device: str = typer.Option("auto", "--device", help=field_help(_C, "device")),
    chunk_size: int = typer.Option(4096, "--chunk-size", help=field_help(_C, "chunk_size")),
    threads: int = typer.Option(None, "--threads", help=field_help(_C, "threads")),
    in_memory: bool = typer.Option(False, "--in-memory", help=field_help(_C, "in_memory")),
    force: bool = typer.Option(False, "--force", help=field_help(_C, "force")),
    list_methods: bool = typer.Option(False, "--list", help="List the init methods and their options, then exit."),
) -> None:
    """Give a model the target vocabulary, new rows from distill (AweDist), OMP, WECHSEL, FOCUS, OFA, FVT,
    factorized, mean or random."""
    if list_methods:
        _list_methods()
        return
    missing = [flag for flag, value in (("--method", method), ("--model", model), ("--out", out)) if not value]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}")
    from vocabshift.init.apply import init_model

    paths = list(corpus or []) + list(more_corpus or [])
    cfg = InitConfig(method=method, model=model, out=str(out), tokenizer=tokenizer, source_vectors=source_vectors,
                     target_vectors=target_vectors, dictionary=dictionary, aligned=aligned, alignment=alignment,
                     corpus=corpus_config(paths) if paths else None, skip_documents=skip_documents, options=_parse_options(list(option or [])),
                     copy_overlap=copy_overlap, pad_to_multiple_of=pad_to_multiple_of, seed=seed, device=device,
                     chunk_size=chunk_size, threads=threads, in_memory=in_memory, force=force)
    result = init_model(cfg)
    report = result.report
    counts = report["matrices"]["input_embeddings"]["counts"]
    typer.echo(f"init {report['method']} ({report['mode']}): {report['source_vocab_size']:,} source -> "
               f"{report['target_vocab_size']:,} target tokens, {report['shared_tokens']:,} shared; rows: "
               + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + f"; {report['seconds']:.1f} s -> {result.out}")
