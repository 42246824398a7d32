"""What a pipeline stage is: a :class:`Stage` declaration, its :class:`StagePlan`, and the planning context.

A stage declares, as functions of the :class:`PlanContext`, whether the recipe has it (``applies``), the
options and input files it hashes, and the stages upstream of it whose keys it hashes; ``run`` writes its
output. The key of a stage is :func:`stage_key` of exactly those four things, so a change of any of them
(and only those) re-runs the stage and everything downstream.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocabshift.config import to_dict
from vocabshift.corpus import CorpusConfig, CorpusSource, is_datasets_folder, resolve_files

if TYPE_CHECKING:
    from vocabshift.init.registry import InitMethod
    from vocabshift.pipeline import AdaptConfig

STAGE_FILE = "stage.json"  # written into a stage's directory when it finishes: its key and summary


@dataclass(frozen=True)
class Stage:
    """One stage of ``vocabshift adapt``, declared by its module and listed in :data:`~.registry.STAGES`."""

    name: str  # also the middle of its directory name: ``NN-<name>-<key>``
    applies: Callable[[PlanContext], bool]  # does this recipe have the stage?
    options: Callable[[PlanContext], Any]  # recipe values it hashes (dataclasses and dicts)
    inputs: Callable[[PlanContext], list[str]]  # files it reads, hashed by size and mtime
    upstream: Callable[[PlanContext], list[str]]  # names of the stages it reads; those not planned are skipped
    run: Callable[[PlanContext, Path], dict[str, Any]]  # writes ``out``; returns a summary for stage.json
    output_name: str = "output"  # the name of ``out`` inside the stage directory
    makes_model: bool = False  # its output is a model folder that later stages (and the result) use
    resumable: bool = False  # ``adapt(resume=True)`` keeps its partial output


@dataclass
class StagePlan:
    """One stage of a run: what it hashes, where it writes, and how to run it."""

    name: str
    key: str
    directory: Path
    run: Callable[[Path], dict[str, Any]]  # writes ``directory / "output"``; returns a summary
    output: Path
    makes_model: bool = False
    resumable: bool = False

    @property
    def done(self) -> bool:
        marker = self.directory / STAGE_FILE
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("key") == self.key
        except (OSError, ValueError, AttributeError):
            return False  # missing, or not a finished stage's marker


@dataclass
class PlanContext:
    """The recipe, the run directory and the stages planned so far, by name, in order.

    Stages read what earlier stages produce through this object (``plans["train"].output``, the model a
    stage starts from) instead of through each other; their ``run`` gets the finished context.
    """

    config: AdaptConfig
    run_dir: Path
    resume: bool = False
    plans: dict[str, StagePlan] = field(default_factory=dict)

    @functools.cached_property
    def init_method(self) -> InitMethod:
        from vocabshift.init.registry import get_init_method

        return get_init_method(self.config.init.method)

    @property
    def target_files(self) -> list[str]:
        """Every corpus spec of every target language."""
        return [p for lang in self.config.languages for p in lang.corpus]

    @property
    def source_model(self) -> Path:
        """The source model as an HF folder: the source stage's conversion, or the recipe's folder."""
        return self.plans["source"].output if "source" in self.plans else Path(self.config.source)

    @property
    def target_tokenizer(self) -> Path:
        """The target tokenizer: given, trained by the tokenizer stage, or (pruning) the source's own."""
        if self.config.tokenizer.path:
            return Path(self.config.tokenizer.path)
        if self.config.vocabulary.mode == "prune":
            return self.source_model
        return self.plans["tokenizer"].output

    def model_plan(self, before: str | None = None) -> StagePlan | None:
        """The last planned stage that makes a model, of those planned before stage ``before``."""
        found = None
        for name, plan in self.plans.items():
            if name == before:
                break
            if plan.makes_model:
                found = plan
        return found

    def model_before(self, name: str) -> Path:
        """The model folder stage ``name`` starts from."""
        plan = self.model_plan(before=name)
        return plan.output if plan is not None else Path(self.config.source)


def fingerprint(paths: list[str]) -> list[list[Any]]:
    """(path, size, mtime) of every file under ``paths``: a changed input changes the stage key.

    A 🤗 datasets folder counts the data files that are read (not the ``cache-*.arrow`` files that
    ``datasets`` may write beside them, nor the other splits).
    """
    out = []
    for spec in paths:
        p = Path(spec)
        if p.is_dir() and not is_datasets_folder(p):
            files = sorted(f for f in p.rglob("*") if f.is_file())
        else:
            files = resolve_files([spec])
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def stage_key(data: Any) -> str:
    """A short hash of JSON-able ``data`` (keys sorted)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_stage(ctx: PlanContext, stage: Stage) -> StagePlan:
    """Key ``stage`` on its options, inputs and upstream keys; add its plan to ``ctx.plans``."""
    options, inputs = stage.options(ctx), stage.inputs(ctx)
    upstream = [ctx.plans[name] for name in stage.upstream(ctx) if name in ctx.plans]
    key = stage_key({"stage": stage.name, "options": to_dict(options), "inputs": fingerprint(inputs),
                     "upstream": [s.key for s in upstream]})
    directory = ctx.run_dir / "stages" / f"{len(ctx.plans):02d}-{stage.name}-{key}"
    plan = StagePlan(name=stage.name, key=key, directory=directory, run=functools.partial(stage.run, ctx),
                     output=directory / stage.output_name, makes_model=stage.makes_model,
                     resumable=stage.resumable)
    ctx.plans[stage.name] = plan
    return plan


def target_corpus(config: AdaptConfig, max_bytes: int | None = None) -> CorpusConfig:
    """The target languages' text as one corpus (weights when every language has one, else temperature)."""
    weights = all(lang.weight is not None for lang in config.languages)
    sources = [CorpusSource(paths=list(lang.corpus), lang=lang.code, weight=lang.weight if weights else None)
               for lang in config.languages]
    return CorpusConfig(sources=sources, temperature=config.temperature, max_bytes=max_bytes, seed=config.seed)


def source_corpus(config: AdaptConfig, max_bytes: int | None = None) -> CorpusConfig:
    """The source language's text as a corpus (the recipe must have ``source_language``)."""
    assert config.source_language is not None
    return CorpusConfig(sources=[CorpusSource(paths=list(config.source_language.corpus))], max_bytes=max_bytes,
                        seed=config.seed)
