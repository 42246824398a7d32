"""Stages ``vectors-source`` and ``vectors-target``: fastText vectors of each language, trained here.

Only for init methods that need aligned static vectors (``REQUIRES_ALIGNED``: wechsel, ofa, omp), and only
for a side whose vectors the recipe does not give as a file. See :mod:`vocabshift.vectors.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.stages.base import PlanContext, Stage, source_corpus, target_corpus

SIDES = ("source", "target")
VECTORS_FILE = "vectors.bin"  # in the stage's output directory


def needs_vectors(ctx: PlanContext) -> bool:
    """Does the init stage need aligned static vectors? (Pruning has no init stage.)"""
    from vocabshift.init.base import REQUIRES_ALIGNED

    # the method is looked up first, so an unknown one is named even when pruning
    return REQUIRES_ALIGNED in ctx.init_method.requires and ctx.config.vocabulary.mode != "prune"


def vectors_path(ctx: PlanContext, side: str) -> Path:
    """The vectors of ``side``: the recipe's file, or what the ``vectors-<side>`` stage trains."""
    given = getattr(ctx.config.vectors, side).path
    return Path(given) if given else ctx.plans[f"vectors-{side}"].output / VECTORS_FILE


def _inputs(ctx: PlanContext, side: str) -> list[str]:
    if side == "source" and ctx.config.source_language:
        return list(ctx.config.source_language.corpus)
    return ctx.target_files


def _run(side: str, ctx: PlanContext, out: Path) -> dict[str, Any]:
    from vocabshift.vectors import VectorsTrainConfig, train_vectors

    config, spec = ctx.config, getattr(ctx.config.vectors, side)
    corpus = source_corpus(config, spec.max_bytes) if side == "source" else target_corpus(config, spec.max_bytes)
    out.mkdir(parents=True)
    path = train_vectors(VectorsTrainConfig(corpus=corpus, out=str(out / VECTORS_FILE), dim=spec.dim,
                                            epochs=spec.epochs, min_count=spec.min_count,
                                            seed=config.seed, threads=1, show_progress=False))
    return {"vectors": str(path)}


def _stage(side: str) -> Stage:
    return Stage(
        name=f"vectors-{side}",
        applies=lambda ctx: needs_vectors(ctx) and not getattr(ctx.config.vectors, side).path,
        options=lambda ctx: {"vectors": getattr(ctx.config.vectors, side),
                             "languages": ctx.config.languages if side == "target" else None},
        inputs=lambda ctx: _inputs(ctx, side),
        upstream=lambda ctx: [],
        run=lambda ctx, out: _run(side, ctx, out),
    )


SOURCE_STAGE = _stage("source")
TARGET_STAGE = _stage("target")
STAGES = (SOURCE_STAGE, TARGET_STAGE)
