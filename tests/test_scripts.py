"""Tests for vocabshift.tokenization.scripts: name resolution, neutral characters, real text."""

from __future__ import annotations

import pytest
from fontTools import unicodedata

from vocabshift.data import sample_path
from vocabshift.errors import ConfigError
from vocabshift.tokenization.scripts import (
    COMMON,
    INHERITED,
    UNKNOWN,
    char_script,
    dominant_script,
    is_compatible,
    resolve_script,
    resolve_scripts,
    script_name,
    scripts_of,
)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Ethiopic", "Ethi"),
        ("ethiopic", "Ethi"),
        ("ETHIOPIC", "Ethi"),
        ("Ethi", "Ethi"),
        ("ethi", "Ethi"),
        ("latin", "Latn"),
        ("latn", "Latn"),
        ("Old_Italic", "Ital"),
        ("Old Italic", "Ital"),
        ("old-italic", "Ital"),
        ("Ital", "Ital"),
        ("Han", "Hani"),
        ("Common", COMMON),
        ("inherited", INHERITED),
        (" Arabic ", "Arab"),
    ],
)
def test_resolve_script_accepts_names_and_codes_in_any_case(name: str, code: str) -> None:
    assert resolve_script(name) == code


def test_unknown_script_names_the_value_and_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_script("Klingon")
    message = str(info.value)
    assert "'Klingon'" in message
    assert "Latin (Latn)" in message and "Ethiopic (Ethi)" in message and "Old_Italic (Ital)" in message


def test_composite_codes_are_refused_with_the_scripts_to_use() -> None:
    with pytest.raises(ConfigError, match="Han,Hiragana,Katakana"):
        resolve_script("Jpan")
    with pytest.raises(ConfigError, match="Hangul,Han"):
        resolve_script("Korean")


def test_resolve_scripts_takes_a_comma_string_or_an_iterable() -> None:
    expected = frozenset({"Latn", "Ethi", "Arab"})
    assert resolve_scripts("Latin,Ethiopic,Arab") == expected
    assert resolve_scripts("Latin, ethiopic ,arab,") == expected
    assert resolve_scripts(["Latin", "Ethi", "Arabic"]) == expected
    assert resolve_scripts(["Latin,Ethiopic", "Arab"]) == expected
    assert resolve_scripts([]) == frozenset()
    with pytest.raises(ConfigError, match="'Elvish'"):
        resolve_scripts("Latin,Elvish")


def test_script_name() -> None:
    assert script_name("Ethi") == "Ethiopic"
    assert script_name("latn") == "Latin"
    assert script_name("Ital") == "Old_Italic"
    assert script_name(COMMON) == "Common"


def test_char_script_matches_fonttools_across_unicode() -> None:
    # every 7th code point, surrogates included, up to the last plane
    for cp in range(0, 0x110000, 7):
        assert char_script(chr(cp)) == unicodedata.script(chr(cp)), hex(cp)


def test_neutral_characters() -> None:
    assert char_script("7") == COMMON
    assert char_script(",") == COMMON
    assert char_script(" ") == COMMON
    assert char_script("\u0301") == INHERITED  # combining acute accent
    assert char_script("\ue000") == UNKNOWN  # private use
    assert char_script("\u0378") == UNKNOWN  # unassigned
    # Ethiopic punctuation and numerals belong to Ethiopic, not Common
    assert char_script("፡") == "Ethi"
    assert char_script("።") == "Ethi"
    assert char_script("፩") == "Ethi"
    assert char_script("،") == COMMON  # the Arabic comma is shared with Syriac, Thaana...


def test_scripts_of_leaves_out_neutral_scripts() -> None:
    assert scripts_of("") == frozenset()
    assert scripts_of("2024, 10:30 — «!» \u0301\ue000") == frozenset()
    assert scripts_of("cafe\u0301") == {"Latn"}  # decomposed é: Latin + Inherited
    assert scripts_of("ሰላም፡ዓለም።") == {"Ethi"}
    assert scripts_of("Hello мир 123") == {"Latn", "Cyrl"}
    assert scripts_of("日本語のテキスト") == {"Hani", "Hira", "Kana"}


def test_is_compatible() -> None:
    latin = resolve_scripts("Latin")
    assert is_compatible("cafe\u0301 2.0!", latin)
    assert not is_compatible("café мир", latin)
    assert is_compatible("café мир", resolve_scripts("Latin,Cyrillic"))
    # script-neutral text goes with everything, even an empty keep set
    assert is_compatible("123 -- ...", frozenset())
    assert is_compatible("", latin)
    assert not is_compatible("a", frozenset())
    assert is_compatible("ሰላም፡", resolve_scripts("Ethiopic"))
    assert not is_compatible("ሰላም፡", latin)
    # Japanese needs all three of its scripts
    japanese = "日本語のテキスト"
    assert not is_compatible(japanese, resolve_scripts("Han"))
    assert is_compatible(japanese, resolve_scripts("Han,Hiragana,Katakana"))


def test_is_compatible_refuses_names_in_place_of_codes() -> None:
    with pytest.raises(ConfigError, match="resolve_scripts"):
        is_compatible("abc", frozenset({"Latin"}))


def test_dominant_script() -> None:
    assert dominant_script("") == COMMON
    assert dominant_script("12:30, «¡!»") == COMMON
    assert dominant_script("Москва is big") == "Cyrl"  # 6 Cyrillic letters, 5 Latin
    assert dominant_script("the word Москва") == "Latn"
    assert dominant_script("ab αβ") == "Latn"  # tie: first seen wins
    assert dominant_script("αβ ab") == "Grek"
    assert dominant_script("e\u0301\u0301\u0301 αβ") == "Grek"  # marks do not count for Latin


UDHR_SCRIPTS = {
    "eng": "Latn",
    "spa": "Latn",
    "fra": "Latn",
    "deu": "Latn",
    "hun": "Latn",
    "vie": "Latn",
    "swh": "Latn",
    "yor": "Latn",
    "hau_NG": "Latn",
    "zul": "Latn",
    "amh": "Ethi",
    "tir": "Ethi",
    "arb": "Arab",
    "hin": "Deva",
    "ben": "Beng",
    "tha": "Thai",
    "rus": "Cyrl",
    "ell": "Grek",
    "cmn_hans": "Hani",
    "jpn": "Hira",  # kana outnumber kanji in running Japanese text
    "kor": "Hang",
    "heb": "Hebr",
}


@pytest.mark.parametrize(("code", "script"), sorted(UDHR_SCRIPTS.items()))
def test_udhr_samples_are_written_in_the_expected_script(code: str, script: str) -> None:
    text = sample_path(f"udhr.{code}.txt").read_text(encoding="utf-8")
    assert dominant_script(text) == script
    if code != "jpn":
        assert scripts_of(text) == {script}
        assert is_compatible(text, frozenset({script}))


def test_japanese_sample_is_kept_by_han_hiragana_katakana() -> None:
    text = sample_path("udhr.jpn.txt").read_text(encoding="utf-8")
    assert {"Hani", "Hira"} <= scripts_of(text)
    assert is_compatible(text, resolve_scripts("Han,Hiragana,Katakana"))
    assert not is_compatible(text, resolve_scripts("Han"))
