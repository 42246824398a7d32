"""Stage ``align``: map the source and target vectors into one space (Procrustes, CSLS refinement).

Only when the init method needs aligned vectors and the recipe does not say they already share one
space (``vectors.aligned``). See :mod:`vocabshift.vectors.align`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.config import to_dict
from vocabshift.stages.base import PlanContext, Stage
from vocabshift.stages.vectors import SIDES, needs_vectors, vectors_path


def inputs(ctx: PlanContext) -> list[str]:
    """The vector files the recipe gives (trained ones are keyed through upstream), and the dictionary."""
    vectors = ctx.config.vectors
    files = [str(vectors_path(ctx, side)) for side in SIDES if getattr(vectors, side).path]
    if vectors.dictionary:
        files.append(vectors.dictionary)
    return files


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Align the two vector files into ``out``."""
    from vocabshift.vectors import VectorsAlignConfig, align_vectors

    config = ctx.config
    kwargs: dict[str, Any] = {"refine": config.vectors.refine} if config.vectors.refine is not None else {}
    result = align_vectors(VectorsAlignConfig(source=str(vectors_path(ctx, "source")),
                                              target=str(vectors_path(ctx, "target")),
                                              dictionary=config.vectors.dictionary, out=str(out),
                                              seed=config.seed, **kwargs))
    report = to_dict(result.report)
    p1 = report.get("precision_at_1") or {}
    return {"seed": report.get("seed_kind"), "pairs": report.get("pairs_used"),
            "refinement_iterations": report.get("refine_iterations"),
            "p@1_before": p1.get("before_refinement"), "p@1_after": p1.get("after_refinement"),
            "evaluated_on": (p1.get("evaluated_on") or "")[:60], "seconds": report.get("seconds")}


STAGE = Stage(
    name="align",
    applies=lambda ctx: needs_vectors(ctx) and not ctx.config.vectors.aligned,
    options=lambda ctx: {"dictionary": ctx.config.vectors.dictionary, "refine": ctx.config.vectors.refine},
    inputs=inputs,
    upstream=lambda ctx: [f"vectors-{side}" for side in SIDES],
    run=run,
)
