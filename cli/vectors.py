"""``vocabshift vectors train`` and ``vocabshift vectors align``."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from vocabshift.vectors.config import FOCUS_FASTTEXT, VectorsAlignConfig, VectorsTrainConfig

from .options import ConfigOptions, as_tree, config_options, corpus_config, corpus_section, field_default

app = typer.Typer(help="Train fastText vectors and align two languages' vectors into one space.",
                  no_args_is_help=True)

_WORD_DEFAULTS = {f.name: field_default(f) for f in dataclasses.fields(VectorsTrainConfig)}

# Where the flags depart from the fields' names and types; everything else is generated from the configs.
TRAIN_OPTIONS = (
    ConfigOptions(
        VectorsTrainConfig,
        paths=frozenset({"out"}),
        flags={"show_progress": "--progress/--no-progress"},
        # unset, these take FOCUS's values for token-level vectors (--tokenizer)
        notes={name: f"Token-level (--tokenizer): {value}." for name, value in FOCUS_FASTTEXT.items()
               if value != _WORD_DEFAULTS[name]},
        excluded={"corpus": "the --corpus paths, read with the corpus flags below"},
    ),
    corpus_section(),
)
ALIGN_OPTIONS = ConfigOptions(VectorsAlignConfig, paths=frozenset({"out"}))


@app.command("train")
@config_options(*TRAIN_OPTIONS)
def train(
    corpus: list[str] = typer.Option(..., "--corpus", help="Corpus files, directories or globs (.txt, .jsonl, "
                                     ".parquet, .arrow; .gz/.xz/.bz2/.zst), or datasets save_to_disk folders "
                                     "(DIR:SPLIT picks a split). Several may follow one --corpus."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    *,
    given: dict[str, Any],
) -> None:
    """Train fastText skipgram vectors with subword n-grams (a .bin that gives any word a vector).

    With --tokenizer: token-level vectors of that tokenizer's tokens (FOCUS's -o token_vectors=...).
    """
    from vocabshift.vectors import load_vectors, train_vectors

    settings = as_tree(given)
    reading = settings.pop("corpus", {})
    # Unset options take the config's defaults (word vectors) or FOCUS's (token-level vectors).
    focus = FOCUS_FASTTEXT if settings.get("tokenizer") else {}
    cfg = VectorsTrainConfig(**{**focus, **settings},
                             corpus=corpus_config(list(corpus) + list(more_corpus or []), **reading))
    path = train_vectors(cfg)
    vectors = load_vectors(path)
    what = "tokens" if cfg.tokenizer else "words"
    typer.echo(f"wrote {path}: {len(vectors):,} {what}, dim {vectors.dim}"
               + (f", character {cfg.minn}-{cfg.maxn}-grams" if vectors.has_subwords else ""))


@app.command("align")
@config_options(ALIGN_OPTIONS)
def align(*, given: dict[str, Any]) -> None:
    """Learn an orthogonal map from source to target vectors (Procrustes; CSLS refinement); report precision@1."""
    from vocabshift.vectors import align_vectors

    cfg = VectorsAlignConfig(**given)
    report = align_vectors(cfg).report
    p = report["precision_at_1"]

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    seed_text = {"dictionary": f"{report['pairs_used']:,} dictionary pairs",
                 "identical_strings": f"{report['pairs_used']:,} identical strings"}.get(
        report["seed_kind"].removeprefix("pre_aligned+"), report["seed_kind"])
    line = (f"wrote {cfg.out}: {seed_text}, {report['refine_iterations']} refinement iteration(s); precision@1 "
            f"{fmt(p['before_refinement'])} -> {fmt(p['after_refinement'])} on {p['test_source_words']:,} "
            "held-out words")
    if report["seed_kind"].endswith("identical_strings"):
        line += " (identical strings: a weak proxy)"
    typer.echo(line)
