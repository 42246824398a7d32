"""Stage 3: static word vectors — train, load, align, and place tokens in them.

- :mod:`~vocabshift.vectors.static`: :class:`StaticVectors`, :func:`load_vectors` (fastText ``.bin``
  memory-mapped, ``.vec``/``.vec.gz`` streamed), :func:`save_vectors`;
- :mod:`~vocabshift.vectors.train`: :func:`train_vectors` (fastText skipgram with n-grams),
  :func:`train_token_vectors` / :func:`token_id_vectors` (FOCUS's token-level vectors);
- :mod:`~vocabshift.vectors.dictionary`: :func:`load_dictionary` (pairs files, FreeDict dictd);
- :mod:`~vocabshift.vectors.align`: :func:`align_vectors` (Procrustes + CSLS refinement),
  :func:`load_aligned`, :func:`load_pair`;
- :mod:`~vocabshift.vectors.token_vectors`: :func:`token_vectors` (WECHSEL's token vectors).

See ``docs/vectors.md``. The names below load on first use: importing :mod:`vocabshift.vectors.config`
(the stage's settings) does not import torch.
"""

from __future__ import annotations

from typing import Any

# Eager (it is torch-free): the function shares its module's name, and the module, once imported from
# anywhere, would otherwise shadow the lazily loaded function as the attribute `token_vectors`.
from vocabshift.vectors.token_vectors import token_vectors as token_vectors

_LAZY = {
    **dict.fromkeys(("AlignmentResult", "align_vectors", "check_dims", "load_aligned", "load_pair", "precision_at_1",
                     "procrustes", "refine_alignment"), "vocabshift.vectors.align"),
    **dict.fromkeys(("VectorsAlignConfig", "VectorsTrainConfig"), "vocabshift.vectors.config"),
    "load_dictionary": "vocabshift.vectors.dictionary",
    **dict.fromkeys(("StaticVectors", "load_vectors", "save_vectors", "vector_file_info"), "vocabshift.vectors.static"),
    **dict.fromkeys(("token_id_vectors", "train_token_vectors", "train_vectors"), "vocabshift.vectors.train"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vocabshift.vectors' has no attribute {name!r}")


__all__ = sorted([*_LAZY, "token_vectors"])
