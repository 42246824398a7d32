"""One streaming corpus reader for every stage.

Every stage that reads text (tokenizer training, vectors, continued pretraining, evaluation) goes
through :func:`iter_corpus`, so formats, limits, mixing and error messages behave the same
everywhere. Nothing here ever holds a whole corpus in memory: files are read line by line (parquet in
record batches) and the only buffer is the optional shuffle buffer of ``shuffle_buffer`` documents.
Nor a whole line: text is read with bounded ``readline`` calls, and a document longer than
``max_document_bytes`` UTF-8 bytes (1 MiB by default) is yielded as several documents of at most
that size, cut before the last space or tab in the second half of the allowed length (the space
starts the next piece), else between two characters (:func:`split_document`). A ``.jsonl`` record
must be parsed whole, so one longer than ``max(64 MiB, 4 * max_document_bytes)`` is an error.

Pipes and devices: a FIFO or ``<(command)`` (``/dev/fd/N``) is streamed once; a second open of the
same pipe in this process is an error (it would block or read a partial stream), and a pipe cannot
be in a mixture of several sources (no size; sources are re-read). A character or block device
(``/dev/zero``) is read only with ``max_bytes``, as it may never end.

Formats, chosen by file suffix:

- ``.txt`` and any unknown suffix: one document per line. The line ending (``\\n`` or ``\\r\\n``) is
  removed; nothing else is stripped.
- ``.jsonl`` (also ``.ndjson`` and ``.json``, read as JSON Lines): one JSON object per line, the document
  is its ``text_field``. Blank lines are ignored; a JSON ``null`` counts as an empty document.
- ``.parquet``: the ``text_field`` column, read in record batches with pyarrow (an optional
  dependency, imported only when a parquet file is read). A row counts as one line.
- ``.arrow``: an Arrow IPC file, in the stream format that 🤗 datasets writes (``save_to_disk``
  shards, cache files) or the random-access file format; memory-mapped and read one record batch at
  a time with pyarrow, the ``text_field`` column only. A row counts as one line. In both columnar
  formats a null is an empty document, a binary column is decoded as UTF-8, and a column of any other
  type is an error.

Compression, by a further suffix: ``.gz``, ``.xz``, ``.bz2``, ``.zst`` (``a.jsonl.gz``,
``b.txt.zst``), decompressed as a stream. Bytes are decoded as UTF-8 one line at a time, so an invalid
byte is reported with its offset in the (decompressed) stream; ``encoding_errors="replace"``
substitutes U+FFFD instead. A UTF-8 byte order mark at the start of a file is dropped.

Paths may be files, directories (all files below them, recursively; hidden files and directories,
whose names start with ``.``, are skipped) or glob patterns (``**`` allowed). Files found in a
directory or by a glob are sorted by path components (``a/z.txt`` before ``a.txt``). A file reached
twice is read once. Directories of 🤗 datasets are read as datasets, never through ``datasets``
itself (see :func:`resolve_files`):

- a ``save_to_disk`` folder of a ``Dataset`` (``state.json`` beside ``data-*.arrow``) is its data
  files, in the order its ``state.json`` lists them (``cache-*.arrow`` files beside them are not
  data). A ``DatasetDict`` folder (``dataset_dict.json``) is the folder of one split: ``train``
  unless the path names another as ``FOLDER:SPLIT`` (``wiki:validation``), or the split's own
  folder is given (``wiki/validation``). Such folders found inside a directory are read the same way.
- a directory holding ``.arrow`` or ``.parquet`` shards (a hub download: ``README.md`` beside
  ``data/train-00000-of-00002.parquet``) is its shards only, of one split as ``datasets`` names
  them: ``data/{split}-00000-of-00001.*``, else a directory or file name containing ``train``/
  ``training``, ``validation``/``valid``/``dev``/``val`` or ``test``/``testing``/``eval``/
  ``evaluation`` as a word; shards with no split name are all ``train``. ``FOLDER:SPLIT`` picks
  another split; naming a split that is not there is an error listing the splits there are.

Mixing several sources follows XLM-R's exponential smoothing (Conneau et al. 2020, "Unsupervised
Cross-lingual Representation Learning at Scale", section 3.1): a source's share of the stream is
``q_i ∝ p_i ** (1 / temperature)`` with ``p_i = size_i / sum(size)``; ``temperature=1`` keeps the
natural proportions, a large temperature approaches uniform (XLM-R's alpha=0.3 is temperature≈3.33).
Sizes are estimated cheaply as the bytes on disk of each source's files, so a compressed file counts
its *compressed* size (mixing ``.txt`` with ``.txt.gz`` sources under-weights the compressed one;
give explicit weights then). A ``.parquet`` or ``.arrow`` file counts the bytes of its text column
alone (uncompressed, from the parquet footer or the arrow batch headers), not of its other columns
(ids, embeddings) or of its compression; this is computed only when sources are mixed by size.
Sources with the same ``lang`` are smoothed as one language, then share that language's probability
in proportion to their sizes. When every source has an explicit ``weight``, ``q_i ∝ weight_i`` and
the temperature is not used.

At each step a seeded numpy Generator draws a source according to ``q`` and the stream yields that
source's next document. The mixed stream stops when every source has been exhausted at least once
(or a limit is hit, whichever comes first). A source that runs out before the others is restarted
from its beginning, so low-resource sources are upsampled until the others finish; the last source to
run out is therefore read exactly once. With one source the stream is simply that source, read once.
A source with probability 0 (no bytes on disk, or smoothed to 0 by a tiny temperature) is never
drawn, and a source that turns out to hold no document is dropped from the mixture.

Order of operations: read (skipping empty documents) -> mix -> limits -> shuffle buffer. The limits apply
to the mixed stream before shuffling: ``max_documents`` documents; ``max_bytes`` UTF-8 bytes of
yielded documents (the stream stops at the first document that would take the total past
``max_bytes``, so the total never exceeds it; the text reader stops reading that document as soon as
it cannot fit, after at most ``max_document_bytes + 2`` of its bytes); ``max_lines`` physical lines
read (the document on line ``max_lines``, with all its pieces, is the last one). With
``shuffle=True`` the file order of each source is permuted with the seed and documents pass through
a buffer of ``shuffle_buffer`` documents (the tf.data / HF datasets buffer shuffle): this is a local
shuffle, not a uniform permutation of the corpus.

The same config and seed always give the same stream. An empty stream is an error, raised when
iteration ends.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import io
import json
import logging
import lzma
import math
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import zstandard

from vocabshift.errors import ConfigError, CorpusError

__all__ = [
    "TextFiles",
    "plain_text_files",
    "CorpusConfig",
    "CorpusSource",
    "corpus_from_paths",
    "iter_corpus",
    "is_datasets_folder",
    "iter_file",
    "mixing_probabilities",
    "resolve_files",
    "split_document",
    "split_spec",
]

log = logging.getLogger(__name__)

ENCODING_ERRORS = ("strict", "replace")

_COMPRESSIONS = {".gz": "gzip", ".xz": "xz", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = frozenset("*?[")
# Exceptions that the stdlib and zstandard raise for data that is not (valid) compressed data.
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError)
_DRAW_BLOCK = 4096  # random numbers are drawn in blocks: one numpy call per block, not per document
_BATCH_ROWS = 1024  # parquet/arrow rows turned into Python strings at a time: documents can be long
_COLUMNAR = ("parquet", "arrow")
_ARROW_FILE_MAGIC = b"ARROW1"  # the random-access IPC format starts with it; the stream format does not
# 🤗 datasets' names: save_to_disk files, the default split, and the split keywords of its data_files
# module (a hub download's files are assigned to splits by these words in their paths).
_DATASET_STATE = "state.json"
_DATASET_DICT = "dataset_dict.json"
DEFAULT_SPLIT = "train"
_SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SPLIT_ALIASES = {word: name for name, words in _SPLIT_KEYWORDS.items() for word in words}
_SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # datasets' own rule for split names
_SHARDED_NAME = re.compile(r"(\w+(?:\.\w+)*)-\d{5}-of-\d{5}.*\..+")  # data/{split}-00000-of-00002.parquet
_NON_WORD = re.compile(r"[-._ 0-9]+")
MAX_DOCUMENT_BYTES = 1 << 20  # default CorpusConfig.max_document_bytes
MIN_DOCUMENT_BYTES = 4  # a piece must hold the longest UTF-8 character
MAX_JSON_LINE_BYTES = 64 << 20  # a JSON Lines record must be parsed whole; longer ones are refused
_SPLIT_WHITESPACE = (b" ", b"\t")


@dataclass
class CorpusSource:
    """One corpus in a mixture: some files, an optional language label and an optional weight."""

    paths: list[str] = field(
        metadata={"help": "Files, directories (read recursively, sorted), glob patterns or 🤗 datasets folders "
                  "(FOLDER:SPLIT picks a split; default train)."}
    )
    lang: str | None = field(
        default=None,
        metadata={
            "help": "Language label; sources with the same label are smoothed together as one language."
        },
    )
    weight: float | None = field(
        default=None,
        metadata={
            "help": "Explicit sampling weight; overrides size-based weights (give it for every source or none)."
        },
    )
    text_field: str | None = field(
        default=None,
        metadata={
            "help": "Field of .jsonl objects / column of .parquet, .arrow and datasets files holding the text; "
            "default: the corpus text_field."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.paths, (str, os.PathLike)):  # a lone path, not a list of them
            self.paths = [self.paths]
        self.paths = [os.fspath(p) for p in self.paths]
        if not self.paths:
            raise ConfigError("a corpus source needs at least one path")
        if self.weight is not None and not (self.weight > 0 and math.isfinite(self.weight)):
            raise ConfigError(
                f"source weight must be a positive number, got {self.weight!r}", path=self.paths[0]
            )
        if self.text_field is not None and not self.text_field:
            raise ConfigError("text_field must not be empty", path=self.paths[0])


@dataclass
class CorpusConfig:
    """How to stream a corpus: its sources, how to decode them, and how much of them to read."""

    sources: list[CorpusSource] = field(
        metadata={"help": "Corpus sources; several are mixed (see temperature)."}
    )
    text_field: str = field(
        default="text",
        metadata={"help": "Field of .jsonl objects / column of .parquet, .arrow and datasets files holding the text."},
    )
    encoding_errors: str = field(
        default="strict",
        metadata={"help": "'strict': invalid UTF-8 is an error; 'replace': substitute U+FFFD."},
    )
    max_bytes: int | None = field(
        default=None, metadata={"help": "Stop before the UTF-8 bytes of yielded documents would exceed this."}
    )
    max_lines: int | None = field(
        default=None, metadata={"help": "Stop after reading this many physical lines."}
    )
    max_documents: int | None = field(default=None, metadata={"help": "Stop after this many documents."})
    shuffle: bool = field(
        default=False,
        metadata={"help": "Permute file order and shuffle documents through a buffer (seeded)."},
    )
    shuffle_buffer: int = field(default=10_000, metadata={"help": "Documents held by the shuffle buffer."})
    seed: int = field(default=0, metadata={"help": "Seed for mixing and shuffling."})
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Mixing temperature T: q_i ∝ p_i^(1/T); 1 keeps natural sizes, large T is near uniform."
        },
    )
    skip_empty: bool = field(default=True, metadata={"help": "Skip empty and whitespace-only documents."})
    max_document_bytes: int = field(
        default=MAX_DOCUMENT_BYTES,
        metadata={
            "help": "Split a document (a line of text) longer than this many UTF-8 bytes into pieces of at "
            "most this size, at a space or tab when there is one in the second half, else between characters."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.sources, CorpusSource):
            self.sources = [self.sources]
        if not self.sources:
            raise ConfigError("a corpus needs at least one source")
        if not self.text_field:
            raise ConfigError("text_field must not be empty")
        _check_encoding_errors(self.encoding_errors)
        for name in ("max_bytes", "max_lines", "max_documents"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if (
            isinstance(self.shuffle_buffer, bool)
            or not isinstance(self.shuffle_buffer, int)
            or self.shuffle_buffer <= 0
        ):
            raise ConfigError(f"shuffle_buffer must be a positive integer, got {self.shuffle_buffer!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        limit = self.max_document_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_DOCUMENT_BYTES:
            raise ConfigError(
                f"max_document_bytes must be an integer of at least {MIN_DOCUMENT_BYTES}, got {limit!r}"
            )
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a positive number, got {self.temperature!r}")
        weighted = [s.weight is not None for s in self.sources]
        if any(weighted) and not all(weighted):
            raise ConfigError(
                "some corpus sources have a weight and others do not",
                hint="give every source a weight, or none to weight them by size",
            )


def corpus_from_paths(paths: list[str | Path] | str | Path, **kwargs: Any) -> CorpusConfig:
    """A one-source :class:`CorpusConfig`; ``kwargs`` go to :class:`CorpusConfig`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return CorpusConfig(sources=[CorpusSource(paths=[os.fspath(p) for p in paths])], **kwargs)


# --------------------------------------------------------------------------------------------------
# Paths


def resolve_files(paths: list[str]) -> list[Path]:
    """Expand files, directories (recursive, sorted) and glob patterns into a list of files.

    A 🤗 datasets ``save_to_disk`` folder is its data files; a directory holding ``.arrow`` or
    ``.parquet`` shards is the shards of one split; ``FOLDER:SPLIT`` names that split (see the module
    docstring). Raises :class:`CorpusError` for a missing path, a glob that matches nothing, a
    directory that holds no files, or a split that is not there. A file reached twice is listed once,
    at its first position.
    """
    files: dict[Path, None] = {}  # an ordered set
    for raw in paths:
        spec = os.path.expanduser(os.fspath(raw))
        path = Path(spec)
        split = None
        if path.exists():
            matches = [path]
        elif (named := split_spec(spec)) is not None:
            path, split = named
            matches = [path]
        elif _GLOB_CHARS & set(spec):
            matches = sorted((Path(m) for m in glob.glob(spec, recursive=True)), key=_sort_key)
            if not matches:
                raise CorpusError("glob pattern matches no file", path=spec)
        else:
            raise CorpusError("no such file or directory", path=spec)
        for match in matches:
            if match.is_dir():
                found = _files_under(match, split)
                if not found:
                    raise CorpusError("directory contains no files", path=match)
                files.update(dict.fromkeys(found))
            else:
                files[match] = None
    return list(files)


def split_spec(spec: str) -> tuple[Path, str] | None:
    """``(folder, split)`` when ``spec`` is ``FOLDER:SPLIT`` for an existing directory, else None.

    A path that exists as given is never read as a split (a file name may hold a colon).
    """
    spec = os.path.expanduser(os.fspath(spec))
    if ":" not in spec or os.path.lexists(spec):
        return None
    folder, _, split = spec.rpartition(":")
    if not folder or not _SPLIT_NAME.fullmatch(split) or not os.path.isdir(folder):
        return None
    return Path(folder), split


def is_datasets_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by 🤗 datasets' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    path = Path(path)
    return (path / _DATASET_DICT).is_file() or (path / _DATASET_STATE).is_file()


def _files_under(directory: Path, split: str | None = None) -> list[Path]:
    """The files a directory stands for: a datasets folder's data files, else its datasets folders'
    data files and its loose shards of one split, else every file below it."""
    saved = _saved_dataset_files(directory, split)
    if saved is not None:
        return saved
    entries = _walk(directory)
    loose = [f for f, in_saved in entries if not in_saved and _file_kind(f)[0] in _COLUMNAR]
    if not loose and split is not None:
        raise CorpusError(
            f"has no split {split!r}: it is neither a 🤗 datasets save_to_disk folder nor a folder of "
            ".arrow/.parquet shards",
            path=directory,
            hint=f"pass the folder without ':{split}'",
        )
    if not loose and not any(in_saved for _, in_saved in entries):
        return [f for f, _ in entries]
    # Data in columnar form: the other files beside it (a dataset card, .gitattributes) are not text.
    kept = set(_split_shards(directory, loose, split)) if loose else set()
    files = [f for f, in_saved in entries if in_saved or f in kept]
    others = sum(1 for f, in_saved in entries if not in_saved and _file_kind(f)[0] not in _COLUMNAR)
    if others:
        log.info("%s: reading its datasets and .arrow/.parquet shards, not the %d other files beside them",
                 directory, others)
    return files


def _walk(directory: Path) -> list[tuple[Path, bool]]:
    """(file, whether it is a datasets folder's data file) for every file below ``directory``, sorted
    by path components, hidden entries skipped; a datasets folder inside gives its data files (of the
    default split) instead of its files."""
    # Skip hidden entries: dataset folders often carry .cache/, .git/ or .DS_Store beside the text.
    files: list[tuple[Path, bool]] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():  # like rglob: symlinked directories are not followed
            saved = _saved_dataset_files(entry, None)
            files.extend([(f, True) for f in saved] if saved is not None else _walk(entry))
        elif entry.is_file():
            files.append((entry, False))
    return files


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read this 🤗 datasets file: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise CorpusError(f"expected a JSON object, found a JSON {type(data).__name__}", path=path)
    return data


def _saved_dataset_files(directory: Path, split: str | None) -> list[Path] | None:
    """The data files of a ``save_to_disk`` folder (of ``split``, default train, for a DatasetDict), in
    ``state.json``'s order; None when ``directory`` is not such a folder."""
    if (directory / _DATASET_DICT).is_file():
        splits = _read_json_object(directory / _DATASET_DICT).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise CorpusError(f"{_DATASET_DICT} has no list of splits", path=directory)
        chosen = split or DEFAULT_SPLIT
        if chosen not in splits:
            raise CorpusError(
                f"this DatasetDict has no split {chosen!r}; its splits: {splits}",
                path=directory,
                hint=f"name one as {directory}:{splits[0]}" if splits else None,
            )
        files = _saved_dataset_files(directory / chosen, None)
        if files is None:
            raise CorpusError(f"split {chosen!r} is listed in {_DATASET_DICT} but has no {_DATASET_STATE}",
                              path=directory / chosen)
        return files
    if not (directory / _DATASET_STATE).is_file():
        return None
    if split is not None:
        raise CorpusError(f"is a 🤗 datasets Dataset folder, which has no split {split!r}", path=directory,
                          hint=f"pass {directory} without ':{split}'")
    entries = _read_json_object(directory / _DATASET_STATE).get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("filename"), str)
                                                for e in entries):
        raise CorpusError(f"{_DATASET_STATE} lists no data files (no '_data_files' with file names)", path=directory,
                          hint="save the dataset again with Dataset.save_to_disk")
    files = [directory / e["filename"] for e in entries]
    for f in files:
        if not f.is_file():
            raise CorpusError(f"data file {f.name} listed in {_DATASET_STATE} is missing", path=directory,
                              hint="save the dataset again with Dataset.save_to_disk")
    if not files:  # save_to_disk writes no shard for a dataset of no rows
        raise CorpusError(f"the dataset is empty: its {_DATASET_STATE} lists no data files", path=directory)
    return files


def _split_shards(directory: Path, shards: list[Path], split: str | None) -> list[Path]:
    """The shards of ``split`` (default train), named by 🤗 datasets' rules: ``data/{split}-00000-of-…``
    first, else a split keyword in a directory name, else in a file name; with no split names, all are train."""
    relative = {f: f.relative_to(directory) for f in shards}
    groups: dict[str, list[Path]] = {}
    for f, r in relative.items():
        if len(r.parts) == 2 and r.parts[0] == "data" and (m := _SHARDED_NAME.fullmatch(r.parts[1])):
            groups.setdefault(m.group(1), []).append(f)
    for in_directories in (True, False):  # keywords in directory names win over those in file names
        if groups:
            break
        for f, r in relative.items():
            if name := _keyword_split(r.parts[:-1] if in_directories else r.parts[-1:]):
                groups.setdefault(name, []).append(f)
    if not groups:
        groups = {DEFAULT_SPLIT: shards}
    chosen = split or DEFAULT_SPLIT
    if chosen not in groups:
        chosen = _SPLIT_ALIASES.get(chosen, chosen)  # dev -> validation, as datasets names them
    if chosen not in groups:
        names = sorted(groups)
        raise CorpusError(
            f"has no split {chosen!r} among its .arrow/.parquet shards; its splits: {names}",
            path=directory,
            hint=f"name one as {directory}:{names[0]}",
        )
    if len(groups) > 1 or len(groups[chosen]) < len(shards):
        log.info("%s: reading split %r (%d of %d shards)", directory, chosen, len(groups[chosen]), len(shards))
    return groups[chosen]


def _keyword_split(parts: tuple[str, ...]) -> str | None:
    """The split that a keyword among the words of ``parts`` (path components) names, if any."""
    words = {word for part in parts for word in _NON_WORD.split(part.lower())}
    return next((name for name, keys in _SPLIT_KEYWORDS.items() if words.intersection(keys)), None)


def _sort_key(path: Path) -> tuple[str, ...]:
    # Component-wise, so a directory's files stay together: a/z.txt sorts before a.txt.
    return path.parts


def _file_kind(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the file name: format is 'txt', 'jsonl', 'parquet' or 'arrow'."""
    name = path.name.lower()
    compression = None
    for suffix, kind in _COMPRESSIONS.items():
        if name.endswith(suffix):
            compression = kind
            name = name[: -len(suffix)]
            break
    if name.endswith(".parquet"):
        return "parquet", compression
    if name.endswith(".arrow"):
        return "arrow", compression
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl", compression
    return "txt", compression


# --------------------------------------------------------------------------------------------------
# One file


def iter_file(
    path: Path,
    *,
    text_field: str = "text",
    encoding_errors: str = "strict",
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[str]:
    """Stream the documents of one file, in order (empty documents included).

    The format and compression come from the suffix (see the module docstring); a document longer
    than ``max_document_bytes`` comes as several pieces. A pipe (FIFO) is read once; a character
    device is refused, as it may never end (read it through :func:`iter_corpus` with ``max_bytes``).
    Errors are :class:`CorpusError` naming the file; they are raised when the reader reaches the bad data.
    """
    _check_encoding_errors(encoding_errors)
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        raise CorpusError("not a file" if path.exists() else "no such file", path=path) from None
    if _is_device(mode):
        raise CorpusError(
            "is a device, which may never end", path=path, hint="read it with iter_corpus and max_bytes"
        )
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise CorpusError("not a file", path=path)
    records = _iter_records(path, text_field, encoding_errors, max_document_bytes)
    return (doc for doc, _, _ in records)


def _is_device(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _check_encoding_errors(value: str) -> None:
    if value not in ENCODING_ERRORS:
        raise ConfigError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}, got {value!r}")


class _OverBudget(Exception):
    """A reader found that the next document cannot fit in what ``max_bytes`` leaves."""


def _iter_records(
    path: Path, text_field: str, encoding_errors: str, limit: int, state: _LimitState | None = None
) -> Iterator[tuple[str, int, bool]]:
    """Yield (document, physical line number, whether the line ends here) for one file.

    A document longer than ``limit`` UTF-8 bytes comes as several pieces with the same line number,
    all but the last with ``False``. The line number of a parquet or arrow row is its row number. ``state``
    (the stream's limits) lets a text reader stop reading a line that ``max_bytes`` cannot take.
    """
    fmt, compression = _file_kind(path)
    if fmt in _COLUMNAR:
        if compression is not None:
            raise CorpusError(
                f"cannot read {compression}-compressed {fmt}",
                path=path,
                hint=f"{fmt} compresses internally; decompress the file first",
            )
        if not path.is_file():
            raise CorpusError(
                f"{fmt} is read by random access, which a pipe or device does not allow",
                path=path,
                hint=f"save the stream to a .{fmt} file and pass that",
            )
        rows = _iter_parquet if fmt == "parquet" else _iter_arrow
        for doc, row in rows(path, text_field, encoding_errors):
            yield from _pieces_of(doc, row, limit)
        return
    if fmt == "txt":
        for line_no, text, ends_line in _iter_text_lines(path, compression, encoding_errors, limit, state):
            yield text, line_no, ends_line
        return
    json_limit = max(MAX_JSON_LINE_BYTES, 4 * limit)
    for line_no, text, _ in _iter_text_lines(path, compression, encoding_errors, json_limit, split=False):
        if not text.strip():  # blank lines in JSON Lines are not documents
            continue
        yield from _pieces_of(_jsonl_text(path, line_no, text, text_field), line_no, limit)


def _pieces_of(doc: str, line_no: int, limit: int) -> Iterator[tuple[str, int, bool]]:
    pieces = split_document(doc, limit)
    for i, piece in enumerate(pieces, 1):
        yield piece, line_no, i == len(pieces)


def split_document(text: str, max_bytes: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_bytes`` UTF-8 bytes, as the corpus reader cuts long lines.

    A cut falls before the last space or tab in the second half of the allowed length (the space
    starts the next piece, so a word keeps its leading space), else between two characters. The
    pieces joined give back ``text``.
    """
    if len(text) * 4 <= max_bytes:  # a character has at most 4 bytes: no need to encode
        return [text]
    # surrogatepass: JSON can hold lone surrogates; they are cut and joined back unchanged.
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return [text]
    pieces = []
    start = 0
    while len(raw) - start > max_bytes:
        cut = _cut_point(raw, max_bytes, start)
        pieces.append(raw[start:cut].decode("utf-8", "surrogatepass"))
        start = cut
    pieces.append(raw[start:].decode("utf-8", "surrogatepass"))
    return pieces


def _cut_point(buf: bytes, limit: int, start: int = 0) -> int:
    """Where to end a piece of ``buf[start:]``, which is longer than ``limit`` bytes: an index in
    ``start + limit // 2 .. start + limit``, before a space or tab if there is one, else before the
    first byte of a UTF-8 character."""
    cut = max(buf.rfind(space, start + limit // 2, start + limit + 1) for space in _SPLIT_WHITESPACE)
    if cut >= 0:
        return cut
    cut = start + limit
    # Back up over continuation bytes (10xxxxxx) to the character's first byte; at most 3 of them.
    while cut > start + limit - 3 and buf[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def _open_binary(path: Path, compression: str | None) -> IO[bytes]:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "zstd":
        # max_window_size admits files written with `zstd --long=31`; read_across_frames reads
        # multi-frame files (pzstd, concatenated .zst) to the end.
        raw = open(path, "rb")  # closed by the stream reader (closefd=True)
        reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(
            raw, closefd=True, read_across_frames=True
        )
        return io.BufferedReader(reader, buffer_size=1 << 16)  # type: ignore[arg-type]
    return open(path, "rb")


# Pipes opened by this process, by (path, device, inode). A pipe's data can be read only once, and
# opening a named pipe again blocks until some process writes to it: a second read is refused instead.
_PIPES_OPENED: set[tuple[str, int, int]] = set()


def _claim_pipe(path: Path) -> None:
    try:
        st = path.stat()
    except OSError:
        return  # open() reports it
    if not stat.S_ISFIFO(st.st_mode):
        return
    key = (os.fspath(path), st.st_dev, st.st_ino)
    if key in _PIPES_OPENED:
        raise CorpusError(
            "this pipe was read already, and a pipe (a FIFO or <(command)) can be read only once",
            path=path,
            hint="save the stream to a regular file and pass that",
        )
    _PIPES_OPENED.add(key)


def _iter_text_lines(
    path: Path,
    compression: str | None,
    encoding_errors: str,
    limit: int,
    state: _LimitState | None = None,
    *,
    split: bool = True,
) -> Iterator[tuple[int, str, bool]]:
    """Yield (1-based line number, decoded text without its line ending, whether the line ends here).

    A line longer than ``limit`` bytes comes in pieces (``split``) or is refused; no more than
    ``limit + 2`` bytes of a line are held at once.
    """
    _claim_pipe(path)
    try:
        fh = _open_binary(path, compression)
    except OSError as exc:
        raise CorpusError(f"cannot open file: {exc.strerror or exc}", path=path) from exc
    where = "of the decompressed stream" if compression else "of the file"
    with fh:
        for line_no, offset, raw, ends_line in _raw_pieces(fh, path, compression, limit, state, split):
            start = len(_BOM) if offset == 0 and raw.startswith(_BOM) else 0
            end = len(raw)
            if ends_line and raw.endswith(b"\n"):
                end -= 2 if raw.endswith(b"\r\n") else 1
            try:
                text = raw[start:end].decode("utf-8", errors=encoding_errors)
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    f"invalid UTF-8 at byte offset {offset + start + exc.start} {where} (line {line_no})",
                    path=path,
                    hint="convert the file to UTF-8, or pass --encoding-errors replace to substitute U+FFFD",
                ) from exc
            if encoding_errors == "strict" or not split:
                yield line_no, text, ends_line
                continue
            # A replaced byte grows to 3 (U+FFFD): cut again so that no piece is over the limit.
            *head, last = split_document(text, limit)
            for piece in head:
                yield line_no, piece, False
            yield line_no, last, ends_line


def _raw_pieces(
    fh: IO[bytes], path: Path, compression: str | None, limit: int, state: _LimitState | None, split: bool
) -> Iterator[tuple[int, int, bytes, bool]]:
    """Yield (line number, stream offset, bytes, whether the line ends here): lines, read with bounded
    ``readline`` calls, cut into pieces of at most ``limit`` bytes (plus the line ending).

    With ``state.bytes_left`` set (``max_bytes``), a line is read only as far as needed to know that
    it cannot fit: then :class:`_OverBudget` is raised.
    """
    offset = 0  # stream offset of carry[0], i.e. of the next piece
    line_no = 0
    carry = b""  # bytes of the current line read but not yet yielded
    starts_line = True
    while True:
        want = limit + 2  # room for "\r\n": a line of exactly `limit` bytes is one piece
        left = None if state is None else state.bytes_left
        if left is not None and left + 2 < limit // 2:
            # A piece is never cut shorter than limit // 2, so a line still going on after left + 3
            # bytes cannot fit: reading that much tells.
            want = left + 3
        if len(carry) < want:
            try:
                chunk = fh.readline(want - len(carry))
            except _DECOMPRESSION_ERRORS as exc:
                raise _read_error(path, compression, exc, offset + len(carry)) from exc
            buf = carry + chunk if carry else chunk
            ends_line = buf.endswith(b"\n") or len(buf) < want  # a line ending, or the end of the stream
        else:
            buf, ends_line = carry, False
        if not buf:
            return
        if starts_line:
            line_no += 1
        if ends_line:
            cut = len(buf)
        elif want < limit + 2:
            raise _OverBudget
        elif not split:
            raise CorpusError(
                f"line {line_no} is longer than {limit} bytes, too long for one JSON Lines record",
                path=path,
                hint="split the document over several records, or give it as a .txt file",
            )
        else:
            cut = _cut_point(buf, limit)
        carry = buf[cut:]
        yield line_no, offset, buf[:cut], ends_line
        offset += cut
        starts_line = ends_line


def _read_error(path: Path, compression: str | None, exc: BaseException, offset: int) -> CorpusError:
    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    if compression is None:
        return CorpusError(f"cannot read file after byte {offset}: {detail}", path=path)
    return CorpusError(
        f"{compression} compression is unreadable: the file is corrupt or not {compression}-compressed "
        f"(after {offset} decompressed bytes: {detail})",
        path=path,
        hint="check the file, or rename it so its suffix matches its real compression",
    )


def _jsonl_text(path: Path, line_no: int, line: str, text_field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(
            f"malformed JSON on line {line_no} (column {exc.colno}): {exc.msg}",
            path=path,
            hint="JSON Lines files need one JSON object per line",
        ) from exc
    if not isinstance(obj, dict):
        raise CorpusError(
            f"line {line_no} is a JSON {type(obj).__name__}, not an object",
            path=path,
            hint="JSON Lines files need one JSON object per line",
        )
    if text_field not in obj:
        raise CorpusError(
            f"line {line_no} has no field {text_field!r}; keys present: {sorted(obj)}",
            path=path,
            hint="set text_field (--text-field) to the field that holds the text",
        )
    value = obj[text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CorpusError(
            f"field {text_field!r} on line {line_no} is a JSON {type(value).__name__}, not a string",
            path=path,
        )
    return value


def _import_parquet(path: Path | str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise CorpusError(
            "reading .parquet files needs pyarrow, which is not installed",
            path=path,
            hint="pip install 'vocabshift[parquet]' (or pip install pyarrow)",
        ) from exc
    return pq


def _import_pyarrow(path: Path | str) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401  (pa.ipc is a submodule)
    except ImportError as exc:
        raise CorpusError(
            "reading .arrow files and 🤗 datasets folders needs pyarrow, which is not installed",
            path=path,
            hint="pip install pyarrow (or 'vocabshift[datasets]'); the datasets library itself is not needed",
        ) from exc
    return pa


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _text_column_is_binary(schema: Any, text_field: str, path: Path) -> bool:
    """Check that ``schema`` has a string or binary column ``text_field``; True if it is binary."""
    import pyarrow as pa

    if text_field not in schema.names:
        raise CorpusError(
            f"no column {text_field!r}; columns: {list(schema.names)}",
            path=path,
            hint="set text_field (--text-field) to the column that holds the text",
        )
    column_type = schema.field(text_field).type
    is_binary = pa.types.is_binary(column_type) or pa.types.is_large_binary(column_type)
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type) or is_binary):
        raise CorpusError(
            f"column {text_field!r} has type {column_type}, expected a string column", path=path
        )
    return is_binary


def _column_texts(
    columns: Iterator[Any], path: Path, text_field: str, encoding_errors: str, is_binary: bool
) -> Iterator[tuple[str, int]]:
    """(document, 1-based row) for the values of a column's arrays: a null is an empty document, a
    binary value is decoded as UTF-8. At most ``_BATCH_ROWS`` values are Python strings at once."""
    row = 0
    for column in columns:
        for start in range(0, len(column), _BATCH_ROWS):
            for value in column.slice(start, _BATCH_ROWS).to_pylist():
                row += 1
                if value is None:
                    yield "", row
                elif is_binary:
                    try:
                        yield value.decode("utf-8", errors=encoding_errors), row
                    except UnicodeDecodeError as exc:
                        raise CorpusError(
                            f"invalid UTF-8 at byte offset {exc.start} of row {row} in column {text_field!r}",
                            path=path,
                            hint="pass --encoding-errors replace to substitute U+FFFD",
                        ) from exc
                else:
                    yield value, row


def _iter_parquet(path: Path, text_field: str, encoding_errors: str) -> Iterator[tuple[str, int]]:
    pq = _import_parquet(path)
    import pyarrow as pa

    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"not a readable parquet file: {_first_line(exc)}", path=path) from exc
    is_binary = _text_column_is_binary(parquet_file.schema_arrow, text_field, path)
    with parquet_file:
        batches = parquet_file.iter_batches(batch_size=_BATCH_ROWS, columns=[text_field])
        yield from _column_texts((b.column(0) for b in batches), path, text_field, encoding_errors, is_binary)


def _arrow_batches(source: Any, path: Path) -> tuple[Any, Iterator[Any]]:
    """(schema, record batches) of an Arrow IPC file: the stream format, or the file format (``ARROW1``)."""
    pa = _import_pyarrow(path)
    try:
        if source.read(len(_ARROW_FILE_MAGIC)) == _ARROW_FILE_MAGIC:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        return stream.schema, iter(stream)
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(
            f"not a readable Arrow IPC file: {_first_line(exc)}",
            path=path,
            hint="an .arrow file must be written by 🤗 datasets or pyarrow.ipc (stream or file format)",
        ) from exc


def _open_arrow(path: Path) -> Any:
    """``path`` memory-mapped: reading a record batch maps its pages instead of copying the file."""
    pa = _import_pyarrow(path)
    try:
        return pa.memory_map(os.fspath(path))
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"cannot open file: {_first_line(exc)}", path=path) from exc


def _iter_arrow(path: Path, text_field: str, encoding_errors: str) -> Iterator[tuple[str, int]]:
    """(document, row) of an ``.arrow`` file, one record batch at a time, only ``text_field`` read."""
    pa = _import_pyarrow(path)
    with _open_arrow(path) as source:
        schema, batches = _arrow_batches(source, path)
        is_binary = _text_column_is_binary(schema, text_field, path)
        index = schema.get_field_index(text_field)

        def columns() -> Iterator[Any]:
            n = 0
            while True:
                try:
                    batch = next(batches, None)
                    if batch is None:
                        return
                    column = batch.column(index)
                    # Offsets and UTF-8 checked in C++ (GB/s): a damaged mapped file must be an error
                    # naming it, not a crash or a Python error deep inside pyarrow.
                    column.validate(full=True)
                except (pa.ArrowException, OSError) as exc:  # a truncated or damaged file
                    raise CorpusError(f"cannot read record batch {n} of the Arrow file: {_first_line(exc)}",
                                      path=path, hint="the file is damaged or truncated; write it again") from exc
                n += 1
                yield column

        yield from _column_texts(columns(), path, text_field, encoding_errors, is_binary)


def _text_bytes(path: Path, fmt: str, text_field: str, fallback: int) -> int:
    """The uncompressed bytes of the text column of a parquet or arrow file (its size on disk when the
    file cannot tell): what mixing weighs, so that other columns and compression do not count."""
    try:
        if fmt == "parquet":
            metadata = _import_parquet(path).read_metadata(path)  # the footer only
            leaves = [metadata.schema.column(c).path for c in range(metadata.num_columns)]
            if text_field not in leaves:
                return fallback  # reading reports the missing column with the columns there are
            column = leaves.index(text_field)
            return sum(metadata.row_group(g).column(column).total_uncompressed_size
                       for g in range(metadata.num_row_groups))
        with _open_arrow(path) as source:
            schema, batches = _arrow_batches(source, path)
            index = schema.get_field_index(text_field)
            if index < 0:
                return fallback  # reading reports the missing column with the columns there are
            return sum(batch.column(index).nbytes for batch in batches)  # headers only: the data is mapped
    except Exception:  # noqa: BLE001  (a damaged file: reading it reports the problem, with its name)
        return fallback


# --------------------------------------------------------------------------------------------------
# Sources and mixing


_Record = tuple[str, int, bool]  # (document, physical lines started since the last one, ends its line)


@dataclass
class _SourcePlan:
    files: list[Path]
    text_field: str
    size: int  # bytes on disk (compressed size for compressed files; text column bytes for parquet/arrow)
    rng: np.random.Generator  # file-order permutations of this source


def _plan_sources(config: CorpusConfig, rngs: list[np.random.Generator] | None = None) -> list[_SourcePlan]:
    plans = []
    # Sizes weigh sources only when several are mixed without weights; a columnar file's text bytes
    # cost a look at its footer (parquet) or every batch header (arrow), so they are not read otherwise.
    by_size = len(config.sources) > 1 and not all(s.weight is not None for s in config.sources)
    for i, source in enumerate(config.sources):
        files = resolve_files(source.paths)
        kinds = [_file_kind(f)[0] for f in files]
        # fail now, not after hours of reading the other files
        if "parquet" in kinds:
            _import_parquet(files[kinds.index("parquet")])
        if "arrow" in kinds:
            _import_pyarrow(files[kinds.index("arrow")])
        text_field = source.text_field or config.text_field
        size = 0
        for f, kind in zip(files, kinds, strict=True):
            on_disk = _regular_size(f, config)
            columnar = kind in _COLUMNAR and by_size and on_disk > 0
            size += _text_bytes(f, kind, text_field, on_disk) if columnar else on_disk
        rng = rngs[i] if rngs is not None else np.random.default_rng(config.seed)
        plans.append(_SourcePlan(files, text_field, size, rng))
    return plans


def _regular_size(path: Path, config: CorpusConfig) -> int:
    """The size on disk of a regular file; 0 for a pipe or device that may be read as asked, else an error."""
    st = path.stat()
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return st.st_size
    if not (stat.S_ISFIFO(mode) or _is_device(mode)):
        raise CorpusError("not a regular file, pipe or device", path=path)
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a device"
    if len(config.sources) > 1:
        raise CorpusError(
            f"is {kind}, which cannot be mixed with other sources: mixing weighs sources by their size on "
            "disk and reads a source again when it runs out",
            path=path,
            hint="save the stream to a regular file and pass that",
        )
    if _is_device(mode) and config.max_bytes is None:
        raise CorpusError(
            "is a device, which may never end (like /dev/zero)",
            path=path,
            hint="pass --max-bytes to read at most that much, or save the data to a regular file",
        )
    return 0


def _probabilities(config: CorpusConfig, plans: list[_SourcePlan]) -> np.ndarray:
    if all(s.weight is not None for s in config.sources):
        weights = np.array([s.weight for s in config.sources], dtype=np.float64)
        return weights / weights.sum()
    sizes = np.array([p.size for p in plans], dtype=np.float64)
    total = sizes.sum()
    if total == 0:
        return np.zeros(len(plans))
    # Group sources by language: XLM-R smooths per language, so two corpora of one language must not
    # be boosted twice. Unlabelled sources are languages of their own.
    groups: dict[object, list[int]] = {}
    for i, source in enumerate(config.sources):
        groups.setdefault(source.lang if source.lang is not None else ("source", i), []).append(i)
    members = list(groups.values())
    group_sizes = np.array([sizes[m].sum() for m in members])
    # q ∝ p^(1/T) computed in log space: p^(1/T) underflows for small T and small sources.
    with np.errstate(divide="ignore"):
        log_q = np.log(group_sizes / total) / config.temperature
    group_q = np.exp(log_q - log_q.max())
    group_q /= group_q.sum()
    q = np.zeros(len(plans))
    for g, m in enumerate(members):
        if group_sizes[g] > 0:
            q[m] = group_q[g] * sizes[m] / group_sizes[g]
    return q


def mixing_probabilities(config: CorpusConfig) -> list[float]:
    """The probability with which each source is drawn when mixing (resolves the files to size them)."""
    return _probabilities(config, _plan_sources(config)).tolist()


def _iter_source(plan: _SourcePlan, config: CorpusConfig, state: _LimitState) -> Iterator[_Record]:
    """One pass over a source: (document, physical lines started since the previous document, whether
    the document ends its line)."""
    files = plan.files
    if config.shuffle:
        files = [files[i] for i in plan.rng.permutation(len(files))]
    pending = 0
    for path in files:
        previous = 0
        limit = config.max_document_bytes
        for doc, line_no, ends_line in _iter_records(path, plan.text_field, config.encoding_errors, limit, state):
            pending += line_no - previous
            previous = line_no
            if config.skip_empty and not doc.strip():
                continue
            yield doc, pending, ends_line
            pending = 0


def _mix(
    plans: list[_SourcePlan],
    q: np.ndarray,
    config: CorpusConfig,
    rng: np.random.Generator,
    state: _LimitState,
) -> Iterator[_Record]:
    """Draw sources by ``q`` until every source has run out at least once; restart the others."""
    q = q.copy()
    exhausted = [bool(p == 0) for p in q]  # a source that is never drawn cannot hold the stream open
    streams = [_iter_source(plan, config, state) for plan in plans]
    try:
        while q.sum() > 0:
            cdf = np.cumsum(q)
            cdf /= cdf[-1]
            draws = np.searchsorted(cdf, rng.random(_DRAW_BLOCK), side="right").tolist()
            for i in draws:
                item = next(streams[i], None)
                if item is None:
                    exhausted[i] = True
                    if all(exhausted):
                        return
                    # cycle: upsample until the others finish
                    streams[i] = _iter_source(plans[i], config, state)
                    item = next(streams[i], None)
                    if item is None:  # the source holds no document at all: drop it and redraw
                        q[i] = 0
                        break
                yield item
    finally:
        for stream in streams:
            stream.close()


# --------------------------------------------------------------------------------------------------
# Limits, shuffling, the full stream


@dataclass
class _LimitState:
    stopped_by: str | None = None
    first_doc_bytes: int | None = None
    first_doc_exact: bool = True  # False: the first document has more than first_doc_bytes bytes
    bytes_left: int | None = None  # what max_bytes leaves for the next document; readers read no further


def _limit(records: Iterator[_Record], config: CorpusConfig, state: _LimitState) -> Iterator[str]:
    n_docs = n_bytes = n_lines = 0
    state.bytes_left = config.max_bytes
    try:
        for doc, lines, ends_line in records:
            n_lines += lines
            if config.max_lines is not None and n_lines > config.max_lines:
                state.stopped_by = f"max_lines={config.max_lines}"
                return
            if config.max_bytes is not None:
                size = len(doc.encode("utf-8"))
                if n_bytes + size > config.max_bytes:
                    state.stopped_by = f"max_bytes={config.max_bytes}"
                    state.first_doc_bytes = size if n_docs == 0 else None
                    return
                n_bytes += size
                state.bytes_left = config.max_bytes - n_bytes
            yield doc
            n_docs += 1
            if config.max_documents is not None and n_docs >= config.max_documents:
                return
            if config.max_lines is not None and n_lines >= config.max_lines and ends_line:
                return
    except _OverBudget:
        state.stopped_by = f"max_bytes={config.max_bytes}"
        if n_docs == 0:
            state.first_doc_bytes, state.first_doc_exact = config.max_bytes, False


def _shuffle_buffer(docs: Iterator[str], size: int, rng: np.random.Generator) -> Iterator[str]:
    """Buffer shuffle: fill ``size`` documents, then emit a random one for each new one; drain shuffled."""
    buffer: list[str] = []
    slots: Iterator[int] = iter(())
    for doc in docs:
        if len(buffer) < size:
            buffer.append(doc)
            continue
        j = next(slots, None)
        if j is None:
            slots = iter(rng.integers(0, size, _DRAW_BLOCK).tolist())
            j = next(slots)
        yield buffer[j]
        buffer[j] = doc
    for j in rng.permutation(len(buffer)).tolist():
        yield buffer[j]


def iter_corpus(config: CorpusConfig) -> Iterator[str]:
    """Stream the documents of a corpus: mixed, limited and shuffled as ``config`` says.

    Paths are resolved (and pyarrow checked for parquet and arrow files) when this is called; files are
    read lazily as the iterator advances. Raises :class:`CorpusError` at the end if no document was yielded.
    """
    seeds = np.random.SeedSequence(config.seed).spawn(2 + len(config.sources))
    mix_rng, shuffle_rng, *source_rngs = (np.random.default_rng(s) for s in seeds)
    plans = _plan_sources(config, source_rngs)
    state = _LimitState()
    if len(plans) == 1:
        records = _iter_source(plans[0], config, state)
    else:
        records = _mix(plans, _probabilities(config, plans), config, mix_rng, state)
    return _stream(records, config, shuffle_rng, state)


_CHUNK = 4 << 20


@dataclass
class TextFiles:
    """A corpus that is exactly the lines of some plain UTF-8 files, in order (see :func:`plain_text_files`)."""

    paths: list[Path]
    documents: int
    bytes: int
    head: list[str]  # the first documents, for checks
    longest_line: int = 0  # bytes of the longest line (at most the corpus's max_document_bytes)


def plain_text_files(config: CorpusConfig, head: int = 20) -> TextFiles | None:
    """The files of a corpus whose stream is just their non-empty lines in order, validated, or None.

    That is one source of uncompressed regular text files (not pipes or devices, which could not be
    read twice), no limits, no shuffling, strict decoding, and files without a byte order mark,
    carriage returns or lines over ``max_document_bytes`` (which :func:`iter_corpus` splits). Such a
    corpus can be handed to a Rust trainer as files, which reads them on all cores instead of through
    this module's line-by-line Python loop. The files are still checked here, in 4 MB chunks: invalid
    UTF-8 is the same error, with the same byte offset, as :func:`iter_corpus` raises,
    and an empty corpus is an error too.
    """
    if (len(config.sources) != 1 or config.shuffle or config.encoding_errors != "strict"
            or config.max_bytes or config.max_lines or config.max_documents):
        return None
    files = resolve_files(config.sources[0].paths)
    if any(_file_kind(f) != ("txt", None) or not f.is_file() for f in files):
        return None
    limit = config.max_document_bytes
    documents = total = longest = 0
    first: list[str] = []
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        offset = 0
        line_no = 1
        tail = b""
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                if (offset == 0 and chunk.startswith(_BOM)) or b"\r" in chunk:
                    return None
                try:
                    decoder.decode(chunk)  # validation only; lines are counted on the bytes
                except UnicodeDecodeError as exc:
                    bad = offset + exc.start
                    line = line_no + chunk.count(b"\n", 0, exc.start)
                    raise CorpusError(
                        f"invalid UTF-8 at byte offset {bad} of the file (line {line})", path=path,
                        hint="convert the file to UTF-8, or pass --encoding-errors replace to substitute U+FFFD",
                    ) from exc
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                longest = max(longest, len(tail), *map(len, lines))
                if longest > limit:
                    return None  # a line too long for one document: the trainer would hold it whole
                documents += sum(1 for line in lines if line.strip())
                if len(first) < head:
                    first.extend(line.decode("utf-8") for line in lines[:head] if line.strip())
                line_no += chunk.count(b"\n")
                offset += len(chunk)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise CorpusError(f"invalid UTF-8 at byte offset {offset - 1} of the file (line {line_no}): "
                                  "the file ends inside a character", path=path) from exc
        if tail.strip():
            documents += 1
            first.append(tail.decode("utf-8"))
        total += offset
    if documents == 0:
        raise _empty_corpus_error(config, _LimitState())
    return TextFiles(paths=files, documents=documents, bytes=total, head=first[:head], longest_line=longest)


def _stream(
    records: Iterator[_Record], config: CorpusConfig, rng: np.random.Generator, state: _LimitState
) -> Iterator[str]:
    docs = _limit(records, config, state)
    if config.shuffle:
        docs = _shuffle_buffer(docs, config.shuffle_buffer, rng)
    n_docs = 0
    try:
        for doc in docs:
            n_docs += 1
            yield doc
    finally:
        records.close()  # release open files when the consumer stops early
    if n_docs == 0:
        raise _empty_corpus_error(config, state)


def _empty_corpus_error(config: CorpusConfig, state: _LimitState) -> CorpusError:
    paths = [p for source in config.sources for p in source.paths]
    named = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    if state.first_doc_bytes is not None:
        size = f"{state.first_doc_bytes}" if state.first_doc_exact else f"more than {state.first_doc_bytes}"
        return CorpusError(
            f"the corpus yielded no document: the first has {size} bytes, over {state.stopped_by}",
            path=named,
            hint="raise max_bytes",
        )
    if state.stopped_by is not None:
        return CorpusError(f"the corpus yielded no document within {state.stopped_by}", path=named)
    return CorpusError(
        "the corpus is empty: no non-empty document was found",
        path=named,
        hint="check the files and, for .jsonl/.parquet, that text_field names the field holding the text",
    )
