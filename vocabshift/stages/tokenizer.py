"""Stage ``tokenizer``: train the target tokenizer in the source model's family on the target text.

Skipped when the recipe gives ``tokenizer.path``, and when pruning (which cuts the source's own
vocabulary). See :mod:`vocabshift.tokenization.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.config import to_json_data
from vocabshift.stages.base import PlanContext, Stage, target_corpus

_SUMMARY = ("family", "vocab_size", "trainer", "documents", "bytes", "seconds")


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Train the tokenizer into ``out``."""
    from vocabshift.config import TokenizerTrainConfig
    from vocabshift.tokenization.train import train_tokenizer

    opts = ctx.config.tokenizer
    result = train_tokenizer(TokenizerTrainConfig(
        source=str(ctx.model_before(STAGE.name)), corpus=target_corpus(ctx.config, opts.max_bytes),
        vocab_size=opts.vocab_size, out=str(out), min_frequency=opts.min_frequency,
        character_coverage=opts.character_coverage, max_piece_length=opts.max_piece_length, show_progress=False))
    return {k: to_json_data(getattr(result, k)) for k in _SUMMARY}


STAGE = Stage(
    name="tokenizer",
    applies=lambda ctx: not ctx.config.tokenizer.path and ctx.config.vocabulary.mode != "prune",
    options=lambda ctx: {"tokenizer": ctx.config.tokenizer, "temperature": ctx.config.temperature,
                         "languages": ctx.config.languages},
    inputs=lambda ctx: ctx.target_files,
    upstream=lambda ctx: ["source"],
    run=run,
)
