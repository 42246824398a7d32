"""``vocabshift demo``: the embedded default run from the README."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("vocabshift-demo"), "--out", help="Output directory."),
    vocab_size: int = typer.Option(16_000, "--vocab-size", help="Target tokenizer size."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Train a Spanish tokenizer for SmolLM2-135M from shipped text and compare it on held-out text."""
    from vocabshift.demo import run_demo
    from vocabshift.tokenization.stats import render_stats_table

    result = run_demo(out=out, vocab_size=vocab_size, force=force)
    typer.echo(f"target tokenizer: {result.tokenizer.out} ({result.tokenizer.vocab_size} tokens, "
               f"{result.tokenizer.seconds:.1f} s)")
    render_stats_table(result.stats)
