"""Bilingual dictionaries: word pairs in a text file, or a FreeDict dictd dictionary.

Text files (optionally gzipped) hold one pair per line, source word then target word, separated by a
tab (then either side may hold spaces) or by whitespace (then exactly two fields), as the MUSE
dictionaries are. Blank lines and lines starting with ``#`` are skipped.

FreeDict (``freedict-<src>-<tgt>.index`` + ``.dict.dz``, Debian's ``dict-freedict-*`` packages) is read
through its index: each line is ``headword<TAB>offset<TAB>length``, the numbers written in base64
digits (``A-Za-z0-9+/``, most significant first) into the gzip-readable ``.dict.dz``. An entry reads
``head /IPA/ <pos>`` on its first line, then translations, optionally numbered (``1. a, b``) and
comma- or semicolon-separated. Each translation gives one (head, translation) pair. FreeDict's
``00-database-*`` entries (metadata) are skipped.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from vocabshift.errors import VectorsError

__all__ = ["find_freedict", "load_dictionary", "read_freedict"]

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_NUMBERING = re.compile(r"^\s*\d+\.\s*")
_TAG = re.compile(r"<[^>]*>")
_IPA = re.compile(r"\s/[^/]*/")


def _b64_number(text: str) -> int:
    value = 0
    for c in text:
        value = value * 64 + _B64[c]
    return value


def find_freedict(path: str | Path) -> tuple[Path, Path] | None:
    """The (``.index``, ``.dict.dz`` or ``.dict``) pair that ``path`` names, if it names one.

    ``path`` may be the ``.index`` file, the ``.dict.dz`` / ``.dict`` file, or their common base path.
    """
    path = Path(path)
    name = path.name
    for suffix in (".index", ".dict.dz", ".dict"):
        if name.endswith(suffix):
            base = path.with_name(name[: -len(suffix)])
            break
    else:
        base = path
    index = base.with_name(base.name + ".index")
    if not index.is_file():
        return None
    for suffix in (".dict.dz", ".dict"):
        data = base.with_name(base.name + suffix)
        if data.is_file():
            return index, data
    raise VectorsError("FreeDict index without its .dict.dz (or .dict) data file", path=index)


def _split_translations(line: str) -> list[str]:
    line = _TAG.sub(" ", _NUMBERING.sub("", line))
    return [t.strip() for t in re.split(r"[,;]", line) if t.strip()]


def read_freedict(index: Path, data: Path, *, max_pairs: int | None = None) -> list[tuple[str, str]]:
    """(headword, translation) pairs of a dictd dictionary, in index order."""
    try:
        with (gzip.open(data, "rb") if data.name.endswith(".dz") else open(data, "rb")) as fh:
            blob = fh.read()
        lines = index.read_text(encoding="utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise VectorsError(f"cannot read the FreeDict dictionary ({err})", path=index) from err
    pairs: list[tuple[str, str]] = []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) < 3:
            raise VectorsError(f"line {line_no}: expected 'headword<TAB>offset<TAB>length', got {line!r}", path=index)
        if fields[0].startswith("00database") or fields[0].startswith("00-database"):
            continue
        try:
            offset, length = _b64_number(fields[1]), _b64_number(fields[2])
        except KeyError:
            raise VectorsError(f"line {line_no}: {fields[1]!r} / {fields[2]!r} are not base64 numbers",
                               path=index) from None
        if offset + length > len(blob):
            raise VectorsError(f"line {line_no}: the entry runs past the end of {data.name}", path=index)
        entry = blob[offset:offset + length].decode("utf-8", errors="replace").strip("\n").split("\n")
        # The entry's own head keeps the case that the index lowercases ("ABC", index "abc").
        head = _TAG.sub(" ", _IPA.sub(" ", " " + entry[0])).strip() or fields[0]
        for translation_line in entry[1:]:
            for translation in _split_translations(translation_line):
                pairs.append((head, translation))
                if max_pairs is not None and len(pairs) >= max_pairs:
                    return pairs
    return pairs


def _read_pairs(path: Path, max_pairs: int | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz")
              else open(path, encoding="utf-8")) as fh:
            for line_no, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if "\t" in line:
                    fields = [f.strip() for f in line.split("\t")]
                    if len(fields) != 2 or not all(fields):
                        raise VectorsError(f"line {line_no}: expected 'source<TAB>target', got {line!r}", path=path)
                else:
                    fields = line.split()
                    if len(fields) != 2:
                        raise VectorsError(f"line {line_no}: expected two words 'source target', got "
                                           f"{len(fields)} field(s) in {line!r}", path=path,
                                           hint="separate the two sides with a tab when they hold spaces")
                pairs.append((fields[0], fields[1]))
                if max_pairs is not None and len(pairs) >= max_pairs:
                    break
    except UnicodeDecodeError as err:
        raise VectorsError(f"the dictionary is not UTF-8 ({err.reason} at byte {err.start} of a line)",
                           path=path) from err
    except (OSError, EOFError) as err:
        raise VectorsError(f"cannot read the dictionary ({err})", path=path) from err
    return pairs


def load_dictionary(path: str | Path, *, max_pairs: int | None = None) -> list[tuple[str, str]]:
    """(source word, target word) pairs from a pairs file or a FreeDict dictionary, duplicates removed.

    ``path`` is a text file of pairs (``.gz`` allowed) or a FreeDict ``.index`` / ``.dict.dz`` / base path.
    Raises :class:`VectorsError` for a missing file, a malformed line (named) or a dictionary without pairs.
    """
    path = Path(path)
    freedict = find_freedict(path)
    if freedict is not None:
        pairs = read_freedict(*freedict, max_pairs=None)
    elif path.is_file():
        pairs = _read_pairs(path, None)
    else:
        raise VectorsError("no such dictionary file", path=path,
                           hint="give a file of 'source<TAB>target' pairs or a FreeDict .index file")
    unique = list(dict.fromkeys(pairs))
    if max_pairs is not None:
        unique = unique[:max_pairs]
    if not unique:
        raise VectorsError("the dictionary holds no word pairs", path=path)
    return unique
