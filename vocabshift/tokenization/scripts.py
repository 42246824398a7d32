"""Unicode scripts of characters and texts, for keeping or pruning vocabulary by writing system.

Scripts are ISO 15924 codes (``Latn``, ``Ethi``, ``Arab``) from the Unicode ``Scripts.txt``
property as shipped in ``fontTools.unicodedata``. Three codes are not writing systems:

- ``Zyyy`` (Common): digits, punctuation, spaces, symbols shared by many scripts;
- ``Zinh`` (Inherited): combining marks that take the script of the base letter (U+0301 acute);
- ``Zzzz`` (Unknown): unassigned and private-use code points.

A character of any of these "goes with any script": :func:`scripts_of` leaves them out, so a text
made only of them is *script-neutral* (empty set) and :func:`is_compatible` with every keep set.
Script-specific punctuation is not Common: the Ethiopic wordspace ``፡`` and full stop ``።`` are
``Ethi``, the Arabic comma ``،`` is Common. We use the single ``Script`` value, not
``Script_Extensions``: the Katakana-Hiragana prolonged sound mark ``ー`` is therefore Common.

Japanese is written in three scripts, which Unicode keeps apart: ``Hani`` (kanji), ``Hira`` and
``Kana``. Keep Japanese with ``"Han,Hiragana,Katakana"``; Korean with ``"Hangul,Han"`` if hanja
matter; Chinese, simplified or traditional, is ``Han``. The composite ISO codes ``Jpan``, ``Kore``,
``Hans`` and ``Hant`` are not accepted, so a keep set always says what it keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Set
from functools import cache

from fontTools import unicodedata as _unicodedata
from fontTools.unicodedata import Scripts as _Scripts

from vocabshift.errors import ConfigError

COMMON = "Zyyy"
INHERITED = "Zinh"
UNKNOWN = "Zzzz"
# scripts that do not tie a character to one writing system
NEUTRAL_SCRIPTS: frozenset[str] = frozenset({COMMON, INHERITED, UNKNOWN})

# every script code fontTools knows, with its Unicode name ("Old_Italic"); includes Hrkt
# (Katakana_Or_Hiragana), a property-value alias that no character has as its Script
SCRIPT_NAMES: dict[str, str] = dict(_Scripts.NAMES)

# composite ISO 15924 codes and language names people reach for, and what to write instead
_COMPOSITE_HINTS = {
    "jpan": "Han,Hiragana,Katakana",
    "japanese": "Han,Hiragana,Katakana",
    "kore": "Hangul,Han",
    "korean": "Hangul,Han",
    "hans": "Han",
    "hant": "Han",
    "chinese": "Han",
}


def _normalize(name: str) -> str:
    # Unicode's loose matching of property values: case, spaces, "_" and "-" do not count
    return "".join(name.split()).replace("_", "").replace("-", "").lower()


@cache
def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for code, name in SCRIPT_NAMES.items():
        table[_normalize(name)] = code
        table[_normalize(code)] = code
    return table


def _valid_names() -> str:
    return ", ".join(f"{name} ({code})" for code, name in sorted(SCRIPT_NAMES.items(), key=lambda kv: kv[1]))


def resolve_script(name: str) -> str:
    """The ISO 15924 code of a script given by Unicode name or code, in any case.

    ``"Ethiopic"``, ``"ethiopic"``, ``"Ethi"`` and ``"ETHI"`` give ``"Ethi"``; ``"Old_Italic"``,
    ``"Old Italic"`` and ``"old-italic"`` give ``"Ital"``. Raises :class:`ConfigError` naming the
    unknown value and listing every valid "Name (Code)".
    """
    key = _normalize(name)
    code = _lookup().get(key) or _unicodedata.script_code(name, default=None)
    if code is not None:
        return code
    composite = _COMPOSITE_HINTS.get(key)
    hint = f"{name!r} spans several Unicode scripts: write {composite!r}. " if composite else ""
    raise ConfigError(
        f"unknown Unicode script {name!r}",
        hint=f"{hint}Use a script name or ISO 15924 code, one of: {_valid_names()}",
    )


def resolve_scripts(names: Iterable[str] | str) -> frozenset[str]:
    """Codes of several scripts, from an iterable of names/codes or one comma-separated string.

    ``"Latin,Ethiopic,Arab"`` and ``["Latin", "Ethiopic", "Arab"]`` both give
    ``frozenset({"Latn", "Ethi", "Arab"})``. Empty input gives an empty set.
    """
    items = [names] if isinstance(names, str) else list(names)
    return frozenset(
        resolve_script(part.strip()) for item in items for part in item.split(",") if part.strip()
    )


def script_name(code: str) -> str:
    """The Unicode name of a script code (``"Ethi"`` -> ``"Ethiopic"``); any spelling is accepted."""
    return SCRIPT_NAMES[resolve_script(code)]


@cache
def script_table() -> tuple[bytearray, tuple[str, ...]]:
    """``(table, codes)``: ``codes[table[ord(ch)]]`` is the script code of ``ch``, for vectorized lookups.

    One byte per code point (1.1 MB) indexing into the list of codes, filled from the ~1700 ranges of
    Scripts.txt: every later lookup is two indexings instead of a bisect.
    """
    codes = tuple(sorted(set(_Scripts.VALUES)))
    index = {code: i for i, code in enumerate(codes)}
    table = bytearray(0x110000)
    ends = list(_Scripts.RANGES[1:]) + [0x110000]
    for start, end, code in zip(_Scripts.RANGES, ends, _Scripts.VALUES, strict=True):
        table[start:end] = bytes([index[code]]) * (end - start)
    return table, codes


def char_script(ch: str) -> str:
    """The script code of one character (``"a"`` -> ``"Latn"``, ``"1"`` -> ``"Zyyy"``)."""
    table, codes = script_table()
    return codes[table[ord(ch)]]


def scripts_of(text: str) -> frozenset[str]:
    """The scripts of the characters of ``text``, leaving out Common, Inherited and Unknown.

    An empty set means the text is script-neutral: digits, punctuation, spaces, marks only.
    """
    table, codes = script_table()
    return frozenset(codes[table[cp]] for cp in set(map(ord, text))) - NEUTRAL_SCRIPTS


def is_compatible(text: str, keep: Set[str]) -> bool:
    """Whether every character of ``text`` is in a script of ``keep`` or is script-neutral.

    ``keep`` holds script codes, as :func:`resolve_scripts` returns them. Neutral characters
    (Common, Inherited, Unknown) go with any script, so script-neutral text is compatible with
    every keep set, the empty one included.
    """
    unknown = [code for code in keep if code not in SCRIPT_NAMES]
    if unknown:
        raise ConfigError(
            f"keep set holds {', '.join(map(repr, sorted(unknown)))}, which are not script codes",
            hint="build it with vocabshift.tokenization.scripts.resolve_scripts(...)",
        )
    return scripts_of(text) <= keep


def dominant_script(text: str) -> str:
    """The most frequent non-neutral script among the characters of ``text``; ties go to the first
    seen. ``COMMON`` when the text is script-neutral."""
    table, codes = script_table()
    counts: dict[str, int] = {}
    # Counter keeps characters in order of first appearance, so scripts enter ``counts`` in order
    # of first appearance too; max() returns the first maximum: ties go to the first seen
    for ch, n in Counter(text).items():
        code = codes[table[ord(ch)]]
        if code not in NEUTRAL_SCRIPTS:
            counts[code] = counts.get(code, 0) + n
    return max(counts, key=counts.__getitem__) if counts else COMMON
