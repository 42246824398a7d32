"""Stage ``vocabulary``: extend the source vocabulary with the target tokenizer's tokens, or prune it.

Only for ``vocabulary.mode`` extend or prune (replace needs no surgery before init). Writes a model folder
with its tokenizer and id map. See :mod:`vocabshift.vocabulary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.stages.base import PlanContext, Stage, source_corpus, target_corpus


def inputs(ctx: PlanContext) -> list[str]:
    """Prune reads the target text for ``min_count``; extend reads the source text it protects."""
    config, voc = ctx.config, ctx.config.vocabulary
    files = ctx.target_files if voc.mode == "prune" and voc.min_count else []
    if voc.mode == "extend" and voc.protect_source_text and config.source_language:
        files = list(config.source_language.corpus)
    return files


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Extend or prune the source model into ``out``."""
    from vocabshift.vocabulary import ExtendConfig, PruneConfig, extend, prune

    config, voc = ctx.config, ctx.config.vocabulary
    model = str(ctx.model_before(STAGE.name))
    if voc.mode == "extend":
        protect = source_corpus(config) if voc.protect_source_text else None
        result = extend(ExtendConfig(model=model, tokenizer=str(ctx.target_tokenizer), out=str(out),
                                     max_new=voc.max_new, protect_corpus=protect,
                                     pad_to_multiple_of=voc.pad_to_multiple_of))
    else:
        scripts = voc.keep_scripts or sorted({s for lang in config.languages for s in (lang.scripts or [])})
        keep_corpus = target_corpus(config) if voc.min_count else None
        result = prune(PruneConfig(model=model, out=str(out), keep_scripts=scripts or None,
                                   keep_corpus=keep_corpus, min_count=voc.min_count or 1,
                                   pad_to_multiple_of=voc.pad_to_multiple_of))
    return {"mode": voc.mode, "source_vocab_size": result.report["source_vocab_size"],
            "vocab_size": result.report["vocab_size"], "model": result.report.get("model")}


STAGE = Stage(
    name="vocabulary",
    applies=lambda ctx: ctx.config.vocabulary.mode in ("extend", "prune"),
    options=lambda ctx: {"vocabulary": ctx.config.vocabulary,
                         "languages": ctx.config.languages if ctx.config.vocabulary.min_count else None},
    inputs=inputs,
    # extend merges the target tokenizer in; prune cuts the source's own vocabulary
    upstream=lambda ctx: ["source", "tokenizer"] if ctx.config.vocabulary.mode == "extend" else ["source"],
    run=run,
    makes_model=True,
)
