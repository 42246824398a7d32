"""``vocabshift vectors train`` and ``vocabshift vectors align``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from vocabshift.corpus import CorpusConfig
from vocabshift.vectors.config import VectorsAlignConfig, VectorsTrainConfig
from vocabshift.vectors.train import FOCUS_FASTTEXT

from .options import corpus_config, field_help

app = typer.Typer(help="Train fastText vectors and align two languages' vectors into one space.",
                  no_args_is_help=True)

_C = CorpusConfig
_T = VectorsTrainConfig
_A = VectorsAlignConfig
_WORD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(_T)}


def _two_defaults(name: str) -> str:
    # Parentheses, not brackets: typer's rich help reads "[...]" as markup and drops it.
    return f"{field_help(_T, name)} (default {_WORD_DEFAULTS[name]}; token-level, --tokenizer: {FOCUS_FASTTEXT[name]})"


@app.command("train")
def train(
    corpus: list[str] = typer.Option(..., "--corpus", help="Corpus files, directories or globs (.txt, .jsonl, "
                                     ".parquet, .arrow; .gz/.xz/.bz2/.zst), or datasets save_to_disk folders "
                                     "(DIR:SPLIT picks a split). Several may follow one --corpus."),
    out: Path = typer.Option(..., "--out", help=field_help(_T, "out")),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    dim: int = typer.Option(None, help=_two_defaults("dim")),
    epochs: int = typer.Option(None, help=_two_defaults("epochs")),
    min_count: int = typer.Option(5, help=field_help(_T, "min_count")),
    minn: int = typer.Option(3, help=field_help(_T, "minn")),
    maxn: int = typer.Option(6, help=field_help(_T, "maxn")),
    bucket: int = typer.Option(2_000_000, help=field_help(_T, "bucket")),
    window: int = typer.Option(5, help=field_help(_T, "window")),
    neg: int = typer.Option(None, help=_two_defaults("neg")),
    lr: float = typer.Option(0.05, help=field_help(_T, "lr")),
    model: str = typer.Option(None, help=_two_defaults("model")),
    tokenizer: str = typer.Option(None, "--tokenizer", help=field_help(_T, "tokenizer")),
    threads: int = typer.Option(None, help=field_help(_T, "threads")),
    seed: int = typer.Option(0, help=field_help(_T, "seed")),
    text_field: str = typer.Option("text", help=field_help(_C, "text_field")),
    encoding_errors: str = typer.Option("strict", help=field_help(_C, "encoding_errors")),
    max_bytes: int = typer.Option(None, help=field_help(_C, "max_bytes")),
    max_lines: int = typer.Option(None, help=field_help(_C, "max_lines")),
    max_documents: int = typer.Option(None, help=field_help(_C, "max_documents")),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=field_help(_T, "show_progress")),
    force: bool = typer.Option(False, "--force", help=field_help(_T, "force")),
) -> None:
    """Train fastText skipgram vectors with subword n-grams (a .bin that gives any word a vector).

    With --tokenizer: token-level vectors of that tokenizer's tokens (FOCUS's -o token_vectors=...).
    """
    from vocabshift.vectors import load_vectors, train_vectors

    # Unset options take the config's defaults (word vectors) or FOCUS's (token-level vectors).
    defaults = FOCUS_FASTTEXT if tokenizer else _WORD_DEFAULTS
    given = {"model": model, "dim": dim, "epochs": epochs, "neg": neg}
    chosen = {k: defaults[k] if v is None else v for k, v in given.items()}

    cfg = VectorsTrainConfig(
        corpus=corpus_config(list(corpus) + list(more_corpus or []), text_field=text_field,
                             encoding_errors=encoding_errors, max_bytes=max_bytes, max_lines=max_lines,
                             max_documents=max_documents),
        out=str(out), min_count=min_count, minn=minn, maxn=maxn, bucket=bucket, window=window, lr=lr,
        threads=threads, seed=seed, show_progress=progress, force=force, tokenizer=tokenizer, **chosen,
    )
    path = train_vectors(cfg)
    vectors = load_vectors(path)
    what = "tokens" if tokenizer else "words"
    typer.echo(f"wrote {path}: {len(vectors):,} {what}, dim {vectors.dim}"
               + (f", character {cfg.minn}-{cfg.maxn}-grams" if vectors.has_subwords else ""))


@app.command("align")
def align(
    source: str = typer.Option(..., "--source", help=field_help(_A, "source")),
    target: str = typer.Option(..., "--target", help=field_help(_A, "target")),
    out: Path = typer.Option(..., "--out", help=field_help(_A, "out")),
    dictionary: str = typer.Option(None, "--dictionary", help=field_help(_A, "dictionary")),
    refine: int = typer.Option(None, "--refine", help=field_help(_A, "refine")),
    held_out: float = typer.Option(0.2, help=field_help(_A, "held_out")),
    max_words: int = typer.Option(50_000, help=field_help(_A, "max_words")),
    refine_vocab: int = typer.Option(15_000, help=field_help(_A, "refine_vocab")),
    csls_k: int = typer.Option(10, help=field_help(_A, "csls_k")),
    seed: int = typer.Option(0, help=field_help(_A, "seed")),
    pre_aligned: bool = typer.Option(False, "--pre-aligned", help=field_help(_A, "pre_aligned")),
    device: str = typer.Option("cpu", help=field_help(_A, "device")),
    force: bool = typer.Option(False, "--force", help=field_help(_A, "force")),
) -> None:
    """Learn an orthogonal map from source to target vectors (Procrustes; CSLS refinement); report precision@1."""
    from vocabshift.vectors import align_vectors

    cfg = VectorsAlignConfig(source=source, target=target, out=str(out), dictionary=dictionary, refine=refine,
                             held_out=held_out, max_words=max_words, refine_vocab=refine_vocab, csls_k=csls_k,
                             seed=seed, pre_aligned=pre_aligned, device=device, force=force)
    report = align_vectors(cfg).report
    p = report["precision_at_1"]

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    seed_text = {"dictionary": f"{report['pairs_used']:,} dictionary pairs",
                 "identical_strings": f"{report['pairs_used']:,} identical strings"}.get(
        report["seed_kind"].removeprefix("pre_aligned+"), report["seed_kind"])
    line = (f"wrote {out}: {seed_text}, {report['refine_iterations']} refinement iteration(s); precision@1 "
            f"{fmt(p['before_refinement'])} -> {fmt(p['after_refinement'])} on {p['test_source_words']:,} "
            "held-out words")
    if report["seed_kind"].endswith("identical_strings"):
        line += " (identical strings: a weak proxy)"
    typer.echo(line)
