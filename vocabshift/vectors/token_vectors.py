"""Token vectors in a static word-vector space: each token's surface form placed among the words.

This is the first step of WECHSEL (Minixhofer et al. 2022, "WECHSEL: Effective initialization of
subword embeddings for cross-lingual transfer of monolingual language models", section 3), which then
compares source and target tokens in the aligned space. Two cases, as in WECHSEL:

- vectors with subword information (a fastText ``.bin``): a token's vector is fastText's composition of
  its surface text (the word row if the text is a known word, plus its character n-gram rows);
- word-only vectors (a ``.vec``): every word of the vector vocabulary is tokenized, as a word on its own
  and after a space, and a token's vector is the frequency-weighted mean of the vectors of the words
  whose tokenization contains it. Weights are the word counts when known, else Zipf weights ``1/rank``
  (``.vec`` files list words by frequency). A word counts once per token even when both spellings or
  several positions contain it (WECHSEL appends it once per spelling; we do not double-weight).

Special, byte and partial-UTF-8 tokens, and tokens with an empty surface, get no vector (``found`` False):
they are not text a word-vector space knows (FOCUS's byte-fallback bug, its PR #3, came from this).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from vocabshift.errors import VectorsError
from vocabshift.tokenization.surface import Surface
from vocabshift.vectors.static import StaticVectors
from vocabshift.vectors.train import _backend

log = logging.getLogger(__name__)

__all__ = ["token_vectors", "word_token_incidence"]

_ENCODE_BLOCK = 20_000  # words per tokenizer batch


def _usable(surfaces: Sequence[Surface]) -> np.ndarray:
    return np.fromiter((s.kind == "normal" and bool(s.text.strip()) for s in surfaces), dtype=bool,
                       count=len(surfaces))


def word_token_incidence(words: Sequence[str], tokenizer: Any, n_tokens: int) -> sp.csr_matrix:
    """``[n_tokens, len(words)]`` 0/1 matrix: token ``t`` occurs in the tokenization of word ``w``
    (the word alone or after a space, no special tokens). Ids ``>= n_tokens`` are dropped."""
    backend = _backend(tokenizer)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, len(words), _ENCODE_BLOCK):
        block = list(words[start:start + _ENCODE_BLOCK])
        for texts in (block, [" " + w for w in block]):
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
            ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
            rows.append(ids)
            cols.append(np.repeat(np.arange(start, start + len(block), dtype=np.int64), lengths))
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    keep = r < n_tokens
    m = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (r[keep], c[keep])),
                      shape=(n_tokens, len(words)))
    m.sum_duplicates()
    m.data[:] = 1.0  # presence, not multiplicity
    return m


def token_vectors(vectors: StaticVectors, surfaces: Sequence[Surface], *,
                  tokenizer: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``[len(surfaces), dim]`` float32 token vectors (transform applied) and the bool found mask.

    ``surfaces`` is :func:`vocabshift.tokenization.surface.surface_forms` of the tokenizer, indexed by
    token id. With subword vectors the surface text is composed by fastText; with word-only vectors
    ``tokenizer`` (a transformers fast tokenizer or a ``tokenizers.Tokenizer``) is required and each
    token gets the frequency-weighted mean of the words it occurs in (see the module docstring).
    """
    usable = _usable(surfaces)
    n = len(surfaces)
    if vectors.has_subwords:
        texts = [s.text.strip() if ok else "" for s, ok in zip(surfaces, usable, strict=True)]
        rows = np.flatnonzero(usable)
        out = np.zeros((n, vectors.dim), dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        vecs, ok = vectors.lookup([texts[i] for i in rows])
        out[rows], found[rows] = vecs, ok
        log.info("token vectors by fastText composition: %d of %d tokens", int(found.sum()), n)
        return out, found
    if tokenizer is None:
        raise VectorsError("word-only vectors (no subword information) need the tokenizer, to spread each word's "
                           "vector over the tokens it is made of", path=vectors.path,
                           hint="pass tokenizer=..., or use a fastText .bin")
    incidence = word_token_incidence(vectors.words, tokenizer, n)
    if vectors.counts is not None:
        weights = np.asarray(vectors.counts, dtype=np.float64)
    else:
        weights = 1.0 / np.arange(1, len(vectors) + 1, dtype=np.float64)  # Zipf: file order is frequency rank
    weighted = incidence @ sp.diags(weights)
    totals = np.asarray(weighted.sum(axis=1)).ravel()
    found = (totals > 0) & usable
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=found)
    mean = (sp.diags(scale) @ weighted).astype(np.float32).tocsr()  # row-stochastic on found tokens
    out = np.asarray(mean @ vectors.matrix, dtype=np.float32)
    log.info("token vectors by weighted word means: %d of %d tokens occur in the %d words", int(found.sum()), n,
             len(vectors))
    return out, found
