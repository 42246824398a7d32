"""Train fastText vectors: on words (``vocabshift vectors train``) and on token ids (FOCUS's auxiliary model).

Both hand a plain-text file to the ``fasttext`` library (PyPI ``fasttext-numpy2``), skipgram by default.
The corpus is read with :func:`vocabshift.corpus.iter_corpus` (formats, limits, mixing) and written to a
temporary file beside the output, one document per line; a corpus that already is a single plain UTF-8
text file is handed over as it is. The ``.bin`` is written to a temporary sibling and renamed into place.

Token-level vectors (Dobler & de Melo 2023, "FOCUS: Effective Embedding Initialization for Monolingual
Specialization of Multilingual Models", section 3) are trained on the corpus tokenized by the target
tokenizer. Each token is written as its id, ``t<id>`` (token strings may hold spaces, ``Ġ``, ``▁`` or
nothing printable; ids are unambiguous), without character n-grams: an id has no spelling to share.
:func:`token_id_vectors` maps the trained words back to a ``[vocab_size, dim]`` matrix.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vocabshift.corpus import CorpusConfig, iter_corpus, plain_text_files
from vocabshift.errors import DiskFullError, VectorsError
from vocabshift.outputs import check_output_path, writes_output
from vocabshift.vectors.config import FOCUS_FASTTEXT, VectorsTrainConfig
from vocabshift.vectors.static import StaticVectors, load_vectors

log = logging.getLogger(__name__)

__all__ = ["FOCUS_FASTTEXT", "TOKEN_WORD", "token_id_vectors", "train_token_vectors", "train_vectors"]

TOKEN_WORD = re.compile(r"t(\d+)")  # how train_token_vectors spells token id i: "t<i>"
_ENCODE_BATCH = 1024  # documents per tokenizer batch


@contextmanager
def _scratch_beside(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_lines(lines: Iterator[str], path: Path) -> tuple[int, int]:
    """Write one line per item; returns (lines, bytes)."""
    n = size = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            data = line + "\n"
            fh.write(data)
            n += 1
            size += len(data.encode("utf-8"))
    return n, size


def _corpus_text(corpus: CorpusConfig, scratch: Path) -> tuple[Path, int, int]:
    """A plain-text file of the corpus, one document per line: the corpus file itself when it is one."""
    plain = plain_text_files(corpus)
    if plain is not None and len(plain.paths) == 1:
        return plain.paths[0], plain.documents, plain.bytes
    docs = (" ".join(doc.splitlines()) for doc in iter_corpus(corpus))  # a document must stay on one line
    path = scratch / "corpus.txt"
    n, size = _write_lines(docs, path)
    return path, n, size


# Run by a fresh interpreter (see _fasttext_train); it imports only fasttext.
_CHILD = r"""
import json, os, sys
import fasttext
from fasttext import FastText

job = json.loads(sys.argv[1])
# train_unsupervised takes no `seed` argument: it passes on unsupervised_default["seed"].
FastText.unsupervised_default["seed"] = job["seed"]
try:
    model = fasttext.train_unsupervised(input=job["input"], **job["params"])
    model.save_model(job["dest"])
    result = {"words": len(model.words)}
except Exception as err:
    result = {"error": str(err)}
try:
    with open(job["result"] + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(job["result"] + ".tmp", job["result"])
except OSError as err:  # the parent names the problem (a full disk is errno 28)
    sys.exit(100 + (err.errno or 0) % 100)
"""
_CHILD_ENOSPC = 100 + errno.ENOSPC  # the child's exit status when its result could not be written: disk full


def _disk_full_at(directory: Path) -> bool:
    """Less than 1 MiB free where ``directory`` lives (fastText does not check its writes)."""
    try:
        return shutil.disk_usage(directory).free < 2**20
    except OSError:
        return False


class Cancelled(Exception):
    """Token-vector training stopped on request (``cancel`` set): the caller is already failing."""


def _run_child(args: list[str], env: dict[str, str], cancel: threading.Event | None) -> int:
    """Run ``args`` to its exit status; killed when this thread is interrupted, or (with ``cancel``) once
    ``cancel`` is set, raising :class:`Cancelled`."""
    proc = subprocess.Popen(args, env=env)
    try:
        while True:
            try:
                return proc.wait(timeout=None if cancel is None else 0.05)
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("fastText training cancelled") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _fasttext_train(text: Path, corpus: CorpusConfig, dest: Path, *, seed: int,
                    cancel: threading.Event | None = None, **params: Any) -> int:
    """Train fastText on ``text`` and save the model to ``dest``; returns the number of words.

    Training runs in a fresh Python process (``sys.executable -c``, which never re-imports the caller's
    ``__main__``), with glibc's ``MALLOC_MMAP_THRESHOLD_`` lowered so that every large buffer is a fresh,
    zero-filled mapping, and ``MALLOC_PERTURB_=255`` so that every smaller one is zero-filled too (glibc
    fills new allocations with the byte ``255 ^ 0xff``). The reason: fasttext 0.10 (fasttext-numpy2)
    initializes only the first ``thread / 10`` of the input matrix (``DenseMatrix::uniform`` fills one tenth
    per thread) and does not zero the rest. Upstream the rest is zeros; here it is whatever the heap held, so
    a second training in one process, or a small model, starts from garbage and often stops with
    "Encountered NaN". The threshold alone left matrices under 64 KiB (a few hundred tokens at dim 16) on the
    heap: 8 of 30 such trainings hit NaN, none of 50 with both. Zeros, as upstream, also make training
    deterministic for ``threads=1``.
    """
    result_file = dest.with_name(dest.name + ".result.json")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_PERTURB_="255")
    named = ", ".join(p for s in corpus.sources for p in s.paths)
    while True:
        result_file.unlink(missing_ok=True)
        job = {"input": str(text), "dest": str(dest), "result": str(result_file), "seed": seed, "params": params}
        returncode = _run_child([sys.executable, "-c", _CHILD, json.dumps(job)], env, cancel)
        if returncode == _CHILD_ENOSPC or (returncode != 0 and _disk_full_at(dest.parent)):
            raise DiskFullError(f"no space left on device while writing {dest}",
                                hint="free some space and run again; nothing was replaced")
        try:
            result = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise VectorsError(f"the fastText training process died (exit status {returncode}; out of "
                               "memory?)", path=named) from None
        if "words" in result and _disk_full_at(dest.parent):
            # fastText saves without checking its writes: on a full disk the .bin may be cut short.
            raise DiskFullError(f"no space left on device while writing {dest}",
                                hint="free some space and run again; nothing was replaced")
        # On a tiny corpus the other threads can use up the token budget before thread 0 sees one example;
        # fastText then reports thread 0's loss, 0/0, as "Encountered NaN". One thread cannot race.
        if "nan" in str(result.get("error", "")).lower() and int(params.get("thread", 1)) > 1:
            log.warning("fastText stopped with %r using %s threads on %s; training again with one thread",
                        result["error"], params["thread"], named)
            params = {**params, "thread": 1}
            continue
        break
    if "error" in result:
        err = result["error"]
        hint = ("lower --min-count or give more text" if "vocabulary" in err.lower() else
                "training diverged: lower --lr, give more --bucket, or more text" if "nan" in err.lower() else None)
        raise VectorsError(f"fastText training failed: {err}", path=named, hint=hint)
    return int(result["words"])


def _install(model_file: Path, out: Path) -> None:
    if out.is_dir():
        raise VectorsError("output is a directory; give a .bin file path", path=out)
    os.replace(model_file, out)


@writes_output
def train_vectors(config: VectorsTrainConfig) -> Path:
    """Train fastText word vectors with subword n-grams on ``config.corpus``; write and return ``config.out``.

    With ``config.tokenizer``: token-level vectors of that tokenizer instead (:func:`train_token_vectors`).
    """
    t0 = time.perf_counter()
    if config.tokenizer is not None:
        from vocabshift.tokenization.source import load_source_tokenizer

        tokenizer = load_source_tokenizer(config.tokenizer).backend
        train_token_vectors(tokenizer, config.corpus, Path(config.out), model=config.model, dim=config.dim,
                            epochs=config.epochs, min_count=config.min_count, neg=config.neg, window=config.window,
                            threads=config.threads, seed=config.seed, force=config.force,
                            show_progress=config.show_progress)
        return Path(config.out)
    out = check_output_path(config.out, config.force)
    threads = config.threads or os.cpu_count() or 1
    with _scratch_beside(out) as scratch:
        text, documents, size = _corpus_text(config.corpus, scratch)
        log.info("training fastText %s (dim %d, %d epochs, min count %d, n-grams %d-%d) on %d documents, %.1f MB",
                 config.model, config.dim, config.epochs, config.min_count, config.minn, config.maxn,
                 documents, size / 1e6)
        n_words = _fasttext_train(
            text, config.corpus, scratch / "model.bin", model=config.model, dim=config.dim, epoch=config.epochs,
            minCount=config.min_count, minn=config.minn if config.maxn else 0, maxn=config.maxn,
            bucket=config.bucket, ws=config.window, neg=config.neg, lr=config.lr, thread=threads, seed=config.seed,
            verbose=2 if config.show_progress else 0)
        _install(scratch / "model.bin", out)
    log.info("wrote %s: %d words, %.1f s", out, n_words, time.perf_counter() - t0)
    return out


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` of a transformers fast tokenizer (or the backend itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "encode_batch"):
        raise VectorsError(f"expected a transformers fast tokenizer or a tokenizers.Tokenizer, got "
                           f"{type(tokenizer).__name__}")
    return backend


def train_token_vectors(tokenizer: Any, corpus: CorpusConfig, out: Path, *, model: str = FOCUS_FASTTEXT["model"],
                        dim: int = FOCUS_FASTTEXT["dim"], epochs: int = FOCUS_FASTTEXT["epochs"],
                        min_count: int = FOCUS_FASTTEXT["min_count"], neg: int = FOCUS_FASTTEXT["neg"],
                        threads: int | None = None,
                        seed: int = 0, window: int = 5, force: bool = False,
                        show_progress: bool = False, cancel: threading.Event | None = None) -> StaticVectors:
    """fastText vectors of the target tokenizer's tokens (FOCUS's auxiliary embeddings), written to ``out``.

    The corpus is tokenized (no special tokens added) and each token written as ``t<id>``; fastText is
    trained without character n-grams. The returned vectors' words are those ``t<id>`` strings: turn
    them into a ``[vocab_size, dim]`` matrix with :func:`token_id_vectors`. Tokens seen fewer than
    ``min_count`` times get no vector. ``cancel`` (set from another thread) stops the work with
    :class:`Cancelled`.
    """
    t0 = time.perf_counter()
    out = check_output_path(out, force)
    backend = _backend(tokenizer)
    names = [f"t{i}" for i in range(backend.get_vocab_size(with_added_tokens=True))]
    # the same ids without the character offsets (tokenizers >= 0.21): about a third less time
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def lines() -> Iterator[str]:
        batch: list[str] = []

        def encode() -> Iterator[str]:
            for enc in encode_batch(batch, add_special_tokens=False):
                if enc.ids:
                    yield " ".join(map(names.__getitem__, enc.ids))

        for doc in iter_corpus(corpus):
            batch.append(doc)
            if len(batch) >= _ENCODE_BATCH:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("token-vector training cancelled")
                yield from encode()
                batch = []
        if batch:
            yield from encode()

    with _scratch_beside(Path(out)) as scratch:
        text = scratch / "tokens.txt"
        documents, _ = _write_lines(lines(), text)
        _fasttext_train(text, corpus, scratch / "model.bin", model=model, dim=dim, epoch=epochs, minCount=min_count,
                        neg=neg, minn=0, maxn=0, bucket=0, ws=window, thread=threads or os.cpu_count() or 1, seed=seed,
                        verbose=2 if show_progress else 0, cancel=cancel)
        _install(scratch / "model.bin", Path(out))
    vectors = load_vectors(out)
    log.info("token-level fastText: %d of %d tokens have a vector (%d documents, %.1f s)",
             sum(1 for w in vectors.words if TOKEN_WORD.fullmatch(w)), len(names), documents,
             time.perf_counter() - t0)
    return vectors


def token_id_vectors(vectors: StaticVectors | str | Path, vocab_size: int,
                     strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``[vocab_size, dim]`` float32 vectors indexed by token id, and the ``[vocab_size]`` bool found mask.

    ``vectors``: what :func:`train_token_vectors` returned, or the path of its ``.bin``. Words that are not
    ``t<id>`` (fastText's ``</s>``) or ids ``>= vocab_size`` are ignored; a missing id is zeros and False.
    ``strict`` (a model given by the user): an id ``>= vocab_size`` means the model belongs to another
    tokenizer, and no ``t<id>`` word at all means it is not token-level; both raise :class:`VectorsError`.
    """
    path = None if isinstance(vectors, StaticVectors) else vectors
    if not isinstance(vectors, StaticVectors):
        vectors = load_vectors(vectors)
    rows, ids, beyond = [], [], -1
    for row, word in enumerate(vectors.words):
        m = TOKEN_WORD.fullmatch(word)
        if m is None:
            continue
        if int(m.group(1)) >= vocab_size:
            beyond = max(beyond, int(m.group(1)))
            continue
        rows.append(row)
        ids.append(int(m.group(1)))
    if strict and beyond >= 0:
        raise VectorsError(f"this token-level model has token id {beyond} but the target tokenizer has "
                           f"{vocab_size} tokens: it belongs to another tokenizer", path=path)
    if strict and not rows:
        raise VectorsError("no word of this model is a token id of the target tokenizer (t<id>): not a "
                           "token-level model", path=path,
                           hint="train one with `vocabshift vectors train --tokenizer TARGET`")
    out = np.zeros((vocab_size, vectors.dim), dtype=np.float32)
    found = np.zeros(vocab_size, dtype=bool)
    if rows:
        out[ids] = vectors.matrix[rows]
        found[ids] = True
    return out, found
