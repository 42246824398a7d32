"""Model surgery: the one place that changes a model's vocabulary-sized parameters.

Later stages (pruning, extension, embedding init) produce an ``id_map`` (new id -> source id, or -1
for a new token) and, optionally, rows for the new tokens; :func:`remap_vocab` applies them to the
model in place — input embeddings, LM head (tied or untied), MLM output bias, ``config.vocab_size``
and the special-token ids of the config and generation config — keeping the rows of kept tokens
bit-identical. :func:`locate` tells where those parameters are and whether the head is tied.
Only this package touches ``nn.Module`` s; init methods work on plain tensors.

The names below load on first use, so that the torch-free modules of this package
(:mod:`~vocabshift.surgery.safetensors_io`, :mod:`~vocabshift.surgery.row_prune`) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from vocabshift.errors import IdMapError, ModelError

_LAZY = {"EmbeddingLayout": "vocabshift.surgery.layout", "locate": "vocabshift.surgery.layout",
         "remap_vocab": "vocabshift.surgery.resize"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EmbeddingLayout", "IdMapError", "ModelError", "locate", "remap_vocab"]
