"""Cross-lingual alignment of static vectors: orthogonal Procrustes, CSLS retrieval and refinement.

The recipe is MUSE's supervised/identical-character mode (Conneau et al. 2018, "Word Translation
Without Parallel Data") and VecMap's self-learning (Artetxe et al. 2017): learn an orthogonal ``W``
from seed pairs, ``W = argmin ||XW - Y||_F = U V^T`` with ``U S V^T = SVD(X^T Y)`` (Schönemann 1966),
then repeatedly build a new dictionary from *mutual* nearest neighbours under CSLS among the most
frequent words and solve Procrustes again. CSLS (cross-domain similarity local scaling) corrects
hubness: ``CSLS(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)``, ``r_T(x)`` being the mean cosine of ``x`` to its
``k`` nearest target words and ``r_S(y)`` that of ``y`` to its ``k`` nearest (mapped) source words.

Conventions: ``W`` (d x d, orthogonal) maps SOURCE vectors into the TARGET space, ``source @ W``; the
target is left as it is. ``W`` is learned on length-normalized vectors; because it is orthogonal it
preserves cosines, so it applies to the raw vectors as well (no centering is done, which would not).
Every similarity product runs in row chunks (``torch.topk`` per chunk) so memory stays at about
``_CHUNK_ELEMENTS`` floats whatever the vocabulary sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabshift.errors import VectorsError
from vocabshift.outputs import atomic_output_dir, check_output_path, writes_output
from vocabshift.vectors.config import VectorsAlignConfig
from vocabshift.vectors.dictionary import load_dictionary
from vocabshift.vectors.static import StaticVectors, load_vectors, vector_file_info

log = logging.getLogger(__name__)

__all__ = [
    "AlignmentResult",
    "align_vectors",
    "case_variants",
    "check_dims",
    "csls_nearest",
    "knn_mean_similarity",
    "load_aligned",
    "load_pair",
    "mutual_nn_csls",
    "precision_at_1",
    "procrustes",
    "refine_alignment",
]

ALIGNMENT_FILE = "alignment.json"
W_FILE = "W.npy"
_CHUNK_ELEMENTS = 1 << 24  # similarity entries per chunk: 64 MB of float32
_WEAK_PROXY = ("held-out identical strings: a weak proxy (identical strings are mostly names, numbers and "
               "punctuation, easier than general words); give --dictionary for a real measure")


# --------------------------------------------------------------------------------------------------
# The tensor core


def procrustes(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """Orthogonal ``W`` minimizing ``||x W - y||_F`` for paired rows: ``W = U V^T``, ``U S V^T = SVD(x^T y)``."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64, device=xt.device)
    u, _, vh = torch.linalg.svd(xt.T @ yt)
    return (u @ vh).to(torch.float32).cpu().numpy()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _rows_per_chunk(n_keys: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(n_keys, 1))


def knn_mean_similarity(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """``[n]``: mean similarity (dot product; cosine for unit rows) of each query to its ``k`` nearest keys."""
    k = min(k, keys.shape[0])
    out = torch.empty(queries.shape[0], dtype=queries.dtype, device=queries.device)
    step = _rows_per_chunk(keys.shape[0])
    for start in range(0, queries.shape[0], step):
        sims = queries[start:start + step] @ keys.T
        out[start:start + step] = sims.topk(k, dim=1).values.mean(dim=1)
    return out


def csls_nearest(queries: torch.Tensor, keys: torch.Tensor, r_keys: torch.Tensor, n: int = 1) -> torch.Tensor:
    """``[q, n]`` indices of the keys with the highest CSLS for each query (unit rows).

    ``r_keys`` is each key's mean similarity to its k nearest queries-side vectors; the query's own
    ``r`` term is the same for every key, so it does not change the ranking and is left out.
    """
    out = torch.empty(queries.shape[0], n, dtype=torch.long, device=queries.device)
    step = _rows_per_chunk(keys.shape[0])
    for start in range(0, queries.shape[0], step):
        scores = (queries[start:start + step] @ keys.T).mul_(2).sub_(r_keys)
        out[start:start + step] = scores.argmax(dim=1, keepdim=True) if n == 1 else scores.topk(n, dim=1).indices
    return out


def mutual_nn_csls(source: torch.Tensor, target: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(i, j)`` where target ``j`` is source ``i``'s CSLS nearest neighbour and vice versa (unit rows)."""
    r_target = knn_mean_similarity(source, target, k)  # r_T(x) for each source x
    r_source = knn_mean_similarity(target, source, k)  # r_S(y) for each target y
    forward = csls_nearest(source, target, r_source)[:, 0]
    backward = csls_nearest(target, source, r_target)[:, 0]
    rows = torch.arange(source.shape[0], device=source.device)
    mutual = backward[forward] == rows
    return rows[mutual], forward[mutual]


def precision_at_1(source: torch.Tensor, target: torch.Tensor, queries: Sequence[int],
                   gold: Sequence[Iterable[int]], *, k: int = 10) -> float:
    """Share of ``queries`` (rows of the mapped, unit-normalized ``source``) whose CSLS nearest target row is
    one of their ``gold`` rows. ``r_S`` is taken over all of ``source``, ``r_T`` is not needed for ranking."""
    if not queries:
        return float("nan")
    r_source = knn_mean_similarity(target, source, k)
    q = torch.as_tensor(list(queries), dtype=torch.long, device=source.device)
    predicted = csls_nearest(source[q], target, r_source)[:, 0].tolist()
    hits = sum(p in set(g) for p, g in zip(predicted, gold, strict=True))
    return hits / len(predicted)


def refine_alignment(source: torch.Tensor, target: torch.Tensor, W: np.ndarray, iterations: int, *,
                     k: int = 10) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Self-learning: ``iterations`` x (dictionary from mutual CSLS neighbours of ``source @ W`` and ``target``,
    then Procrustes on it). ``source`` / ``target``: unit rows of the most frequent words of each side.
    Returns the last ``W`` and, per iteration, the size of the induced dictionary."""
    history = []
    for it in range(iterations):
        mapped = source @ torch.as_tensor(W, device=source.device)
        i, j = mutual_nn_csls(mapped, target, k)
        if len(i) < 2:
            log.warning("refinement iteration %d found %d mutual neighbours; stopping", it + 1, len(i))
            break
        new_w = procrustes(source[i], target[j])
        change = float(np.linalg.norm(new_w - W))
        W = new_w
        history.append({"iteration": it + 1, "pairs": int(len(i)), "change": round(change, 6)})
        log.info("refinement %d: %d mutual CSLS pairs, ||dW|| = %.4f", it + 1, len(i), change)
    return W, history


# --------------------------------------------------------------------------------------------------
# Files


@dataclass
class AlignmentResult:
    """What :func:`align_vectors` wrote: the output directory and its report (``alignment.json``).

    ``W`` (the d x d matrix, also in ``W.npy``) is an attribute but not a dataclass field, so that
    ``vocabshift.config.to_dict(result)`` stays plain JSON.
    """

    out: Path
    report: dict[str, Any] = field(default_factory=dict)
    W: InitVar[np.ndarray | None] = None

    def __post_init__(self, W: np.ndarray | None) -> None:
        self.W = W  # type: ignore[misc]

    @property
    def precision_before(self) -> float | None:
        return self.report["precision_at_1"]["before_refinement"]

    @property
    def precision_after(self) -> float | None:
        return self.report["precision_at_1"]["after_refinement"]


def case_variants(word: str) -> list[str]:
    """The forms of a dictionary word tried in a vocabulary, in order: as is, lowercased, capitalized."""
    return list(dict.fromkeys([word, word.lower(), word.capitalize()]))


def _first_found(vectors: StaticVectors, word: str) -> int | None:
    for variant in case_variants(word):
        row = vectors.index(variant)
        if row is not None:
            return row
    return None


def _match_pairs(pairs: list[tuple[str, str]], source: StaticVectors,
                 target: StaticVectors) -> list[tuple[int, int]]:
    matched = []
    for s, t in pairs:
        i, j = _first_found(source, s), _first_found(target, t)
        if i is not None and j is not None:
            matched.append((i, j))
    return list(dict.fromkeys(matched))


def _no_pairs_error(config: VectorsAlignConfig, pairs: list[tuple[str, str]], source: StaticVectors,
                    target: StaticVectors) -> VectorsError:
    def show(words: Iterable[str]) -> str:
        return ", ".join(repr(w) for w in list(words)[:5])

    reversed_hits = len(_match_pairs([(t, s) for s, t in pairs[:5000]], source, target))
    hint = ("the dictionary seems to go target -> source: swap its columns" if reversed_hits else
            "check that the dictionary goes source word -> target word and that the vector files are the "
            "languages it is for")
    return VectorsError(
        f"none of the {len(pairs)} dictionary pairs has its source word in {config.source} and its target word "
        f"in {config.target} (tried as is, lowercased, capitalized); dictionary pairs: "
        + ", ".join(f"{s!r}->{t!r}" for s, t in pairs[:4])
        + f"; source words: {show(source.words)}; target words: {show(target.words)}",
        path=config.dictionary, hint=hint)


_SAMPLE_BLOCKS, _SAMPLE_BYTES, _EDGE_BYTES = 64, 1 << 16, 1 << 20


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's size, its first and last MiB and 64 evenly spaced 64 KiB blocks.

    Tells a retrained or replaced vector file from the one an alignment was fitted on while reading about
    8 MiB: hashing a whole 2.4 GB fastText ``.bin`` took 10 s of every alignment, most of its time.
    """
    p = Path(path)
    size = p.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(p, "rb") as fh:
        spans = [(0, _EDGE_BYTES), (max(0, size - _EDGE_BYTES), _EDGE_BYTES)]
        spans += [(size * i // _SAMPLE_BLOCKS, _SAMPLE_BYTES) for i in range(1, _SAMPLE_BLOCKS)]
        for offset, length in spans:
            fh.seek(offset)
            digest.update(fh.read(length))
    return digest.hexdigest()


def _file_record(path: str, info: dict[str, Any], loaded: int) -> dict[str, Any]:
    p = Path(path).resolve()
    return {"path": str(p), "bytes": p.stat().st_size, "fingerprint": file_fingerprint(p), "format": info["format"],
            "dim": info["dim"], "words_in_file": info["words"], "words_loaded": loaded}


def _seed_pairs(config: VectorsAlignConfig, pairs: list[tuple[str, str]] | None, source: StaticVectors,
                target: StaticVectors) -> tuple[list[tuple[int, int]], str]:
    """``(matched, kind)``: the (source row, target row) pairs the alignment starts from, the dictionary's
    pairs found in the vectors (kind ``dictionary``) or, without a dictionary, the words both vocabularies
    have (``identical_strings``)."""
    if pairs is not None:
        matched = _match_pairs(pairs, source, target)
        if not matched:
            raise _no_pairs_error(config, pairs, source, target)
        return matched, "dictionary"
    matched = [(i, j) for j, w in enumerate(target.words) if (i := source.index(w)) is not None]
    if not matched:
        raise VectorsError(f"{config.source} and {config.target} share no word to seed the alignment with",
                           hint="give a bilingual dictionary (--dictionary)")
    return matched, "identical_strings"


def _hold_out(matched: list[tuple[int, int]], held_out: float,
              seed: int) -> tuple[list[tuple[int, int]], dict[int, set[int]]]:
    """``(train, gold)``: the pairs left for training once a seeded share ``held_out`` of the source words is
    held out, and each held-out source row's correct target rows."""
    test_rows = _split([i for i, _ in matched], held_out, seed)
    train = [(i, j) for i, j in matched if i not in test_rows]
    gold: dict[int, set[int]] = {}
    for i, j in matched:
        if i in test_rows:
            gold.setdefault(i, set()).add(j)
    return train, gold


def _split(source_rows: list[int], held_out: float, seed: int) -> set[int]:
    """The held-out source rows: a seeded share ``held_out`` of the distinct rows (at least one, not all)."""
    distinct = sorted(set(source_rows))
    if held_out <= 0 or len(distinct) < 2:
        return set()
    n_test = min(max(round(held_out * len(distinct)), 1), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))
    return {distinct[i] for i in order[:n_test].tolist()}


def check_dims(source: str | Path, target: str | Path, source_dim: int, target_dim: int) -> None:
    """Raise the one clear error for vectors of different dimensions."""
    if source_dim != target_dim:
        raise VectorsError(f"vector dimensions differ: {source} has {source_dim}, {target} has {target_dim}",
                           hint="source and target vectors must have the same dimension to share a space "
                                "(train or download both at one dimension)")


@writes_output
def align_vectors(config: VectorsAlignConfig) -> AlignmentResult:
    """Learn ``W`` mapping source vectors into the target space; write ``W.npy`` and ``alignment.json`` to ``out``.

    Seed pairs come from the dictionary (case variants tried) or, without one, from the strings found in
    both vocabularies. A seeded share ``held_out`` of the seed's source words is kept out of training to
    report precision@1 (CSLS retrieval among the loaded target words) before and after refinement.
    """
    t0 = time.perf_counter()
    out = check_output_path(config.out, config.force)
    src_info, tgt_info = vector_file_info(config.source), vector_file_info(config.target)
    check_dims(config.source, config.target, src_info["dim"], tgt_info["dim"])
    pairs = load_dictionary(config.dictionary) if config.dictionary else None
    src_words = tgt_words = None
    if pairs is not None:
        src_words = {v for s, _ in pairs for v in case_variants(s)}
        tgt_words = {v for _, t in pairs for v in case_variants(t)}
    source = load_vectors(config.source, words=src_words, max_words=config.max_words)
    target = load_vectors(config.target, words=tgt_words, max_words=config.max_words)
    check_dims(config.source, config.target, source.dim, target.dim)

    matched, seed_kind = _seed_pairs(config, pairs, source, target)
    train, gold = _hold_out(matched, config.held_out, config.seed)
    queries = sorted(gold)
    log.info("%s seed: %d pairs in the vectors, %d for training, %d source words held out",
             seed_kind, len(matched), len(train), len(queries))

    device = torch.device(config.device)
    X = _normalize(torch.as_tensor(source.base_matrix, device=device))
    Y = _normalize(torch.as_tensor(target.base_matrix, device=device))
    d = X.shape[1]
    if config.pre_aligned:
        W = np.eye(d, dtype=np.float32)
    else:
        ti = torch.as_tensor([i for i, _ in train], dtype=torch.long, device=device)
        tj = torch.as_tensor([j for _, j in train], dtype=torch.long, device=device)
        W = procrustes(X[ti], Y[tj])

    def evaluate(w: np.ndarray) -> float | None:
        if not queries:
            return None
        mapped = X @ torch.as_tensor(w, device=device)
        return round(precision_at_1(mapped, Y, queries, [gold[q] for q in queries], k=config.csls_k), 6)

    before = evaluate(W)
    iterations = config.refine_iterations
    history: list[dict[str, Any]] = []
    if iterations:
        # Loaded rows start with the file's first max_words words, in file order (most frequent first).
        n = min(config.refine_vocab, config.max_words)
        W, history = refine_alignment(X[:n], Y[:n], W, iterations, k=config.csls_k)
    after = evaluate(W) if iterations else before
    log.info("precision@1 (CSLS) on %d held-out words: %s before refinement, %s after", len(queries), before, after)

    report: dict[str, Any] = {
        "format": "vocabshift-alignment",
        "version": 1,
        "convention": "W maps source vectors into the target space: source @ W; the target is unchanged",
        "source": _file_record(config.source, src_info, len(source)),
        "target": _file_record(config.target, tgt_info, len(target)),
        "dim": d,
        "seed_kind": "pre_aligned+" + seed_kind if config.pre_aligned else seed_kind,
        "dictionary": None if config.dictionary is None else {
            "path": str(Path(config.dictionary).resolve()), "pairs": len(pairs or []),
            "pairs_found": len(matched)},
        "pairs_used": len(train),
        "pairs_held_out": len(matched) - len(train),
        "held_out": config.held_out,
        "seed": config.seed,
        "refine_iterations": iterations,
        "refine_vocab": min(config.refine_vocab, config.max_words),
        "refinement": history,
        "csls_k": config.csls_k,
        "max_words": config.max_words,
        "precision_at_1": {
            "before_refinement": before,
            "after_refinement": after,
            "test_source_words": len(queries),
            "search_target_words": len(target),
            "retrieval": f"CSLS, k={config.csls_k}",
            "evaluated_on": _WEAK_PROXY if seed_kind == "identical_strings" else "held-out dictionary pairs",
        },
        "orthogonality_error": float(np.abs(W.T.astype(np.float64) @ W - np.eye(d)).max()),
        "config": config.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    with atomic_output_dir(out, force=config.force) as tmp:
        np.save(tmp / W_FILE, W.astype(np.float32))
        (tmp / ALIGNMENT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return AlignmentResult(out=out, report=report, W=W)


def load_pair(source: str | Path, target: str | Path, *, source_words: Iterable[str] | None = None,
              target_words: Iterable[str] | None = None,
              max_words: int | None = None) -> tuple[StaticVectors, StaticVectors]:
    """Source and target vectors that already share one space (pre-aligned), as they are (identity map).

    Raises :class:`VectorsError` when their dimensions differ.
    """
    check_dims(source, target, vector_file_info(source)["dim"], vector_file_info(target)["dim"])
    return (load_vectors(source, words=source_words, max_words=max_words),
            load_vectors(target, words=target_words, max_words=max_words))


def load_aligned(directory: str | Path, *, source_words: Iterable[str] | None = None,
                 target_words: Iterable[str] | None = None,
                 max_words: int | None = None) -> tuple[StaticVectors, StaticVectors]:
    """``(source.with_transform(W), target)`` from an ``align`` output directory: both in the target space.

    The vector files are read from the paths recorded in ``alignment.json`` (a ``.bin`` is memory-mapped;
    for a ``.vec`` pass ``source_words`` / ``target_words`` / ``max_words`` to read only what is needed).
    Raises :class:`VectorsError` if the directory is not an alignment or a vector file changed (size or
    :func:`file_fingerprint`).
    """
    directory = Path(directory)
    meta_path = directory / ALIGNMENT_FILE
    if not meta_path.is_file() or not (directory / W_FILE).is_file():
        raise VectorsError(f"not an alignment directory (no {ALIGNMENT_FILE} and {W_FILE})", path=directory,
                           hint="write one with `vocabshift vectors align`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        W = np.load(directory / W_FILE, allow_pickle=False)  # never unpickle: an object array could run code
    except (OSError, ValueError) as err:
        raise VectorsError(f"cannot read the alignment ({err})", path=directory) from err
    records = []
    for side in ("source", "target"):
        rec = meta.get(side) or {}
        path = Path(rec.get("path", ""))
        if not path.is_file():
            raise VectorsError(f"the {side} vector file recorded in {ALIGNMENT_FILE} is missing", path=path,
                               hint="align again, or put the file back where it was")
        if rec.get("bytes") is not None and path.stat().st_size != rec["bytes"]:
            raise VectorsError(f"the {side} vector file changed since the alignment ({path.stat().st_size} bytes, "
                               f"{rec['bytes']} recorded)", path=path, hint="align again")
        if rec.get("fingerprint") is not None and file_fingerprint(path) != rec["fingerprint"]:
            raise VectorsError(f"the {side} vector file changed since the alignment (same size, different "
                               "content)", path=path, hint="align again")
        records.append(path)
    source = load_vectors(records[0], words=source_words, max_words=max_words)
    target = load_vectors(records[1], words=target_words, max_words=max_words)
    if W.shape != (source.dim, target.dim):
        raise VectorsError(f"W.npy has shape {W.shape}, the vectors have dimensions {source.dim} and {target.dim}",
                           path=directory)
    return source.with_transform(W), target
