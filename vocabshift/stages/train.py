"""Stage ``train``: continued pretraining of the initialized model on the target text (LoRA + embeddings).

Only when the recipe has a ``training`` section. Its output is the training run directory (checkpoints,
``metrics.jsonl``), and ``adapt(resume=True)`` continues it from its last checkpoint. See
:mod:`vocabshift.train.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.config import to_dict, to_dict_as_given, to_json_data
from vocabshift.stages.base import PlanContext, Stage, target_corpus

RUN_DIR = "run"  # the stage's output: a `vocabshift train` run directory
METRICS_FILE = "metrics.jsonl"  # in the run directory, read by the eval stage's report


def upstream(ctx: PlanContext) -> list[str]:
    """The stage whose model it trains (init, or vocabulary when pruning)."""
    plan = ctx.model_plan(before=STAGE.name)
    return [plan.name] if plan is not None else []


def settings(ctx: PlanContext) -> dict[str, Any]:
    """The recipe's training section as given, its seeds and held-out documents defaulting to the recipe's."""
    config = ctx.config
    assert config.training is not None
    training = to_dict_as_given(config.training)
    data = {"eval_documents": config.eval_documents, "seed": config.seed, **training.get("data", {})}
    return {"seed": config.seed, **training, "data": data}


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Train into ``out``, continuing a partial run there when resuming."""
    from vocabshift.train.config import TrainConfig
    from vocabshift.train.loop import train

    resuming = ctx.resume and (out / "run.json").exists()
    cfg = TrainConfig.from_dict({**settings(ctx), "model": str(ctx.model_before(STAGE.name)),
                                 "corpus": to_dict(target_corpus(ctx.config)), "out": str(out),
                                 "resume": resuming, "force": out.exists() and not resuming})
    result = train(cfg)
    return {"steps": result.step, "tokens": result.tokens, "status": result.status,
            "metrics": to_json_data(result.metrics)}


STAGE = Stage(
    name="train",
    applies=lambda ctx: ctx.config.training is not None,
    # as given, not with every default: the keys of runs from before the section was typed stay the same
    options=lambda ctx: {"training": to_dict_as_given(ctx.config.training), "languages": ctx.config.languages,
                         "eval_documents": ctx.config.eval_documents},
    inputs=lambda ctx: ctx.target_files,
    upstream=upstream,
    run=run,
    output_name=RUN_DIR,
    resumable=True,
)
