"""Stage ``init``: new embedding rows for the target vocabulary with the recipe's init method.

Every mode but prune has it. What the method ``requires`` (the init registry's ``REQUIRES_*``) decides
what it is given: aligned vectors, the target text, or the source model as a teacher. See
:mod:`vocabshift.init.apply`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.stages.base import PlanContext, Stage, target_corpus
from vocabshift.stages.vectors import vectors_path

# vocabshift.init imports torch: the REQUIRES_* names are imported where used, so that importing the
# pipeline (`vocabshift --help`, loading a recipe) stays light.


def inputs(ctx: PlanContext) -> list[str]:
    """The target text, for methods that read it (token-level vectors, a teacher)."""
    from vocabshift.init.base import REQUIRES_TARGET_TOKEN, REQUIRES_TEACHER

    return ctx.target_files if ctx.init_method.requires & {REQUIRES_TARGET_TOKEN, REQUIRES_TEACHER} else []


def _method_inputs(ctx: PlanContext) -> dict[str, Any]:
    """The InitConfig arguments that depend on what the method requires."""
    from vocabshift.init.base import REQUIRES_ALIGNED, REQUIRES_TARGET_TOKEN, REQUIRES_TEACHER

    config, requires = ctx.config, ctx.init_method.requires
    kwargs: dict[str, Any] = {}
    if "align" in ctx.plans:
        kwargs["alignment"] = str(ctx.plans["align"].output)
    elif REQUIRES_ALIGNED in requires:
        kwargs.update(source_vectors=str(vectors_path(ctx, "source")),
                      target_vectors=str(vectors_path(ctx, "target")), aligned=True)
    if REQUIRES_TARGET_TOKEN in requires:
        kwargs["corpus"] = target_corpus(config)
    if REQUIRES_TEACHER in requires:  # the source model on target text, held-out documents left out
        kwargs.update(corpus=target_corpus(config), skip_documents=config.eval_documents)
    return kwargs


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Initialize the new embeddings and write the model into ``out``."""
    from vocabshift.init.apply import InitConfig, init_model

    config, voc, opts = ctx.config, ctx.config.vocabulary, ctx.config.init
    # after extension the vocabulary stage's folder holds the merged tokenizer
    tokenizer = None if "vocabulary" in ctx.plans else str(ctx.target_tokenizer)
    result = init_model(InitConfig(method=opts.method, model=str(ctx.model_before(STAGE.name)),
                                   tokenizer=tokenizer, out=str(out), options=dict(opts.options),
                                   copy_overlap=opts.copy_overlap,
                                   pad_to_multiple_of=voc.pad_to_multiple_of if voc.mode == "replace" else None,
                                   seed=config.seed, threads=1, **_method_inputs(ctx)))
    r = result.report
    return {"method": r["method"], "mode": r["mode"], "shared_tokens": r["shared_tokens"],
            "rows": r["matrices"]["input_embeddings"]["counts"], "seconds": r["seconds"]}


STAGE = Stage(
    name="init",
    applies=lambda ctx: ctx.config.vocabulary.mode != "prune",
    options=lambda ctx: {"init": ctx.config.init, "mode": ctx.config.vocabulary.mode},
    inputs=inputs,
    upstream=lambda ctx: ["source", "tokenizer", "vocabulary", "vectors-source", "vectors-target", "align"],
    run=run,
    makes_model=True,
)
