"""The stages of ``vocabshift adapt``, one module each, listed in one table (:mod:`.registry`).

Each module declares its :class:`~.base.Stage`: its name, whether a recipe has it, the options and input
files its cache key hashes, the stages upstream of it, and ``run(ctx, out)``. :func:`plan_stages` walks
the table and keys every stage that applies; :func:`vocabshift.pipeline.adapt` runs the plans.
docs/architecture.md tells how to add a stage.
"""

from vocabshift.stages.base import STAGE_FILE, PlanContext, Stage, StagePlan, fingerprint, stage_key
from vocabshift.stages.registry import REGISTERED_STAGES, STAGES, plan_stages

__all__ = ["REGISTERED_STAGES", "STAGES", "STAGE_FILE", "PlanContext", "Stage", "StagePlan", "fingerprint",
           "plan_stages", "stage_key"]
