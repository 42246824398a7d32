"""The vocabulary stage: prune or extend a model's vocabulary (``vocabshift prune`` / ``vocabshift extend``).

Both produce a loadable model directory (or a tokenizer directory when the source has no weights)
plus ``id_map.json`` — for each new id the source id it came from, or -1 for a new token — and a
report. Pruning follows MAFT (Alabi et al., 2022, "Adapting Pre-trained Language Models to African
Languages via Multilingual Adaptive Fine-Tuning"): drop the tokens of scripts the target languages do
not use, which removes about half of XLM-R's parameters. Extension appends target-language tokens
after the source's, initialised by the mean of the source embeddings until an init method fills them.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.config import MAX_INT, MAX_PAD_MULTIPLE, MAX_VOCAB_SIZE, ConfigMixin, check_whole_number
from vocabshift.corpus import CorpusConfig, iter_corpus
from vocabshift.errors import ConfigError
from vocabshift.outputs import atomic_output_dir, check_output_path, writes_output
from vocabshift.sentence_transformer_files import copy_sentence_transformer_files
from vocabshift.surgery.checkpoint import directory_size, has_model, load_model, parameter_count, save_model
from vocabshift.surgery.lazy import can_stream, remap_checkpoint
from vocabshift.surgery.resize import remap_vocab
from vocabshift.tokenization.scripts import resolve_scripts
from vocabshift.tokenization.source import load_source_tokenizer

log = logging.getLogger(__name__)

ID_MAP_FILE = "id_map.json"


def _check_pad(value: int | None) -> None:
    if value is not None:
        check_whole_number(value, "pad_to_multiple_of", 1, MAX_PAD_MULTIPLE)


@dataclass
class PruneConfig(ConfigMixin):
    """Prune a model's vocabulary by script and/or corpus frequency (``vocabshift prune``)."""

    model: str = field(metadata={"help": "Source model directory (or tokenizer directory, or .gguf file)."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    keep_scripts: list[str] | None = field(
        default=None, metadata={"help": "Unicode scripts to keep, names or ISO 15924 codes (Latin, Ethi, Arabic)."})
    keep_corpus: CorpusConfig | None = field(
        default=None, metadata={"help": "Also keep tokens used at least min_count times on this corpus."})
    min_count: int = field(default=1, metadata={"help": "Frequency pruning: minimum number of uses to keep a token."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad the embedding matrices to a multiple of this (tensor-core friendly)."})
    in_memory: bool = field(default=False, metadata={
        "help": "Load the whole model instead of streaming safetensors tensor by tensor (the lean default)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if not self.keep_scripts and self.keep_corpus is None:
            raise ConfigError("nothing to keep by: give keep_scripts (--keep-scripts) and/or keep_corpus (--keep-corpus)")
        if self.keep_scripts:
            resolve_scripts(self.keep_scripts)  # an unknown script fails here, before any work
        check_whole_number(self.min_count, "min_count", 1, MAX_INT)
        _check_pad(self.pad_to_multiple_of)


@dataclass
class ExtendConfig(ConfigMixin):
    """Add target-language tokens missing from a model's vocabulary (``vocabshift extend``)."""

    model: str = field(metadata={"help": "Source model directory (or tokenizer directory, or .gguf file)."})
    tokenizer: str = field(metadata={"help": "Target tokenizer of the same family (e.g. from `vocabshift tokenizer train`)."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    max_new: int | None = field(default=None, metadata={"help": "Add at most this many new tokens."})
    protect_corpus: CorpusConfig | None = field(default=None, metadata={
        "help": "Source-language text that must tokenize exactly as before: new tokens that would change it are left out."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad the embedding matrices to a multiple of this (tensor-core friendly)."})
    in_memory: bool = field(default=False, metadata={
        "help": "Load the whole model instead of streaming safetensors tensor by tensor (the lean default)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if self.max_new is not None:
            check_whole_number(self.max_new, "max_new", 0, MAX_VOCAB_SIZE)
        _check_pad(self.pad_to_multiple_of)


@dataclass
class VocabularyResult:
    """What a vocabulary stage wrote."""

    out: Path
    id_map: list[int]
    report: dict[str, Any]


def _apply_to_model(source_path: str, id_map: list[int], pad_to_multiple_of: int | None, out_dir: Path,
                    report: dict[str, Any], in_memory: bool) -> None:
    if not has_model(source_path):
        report["model"] = None
        log.info("%s holds no model weights: wrote the tokenizer and id_map only", source_path)
        return
    lean = not in_memory and can_stream(source_path)
    if lean:
        model_report = remap_checkpoint(source_path, out_dir, id_map, pad_to_multiple_of=pad_to_multiple_of)
    else:
        model = load_model(source_path)
        before = parameter_count(model)
        layout = remap_vocab(model, id_map, pad_to_multiple_of=pad_to_multiple_of)
        save_model(model, out_dir)
        model_report = {"class": type(model).__name__, "tied": layout.tied, "vocab_size": layout.vocab_size,
                        "parameters_before": before, "parameters_after": parameter_count(model)}
    report["model"] = {
        **model_report,
        "path": "lean (safetensors streamed)" if lean else "in memory",
        "weights_bytes_before": directory_size(source_path),
        "weights_bytes_after": directory_size(out_dir),
    }
    carried = copy_sentence_transformer_files(source_path, out_dir)
    if carried is not None:
        report["sentence_transformers"] = carried


def _write_id_map(out_dir: Path, source: str, id_map: list[int]) -> None:
    data = {"source": str(source), "size": len(id_map), "new_tokens": sum(1 for i in id_map if i < 0),
            "id_map": id_map}
    (out_dir / ID_MAP_FILE).write_text(json.dumps(data))


def read_id_map_data(directory: str | Path) -> dict[str, Any] | None:
    """The whole ``id_map.json`` in ``directory`` (source, size, id_map, ...), or None when there is none."""
    path = Path(directory) / ID_MAP_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["id_map"] = [int(i) for i in data["id_map"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"not an id_map file ({err})", path=path) from err
    return data


def read_id_map(directory: str | Path) -> list[int] | None:
    """The ``id_map`` a vocabulary stage wrote into ``directory``, or None when there is none."""
    data = read_id_map_data(directory)
    return None if data is None else data["id_map"]


def _prefetch_modeling_code(model_path: str) -> threading.Thread | None:
    """Import the model's transformers class in a background thread while the tokenizer side runs.

    The model step needs it (even the lean path plans on a meta-device model), and importing
    transformers' modeling code takes 2-3 s, mostly spent outside the tokenizer work's hot loops.
    """
    config_file = Path(model_path) / "config.json"
    # Only when the tokenizer side does not import transformers itself (tokenizer.json is read directly),
    # so that the two threads never import the same modules at once.
    if not config_file.is_file() or not (Path(model_path) / "tokenizer.json").is_file():
        return None
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None

    def work() -> None:
        try:
            import transformers

            for arch in architectures:
                getattr(transformers, arch, None)
        except Exception as err:  # only a warm-up: the model step reports real problems itself
            log.debug("prefetching the modeling code failed: %s", err)

    thread = threading.Thread(target=work, name="vocabshift-prefetch", daemon=True)
    thread.start()
    return thread


@writes_output
def prune(config: PruneConfig) -> VocabularyResult:
    """Prune the source vocabulary to the kept scripts/frequent tokens; write model, tokenizer, id_map, report."""
    from vocabshift.tokenization.prune import build_keep_set, prune_tokenizer, write_pruned_tokenizer

    out = check_output_path(config.out, config.force)
    source = load_source_tokenizer(config.model)
    # After the tokenizer is loaded: its loading may fall back to transformers, and two threads importing
    # transformers at once fail ("cannot import name AutoTokenizer").
    prefetch = _prefetch_modeling_code(config.model)
    try:
        texts = iter_corpus(config.keep_corpus) if config.keep_corpus is not None else None
        keep = build_keep_set(source, keep_scripts=config.keep_scripts, texts=texts, min_count=config.min_count)
        pruned = prune_tokenizer(source, keep)
    finally:
        if prefetch is not None:
            # Joined before anything else may import transformers (also on failure, for a library caller
            # that goes on): a half-imported module is not usable.
            prefetch.join()
    report: dict[str, Any] = {"stage": "prune", "source": str(config.model), "config": config.to_dict(),
                              "source_vocab_size": source.vocab_size, "vocab_size": len(pruned.id_map),
                              "tokens": pruned.report.as_dict()}
    id_map = pruned.id_map
    with atomic_output_dir(out, force=config.force) as tmp:
        write_pruned_tokenizer(pruned, source, tmp)
        # The tokenizers (hundreds of MB for a 250k vocabulary) are not needed for the weights: free
        # them before the model step, which holds the peak memory.
        del source, keep, pruned
        _apply_to_model(config.model, id_map, config.pad_to_multiple_of, tmp, report, config.in_memory)
        _write_id_map(tmp, config.model, id_map)
        (tmp / "prune_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    log.info("pruned %s: %d -> %d tokens -> %s", config.model, report["source_vocab_size"], report["vocab_size"], out)
    return VocabularyResult(out=out, id_map=id_map, report=report)


@writes_output
def extend(config: ExtendConfig) -> VocabularyResult:
    """Append the target tokenizer's missing tokens; new rows start as the source mean (id_map -1)."""
    from vocabshift.tokenization.extend import extend_tokenizer, write_extended_tokenizer

    out = check_output_path(config.out, config.force)
    source = load_source_tokenizer(config.model)
    target = load_source_tokenizer(config.tokenizer)
    protect = list(iter_corpus(config.protect_corpus)) if config.protect_corpus is not None else None
    ext = extend_tokenizer(source, target, max_new=config.max_new, protect=protect)
    report: dict[str, Any] = {"stage": "extend", "source": str(config.model), "config": config.to_dict(),
                              "source_vocab_size": source.vocab_size, "vocab_size": len(ext.id_map),
                              "tokens": ext.report}
    with atomic_output_dir(out, force=config.force) as tmp:
        write_extended_tokenizer(ext, source, tmp)
        _apply_to_model(config.model, ext.id_map, config.pad_to_multiple_of, tmp, report, config.in_memory)
        _write_id_map(tmp, config.model, ext.id_map)
        (tmp / "extend_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    log.info("extended %s: %d -> %d tokens -> %s", config.model, report["source_vocab_size"], report["vocab_size"], out)
    return VocabularyResult(out=out, id_map=ext.id_map, report=report)
