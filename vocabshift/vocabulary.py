"""The vocabulary stage: prune or extend a model's vocabulary (``vocabshift prune`` / ``vocabshift extend``).

Both produce a loadable model directory (or a tokenizer directory when the source has no weights)
plus ``id_map.json`` — for each new id the source id it came from, or -1 for a new token — and a
report. Pruning follows MAFT (Alabi et al., 2022, "Adapting Pre-trained Language Models to African
Languages via Multilingual Adaptive Fine-Tuning"): drop the tokens of scripts the target languages do
not use, which removes about half of XLM-R's parameters. Extension appends target-language tokens
after the source's, initialised by the mean of the source embeddings until an init method fills them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.corpus import iter_corpus
from vocabshift.errors import ConfigError
from vocabshift.outputs import atomic_output_dir, check_output_path, writes_output
from vocabshift.sentence_transformer_files import copy_sentence_transformer_files
from vocabshift.tokenization.source import TOKENIZER_FILE, load_source_tokenizer
from vocabshift.vocabulary_config import ExtendConfig, PruneConfig

log = logging.getLogger(__name__)

ID_MAP_FILE = "id_map.json"


@dataclass
class VocabularyResult:
    """What a vocabulary stage wrote."""

    out: Path
    id_map: list[int]
    report: dict[str, Any]


def _apply_to_model(source_path: str, id_map: list[int], pad_to_multiple_of: int | None, out_dir: Path,
                    report: dict[str, Any], in_memory: bool) -> None:
    from vocabshift.surgery import row_prune
    from vocabshift.surgery.checkpoint import directory_size, has_model
    from vocabshift.surgery.safetensors_io import can_stream

    # torch is imported only where a model is built: a supported decoder is pruned from its headers
    if not has_model(source_path):
        report["model"] = None
        log.info("%s holds no model weights: wrote the tokenizer and id_map only", source_path)
        return
    lean = not in_memory and can_stream(source_path)
    rows = row_prune.plan(source_path, id_map, pad_to_multiple_of) if lean else None
    if rows is not None:
        model_report = row_prune.prune_rows(source_path, out_dir, rows)
        path = "lean (safetensors rows, no model)"
    elif lean:
        from vocabshift.surgery.lazy import remap_checkpoint

        model_report = remap_checkpoint(source_path, out_dir, id_map, pad_to_multiple_of=pad_to_multiple_of)
        path = "lean (safetensors streamed)"
    else:
        from vocabshift.surgery.checkpoint import load_model, parameter_count, save_model
        from vocabshift.surgery.resize import remap_vocab

        model = load_model(source_path)
        before = parameter_count(model)
        layout = remap_vocab(model, id_map, pad_to_multiple_of=pad_to_multiple_of)
        save_model(model, out_dir)
        model_report = {"class": type(model).__name__, "tied": layout.tied, "vocab_size": layout.vocab_size,
                        "parameters_before": before, "parameters_after": parameter_count(model)}
        path = "in memory"
    report["model"] = {
        **model_report,
        "path": path,
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


def _import_model_side(config: PruneConfig) -> None:
    """Import torch, the weight-editing code and the model's transformers class (seconds of imports),
    unless the checkpoint is one that :mod:`vocabshift.surgery.row_prune` prunes without them."""
    from vocabshift.surgery.row_prune import SUPPORTED

    try:
        architectures = json.loads((Path(config.model) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # no config: the model step reports what is missing itself
    if not config.in_memory and config.pad_to_multiple_of is None and architectures and \
            all(a in SUPPORTED for a in architectures):
        return
    import vocabshift.surgery.lazy  # noqa: F401  (torch)

    try:
        import transformers

        for arch in architectures:
            getattr(transformers, arch, None)  # transformers imports a model's module on first access
    except Exception as err:  # only a warm-up: the model step reports real problems itself
        log.debug("importing the modeling code failed: %s", err)


class _WeightsThread:
    """The weights half of :func:`prune`, on a thread, overlapping the tokenizer half.

    It imports torch and the model's modeling code at once, waits for the ``id_map`` (known as soon as
    the keep set is closed under merges, before the tokenizer files are built), and writes the weights
    while the main thread builds, writes and checks the tokenizer files. Reading, slicing and writing
    tensors release the GIL, so on two cores both halves run at the same time (a 262k-token Gemma-3
    prune: see docs/benchmarks.md).
    """

    def __init__(self, config: PruneConfig) -> None:
        self._config = config
        self.report: dict[str, Any] = {}  # what _apply_to_model reports ("model", ...), once finished
        self._job: queue.Queue[tuple[list[int], Path] | None] = queue.Queue(maxsize=1)
        self._submitted = False
        self._error: BaseException | None = None
        self.imported = threading.Event()  # set once the thread imports nothing more
        self._thread = threading.Thread(target=self._run, name="vocabshift-prune-weights", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            try:
                _import_model_side(self._config)
            finally:
                self.imported.set()
            job = self._job.get()
            if job is not None:
                id_map, out_dir = job
                _apply_to_model(self._config.model, id_map, self._config.pad_to_multiple_of, out_dir, self.report,
                                self._config.in_memory)
        except BaseException as err:  # re-raised on the caller's thread by finish()
            self._error = err

    def submit(self, id_map: list[int], out_dir: Path) -> None:
        """Start writing the weights of ``id_map`` into ``out_dir``."""
        self._submitted = True
        self._job.put((list(id_map), out_dir))

    def finish(self) -> None:
        """Wait for the weights; raise what the thread raised."""
        if not self._submitted:
            raise RuntimeError("no id_map was submitted")  # a bug in prune(), not a user error
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop waiting for work and join (idempotent): nothing writes into the output after this."""
        if not self._submitted:
            self._submitted = True
            self._job.put(None)
        self._thread.join()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building millions of small objects (a 262k-token vocabulary,
    its merges) otherwise triggers full collections over all of them, a third of the tokenizer time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@writes_output
def prune(config: PruneConfig) -> VocabularyResult:
    """Prune the source vocabulary to the kept scripts/frequent tokens; write model, tokenizer, id_map, report."""
    from vocabshift.tokenization.prune import build_keep_set, prune_tokenizer, write_pruned_tokenizer_files

    out = check_output_path(config.out, config.force)
    report: dict[str, Any] = {"stage": "prune", "source": str(config.model), "config": config.to_dict()}
    # A source without tokenizer.json is loaded by transformers: the weights thread, which imports it too,
    # starts after that (two threads importing transformers at once fail: "cannot import name ...").
    reads_json = (Path(config.model) / TOKENIZER_FILE).is_file()
    weights = _WeightsThread(config) if reads_json else None
    try:
        with _gc_paused():
            source = load_source_tokenizer(config.model)
            if weights is None:
                weights = _WeightsThread(config)
            texts = iter_corpus(config.keep_corpus) if config.keep_corpus is not None else None
            keep = build_keep_set(source, keep_scripts=config.keep_scripts, texts=texts, min_count=config.min_count)
            with atomic_output_dir(out, force=config.force) as tmp:
                try:
                    pruned = prune_tokenizer(source, keep, on_id_map=lambda ids: weights.submit(ids, tmp))
                    report.update({"source_vocab_size": source.vocab_size, "vocab_size": len(pruned.id_map),
                                   "tokens": pruned.report.as_dict()})
                    weights.imported.wait()  # the written files' reload check may import transformers
                    write_pruned_tokenizer_files(pruned, source, tmp)
                    id_map = pruned.id_map
                    del source, keep, pruned  # hundreds of MB for a 250k vocabulary, while the weights finish
                    weights.finish()
                    report.update(weights.report)
                finally:
                    weights.close()  # before the output directory is renamed or removed
                _write_id_map(tmp, config.model, id_map)
                (tmp / "prune_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    finally:
        if weights is not None:
            weights.close()
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
