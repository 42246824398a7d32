"""Tests for vocabshift.data: the shipped samples exist, decode, and match SOURCES.md."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest

from vocabshift.data import list_samples, sample_path
from vocabshift.errors import VocabshiftError

UDHR_CODES = [
    "eng", "spa", "fra", "deu", "hun", "vie", "swh", "yor", "hau_NG", "zul", "amh",
    "tir", "arb", "hin", "ben", "tha", "rus", "ell", "cmn_hans", "jpn", "kor", "heb",
]  # fmt: skip
EXPECTED = [f"udhr.{code}.txt" for code in UDHR_CODES] + ["bible.spa.txt.gz", "bible.eng.txt.gz"]
SOURCES = Path(__file__).resolve().parents[1] / "vocabshift" / "data" / "SOURCES.md"
# a SOURCES.md table row: | `file` | ... | lines | characters | bytes | `sha256` |
_ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \|.*\| (?P<lines>\d+) \| (?P<chars>\d+) \| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|$"
)


def read_text(name: str) -> str:
    data = sample_path(name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


def sources_table() -> dict[str, dict[str, str]]:
    rows = {}
    for line in SOURCES.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["name"]] = match.groupdict()
    return rows


def test_list_samples_has_every_expected_file() -> None:
    assert sorted(EXPECTED) == list_samples()


@pytest.mark.parametrize("name", EXPECTED)
def test_sample_decodes_and_matches_sources_md(name: str) -> None:
    path = sample_path(name)
    assert path.is_file()
    text = read_text(name)
    lines = text.splitlines()
    assert lines and all(line.strip() == line and line for line in lines)
    assert text.endswith("\n")
    assert not re.search(r"[<>]|&[#\w]+;", text), "markup left in the text"

    row = sources_table()[name]
    payload = path.read_bytes()
    assert hashlib.sha256(payload).hexdigest() == row["sha"]
    assert len(payload) == int(row["size"])
    assert len(lines) == int(row["lines"])
    assert len(text) == int(row["chars"])


def test_sources_md_describes_exactly_the_shipped_files() -> None:
    assert sorted(sources_table()) == list_samples()


def test_bibles_start_at_genesis_and_end_at_revelation() -> None:
    spa = read_text("bible.spa.txt.gz").splitlines()
    eng = read_text("bible.eng.txt.gz").splitlines()
    assert spa[0] == "EN el principio crió Dios los cielos y la tierra."
    assert eng[0] == "In the beginning, God created the heavens and the earth."
    assert spa[-1] == "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén."
    assert eng[-1] == "The grace of the Lord Jesus Christ be with all the saints. Amen."
    # one verse per line: about the 31,102 verses of the 66-book canon
    assert 31_000 <= len(spa) <= 31_102
    assert 31_000 <= len(eng) <= 31_102


def test_bible_markup_is_removed_cleanly() -> None:
    eng = read_text("bible.eng.txt.gz")
    spa = read_text("bible.spa.txt.gz")
    # footnotes dropped without gluing words ("God<note>…</note>created")
    assert "Elohim" not in eng.splitlines()[0]
    assert "Godcreated" not in eng
    # Spanish word elements with no space between them are split, enclitics kept attached
    assert "hay allí también bdelio" in spa
    assert "oyéndolo" in spa


def test_unknown_sample_lists_the_available_ones() -> None:
    with pytest.raises(VocabshiftError) as info:
        sample_path("udhr.xyz.txt")
    message = str(info.value)
    assert "'udhr.xyz.txt'" in message
    assert "udhr.amh.txt" in message and "bible.eng.txt.gz" in message
