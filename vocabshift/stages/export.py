"""Stage ``export``: the trained run becomes a plain Hugging Face checkpoint (LoRA merged).

Only after a train stage. See :mod:`vocabshift.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.config import to_json_data
from vocabshift.stages.base import PlanContext, Stage


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Export the train stage's run into ``out``."""
    from vocabshift.export import ExportConfig, export

    opts = ctx.config.export
    result = export(ExportConfig(run=str(ctx.plans["train"].output), out=str(out), save_adapter=opts.save_adapter,
                                 dtype=opts.dtype))
    return {"verify": to_json_data(result.report.get("verify"))}


STAGE = Stage(
    name="export",
    applies=lambda ctx: ctx.config.training is not None,
    options=lambda ctx: {"export": ctx.config.export},
    inputs=lambda ctx: [],
    upstream=lambda ctx: ["train"],
    run=run,
    makes_model=True,
)
