"""vocabshift: adapt pretrained transformer language models to new languages.

Public API (each stage is usable alone; heavy libraries are imported when a stage runs):

- :func:`train_tokenizer` / :class:`TokenizerTrainConfig` — a target tokenizer in the source's family;
- :func:`tokenizer_stats` — fertility, bytes per token, UNK rate and coverage per Unicode script;
- :func:`iter_corpus` / :class:`CorpusConfig` — the streaming corpus reader every stage uses.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import CorpusConfig, CorpusSource, iter_corpus
from vocabshift.errors import VocabshiftError
from vocabshift.tokenization.stats import tokenizer_stats
from vocabshift.tokenization.train import train_tokenizer

try:
    __version__ = version("vocabshift")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CorpusConfig",
    "CorpusSource",
    "TokenizerTrainConfig",
    "VocabshiftError",
    "__version__",
    "iter_corpus",
    "tokenizer_stats",
    "train_tokenizer",
]
