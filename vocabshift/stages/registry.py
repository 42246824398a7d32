"""The table of pipeline stages, in the order a run executes them, and the loop that plans a run.

Add a stage by writing a module that declares ``STAGE = Stage(...)`` and listing it in :data:`STAGES`;
:func:`plan_stages` plans every stage of the table that ``applies`` to the recipe, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vocabshift.stages import align, export, init, source, tokenizer, train, vectors, vocabulary
from vocabshift.stages import eval as eval_stage
from vocabshift.stages.base import PlanContext, Stage, StagePlan, plan_stage

if TYPE_CHECKING:
    from vocabshift.pipeline import AdaptConfig

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def _table(stages: Iterable[Stage]) -> dict[str, Stage]:
    """Name -> stage, refusing a duplicate name or one that is not lowercase ``[a-z][a-z0-9-]*``."""
    table: dict[str, Stage] = {}
    for stage in stages:
        if not _NAME.match(stage.name):
            raise ValueError(f"stage name {stage.name!r} must be lowercase letters, digits and '-'")
        if stage.name in table:
            raise ValueError(f"stage {stage.name!r} is listed twice")
        table[stage.name] = stage
    return table


STAGES: tuple[Stage, ...] = (
    source.STAGE,
    tokenizer.STAGE,
    vocabulary.STAGE,
    vectors.SOURCE_STAGE,
    vectors.TARGET_STAGE,
    align.STAGE,
    init.STAGE,
    train.STAGE,
    export.STAGE,
    eval_stage.STAGE,
)
REGISTERED_STAGES: dict[str, Stage] = _table(STAGES)


def plan_stages(config: AdaptConfig, run_dir: Path, resume: bool = False) -> list[StagePlan]:
    """The stages of ``config`` in order, each with its key and output directory (nothing is run)."""
    ctx = PlanContext(config=config, run_dir=run_dir, resume=resume)
    for stage in _table(STAGES).values():
        if stage.applies(ctx):
            plan_stage(ctx, stage)
    return list(ctx.plans.values())
