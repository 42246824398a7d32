"""``vocabshift eval``: compare an adapted model with its baseline on target-language text.

One call measures, for the model ("new") and, when given, the baseline ("old", usually the source
model before adaptation):

1. tokenization per Unicode script — fertility, bytes per token, UNK rate and character coverage
   (:func:`vocabshift.tokenization.stats.tokenizer_stats` on the first ``max_documents`` documents);
2. held-out loss, bits per byte, byte and word perplexity (:mod:`vocabshift.eval.lm`). The default
   ``document`` protocol scores each held-out document on its own, as lm-evaluation-harness does;
   both models get exactly the same documents (hence the same bytes), each model's bits per byte a
   bootstrap interval over documents, and the pair a paired-bootstrap verdict
   (:mod:`vocabshift.eval.bootstrap`). Each named corpus (``extra_corpora``, and ``source_corpus`` for
   forgetting; :mod:`vocabshift.eval.corpora`) is scored the same way, with its own interval and verdict.
   Masked LMs get their pseudo-log-likelihood per document (PLL-word-l2r, each token masked in turn,
   :func:`vocabshift.eval.lm.score_documents_pll`). ``packed`` scores packed blocks (what training
   logs; its two figures cover different text; for masked LMs only the masked tokens are scored);
3. parameter counts and the size of the weight files;
4. inference speed on a fixed text (:mod:`vocabshift.eval.speed`): scoring throughput, and for causal
   LMs prefill, decode and seconds per 1,000 words of output, each a median with its spread; the
   speed-up old/new with a range;
5. nearest source tokens for a seeded sample of the new tokens (:mod:`vocabshift.eval.neighbours`).

Everything is computed before anything is written; with ``out`` set, ``eval.json``, ``report.md`` and
the plots are written at the end by :func:`vocabshift.eval.report.write_report`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from vocabshift.corpus import CorpusConfig, iter_corpus
from vocabshift.devices import resolve_device
from vocabshift.errors import ConfigError, CorpusError, ModelError, VocabshiftError
from vocabshift.eval.bootstrap import PairedComparison, bits_per_byte_interval, compare_bits_per_byte
from vocabshift.eval.config import DEFAULT_SEQ_LEN, DTYPES, EvalConfig, _check_int  # noqa: F401
from vocabshift.eval.lm import (
    DEFAULT_WINDOW,
    DocumentLMResult,
    LMResult,
    check_window,
    lm_loss,
    max_positions,
    score_documents,
    score_documents_pll,
)
from vocabshift.eval.lm_eval_task import write_lm_eval_task
from vocabshift.eval.neighbours import NeighboursResult, nearest_source_tokens, new_token_ids, sample_ids
from vocabshift.eval.speed import RepeatRule, SpeedResult, Speedup, count_words, measure_speed, speedups
from vocabshift.outputs import check_output_path, input_paths, refuse_overlap, writes_output
from vocabshift.tokenization.stats import TokenizerStats, tokenizer_stats
from vocabshift.train.data import MIN_SEQ_LEN, resolve_objective

log = logging.getLogger(__name__)

@dataclass
class SizeResult:
    """Parameters and bytes on disk of one model."""

    parameters: int  # unique parameters (a tied head counted once)
    embedding_parameters: int  # input embeddings + an untied LM head + an output bias
    vocab_size: int  # len(tokenizer)
    embedding_rows: int  # rows of the input embedding matrix (>= vocab_size when padded)
    file_bytes: int  # weight files in the model directory


@dataclass
class CorpusLMResult:
    """Held-out language modelling on one named corpus: each model's result and their paired comparison."""

    name: str
    forgetting: bool  # source-language text: the change shows what adaptation cost there
    documents: int  # documents read (both models scored all of them under the document protocol)
    lm: dict[str, LMResult | DocumentLMResult | None]  # "old" / "new"
    comparison: PairedComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "forgetting": self.forgetting, "documents": self.documents,
                "lm": {k: None if v is None else asdict(v) for k, v in self.lm.items()},
                "comparison": None if self.comparison is None else asdict(self.comparison)}


@dataclass
class EvalResult:
    """Everything ``vocabshift eval`` measured. Keys ``"new"`` (the model) and ``"old"`` (the baseline).

    ``lm`` holds a :class:`DocumentLMResult` per model under the document protocol (a masked LM, and
    every model under ``protocol="packed"``, an :class:`LMResult`); ``comparison`` the paired bootstrap
    of the two models' bits per byte when both were scored per document. Both are those of the first
    (held-out) corpus; ``corpora`` holds every named corpus, that one first, then the extra corpora and
    the source-language (forgetting) text.
    """

    model: str
    baseline: str | None
    tokenization: dict[str, TokenizerStats]
    lm: dict[str, LMResult | DocumentLMResult | None]
    size: dict[str, SizeResult]
    speed: dict[str, SpeedResult]
    speedup: float | None  # speedups["scoring"].estimate: old / new seconds per 1,000 words of the speed text
    neighbours: NeighboursResult | None
    documents: int  # documents read from the corpus
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    speedups: dict[str, Speedup] = field(default_factory=dict)  # "scoring", "generation": with their ranges
    seconds: float = 0.0
    protocol: str = "document"
    comparison: PairedComparison | None = None
    corpora: list[CorpusLMResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable data (what ``--json`` prints and ``eval.json`` holds)."""
        return {
            "model": self.model,
            "baseline": self.baseline,
            "documents": self.documents,
            "tokenization": {k: v.as_dict() for k, v in self.tokenization.items()},
            "protocol": self.protocol,
            "lm": {k: None if v is None else asdict(v) for k, v in self.lm.items()},
            "comparison": None if self.comparison is None else asdict(self.comparison),
            "corpora": [c.to_dict() for c in self.corpora],
            "size": {k: asdict(v) for k, v in self.size.items()},
            "speed": {k: asdict(v) for k, v in self.speed.items()},
            "speedup": self.speedup,
            "speedups": {k: asdict(v) for k, v in self.speedups.items()},
            "neighbours": None if self.neighbours is None else asdict(self.neighbours),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "config": self.config,
        }


def _check_model_dir(path: str, role: str) -> Path:
    from vocabshift.surgery.checkpoint import has_model

    p = Path(path)
    if not p.exists():
        raise ModelError(f"no such {role} directory", path=p)
    if not has_model(p):
        raise ModelError(f"the {role} directory holds no model weights (config.json and model.safetensors)",
                         path=p, hint="give the output directory of `vocabshift init`/`export`, or a HF model")
    return p


def _load_tokenizer(path: Path, role: str) -> Any:
    from vocabshift.tokenization.source import load_hf_tokenizer

    try:
        tok = load_hf_tokenizer(path)
    except VocabshiftError as err:
        raise type(err)(f"{role} tokenizer: {err.problem}", path=err.path, hint=err.hint) from err
    if getattr(tok, "backend_tokenizer", None) is None:
        raise ConfigError(f"the {role} tokenizer has no fast (tokenizers) backend", path=path)
    return tok


@contextlib.contextmanager
def _no_hf_progress_bars() -> Iterator[None]:
    """transformers draws a per-tensor loading bar; hide it (and put the setting back afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_model(path: Path, role: str, dtype: str, device: Any) -> Any:
    import torch

    from vocabshift.surgery.checkpoint import load_model

    try:
        with _no_hf_progress_bars():
            model = load_model(path, dtype=getattr(torch, dtype))
    except VocabshiftError as err:
        raise ModelError(f"{role} model: {err.problem}", path=path, hint=err.hint) from err
    return model.to(device).eval()


def _size(model: Any, tokenizer: Any, path: Path) -> SizeResult:
    from vocabshift.surgery.checkpoint import directory_size, parameter_count
    from vocabshift.surgery.layout import locate

    layout = locate(model)
    emb = model.get_parameter(layout.input_weight).numel()
    if layout.output_weight is not None and not layout.shares_weight:
        emb += model.get_parameter(layout.output_weight).numel()
    if layout.output_bias is not None:
        emb += model.get_parameter(layout.output_bias).numel()
    return SizeResult(parameters=parameter_count(model), embedding_parameters=emb, vocab_size=len(tokenizer),
                      embedding_rows=layout.vocab_size, file_bytes=directory_size(path))


def _repeat_rule(config: EvalConfig) -> RepeatRule:
    """When each speed measure stops timing (:func:`vocabshift.eval.speed.time_runs`)."""
    return RepeatRule(warmup=config.speed_warmup, min_repeats=config.speed_repeats,
                      max_repeats=max(config.speed_max_repeats, config.speed_repeats),
                      max_seconds=config.speed_max_seconds, tolerance=config.speed_tolerance)


def _speed_text(documents: list[str], words: int, path: str | None) -> str:
    """The fixed text to time: a file, or the corpus's first documents up to ``words`` words."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise ConfigError("speed text file does not exist", path=p) from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"speed text is not UTF-8 (byte {err.start})", path=p) from err
        if not text.split():
            raise ConfigError("speed text file holds no words", path=p)
        return text
    kept: list[str] = []
    remaining = words
    for doc in documents:
        parts = doc.split()
        if len(parts) > remaining:  # cut the last document at a word boundary
            kept.append(" ".join(parts[:remaining]))
            break
        kept.append(doc)
        remaining -= len(parts)
        if remaining == 0:
            break
    return "\n".join(kept)


def _read_config(path: Path, role: str) -> Any:
    """The model's ``PretrainedConfig`` (None for a GGUF file), read without building the model."""
    from transformers import AutoConfig

    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

    if not (path / "config.json").is_file():
        return None
    refuse_remote_code(path)
    try:
        return AutoConfig.from_pretrained(str(path), **LOAD_KWARGS)
    except Exception as err:  # transformers raises OSError/ValueError/KeyError with long messages
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelError(f"{role} model: cannot read config.json ({first})", path=path) from err


def _objective(model_config: Any, objective: str, role: str, notes: list[str]) -> str | None:
    """The loss objective of a model, checked from its config before any weights load.

    ``auto`` on a model without an LM head gives None (no loss, a note); an objective the model
    cannot do is an error.
    """
    if model_config is None:  # GGUF: judged once the model is loaded
        return objective
    try:
        return resolve_objective(model_config, objective)
    except ConfigError as err:
        if objective != "auto":
            raise ConfigError(f"{role} model: {err.problem}", path=err.path, hint=err.hint) from err
        # A base model (no LM head) still gets every other measure.
        notes.append(f"{role} model: no held-out loss ({err.problem})")
        log.warning("%s model: no held-out loss: %s", role, err.problem)
        return None


def _resolve_seq_len(config: EvalConfig, model_configs: list[Any], stats: list[TokenizerStats]) -> int:
    """One seq_len for both models: the configured one, or min(512, max positions, tokens available)."""
    positions = [m for m in (max_positions(c) for c in model_configs if c is not None) if m is not None]
    if config.seq_len is not None:
        if positions and config.seq_len > min(positions):
            raise ConfigError(f"seq_len {config.seq_len} is longer than the {min(positions)} positions a model "
                              "takes", hint=f"use --seq-len {min(positions)} or less")
        return config.seq_len
    seq_len = min([DEFAULT_SEQ_LEN, *positions])
    # A short corpus gets shorter sequences rather than an error: the content tokens of the documents
    # read are a lower bound of what packing has (it adds special tokens).
    available = min(s.total.tokens for s in stats)
    return max(MIN_SEQ_LEN, min(seq_len, available))


def _window(config: EvalConfig, model_config: Any) -> int:
    """The document protocol's scoring window: ``seq_len``, else the model's max positions (lm-eval's
    ``max_length``), else lm-eval's default of 2048; checked against the stride before any weights load."""
    positions = max_positions(model_config) if model_config is not None else None
    window = config.seq_len or positions or DEFAULT_WINDOW
    check_window(window, config.stride if config.stride is not None else window)
    return window


def _lm(config: EvalConfig, model: Any, tokenizer: Any, objective: str | None, seq_len: int,
        documents: list[str], device: Any, role: str, notes: list[str],
        corpus: CorpusConfig | None = None) -> LMResult | DocumentLMResult | None:
    if objective is None:
        return None
    if objective == "auto":  # a GGUF model, whose config was not read before loading
        objective = _objective(model.config, "auto", role, notes)
        if objective is None:
            return None
    if config.protocol == "document":
        if objective == "clm":
            result = score_documents(model, tokenizer, documents, window=_window(config, model.config),
                                     stride=config.stride, batch_size=config.batch_size, device=device)
        else:  # a masked LM: its pseudo-log-likelihood, each token masked in turn (PLL-word-l2r)
            result = score_documents_pll(model, tokenizer, documents, window=_window(config, model.config),
                                         device=device)
        if config.bootstrap:
            result.interval = bits_per_byte_interval(result.per_document.nll, result.per_document.bytes,
                                                     resamples=config.bootstrap, seed=config.seed)
        return result
    # packed: the same documents as were read (all of them unless capped)
    max_documents = config.max_documents if config.max_documents is not None else max(1, len(documents))
    return lm_loss(model, tokenizer, corpus or config.corpus, seq_len=seq_len, max_documents=max_documents,
                   max_sequences=config.max_sequences, batch_size=config.batch_size, objective=objective,
                   mlm_probability=config.mlm_probability, seed=config.seed, device=device)


def _compare(config: EvalConfig, lm: dict[str, LMResult | DocumentLMResult | None],
             notes: list[str]) -> PairedComparison | None:
    """The paired bootstrap of (new - old) bits per byte, when both models were scored per document."""
    old, new = lm.get("old"), lm.get("new")
    if not (isinstance(old, DocumentLMResult) and isinstance(new, DocumentLMResult)):
        return None
    # Same documents, so the same bytes: by construction, and it is what makes the two figures compare.
    if old.per_document.bytes != new.per_document.bytes:
        raise AssertionError("the model and the baseline were scored on different documents")
    if not config.bootstrap:
        notes.append("bootstrap 0: no intervals and no verdict")
        return None
    if new.documents < 2:
        notes.append("one held-out document: the bootstrap cannot estimate an interval; no verdict")
        return None
    return compare_bits_per_byte(old.per_document.nll, new.per_document.nll, new.per_document.bytes,
                                 resamples=config.bootstrap, seed=config.seed)


@writes_output
def evaluate_model(config: EvalConfig) -> EvalResult:
    """Measure the model (and baseline) as :class:`EvalConfig` says; write the report when ``config.out`` is set.

    Raises :class:`~vocabshift.errors.ModelError` for a missing or unloadable model or baseline
    (naming which), :class:`~vocabshift.errors.CorpusError` for an empty or unreadable corpus, and
    :class:`~vocabshift.errors.OutputExistsError` when ``out`` already holds a report and ``force``
    is not set. Nothing is written when an error is raised.
    """
    from vocabshift.eval.report import check_report_dir, load_metrics, write_report

    started = time.perf_counter()
    model_dir = _check_model_dir(config.model, "model")
    base_dir = _check_model_dir(config.baseline, "baseline") if config.baseline else None
    if config.metrics_jsonl:
        load_metrics(config.metrics_jsonl)  # a missing or broken metrics file fails now, not after the work
    if config.out:
        check_report_dir(config.out, config.force)
    device = resolve_device(config.device)
    notes: list[str] = []
    model_configs = {"new": _read_config(model_dir, "model")}
    if base_dir is not None:
        model_configs["old"] = _read_config(base_dir, "baseline")
    objectives = {key: _objective(c, config.objective, "baseline" if key == "old" else "model", notes)
                  for key, c in model_configs.items()}
    if config.protocol == "document":  # a window or stride that cannot work fails before any weights load
        for key, c in model_configs.items():
            if objectives[key] == "clm":
                _window(config, c)
    tokenizer = _load_tokenizer(model_dir, "model")
    base_tokenizer = _load_tokenizer(base_dir, "baseline") if base_dir else None

    named_corpora = config.named_corpora()
    texts = {name: _read_documents(corpus, config.max_documents, name, i == 0)
             for i, (name, corpus, _) in enumerate(named_corpora)}
    documents = texts[named_corpora[0][0]]
    if config.lm_eval_task:  # an existing task directory fails now, not after the work
        _check_lm_eval_task_dir(config)
    named = {"new": tokenizer} if base_tokenizer is None else {"old": base_tokenizer, "new": tokenizer}
    stats = dict(zip(named, tokenizer_stats(named, documents), strict=True))
    for key, path in (("new", model_dir), ("old", base_dir)):
        if key in stats:
            stats[key].name = str(path)
    speed_text = _speed_text(documents, config.speed_words, config.speed_text)
    log.info("speed text: %d words", count_words(speed_text))

    scored: dict[str, dict[str, LMResult | DocumentLMResult | None]] = {name: {} for name, _, _ in named_corpora}
    lm = scored[named_corpora[0][0]]
    size: dict[str, SizeResult] = {}
    speed: dict[str, SpeedResult] = {}
    source_embeddings = None
    seq_len = _resolve_seq_len(config, list(model_configs.values()), list(stats.values()))
    log.info("seq_len %d for loss and speed", seq_len)

    runs = [("old", base_dir, base_tokenizer)] if base_dir else []
    runs.append(("new", model_dir, tokenizer))
    neighbours: NeighboursResult | None = None
    for key, path, tok in runs:
        size[key], scores, speed[key], embeddings = _measure(config, key, path, tok, objectives[key], seq_len,
                                                             named_corpora, texts, speed_text, device, notes)
        for name, result in scores.items():
            scored[name][key] = result
        if key == "old":
            source_embeddings = embeddings
        elif config.neighbours and base_tokenizer is not None and source_embeddings is not None:
            neighbours = _neighbours(config, model_dir, tokenizer, embeddings, base_tokenizer, source_embeddings, notes)
    if base_dir is None:
        notes.append("no baseline: nothing to compare with, no speedup and no nearest source tokens")
    notes += _comparability_notes([v for v in lm.values() if v is not None])
    corpora = [CorpusLMResult(name=name, forgetting=forgetting, documents=len(texts[name]), lm=scored[name],
                              comparison=_compare(config, scored[name], notes))
               for name, _, forgetting in named_corpora]
    comparison = corpora[0].comparison
    notes = list(dict.fromkeys(notes))  # each corpus repeats the same notes
    ups = speedups(speed["old"], speed["new"]) if "old" in speed else {}
    notes += [f"{'baseline' if k == 'old' else 'model'} speed: {n}" for k, s in speed.items() for n in s.notes]

    result = EvalResult(
        model=str(model_dir), baseline=None if base_dir is None else str(base_dir), tokenization=stats, lm=lm,
        size=size, speed=speed, speedup=ups["scoring"].estimate if ups else None, speedups=ups,
        neighbours=neighbours, documents=len(documents), config=config.to_dict(), notes=notes,
        seconds=time.perf_counter() - started, protocol=config.protocol, comparison=comparison, corpora=corpora)
    if config.out:
        write_report(result, config.out, metrics_jsonl=config.metrics_jsonl)
    if config.lm_eval_task:
        write_lm_eval_task(config.lm_eval_task, texts, force=config.force)
    return result


def _measure(config: EvalConfig, key: str, path: Path, tokenizer: Any, objective: str | None, seq_len: int,
             named_corpora: list[tuple[str, CorpusConfig, bool]], texts: dict[str, list[str]], speed_text: str,
             device: Any,
             notes: list[str]) -> tuple[SizeResult, dict[str, LMResult | DocumentLMResult | None], SpeedResult, Any]:
    """Load one model (``key`` "old": the baseline) and measure it: size, LM scores on each corpus and speed.

    Returns those and its input embeddings (float32, CPU); the model is freed before returning.
    """
    import torch

    role = "baseline" if key == "old" else "model"
    log.info("evaluating the %s %s", role, path)
    model = _load_model(path, role, config.dtype, device)
    size = _size(model, tokenizer, path)
    scores = {name: _lm(config, model, tokenizer, objective, seq_len, texts[name], device, role, notes, corpus)
              for name, corpus, _ in named_corpora}
    speed = measure_speed(model, tokenizer, speed_text, seq_len=seq_len, batch_size=config.batch_size,
                          new_tokens=config.speed_new_tokens, rule=_repeat_rule(config), device=device)
    embeddings = model.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return size, scores, speed, embeddings


def _comparability_notes(lms: list[LMResult | DocumentLMResult]) -> list[str]:
    """Notes on why the model's and the baseline's LM scores may not compare."""
    notes = []
    if len(lms) == 2 and lms[0].objective != lms[1].objective:
        notes.append("the model and the baseline have different objectives: their losses do not compare")
    if any(v.pseudo and v.protocol == "packed" for v in lms):
        notes.append("masked-LM loss is pseudo: only the masked tokens are scored")
    if any(v.pseudo and v.protocol == "document" for v in lms):
        notes.append("masked-LM loss is a pseudo-log-likelihood (PLL-word-l2r): it compares masked LMs on the same "
                     "documents, not with a causal LM's likelihood")
    if len(lms) == 2 and lms[0].protocol != lms[1].protocol:
        notes.append("the model and the baseline were scored with different protocols: their losses do not compare")
    if len(lms) == 2 and all(v.protocol == "packed" for v in lms):
        notes.append("packed protocol: each model's sequences cover different text; use --protocol document to "
                     "compare bits per byte on the same bytes")
    return notes


def _check_lm_eval_task_dir(config: EvalConfig) -> None:
    """The task directory is replaced whole: refuse an existing one without force, and one that is, holds or
    lies in an input or the report directory, force or not."""
    assert config.lm_eval_task is not None
    check_output_path(config.lm_eval_task, config.force)
    inputs = input_paths(config)
    if config.out:
        inputs.append(("out", config.out))
    refuse_overlap(config.lm_eval_task, inputs)


def _read_documents(corpus: CorpusConfig, max_documents: int | None, name: str, main: bool) -> list[str]:
    """The first ``max_documents`` documents of one corpus (all when None); the error of an empty one names the corpus."""
    stream = iter_corpus(corpus)
    try:
        documents = list(islice(stream, max_documents))
    except CorpusError as err:
        if main:
            raise
        raise CorpusError(f"corpus {name!r}: {err.problem}", path=err.path, hint=err.hint) from err
    finally:
        stream.close()
    log.info("read %d documents from the corpus %s", len(documents), name)
    return documents


def _neighbours(config: EvalConfig, model_dir: Path, tokenizer: Any, embeddings: Any, base_tokenizer: Any,
                source_embeddings: Any, notes: list[str]) -> NeighboursResult | None:
    if embeddings.shape[1] != source_embeddings.shape[1]:
        notes.append(f"no nearest source tokens: the embedding sizes differ ({embeddings.shape[1]} vs "
                     f"{source_embeddings.shape[1]})")
        return None
    ids, selection = new_token_ids(model_dir, tokenizer, base_tokenizer)
    ids = [i for i in ids if i < embeddings.shape[0]]
    sample = sample_ids(ids, config.neighbours, config.seed)
    tokens = nearest_source_tokens(embeddings, sample, tokenizer, source_embeddings, base_tokenizer,
                                   k=config.neighbours_k)
    log.info("nearest source tokens for %d of %d new tokens (%s)", len(sample), len(ids), selection)
    return NeighboursResult(selection=selection, new_tokens=len(ids), sample_size=len(sample), seed=config.seed,
                            k=config.neighbours_k, tokens=tokens)
