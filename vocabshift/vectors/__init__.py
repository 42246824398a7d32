"""Stage 3: static word vectors — train, load, align, and place tokens in them.

- :mod:`~vocabshift.vectors.static`: :class:`StaticVectors`, :func:`load_vectors` (fastText ``.bin``
  memory-mapped, ``.vec``/``.vec.gz`` streamed), :func:`save_vectors`;
- :mod:`~vocabshift.vectors.train`: :func:`train_vectors` (fastText skipgram with n-grams),
  :func:`train_token_vectors` / :func:`token_id_vectors` (FOCUS's token-level vectors);
- :mod:`~vocabshift.vectors.dictionary`: :func:`load_dictionary` (pairs files, FreeDict dictd);
- :mod:`~vocabshift.vectors.align`: :func:`align_vectors` (Procrustes + CSLS refinement),
  :func:`load_aligned`, :func:`load_pair`;
- :mod:`~vocabshift.vectors.token_vectors`: :func:`token_vectors` (WECHSEL's token vectors).

See ``docs/vectors.md``.
"""

from __future__ import annotations

from vocabshift.vectors.align import (
    AlignmentResult,
    align_vectors,
    check_dims,
    load_aligned,
    load_pair,
    precision_at_1,
    procrustes,
    refine_alignment,
)
from vocabshift.vectors.config import VectorsAlignConfig, VectorsTrainConfig
from vocabshift.vectors.dictionary import load_dictionary
from vocabshift.vectors.static import StaticVectors, load_vectors, save_vectors, vector_file_info
from vocabshift.vectors.token_vectors import token_vectors
from vocabshift.vectors.train import token_id_vectors, train_token_vectors, train_vectors

__all__ = [
    "AlignmentResult",
    "StaticVectors",
    "VectorsAlignConfig",
    "VectorsTrainConfig",
    "align_vectors",
    "check_dims",
    "load_aligned",
    "load_dictionary",
    "load_pair",
    "load_vectors",
    "precision_at_1",
    "procrustes",
    "refine_alignment",
    "save_vectors",
    "token_id_vectors",
    "token_vectors",
    "train_token_vectors",
    "train_vectors",
    "vector_file_info",
]
