"""The settings of ``vocabshift eval`` (:class:`EvalConfig`), without torch.

Split from :mod:`vocabshift.eval.evaluate` so that the command line and the recipe can read and check
them without importing torch (``vocabshift --help`` stays fast).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vocabshift.config import ConfigMixin, Problems
from vocabshift.corpus import CorpusConfig, CorpusSource
from vocabshift.errors import ConfigError
from vocabshift.eval.corpora import FORGETTING_NAME, check_corpus_name, default_corpus_name
from vocabshift.train.data_config import MIN_SEQ_LEN, OBJECTIVES

PROTOCOLS = ("document", "packed")
MIN_WINDOW = 2
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_SEQ_LEN = 512


@dataclass
class EvalConfig(ConfigMixin):
    """Evaluate an adapted model against its baseline on target-language text (``vocabshift eval``)."""

    model: str = field(metadata={"help": "Model directory to evaluate (the adapted model: weights and tokenizer)."})
    corpus: CorpusConfig = field(metadata={
        "help": "Held-out target-language text: tokenization statistics, loss and the speed text come from its "
                "first documents."})
    corpus_name: str | None = field(default=None, metadata={
        "help": "Name of the held-out corpus in the report (default: the file name without its suffixes for one "
                "file, else heldout)."})
    extra_corpora: dict[str, list[str]] = field(default_factory=dict, metadata={
        "help": "More corpora scored like the held-out one, for the model and the baseline on the same documents "
                "(e.g. another domain): name -> text files, directories or globs, read with the corpus's "
                "text_field, encoding and caps."})
    source_corpus: list[str] | None = field(default=None, metadata={
        "help": "Source-language text (files, directories or globs) scored like the held-out corpus: the "
                "'source language (forgetting)' row shows what adaptation cost in the source language."})
    lm_eval_task: str | None = field(default=None, metadata={
        "help": "Directory to write an lm-evaluation-harness task into: a JSONL of each corpus's scored documents "
                "and a loglikelihood_rolling task YAML per corpus (refused if it exists, unless force)."})
    baseline: str | None = field(default=None, metadata={
        "help": "Model directory to compare with (the source model); its tokenizer is the 'old' one."})
    objective: str = field(default="auto", metadata={
        "help": "Loss objective: auto (clm for causal LMs, mlm for masked LMs), mlm or clm."})
    protocol: str = field(default="document", metadata={
        "help": "Held-out loss protocol. document: each document scored on its own from the bos token "
                "(rolling windows for long ones), both models on the same documents and bytes, as "
                "lm-evaluation-harness does. packed: documents packed into seq_len blocks, each predicted "
                "with the previous ones as context, as training logs it (the two models' blocks cover "
                "different text). Masked LMs are scored per document by their pseudo-log-likelihood (each token "
                "masked in turn with the rest of its word, PLL-word-l2r); packed, by their masked tokens."})
    seq_len: int | None = field(default=None, metadata={
        "help": "document protocol: the scoring window in tokens (default: each model's max positions). "
                "packed protocol and the speed test: tokens per sequence (default: min(512, the models' max "
                "positions), shortened to fit a small corpus)."})
    stride: int | None = field(default=None, metadata={
        "help": "document protocol: tokens newly predicted by each window after the first of a long document, "
                "1 to the window; the rest of the window is context (default: the window, i.e. disjoint "
                "windows as lm-evaluation-harness uses)."})
    max_documents: int | None = field(default=None, metadata={
        "help": "Cap on the documents read from the start of each corpus for every measure (default: all "
                "of them); the document protocol scores every document read."})
    max_sequences: int = field(default=64, metadata={
        "help": "packed protocol: at most this many seq_len sequences of held-out text are scored."})
    bootstrap: int = field(default=1000, metadata={
        "help": "document protocol: bootstrap resamples of the documents for the 95% intervals of bits per "
                "byte and the paired verdict (0: no intervals, no verdict)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass (loss and speed)."})
    mlm_probability: float = field(default=0.15, metadata={
        "help": "Masked LMs: share of non-special tokens masked and scored (seeded)."})
    speed_words: int = field(default=1000, metadata={
        "help": "Words of corpus text (from its first documents) in the fixed speed text."})
    speed_text: str | None = field(default=None, metadata={
        "help": "A UTF-8 text file to time instead of the corpus's first words."})
    speed_warmup: int = field(default=1, metadata={"help": "Untimed runs of each speed measure before timing."})
    speed_repeats: int = field(default=5, metadata={
        "help": "Timed runs of each speed measure at least; then more until the median is stable (see "
                "speed_tolerance), up to speed_max_repeats runs or speed_max_seconds."})
    speed_max_repeats: int = field(default=30, metadata={"help": "Timed runs of each speed measure at most."})
    speed_max_seconds: float = field(default=30.0, metadata={
        "help": "Timed seconds of each speed measure at most, per model; this cap wins over speed_repeats."})
    speed_tolerance: float = field(default=0.05, metadata={
        "help": "A speed measure is stable when half its interquartile range is at most this share of the "
                "median."})
    speed_new_tokens: int = field(default=32, metadata={
        "help": "Causal LMs: tokens generated greedily (exactly this many) for decode speed and seconds per "
                "1,000 words of output."})
    neighbours: int = field(default=20, metadata={
        "help": "New tokens sampled (seeded) for the nearest-source-token view (0: skip it)."})
    neighbours_k: int = field(default=5, metadata={"help": "Nearest source tokens shown per new token."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the neighbour sample, of MLM masking and of the bootstrap."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda[:N]."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype for loss and speed: float32, bfloat16 "
                                                             "or float16."})
    metrics_jsonl: str | None = field(default=None, metadata={
        "help": "A training run's metrics.jsonl (or its run directory) for the loss curve in the report."})
    out: str | None = field(default=None, metadata={
        "help": "Directory to write eval.json, report.md and PNG plots into (nothing written without it)."})
    force: bool = field(default=False, metadata={
        "help": "Overwrite eval.json/report.md already in --out, and replace an existing lm_eval_task directory."})

    def __post_init__(self) -> None:
        found = Problems()
        with found:
            if not self.model:
                raise ConfigError("model must name a model directory")
        with found:
            check_eval_settings(self, self._main_name())
        with found:
            if self.corpus_name is not None:
                check_corpus_name(self.corpus_name, "corpus_name")
        with found:
            if self.source_corpus is not None and not all(isinstance(p, str) and p for p in self.source_corpus):
                raise ConfigError(f"source_corpus must be a list of paths, got {self.source_corpus!r}")
        found.raise_any()

    def _main_name(self) -> str:
        return self.corpus_name or default_corpus_name([p for s in self.corpus.sources for p in s.paths])

    def named_corpora(self) -> list[tuple[str, CorpusConfig, bool]]:
        """``(name, corpus, forgetting)`` of every corpus scored: the held-out corpus first, then the extra
        corpora, then the source-language text. Each extra corpus is read like the held-out one (its
        text_field, encoding, caps and seed), from its own files."""
        def like_main(paths: list[str]) -> CorpusConfig:
            return dataclasses.replace(self.corpus, sources=[CorpusSource(paths=list(paths))])

        out = [(self._main_name(), self.corpus, False)]
        out += [(name, like_main(paths), False) for name, paths in self.extra_corpora.items()]
        if self.source_corpus:
            out.append((FORGETTING_NAME, like_main(self.source_corpus), True))
        return out


def check_eval_settings(config: Any, main_corpus: str) -> None:
    """The settings of :class:`EvalConfig` or of the recipe's ``eval`` section (all but the model, the
    corpora the pipeline gives and the outputs); ``main_corpus`` is the held-out corpus's name, which no
    extra corpus may take. Raises one ConfigError naming every problem."""
    found = Problems()
    for name, value, allowed in (("objective", config.objective, OBJECTIVES), ("protocol", config.protocol, PROTOCOLS),
                                 ("dtype", config.dtype, DTYPES)):
        with found:
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    with found:
        _check_window_settings(config)
    for name, minimum in (("max_sequences", 1), ("batch_size", 1), ("speed_words", 1),
                          ("speed_warmup", 0), ("speed_repeats", 1), ("speed_max_repeats", 1),
                          ("speed_new_tokens", 2), ("neighbours", 0), ("neighbours_k", 1),
                          ("seed", 0), ("bootstrap", 0)):
        with found:
            _check_int(name, getattr(config, name), minimum)
    for name in ("speed_max_seconds", "speed_tolerance"):
        with found:
            _check_share(name, getattr(config, name))
    with found:
        if not (isinstance(config.mlm_probability, (int, float)) and 0.0 < config.mlm_probability < 1.0):
            raise ConfigError(f"mlm_probability must be in (0, 1), got {config.mlm_probability!r}")
    with found:
        check_extra_corpora(config.extra_corpora, main_corpus)
    with found:
        if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {config.device!r}")
    found.raise_any()


def _check_window_settings(config: Any) -> None:
    if config.seq_len is not None:
        _check_int("seq_len", config.seq_len, MIN_SEQ_LEN)
    if config.stride is not None:
        _check_int("stride", config.stride, 1)
        if config.seq_len is not None:
            check_window(config.seq_len, config.stride)
    if config.max_documents is not None:
        _check_int("max_documents", config.max_documents, 1)


def _check_share(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
            (name == "speed_max_seconds" and value == 0):
        raise ConfigError(f"{name} must be a number {'> 0' if name == 'speed_max_seconds' else '>= 0'}, "
                          f"got {value!r}")


def check_extra_corpora(extra: Any, main_corpus: str) -> None:
    """``extra_corpora``: a mapping of distinct names (not ``main_corpus``) to lists of paths; a single
    path is made a list of one, in place."""
    if not isinstance(extra, dict):
        raise ConfigError(f"extra_corpora must map names to lists of paths, got {extra!r}")
    names = [main_corpus]
    for name, paths in extra.items():
        check_corpus_name(name, "extra_corpora:")
        if name in names:
            raise ConfigError(f"corpus name {name!r} is given twice", hint="give each corpus a different name")
        names.append(name)
        if isinstance(paths, str):
            paths = extra[name] = [paths]
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"extra_corpora.{name} must be a list of paths, got {paths!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_window(window: int, stride: int) -> None:
    """Refuse a window shorter than 2 tokens and a stride outside ``1 .. window``."""
    if isinstance(window, bool) or not isinstance(window, int) or window < MIN_WINDOW:
        raise ConfigError(f"the scoring window must be at least {MIN_WINDOW} tokens, got {window!r}",
                          hint="raise --seq-len")
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= window:
        raise ConfigError(f"stride must be between 1 and the window ({window} tokens), got {stride!r}",
                          hint="a stride of 0 would never move past the first window; leave --stride unset for "
                               "disjoint windows (lm-eval's default)")
