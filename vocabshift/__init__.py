"""vocabshift: adapt pretrained transformer language models to new languages.

Public API (each stage is usable alone; heavy libraries are imported when a stage runs):

- :func:`train_tokenizer` / :class:`TokenizerTrainConfig` — a target tokenizer in the source's family;
- :func:`tokenizer_stats` — fertility, bytes per token, UNK rate and coverage per Unicode script;
- :func:`iter_corpus` / :class:`CorpusConfig` — the streaming corpus reader every stage uses;
- :func:`prune` / :func:`extend` (:mod:`vocabshift.vocabulary`) — vocabulary surgery;
- :func:`train_vectors` / :func:`align_vectors` / :func:`load_vectors` (:mod:`vocabshift.vectors`) — static vectors;
- :func:`init_model` / :class:`InitConfig` / :func:`list_init_methods` (:mod:`vocabshift.init`) — embedding init;
- :func:`train` / :class:`TrainConfig`, :func:`export` / :class:`ExportConfig` — continued pretraining, checkpoint;
- :func:`evaluate_model` / :func:`write_report` — evaluation and report;
- :func:`adapt` / :class:`AdaptConfig` / :func:`load_recipe` — the whole pipeline from one recipe.

The stage entry points import torch and are loaded on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import CorpusConfig, CorpusSource, iter_corpus
from vocabshift.errors import VocabshiftError
from vocabshift.tokenization.stats import tokenizer_stats
from vocabshift.tokenization.train import train_tokenizer

_LAZY = {
    "prune": "vocabshift.vocabulary", "extend": "vocabshift.vocabulary", "PruneConfig": "vocabshift.vocabulary_config",
    "ExtendConfig": "vocabshift.vocabulary_config",
    "train_vectors": "vocabshift.vectors", "align_vectors": "vocabshift.vectors", "load_vectors": "vocabshift.vectors",
    "VectorsTrainConfig": "vocabshift.vectors", "VectorsAlignConfig": "vocabshift.vectors",
    "init_model": "vocabshift.init.apply", "InitConfig": "vocabshift.init.config",
    "list_init_methods": "vocabshift.init.registry",
    "train": "vocabshift.train.loop", "TrainConfig": "vocabshift.train.config",
    "export": "vocabshift.export", "ExportConfig": "vocabshift.export",
    "evaluate_model": "vocabshift.eval", "EvalConfig": "vocabshift.eval", "write_report": "vocabshift.eval",
    "adapt": "vocabshift.pipeline", "AdaptConfig": "vocabshift.pipeline", "load_recipe": "vocabshift.pipeline",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vocabshift' has no attribute {name!r}")


try:
    __version__ = version("vocabshift")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [  # noqa: RUF022  (eager names first, then the lazily loaded ones)
    *sorted(_LAZY),
    "CorpusConfig",
    "CorpusSource",
    "TokenizerTrainConfig",
    "VocabshiftError",
    "__version__",
    "iter_corpus",
    "tokenizer_stats",
    "train_tokenizer",
]
