"""Stage ``eval``: score the source and the adapted model on the same held-out bytes; write the report.

Only when the recipe has an ``eval`` section. The held-out documents are the first ``eval_documents`` of
the target text (the train stage leaves them out); the first as many of every ``eval.extra_corpora``
entry and of the source-language text are scored too. The report also gathers the summaries of the
other stages and the training curves. See :mod:`vocabshift.eval`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocabshift.config import to_dict, to_dict_as_given
from vocabshift.stages.base import STAGE_FILE, PlanContext, Stage, target_corpus
from vocabshift.stages.train import METRICS_FILE

if TYPE_CHECKING:
    from vocabshift.pipeline import AdaptConfig

LM_EVAL_TASK_DIR = "lm-eval-task"  # in the eval stage's output: the held-out documents as an lm-eval task


def extra_corpora(config: AdaptConfig) -> dict[str, list[str]]:
    """``eval.extra_corpora`` (name -> paths; none without an eval section)."""
    return dict(config.eval.extra_corpora) if config.eval is not None else {}


def inputs(ctx: PlanContext) -> list[str]:
    """The target text, every extra corpus and the source-language text."""
    config = ctx.config
    return [*ctx.target_files, *(p for specs in extra_corpora(config).values() for p in specs),
            *(config.source_language.corpus if config.source_language is not None else [])]


def upstream(ctx: PlanContext) -> list[str]:
    """The stage whose model it scores (export, or init / vocabulary when nothing is trained)."""
    plan = ctx.model_plan(before=STAGE.name)
    return [plan.name] if plan is not None else []


def _stage_summaries(ctx: PlanContext) -> dict[str, Any]:
    """The summary every other finished stage recorded in its ``stage.json``."""
    return {s.name: json.loads((s.directory / STAGE_FILE).read_text()).get("summary")
            for s in ctx.plans.values() if s.name != STAGE.name and (s.directory / STAGE_FILE).exists()}


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Evaluate into ``out`` and write ``report.md`` there."""
    from vocabshift.eval import EvalConfig, evaluate_model, write_report

    config = ctx.config
    # The held-out documents; each extra corpus and the source-language text are read with the same caps,
    # so their first eval_documents documents are scored too.
    corpus = dataclasses.replace(target_corpus(config), max_documents=config.eval_documents)
    source = list(config.source_language.corpus) if config.source_language is not None else []
    result = evaluate_model(EvalConfig.from_dict({
        **to_dict_as_given(config.eval), "model": str(ctx.model_before(STAGE.name)), "baseline": str(ctx.source_model),
        "corpus": to_dict(corpus), "corpus_name": "heldout", "source_corpus": source or None,
        "lm_eval_task": str(out / LM_EVAL_TASK_DIR)}))
    out.mkdir(parents=True, exist_ok=True)  # the lm-eval task is already in it
    train = ctx.plans.get("train")
    metrics = train.output / METRICS_FILE if train is not None else None
    report = write_report(result, out, metrics_jsonl=metrics if metrics and metrics.exists() else None,
                          extra=_stage_summaries(ctx))
    return {"report": str(report)}


STAGE = Stage(
    name="eval",
    applies=lambda ctx: ctx.config.eval is not None,
    # as given, not with every default: the keys of runs from before the section was typed stay the same
    options=lambda ctx: {"eval": to_dict_as_given(ctx.config.eval), "eval_documents": ctx.config.eval_documents},
    inputs=inputs,
    upstream=upstream,
    run=run,
)
