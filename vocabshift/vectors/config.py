"""Configs of the vectors stage: ``vocabshift vectors train`` and ``vocabshift vectors align``.

The CLI flags, YAML keys and keyword arguments are these field names (``--min-count`` is ``min_count``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vocabshift.config import ConfigMixin
from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError

__all__ = ["FOCUS_FASTTEXT", "VectorsAlignConfig", "VectorsTrainConfig"]

FASTTEXT_MODELS = ("skipgram", "cbow")
# Token-level fastText as FOCUS's reference implementation trains it (deepfocus 1.0: CBOW, "closer to
# masked LM", dim 100, 3 epochs, 10 negatives); min_count 5 instead of its 10 (docs/init.md says why).
FOCUS_FASTTEXT: dict[str, Any] = {"model": "cbow", "dim": 100, "epochs": 3, "min_count": 5, "neg": 10}


def _positive(name: str, value: int | float) -> None:
    if isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")


@dataclass
class VectorsTrainConfig(ConfigMixin):
    """Train fastText vectors with subword n-grams on a corpus (``vocabshift vectors train``)."""

    corpus: CorpusConfig = field(metadata={"help": "Text to train on (one document per line after reading)."})
    out: str = field(metadata={"help": "Output fastText model, a .bin file (written atomically)."})
    dim: int = field(default=300, metadata={"help": "Vector dimension."})
    epochs: int = field(default=5, metadata={"help": "Passes over the corpus."})
    min_count: int = field(default=5, metadata={"help": "Words seen fewer times get no row of their own "
                                                        "(their n-grams still do)."})
    minn: int = field(default=3, metadata={"help": "Shortest character n-gram (0 with maxn 0: no subwords)."})
    maxn: int = field(default=6, metadata={"help": "Longest character n-gram (0: words only, no subwords)."})
    bucket: int = field(default=2_000_000, metadata={
        "help": "Hash buckets for n-grams; the .bin holds (words + bucket) x dim floats."})
    window: int = field(default=5, metadata={"help": "Context window size in words."})
    neg: int = field(default=5, metadata={"help": "Negative samples per positive one."})
    lr: float = field(default=0.05, metadata={"help": "Initial learning rate."})
    model: str = field(default="skipgram", metadata={"help": "fastText model: skipgram or cbow."})
    threads: int | None = field(default=None, metadata={
        "help": "Training threads (default: all cores). Only threads=1 gives bit-reproducible vectors."})
    seed: int = field(default=0, metadata={"help": "fastText's random seed."})
    show_progress: bool = field(default=True, metadata={"help": "Show fastText's progress line."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output file."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Train token-level vectors of this tokenizer's tokens instead (FOCUS's auxiliary space): the "
                "corpus is tokenized, each token is the word t<id>, no n-grams. The CLI then defaults to FOCUS's "
                "settings (cbow, dim 100, 3 epochs, 10 negatives)."})

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "min_count", "bucket", "window", "neg", "lr"):
            _positive(name, getattr(self, name))
        if not math.isfinite(self.lr):
            raise ConfigError(f"lr must be finite, got {self.lr!r}")
        if self.minn < 0 or self.maxn < 0 or (self.maxn > 0 and not 0 < self.minn <= self.maxn):
            raise ConfigError(f"need 0 < minn <= maxn (or maxn = 0 for no subwords), got minn={self.minn}, "
                              f"maxn={self.maxn}")
        if self.model not in FASTTEXT_MODELS:
            raise ConfigError(f"model must be one of {', '.join(FASTTEXT_MODELS)}, got {self.model!r}")
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not self.out:
            raise ConfigError("out must name the output .bin file")


@dataclass
class VectorsAlignConfig(ConfigMixin):
    """Map source-language vectors into the target space with orthogonal Procrustes (``vocabshift vectors align``)."""

    source: str = field(metadata={"help": "Source-language vectors: fastText .bin, or .vec/.vec.gz text."})
    target: str = field(metadata={"help": "Target-language vectors: fastText .bin, or .vec/.vec.gz text."})
    out: str = field(metadata={"help": "Output directory: W.npy and alignment.json (written atomically)."})
    dictionary: str | None = field(default=None, metadata={
        "help": "Bilingual dictionary, source word then target word per line (tab or space separated), or a "
                "FreeDict .index file. Without one: a seed of identical strings, refined with CSLS."})
    refine: int | None = field(default=None, metadata={
        "help": "Refinement iterations (mutual CSLS nearest neighbours, then Procrustes again). Default: 5 "
                "without a dictionary, 0 with one or with pre_aligned."})
    held_out: float = field(default=0.2, metadata={
        "help": "Share of the seed's source words held out to measure precision@1 (0: no evaluation)."})
    max_words: int = field(default=50_000, metadata={
        "help": "Most frequent words read from each file (plus the dictionary's words); also the search space "
                "of precision@1. Bounds memory."})
    refine_vocab: int = field(default=15_000, metadata={
        "help": "Most frequent words of each side among which refinement looks for mutual nearest neighbours."})
    csls_k: int = field(default=10, metadata={"help": "Neighbours k in CSLS's mean-similarity terms r_S, r_T."})
    seed: int = field(default=0, metadata={"help": "Seed of the held-out split."})
    pre_aligned: bool = field(default=False, metadata={
        "help": "The vectors already share one space (e.g. fastText's aligned vectors): start from W = I "
                "instead of Procrustes on the seed; still evaluate, refine only if refine > 0."})
    device: str = field(default="cpu", metadata={"help": "torch device for the similarity products (cpu, cuda)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if self.refine is not None and (isinstance(self.refine, bool) or self.refine < 0):
            raise ConfigError(f"refine must be >= 0, got {self.refine!r}")
        if not 0.0 <= self.held_out < 1.0:
            raise ConfigError(f"held_out must be in [0, 1), got {self.held_out!r}")
        for name in ("max_words", "refine_vocab", "csls_k"):
            _positive(name, getattr(self, name))
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        for name in ("source", "target", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")

    @property
    def refine_iterations(self) -> int:
        """``refine`` with its default resolved."""
        if self.refine is not None:
            return self.refine
        return 0 if (self.dictionary or self.pre_aligned) else 5
