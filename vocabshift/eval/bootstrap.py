"""Bootstrap error bars over documents for bits per byte, and the paired verdict between two models.

Documents are the resampled unit (Efron's nonparametric bootstrap; the paired form follows
Koehn 2004, "Statistical significance tests for machine translation evaluation"): each resample
draws ``n`` document indices with replacement, and a model's bits per byte on it is the *ratio of
sums* ``sum(nll) / sum(bytes) / ln 2`` over the drawn documents, exactly as the point estimate is
computed on all of them (never a mean of per-document ratios, which would over-weight short ones).

The paired difference uses the same drawn indices for both models, so what the two models share
(some documents are simply harder) cancels out and the interval measures only how they differ.
Intervals are percentile intervals. Simplified: no bias correction (BCa), which matters little for
a ratio of sums over hundreds of documents.

Everything is numpy and vectorized: resamples are drawn as a ``(resamples, n)`` count matrix
(multinomial), in chunks so that memory stays bounded for large ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vocabshift.errors import ConfigError

VERDICTS = ("better", "worse", "within noise")
_CHUNK_CELLS = 4_000_000  # resamples x documents per chunk of the count matrix (32 MB of int64)


@dataclass
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float  # e.g. 0.95
    resamples: int
    seed: int


@dataclass
class PairedComparison:
    """Bits per byte of a baseline and a model on the same documents, and their paired difference."""

    old: Interval  # bits per byte of the baseline
    new: Interval  # bits per byte of the model
    difference: Interval  # new - old, bits per byte (negative: the model is better)
    verdict: str  # "better", "worse" or "within noise", from ``difference`` alone
    documents: int
    bytes: int  # UTF-8 bytes of the documents, the same for both models by construction


def _counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` multiplicities of each document in each resample (rows sum to ``n``)."""
    rng = np.random.default_rng(seed)
    rows = []
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, chunk):
        rows.append(rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start)))
    return np.concatenate(rows, axis=0)


def resample_bits_per_byte(nll: np.ndarray, n_bytes: np.ndarray, *, resamples: int = 1000,
                           seed: int = 0) -> np.ndarray:
    """Bits per byte of each model on each bootstrap resample of the documents.

    ``nll``: ``(models, documents)`` summed NLL per document in nats (or ``(documents,)`` for one
    model); ``n_bytes``: ``(documents,)`` UTF-8 bytes per document. Every model is scored on the
    same resampled indices. Returns ``(models, resamples)`` (or ``(resamples,)``).
    """
    nll = np.asarray(nll, dtype=np.float64)
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    single = nll.ndim == 1
    nll2 = nll[None, :] if single else nll
    n = n_bytes.shape[0]
    if nll2.ndim != 2 or nll2.shape[1] != n:
        raise ConfigError(f"nll has shape {nll.shape} but there are {n} documents' byte counts")
    if n == 0:
        raise ConfigError("the bootstrap needs at least one document")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"resamples must be an integer >= 1, got {resamples!r}")
    counts = _counts(n, resamples, seed).astype(np.float64)
    sampled_bytes = counts @ n_bytes  # (resamples,)
    # A resample of only zero-byte documents has no bits per byte; it needs documents with text.
    if np.any(sampled_bytes <= 0):
        raise ConfigError("a bootstrap resample holds no bytes: the documents are empty")
    out = (counts @ nll2.T).T / sampled_bytes / math.log(2)  # (models, resamples)
    return out[0] if single else out


def percentile_interval(samples: np.ndarray, estimate: float, *, confidence: float = 0.95, seed: int = 0) -> Interval:
    """The ``confidence`` percentile interval of bootstrap ``samples`` around ``estimate``."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail])
    return Interval(estimate=float(estimate), low=float(low), high=float(high), confidence=confidence,
                    resamples=int(np.asarray(samples).shape[-1]), seed=seed)


def verdict(difference: Interval) -> str:
    """``better`` when the whole interval of (model - baseline) bits per byte is below 0, ``worse`` when it
    is above 0, else ``within noise``. Never decided from the point values."""
    if difference.high < 0:
        return "better"
    if difference.low > 0:
        return "worse"
    return "within noise"


def bits_per_byte_interval(nll: np.ndarray, n_bytes: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                           confidence: float = 0.95) -> Interval:
    """One model's bits per byte (ratio of sums) and its bootstrap interval over documents."""
    nll = np.asarray(nll, dtype=np.float64)
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    samples = resample_bits_per_byte(nll, n_bytes, resamples=resamples, seed=seed)
    return percentile_interval(samples, nll.sum() / n_bytes.sum() / math.log(2), confidence=confidence, seed=seed)


def compare_bits_per_byte(nll_old: np.ndarray, nll_new: np.ndarray, n_bytes: np.ndarray, *, resamples: int = 1000,
                          seed: int = 0, confidence: float = 0.95) -> PairedComparison:
    """Bootstrap both models' bits per byte and the paired difference (new - old) on the same documents.

    ``nll_old``/``nll_new``: summed NLL per document (nats), index ``i`` being the same document for
    both; ``n_bytes``: its UTF-8 bytes.
    """
    nll = np.stack([np.asarray(nll_old, dtype=np.float64), np.asarray(nll_new, dtype=np.float64)])
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    samples = resample_bits_per_byte(nll, n_bytes, resamples=resamples, seed=seed)
    point = nll.sum(axis=1) / n_bytes.sum() / math.log(2)
    old = percentile_interval(samples[0], point[0], confidence=confidence, seed=seed)
    new = percentile_interval(samples[1], point[1], confidence=confidence, seed=seed)
    diff = percentile_interval(samples[1] - samples[0], point[1] - point[0], confidence=confidence, seed=seed)
    return PairedComparison(old=old, new=new, difference=diff, verdict=verdict(diff), documents=int(n_bytes.shape[0]),
                            bytes=int(n_bytes.sum()))
