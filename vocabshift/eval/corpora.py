"""Named evaluation corpora of ``vocabshift eval``: in domain, out of domain, and the source language.

``vocabshift eval --corpus bible=heldout.txt --corpus udhr=udhr.spa.txt --source-corpus eng.txt``
scores each corpus on its own, with the same per-document protocol for the model and the baseline,
so each gets its own bits per byte, interval and paired verdict. A model adapted on one domain can
look as good as its source there and much worse on another domain; a row on source-language text
shows what the adaptation cost in the source language (forgetting).

This module only names corpora and checks the names; the scoring is :mod:`vocabshift.eval.evaluate`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.errors import ConfigError

DEFAULT_CORPUS_NAME = "heldout"  # several paths, a directory or a glob given without a name
FORGETTING_NAME = "source language (forgetting)"  # the row of --source-corpus text
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(.+)$")
_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".txt", ".jsonl", ".json", ".parquet", ".arrow")


def check_corpus_name(name: Any, where: str = "corpus name") -> str:
    """A corpus name: letters, digits, ``_``, ``.`` and ``-`` (it names a report row and a file of the
    lm-eval task), starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where} {name!r} is not a valid corpus name",
                          hint="use letters, digits, '_', '.' or '-' (at most 64), e.g. --corpus udhr=udhr.spa.txt")
    return name


def default_corpus_name(paths: list[str]) -> str:
    """One file: its name without format and compression suffixes (``bible.spa.txt.gz`` -> ``bible.spa``);
    anything else (several paths, a directory, a glob): ``heldout``."""
    if len(paths) != 1 or any(c in paths[0] for c in "*?[") or Path(paths[0]).is_dir():
        return DEFAULT_CORPUS_NAME
    name = Path(paths[0]).name
    while name.lower().endswith(_SUFFIXES):
        name = name[:name.rindex(".")]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-")[:64]
    return name or DEFAULT_CORPUS_NAME


@dataclass
class CorpusSpecs:
    """``--corpus`` values sorted out: the first (main) corpus and the others, each a name and its paths."""

    name: str
    paths: list[str]
    extra: dict[str, list[str]]


def parse_corpus_specs(specs: list[str]) -> CorpusSpecs:
    """``name=path`` and bare paths, in the order given. Bare paths form one corpus (named after the file
    stem, or ``heldout``); ``name=path`` one corpus each. The first corpus given is the main one
    (tokenization statistics, the speed text). A name given twice is refused.

    A value that is an existing path is a path even if it holds ``=``.
    """
    bare: list[str] = []
    named: list[tuple[str, str]] = []
    order: list[str | None] = []  # None: the bare-path corpus
    for spec in specs:
        match = _SPEC.match(spec)
        if match and not Path(spec).exists():
            named.append((match.group(1), match.group(2)))
            order.append(match.group(1))
        else:
            bare.append(spec)
            if None not in order:
                order.append(None)
    if not order:
        raise ConfigError("give at least one --corpus")
    corpora: dict[str, list[str]] = {}
    for name, path in named:
        if name in corpora:
            raise ConfigError(f"corpus name {name!r} is given twice",
                              hint="give each --corpus name=path a different name (a directory or glob "
                                   "reads several files as one corpus)")
        corpora[name] = [path]
    if bare:
        bare_name = default_corpus_name(bare)
        if bare_name in corpora:
            raise ConfigError(f"corpus name {bare_name!r} is given twice: once named, once as the stem of "
                              f"{bare[0]}", hint=f"name the bare path too: --corpus other={bare[0]}")
        corpora[bare_name] = bare
        order = [bare_name if o is None else o for o in order]
    main = str(order[0])
    return CorpusSpecs(name=main, paths=corpora[main],
                       extra={name: corpora[name] for name in dict.fromkeys(order) if name != main})
