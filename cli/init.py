"""``vocabshift init``: initialize the embeddings of a target vocabulary with one registered method."""

from __future__ import annotations

from typing import Any

import typer
import yaml

from vocabshift.errors import ConfigError
from vocabshift.init.config import InitConfig

from .options import ConfigOptions, config_options, corpus_config, field_default, field_help

# Where the flags depart from the fields' names and types; everything else is generated from InitConfig.
OPTIONS = ConfigOptions(
    InitConfig,
    required=False,  # --method, --model and --out are checked in the command: --list needs none of them
    paths=frozenset({"out"}),
    excluded={"corpus": "the --corpus paths", "options": "-o/--option key=value, repeatable"},
)


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
               "  extending a decoder, with target text: distill (as good as the source at step 0 on in-domain\n"
               "    text, 0.990x its bits per byte, and it keeps new tied rows from taking probability from the\n"
               "    source language); skip a short training run after it (60 steps made it 1.03-1.11x);\n"
               "    without text: fvt\n"
               "  replacing the vocabulary: distill at step 0 (0.963x the source on in-domain text with 42% fewer\n"
               "    tokens); ofa or factorized when you train after it (0.873x after 60 embeddings-only steps)\n"
               "  static vectors + a dictionary: wechsel, ofa, omp (omp behind on 300-d fastText vectors)\n"
               "    a factorized embedding: ofa, factorized\n"
               "  encoders: distill (1.043x the source at step 0 when extending MiniLM, pseudo-log-likelihood)\n")
    for m in list_init_methods():
        typer.echo(f"{m.name:<11} {m.description}")
        typer.echo(f"{'':<11} paper: {m.reference_url}; copies shared tokens by default: {m.copy_overlap}")
        for f in dataclasses.fields(m.config):
            default = field_default(f)
            default = "(required)" if default is dataclasses.MISSING else default
            typer.echo(f"{'':<11}   {f.name}={default}  {f.metadata.get('help', '')}")


@config_options(OPTIONS)
def init(
    corpus: list[str] = typer.Option(None, "--corpus", help=field_help(InitConfig, "corpus") + " Several paths "
                                     "may follow."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More --corpus paths."),
    option: list[str] = typer.Option(None, "--option", "-o", help="A method option as key=value (repeatable), "
                                     "e.g. -o top_k=10 -o temperature=0.1; see --list."),
    list_methods: bool = typer.Option(False, "--list", help="List the init methods and their options, then exit."),
    *,
    given: dict[str, Any],
) -> None:
    """Give a model the target vocabulary, new rows from distill (AweDist), OMP, WECHSEL, FOCUS, OFA, FVT,
    factorized, mean or random."""
    if list_methods:
        _list_methods()
        return
    missing = [f"--{key}" for key in ("method", "model", "out") if not given.get(key)]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}")
    from vocabshift.init.apply import init_model

    paths = list(corpus or []) + list(more_corpus or [])
    cfg = InitConfig(**given, corpus=corpus_config(paths) if paths else None,
                     options=_parse_options(list(option or [])))
    result = init_model(cfg)
    report = result.report
    counts = report["matrices"]["input_embeddings"]["counts"]
    typer.echo(f"init {report['method']} ({report['mode']}): {report['source_vocab_size']:,} source -> "
               f"{report['target_vocab_size']:,} target tokens, {report['shared_tokens']:,} shared; rows: "
               + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + f"; {report['seconds']:.1f} s -> {result.out}")
