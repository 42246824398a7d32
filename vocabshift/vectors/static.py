"""Static word vectors: fastText ``.bin`` models and word2vec/fastText text ``.vec`` files.

:class:`StaticVectors` is one type for both. A fastText ``.bin`` carries subword information: any
string gets a vector by averaging the rows of the word (if known) and of its character n-grams, as
``fasttext``'s ``get_word_vector`` does (Bojanowski et al. 2017, "Enriching Word Vectors with Subword
Information"). A ``.vec`` file only has the words it lists.

Memory is the point of this module. A full ``cc.<lang>.300.bin`` is ~7 GB and ``fasttext.load_model``
reads all of it into RAM, so ``.bin`` files are read here with a memory map instead: the dictionary is
parsed (words and counts, ~1 s per million words) and the ~4M x 300 input matrix stays on disk;
only the rows that a lookup touches are read. The format and the n-gram hashing (FNV-1a over the
UTF-8 bytes of ``<word>`` n-grams, ``minn..maxn`` characters) follow fastText's ``dictionary.cc``;
the tests check the vectors against ``fasttext`` itself. ``.vec`` files are streamed line by line and
only the lines asked for (``words=`` / ``max_words=``) are parsed, in blocks, by numpy.
"""

from __future__ import annotations

import gzip
import logging
import mmap
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp

from vocabshift.errors import VectorsError
from vocabshift.outputs import check_output_path

log = logging.getLogger(__name__)

__all__ = ["StaticVectors", "load_vectors", "save_vectors", "vector_file_info"]

FASTTEXT_MAGIC = 793712314  # FASTTEXT_FILEFORMAT_MAGIC_INT32
_GZIP_MAGIC = b"\x1f\x8b"
_EOS = "</s>"  # fastText's end-of-line word: it never gets n-grams
_PARSE_BLOCK = 8192  # .vec lines parsed per numpy call
_COMPOSE_BLOCK = 4096  # words composed per sparse product: bounds the gathered n-gram rows (~100k)
_SAVE_BLOCK = 4096
_BIN_HEAD = 8 + 12 * 4 + 8 + 3 * 4  # magic, version, args, dictionary size / nwords / nlabels


class _FastTextModel:
    """The parts of a fastText ``.bin`` needed to compose word vectors, with the input matrix memory-mapped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(buf)
        except (struct.error, ValueError, IndexError) as err:
            buf.close()
            raise VectorsError(f"truncated or corrupt fastText .bin ({err})", path=path) from err

    def _parse(self, buf: mmap.mmap) -> None:
        path = self.path
        magic, version = struct.unpack_from("<ii", buf, 0)
        if magic != FASTTEXT_MAGIC:
            raise VectorsError("not a fastText .bin file (wrong magic number)", path=path)
        if version > 12:
            raise VectorsError(f"fastText .bin format version {version} is newer than this reader (12)", path=path)
        # Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate (int32) t (double)
        args = struct.unpack_from("<12id", buf, 8)
        self.dim, self.bucket, self.minn, self.maxn = args[0], args[8], args[9], args[10]
        pos = 8 + 12 * 4 + 8
        size, nwords, _nlabels, _ntokens, prune_size = struct.unpack_from("<iiiqq", buf, pos)
        pos += 3 * 4 + 2 * 8
        words: list[str] = []
        counts = np.empty(nwords, dtype=np.int64)
        find, unpack = buf.find, struct.Struct("<q").unpack_from
        for i in range(size):
            end = find(b"\0", pos)
            if end < 0:
                raise ValueError("dictionary runs past the end of the file")
            if i < nwords:  # labels (supervised models) come after the words
                words.append(buf[pos:end].decode("utf-8", errors="replace"))
                counts[i] = unpack(buf, end + 1)[0]
            pos = end + 1 + 8 + 1  # word\0, int64 count, int8 type
        self.words = words
        self.counts = counts
        self.nwords = nwords
        self.pruneidx: dict[int, int] | None = None
        self.prune_size = prune_size  # -1: not pruned; 0: every n-gram pruned away
        if prune_size > 0:
            pairs = np.frombuffer(buf, dtype="<i4", count=2 * prune_size, offset=pos).reshape(-1, 2)
            self.pruneidx = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
            pos += 8 * prune_size
        if buf[pos]:
            raise VectorsError("quantized fastText models (.ftz) are not supported", path=path,
                               hint="use the full .bin, or the .vec text file")
        rows, cols = struct.unpack_from("<qq", buf, pos + 1)
        pos += 1 + 16
        if cols != self.dim or pos + rows * cols * 4 > len(buf):
            raise ValueError(f"input matrix {rows}x{cols} does not fit the file")
        self._buf = buf
        self.input = np.frombuffer(buf, dtype="<f4", count=rows * cols, offset=pos).reshape(rows, cols)
        self.word2id = {w: i for i, w in enumerate(words)}

    @property
    def has_subwords(self) -> bool:
        return self.maxn > 0 and self.bucket > 0 and self.prune_size != 0

    def _ngrams(self, word: str) -> list[str]:
        """Character n-grams of ``<word>`` as fastText's ``computeSubwords`` lists them."""
        if word == _EOS or not self.has_subwords:
            return []
        chars = "<" + word + ">"
        n_chars, minn, maxn = len(chars), self.minn, self.maxn
        # fastText's order (start position, then length): the composed vector sums the rows in this order
        if minn > 1:
            return [chars[i:i + n] for i in range(n_chars) for n in range(minn, min(maxn, n_chars - i) + 1)]
        return [chars[i:i + n] for i in range(n_chars) for n in range(minn, min(maxn, n_chars - i) + 1)
                if not (n == 1 and (i == 0 or i + 1 == n_chars))]  # a lone "<" or ">" is not an n-gram

    def _bucket_rows(self, ngrams: list[str]) -> np.ndarray:
        """Input-matrix rows of n-grams: ``nwords + fnv1a(bytes) % bucket`` (-1 where pruned away)."""
        if not ngrams:
            return np.zeros(0, dtype=np.int64)
        encoded = [g.encode("utf-8") for g in ngrams]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        hashes = np.empty(len(encoded), dtype=np.uint32)
        # Vectorized FNV-1a: n-grams grouped by byte length, one numpy step per byte position.
        for length in np.unique(lengths).tolist():
            sel = np.flatnonzero(lengths == length)
            block = np.frombuffer(b"".join(encoded[i] for i in sel), dtype=np.int8).reshape(-1, length)
            h = np.full(len(sel), 2166136261, dtype=np.uint32)
            for j in range(length):
                # fastText XORs the *signed* char, sign-extended to 32 bits: bytes >= 0x80 set the high bits.
                h ^= block[:, j].astype(np.int32).astype(np.uint32)
                h *= np.uint32(16777619)
            hashes[sel] = h
        ids = (hashes % np.uint32(self.bucket)).astype(np.int64)
        if self.pruneidx is not None:
            ids = np.array([self.pruneidx.get(i, -1) for i in ids.tolist()], dtype=np.int64)
            return np.where(ids >= 0, self.nwords + ids, -1)
        return self.nwords + ids

    def compose(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """fastText word vectors (mean of word and n-gram rows) and whether any row was used."""
        out = np.zeros((len(words), self.dim), dtype=np.float32)
        found = np.zeros(len(words), dtype=bool)
        for start in range(0, len(words), _COMPOSE_BLOCK):
            block = words[start:start + _COMPOSE_BLOCK]
            word_rows: list[int] = []
            owners: list[int] = []
            ngrams: list[str] = []
            gram_owner: list[int] = []
            for k, word in enumerate(block):
                wid = self.word2id.get(word)
                if wid is not None:
                    word_rows.append(wid)
                    owners.append(k)
                grams = self._ngrams(word)
                ngrams.extend(grams)
                gram_owner.extend([k] * len(grams))
            rows = np.concatenate([np.asarray(word_rows, dtype=np.int64), self._bucket_rows(ngrams)])
            who = np.concatenate([np.asarray(owners, dtype=np.int64), np.asarray(gram_owner, dtype=np.int64)])
            keep = rows >= 0
            rows, who = rows[keep], who[keep]
            if rows.size == 0:
                continue
            uniq, col = np.unique(rows, return_inverse=True)
            n_per_word = np.bincount(who, minlength=len(block))
            weights = 1.0 / n_per_word[who]
            mean = sp.csr_matrix((weights.astype(np.float32), (who, col)), shape=(len(block), len(uniq)))
            gathered = np.asarray(self.input[uniq], dtype=np.float32)  # reads only these rows from disk
            out[start:start + len(block)] = mean @ gathered
            found[start:start + len(block)] = n_per_word > 0
        return out, found


class StaticVectors:
    """Word vectors, optionally with fastText subword information, optionally mapped into a shared space.

    ``words`` and ``matrix`` hold the words that were loaded (all of a file, or those asked for by
    :func:`load_vectors`'s ``words`` / ``max_words``), in file order (fastText files: most frequent
    first). ``matrix`` is float32 ``[len(words), dim]`` with the transform, if any, applied. For a
    fastText ``.bin`` it is composed from the memory-mapped model on first access; :meth:`lookup`
    composes only the words it is given, so restrict the loaded words when the model is large.
    """

    def __init__(self, words: Sequence[str], matrix: np.ndarray | None = None, *,
                 counts: np.ndarray | None = None, path: str | Path | None = None,
                 transform: np.ndarray | None = None, _model: _FastTextModel | None = None) -> None:
        if matrix is None and _model is None:
            raise ValueError("StaticVectors needs a matrix (or a fastText model to compose one)")
        self.words = list(words)
        self._base = None if matrix is None else np.asarray(matrix, dtype=np.float32)
        if self._base is not None and (self._base.ndim != 2 or self._base.shape[0] != len(self.words)):
            raise ValueError(f"matrix shape {self._base.shape} does not fit {len(self.words)} words")
        self.counts = None if counts is None else np.asarray(counts)
        self.path = None if path is None else str(path)
        self.transform = None if transform is None else np.asarray(transform, dtype=np.float32)
        self._model = _model
        self._index: dict[str, int] | None = None
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        kind = "fastText .bin" if self._model is not None else "word vectors"
        mapped = ", mapped" if self.transform is not None else ""
        return f"StaticVectors({len(self.words)} words, dim={self.dim}, {kind}{mapped}, path={self.path!r})"

    @property
    def base_dim(self) -> int:
        """Dimension of the vectors before the transform."""
        return self._model.dim if self._model is not None else int(self._base.shape[1])  # type: ignore[union-attr]

    @property
    def dim(self) -> int:
        return self.base_dim if self.transform is None else int(self.transform.shape[1])

    @property
    def has_subwords(self) -> bool:
        """True for a fastText ``.bin`` with character n-grams: any string gets a vector."""
        return self._model is not None and self._model.has_subwords

    @property
    def base_matrix(self) -> np.ndarray:
        """``[len(words), base_dim]`` float32 vectors before the transform."""
        if self._base is None:
            assert self._model is not None
            self._base, _ = self._model.compose(self.words)
        return self._base

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            base = self.base_matrix
            self._matrix = base if self.transform is None else base @ self.transform
        return self._matrix

    def index(self, word: str) -> int | None:
        """Row of ``word`` among the loaded words, or None."""
        if self._index is None:
            index: dict[str, int] = {}
            for i, w in enumerate(self.words):
                index.setdefault(w, i)
            self._index = index
        return self._index.get(word)

    def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``[n, dim]`` float32 vectors and an ``[n]`` bool found mask, transform applied.

        An exact word match gives its vector. With subword information (fastText ``.bin``) every other
        string is composed from its character n-grams and is found iff it has at least one n-gram
        (fastText hashes n-grams into buckets, so no n-gram is "unknown"); otherwise zeros, not found.
        """
        words = list(words)
        if self._model is not None:
            vecs, found = self._model.compose(words)
        else:
            rows = np.fromiter((-1 if (i := self.index(w)) is None else i for w in words),
                               dtype=np.int64, count=len(words))
            found = rows >= 0
            vecs = np.zeros((len(words), self.base_dim), dtype=np.float32)
            vecs[found] = self.base_matrix[rows[found]]
        if self.transform is not None:
            vecs = vecs @ self.transform
        return vecs, found

    def with_transform(self, W: np.ndarray) -> StaticVectors:
        """A view whose vectors are ``x @ W`` (composed with an existing transform); shares the data."""
        W = np.asarray(W, dtype=np.float32)
        if W.ndim != 2 or W.shape[0] != self.dim:
            raise VectorsError(f"transform of shape {tuple(W.shape)} does not apply to {self.dim}-dimensional vectors",
                               path=self.path)
        view = self._view(self.words, self.counts, self._base)
        view.transform = W if self.transform is None else self.transform @ W
        return view

    def head(self, n: int) -> StaticVectors:
        """The first ``n`` loaded words (the most frequent ones in fastText files), same transform."""
        base = None if self._base is None else self._base[:n]
        counts = None if self.counts is None else self.counts[:n]
        view = self._view(self.words[:n], counts, base)
        view.transform = self.transform
        return view

    def _view(self, words: list[str], counts: np.ndarray | None, base: np.ndarray | None) -> StaticVectors:
        view = StaticVectors.__new__(StaticVectors)
        view.words, view.counts, view.path, view._model = words, counts, self.path, self._model
        view._base, view.transform, view._matrix = base, None, None
        view._index = self._index if words is self.words else None
        return view


# --------------------------------------------------------------------------------------------------
# Loading


def _sniff(path: Path) -> str:
    """'bin' for a fastText model, 'gz' for a gzipped text file, else 'text'."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) == 4 and struct.unpack("<i", head)[0] == FASTTEXT_MAGIC:
        return "bin"
    return "gz" if head[:2] == _GZIP_MAGIC else "text"


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VectorsError("no such vector file", path=path,
                           hint="give a fastText .bin, or a .vec/.vec.gz text file")
    if not path.is_file():
        raise VectorsError("not a file", path=path)
    if path.stat().st_size == 0:
        raise VectorsError("empty vector file", path=path)
    return path


def _open_text(path: Path, kind: str) -> IO[bytes]:
    return gzip.open(path, "rb") if kind == "gz" else open(path, "rb")


def _parse_header(line: bytes) -> tuple[int, int] | None:
    """``count dim`` if the line is a word2vec header."""
    fields = line.split()
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        return int(fields[0]), int(fields[1])
    return None


def vector_file_info(path: str | Path) -> dict[str, Any]:
    """Format, dimension and (when the file says) number of words, read from the start of the file only.

    Cheap even for a 7 GB file: use it to compare dimensions before loading anything.
    """
    path = _check_file(path)
    kind = _sniff(path)
    if kind == "bin":
        with open(path, "rb") as fh:
            head = fh.read(_BIN_HEAD)
        if len(head) < _BIN_HEAD:
            raise VectorsError("truncated fastText .bin", path=path)
        args = struct.unpack_from("<12id", head, 8)
        nwords = struct.unpack_from("<i", head, _BIN_HEAD - 8)[0]
        return {"format": "fasttext-bin", "dim": args[0], "words": nwords, "subwords": args[10] > 0}
    fmt = "vec-gz" if kind == "gz" else "vec"
    try:
        with _open_text(path, kind) as fh:
            first = fh.readline().rstrip(b"\r\n")
            header = _parse_header(first)
            line = fh.readline().rstrip(b"\r\n") if header is not None else first
    except (OSError, EOFError, zlib.error) as err:
        raise VectorsError(f"cannot read the vector file ({err})", path=path) from err
    if header is not None:
        return {"format": fmt, "dim": header[1], "words": header[0], "subwords": False}
    if not line.strip():
        raise VectorsError("empty vector file", path=path)
    return {"format": fmt, "dim": len(line.split()) - 1, "words": None, "subwords": False}


def load_vectors(path: str | Path, *, words: Iterable[str] | None = None,
                 max_words: int | None = None) -> StaticVectors:
    """Load a fastText ``.bin`` or a word2vec/fastText text file (``.vec``, optionally gzipped).

    ``words``: keep these words; ``max_words``: keep the first ``max_words`` words of the file; both:
    keep a word if either holds; neither: keep every word. A text file is read only as far as needed
    (it stops after ``max_words`` lines once every word in ``words`` was seen), and only kept lines
    are parsed. A ``.bin`` is memory-mapped: the filters only choose ``words`` / ``matrix``, while
    :meth:`StaticVectors.lookup` still knows every word and n-gram of the model.

    The format is recognised from the content (fastText's magic number, gzip's), not the suffix.
    A text file's first line may be a ``count dim`` header; duplicate words keep their first vector.
    Raises :class:`VectorsError` for a missing, empty or malformed file (naming the line).
    """
    path = _check_file(path)
    if max_words is not None and max_words < 0:
        raise VectorsError(f"max_words must be >= 0, got {max_words}", path=path)
    wanted = None if words is None else set(words)
    kind = _sniff(path)
    if kind == "bin":
        model = _FastTextModel(path)
        if wanted is None and max_words is None:
            keep = list(range(model.nwords))
        else:
            limit = model.nwords if max_words is None else max_words
            keep = [i for i, w in enumerate(model.words) if i < limit or (wanted is not None and w in wanted)]
        kept = [model.words[i] for i in keep]
        vectors = StaticVectors(kept, counts=model.counts[keep], path=path, _model=model)
        log.info("loaded fastText model %s: %d of %d words, dim %d, n-grams %d-%d in %d buckets",
                 path, len(kept), model.nwords, model.dim, model.minn, model.maxn, model.bucket)
        return vectors
    kept_words, matrix = _read_text_vectors(path, kind, wanted, max_words)
    log.info("loaded %d word vectors of dim %d from %s", len(kept_words), matrix.shape[1], path)
    return StaticVectors(kept_words, matrix, path=path)


def _read_text_vectors(path: Path, kind: str, wanted: set[str] | None,
                       max_words: int | None) -> tuple[list[str], np.ndarray]:
    words: list[str] = []
    blocks: list[np.ndarray] = []
    seen: set[str] = set()
    pending_words: list[str] = []
    pending_rest: list[bytes] = []
    pending_lines: list[int] = []
    missing = set(wanted) if wanted is not None else set()
    dim: int | None = None
    declared: int | None = None
    rank = 0  # data lines read so far
    stop_early = wanted is not None or max_words is not None
    saw_data = False
    dim_from = "the header"
    bad_utf8 = duplicates = 0

    def flush() -> None:
        if pending_words:
            assert dim is not None
            blocks.append(_parse_block(path, pending_rest, pending_lines, dim, dim_from))
            words.extend(pending_words)
            pending_words.clear()
            pending_rest.clear()
            pending_lines.clear()

    try:
        with _open_text(path, kind) as fh:
            for line_no, raw in enumerate(fh, start=1):
                line = raw.rstrip(b"\r\n")
                if line_no == 1:
                    header = _parse_header(line)
                    if header is not None:
                        declared, dim = header
                        if dim <= 0:
                            raise VectorsError(f"line 1: the header gives dimension {dim}", path=path)
                        continue
                if not line.strip():
                    continue
                saw_data = True
                word_bytes, sep, rest = line.lstrip(b" ").partition(b" ")
                if dim is None:
                    dim, dim_from = len(rest.split()), f"line {line_no}"
                if stop_early and (max_words is None or rank >= max_words) and not missing:
                    break  # past the first max_words lines and every wanted word was seen
                if not sep:
                    raise VectorsError(f"line {line_no}: a word with no vector ({_show(line)})", path=path)
                try:
                    word = word_bytes.decode("utf-8")
                except UnicodeDecodeError:
                    word = word_bytes.decode("utf-8", errors="replace")
                    bad_utf8 += 1
                in_head = max_words is not None and rank < max_words
                rank += 1
                if (wanted is None and max_words is None) or in_head or (wanted is not None and word in wanted):
                    if word in seen:
                        duplicates += 1
                        continue
                    seen.add(word)
                    missing.discard(word)
                    pending_words.append(word)
                    pending_rest.append(rest)
                    pending_lines.append(line_no)
                    if len(pending_words) >= _PARSE_BLOCK:
                        flush()
            flush()
    except (OSError, EOFError, zlib.error) as err:
        raise VectorsError(f"cannot read the vector file ({err})", path=path) from err
    if not saw_data:
        problem = "empty vector file" if declared is None else "the vector file has a header but no vectors"
        raise VectorsError(problem, path=path)
    if declared is not None and max_words is None and wanted is None and rank != declared:
        log.warning("%s: the header announces %d words, the file has %d (truncated download?)", path, declared, rank)
    if bad_utf8:
        log.warning("%s: %d words are not valid UTF-8 (invalid bytes replaced by U+FFFD)", path, bad_utf8)
    if duplicates:
        log.info("%s: %d duplicate words skipped (the first vector is kept)", path, duplicates)
    assert dim is not None
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    return words, matrix


def _show(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse_block(path: Path, rests: list[bytes], line_nos: list[int], dim: int, dim_from: str) -> np.ndarray:
    """Parse the numbers of many lines with one numpy call; on any problem find and name the line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(b" ".join(rests).decode("ascii"), dtype=np.float32, sep=" ")
        if values.size == len(rests) * dim:
            return values.reshape(len(rests), dim)
    except (ValueError, UnicodeDecodeError):
        pass
    # Slow path: one line at a time, to say exactly which line is wrong and how.
    out = np.empty((len(rests), dim), dtype=np.float32)
    for k, (rest, line_no) in enumerate(zip(rests, line_nos, strict=True)):
        fields = rest.split()
        if len(fields) != dim:
            raise VectorsError(f"line {line_no}: {len(fields)} values, expected {dim} (the dimension "
                               f"given by {dim_from})", path=path)
        try:
            out[k] = np.array([float(f) for f in fields], dtype=np.float32)
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise VectorsError(f"line {line_no}: {_show(bad)} is not a number", path=path) from None
    return out


def _is_float(text: bytes) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# Saving


def _format_lines(words: list[str], block: np.ndarray) -> Iterator[bytes]:
    import io

    buf = io.BytesIO()
    np.savetxt(buf, block, fmt="%.9g", delimiter=" ")  # 9 significant digits: float32 round-trips exactly
    for word, values in zip(words, buf.getvalue().splitlines(), strict=True):
        yield word.encode("utf-8") + b" " + values + b"\n"


def save_vectors(vectors: StaticVectors, path: str | Path, *, force: bool = False) -> None:
    """Write ``vectors`` (transform applied) as a word2vec/fastText text file with a ``count dim`` header.

    Gzipped when ``path`` ends in ``.gz``. Written to a temporary sibling and renamed into place; an
    existing file is replaced only with ``force``. Words with whitespace cannot be written.
    """
    path = check_output_path(path, force)
    bad = next((w for w in vectors.words if not w or any(c in w for c in " \t\n\r\v\f")), None)
    if bad is not None:
        raise VectorsError(f"the word {bad!r} is empty or holds whitespace, which a .vec file cannot store",
                           path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            fh: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.name.endswith(".gz") else raw
            fh.write(f"{len(vectors)} {vectors.dim}\n".encode())
            matrix = vectors.matrix
            for start in range(0, len(vectors), _SAVE_BLOCK):
                fh.writelines(_format_lines(vectors.words[start:start + _SAVE_BLOCK],
                                            matrix[start:start + _SAVE_BLOCK]))
            if fh is not raw:
                fh.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
