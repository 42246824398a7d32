"""Prune a tokenizer's vocabulary to the tokens of some scripts and/or the tokens a corpus uses.

MAFT-style vocabulary reduction (Alabi et al. 2022, "Adapting Pre-trained Language Models to African
Languages via Multilingual Adaptive Fine-Tuning", which removes the tokens of scripts the target
languages do not use) and corpus-frequency pruning, for every family vocabshift supports. The
output is a new ``tokenizer.json`` (plus a rewritten sentencepiece ``.model`` when the source ships
one) and an ``id_map`` (new id -> source id) for :func:`vocabshift.surgery.remap_vocab`.

How a keep set becomes a tokenizer (:func:`prune_tokenizer`):

* always kept: every added token (special or not), the unk token, the byte alphabet (the 256
  single-byte tokens of byte-level BPE, the ``<0xNN>`` pieces of sentencepiece byte fallback);
* kept tokens keep their relative order and get dense new ids ``0..n-1``, so ``id_map`` is
  increasing; special tokens keep their strings, the post-processor's ids are remapped;
* BPE: the keep set is closed under merge ancestry: a kept token keeps every symbol BPE builds on
  the way when it encodes the token's own characters (its parts, their parts, down to characters
  or bytes), so it stays reachable by the very merges that built it before. Exactly the merges
  whose parts and result are all kept stay, in their original order (rank);
* Unigram: pieces keep their scores; the lowest-scored piece stays, because the score of an unknown
  character is derived from it (``min_score - 10`` in both ``tokenizers`` and sentencepiece);
* WordPiece and sentencepiece (BPE and Unigram): the single characters of the scripts of the kept
  tokens (Common and Inherited included) stay, so that text in those scripts stays segmentable
  (with ``keep_characters=False`` they are not added).

Why text in the kept scripts tokenizes to the same token strings after script pruning: every token
a tokenizer can produce, or build on the way, for a piece of text is a substring of that
(normalized, pre-tokenized) text. A substring of text whose scripts are all kept has only kept
scripts too, so :func:`keep_by_scripts` keeps it (and the BPE closure adds nothing). The promise
is about the *normalized* text: a normalizer that maps a character into a removed script breaks it
for that character (NFKC turns the Common micro sign "µ" into Greek "μ"). Per family:

* BPE applies, at each step, the lowest-ranked merge among adjacent symbols. All merges the source
  applies to kept-script text have kept parts and results, so they survive, with their relative
  ranks, and the merges that are removed never applied to that text: the pruned tokenizer makes the
  same choice at every step. Byte-level BPE works on bytes, so a token may end or begin inside a
  UTF-8 character; such a token is kept when the character it ends inside could be of a kept script
  (see :func:`_bytes_compatible`).
* Unigram runs Viterbi over the lattice of pieces that match the text. For kept-script text every
  matching piece is kept, with its score; pieces mixing a kept and a removed script could never
  match text in the kept scripts alone. The lattice, and so the best path, is unchanged (the unknown
  piece's score too, see above).
* WordPiece matches the longest vocabulary entry at each position, greedily. Every entry that could
  match kept-script text is kept, so the longest match is the same at every step, and a word the
  source turns into ``[UNK]`` is still ``[UNK]``.

Pruning by frequency keeps every token the corpus uses at least ``min_count`` times. With
``min_count=1`` the corpus itself tokenizes exactly as before (the same arguments: BPE keeps the
symbols built on the way, Viterbi's best path and WordPiece's longest matches are all kept). Other
text may need a dropped token and then tokenizes into smaller pieces; it stays encodable (bytes for
byte-level BPE and byte fallback, the kept characters or the unk token otherwise).

A sentencepiece BPE ``.model`` has no merge list: sentencepiece merges any two adjacent symbols whose
concatenation is a piece, best score first, and ``transformers`` derives the ``tokenizer.json``
merges from the same rule. The rewritten ``.model`` keeps the pieces of the kept ids (matched by piece
string, as the Hugging Face ids may be offset, e.g. XLM-R's ``<pad>`` and ``<mask>``), in order, with
their scores and types; the merge closure above makes every kept piece reachable for sentencepiece
too, and ``transformers`` reads the pruned ``.model`` into the same ids as the pruned
``tokenizer.json`` (its derived merges, filtered, are the pruned list, in the same order).
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from vocabshift.errors import ConfigError, TokenizerError
from vocabshift.outputs import empty_output_dir
from vocabshift.tokenization.scripts import (
    NEUTRAL_SCRIPTS,
    char_script,
    resolve_scripts,
    script_table,
    scripts_of,
)
from vocabshift.tokenization.source import SourceTokenizer, TokenizerFamily
from vocabshift.tokenization.surface import BYTE_PIECE, Surface, surface_form
from vocabshift.tokenization.train import _remap_post_processor, _token_to_id, _verify_reload, _write_output

log = logging.getLogger(__name__)

# Why a token was kept; a token counts under the first reason it got, in this order of assignment.
REASONS = ("special", "unk", "byte", "script", "frequency", "requested", "character", "unk_score", "closure")


class KeepSet(set[int]):
    """A set of source token ids that remembers why each id is in it (``reasons[id]``).

    :func:`keep_by_scripts`, :func:`keep_by_frequency` and :func:`build_keep_set` return one, and
    :func:`prune_tokenizer` reports its reasons. Any plain ``set[int]`` works as a keep set as well;
    its ids are reported as ``"requested"`` (set operations such as ``a | b`` return plain sets).
    """

    def __init__(self, ids: Iterable[int] = (), reason: str = "requested") -> None:
        super().__init__(ids)
        self.reasons: dict[int, str] = dict.fromkeys(self, reason)

    def add_reason(self, ids: Iterable[int], reason: str) -> None:
        """Add ``ids``; an id already present keeps its first reason."""
        for i in ids:
            self.add(i)
            self.reasons.setdefault(i, reason)


@dataclass
class KeepReport:
    """What pruning kept and removed, per script, and why tokens were kept."""

    family: str
    source_size: int
    kept: int
    removed: int
    # reason -> number of kept tokens (see REASONS); each token counts once, under its first reason
    reasons: dict[str, int] = field(default_factory=dict)
    # script label -> number of tokens: ISO 15924 codes ("Latn", "Cyrl+Latn" for a mixed token),
    # "neutral" (digits, punctuation, marks only), "special", "byte" (a lone byte), "partial" (a
    # byte-level token that begins or ends inside a UTF-8 character)
    kept_by_script: dict[str, int] = field(default_factory=dict)
    removed_by_script: dict[str, int] = field(default_factory=dict)
    merges_kept: int | None = None  # BPE only
    merges_removed: int | None = None
    # kept BPE tokens that no merge produces and that are not base symbols (added by hand): kept as is
    unmerged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PrunedTokenizer:
    """A pruned tokenizer, ready for :func:`write_pruned_tokenizer` and ``remap_vocab(model, id_map)``."""

    tokenizer_json: dict[str, Any]  # the new tokenizer.json content
    sentencepiece_model: bytes | None  # the rewritten .model when the source ships one
    id_map: list[int]  # new id -> source id; increasing, no -1
    report: KeepReport
    reasons: list[str] = field(default_factory=list)  # new id -> why it was kept (see REASONS)
    # the tokenizers.Tokenizer of tokenizer_json, built once by prune_tokenizer (None: built when written)
    backend: Any = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------------------------------
# The source vocabulary, token by token


class _Token(NamedTuple):
    """One vocabulary entry with its surface form (the fields of :class:`Surface`, flat: one object per token)."""

    id: int
    content: str
    added: bool  # an added token (special or not): always kept
    base: bool  # a base symbol: one byte (byte-level BPE), one character, or a <0xNN> piece
    text: str  # Surface.text: the decoded text without the word-boundary marker
    initial: bool  # Surface.word_initial
    kind: str  # Surface.kind: "normal", "special", "byte" or "partial"
    raw: bytes | None  # Surface.raw

    @property
    def surface(self) -> Surface:
        return Surface(self.text, self.initial, self.kind, self.raw)


def _tokens(source: SourceTokenizer) -> dict[int, _Token]:
    """Every token of ``source`` by id, in vocabulary order; computed once per source (``source.cache``)."""
    cached = source.cache.get("prune.tokens")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    spec = source.backend_json
    model = spec["model"]
    family = source.family
    wordpiece = family is TokenizerFamily.WORDPIECE
    sentencepiece = family.is_sentencepiece
    prefix = model.get("continuing_subword_prefix") or ""
    suffix = model.get("end_of_word_suffix") or ""
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    out: dict[int, _Token] = {}
    for content, i in source.token_to_id.items():
        if i in added:
            out[i] = _Token(i, content, True, False, content, False, "special", None)
            continue
        if wordpiece:
            s = surface_form(content, family, continuing_prefix=prefix or "##")
            out[i] = _Token(i, content, False, len(s.text) == 1, s.text, s.word_initial, s.kind, s.raw)
            continue
        # BPE affixes (CLIP-style "</w>", "##" continuations) are markers, not text
        body = content
        if prefix and body.startswith(prefix) and len(body) > len(prefix):
            body = body[len(prefix):]
        if suffix and body.endswith(suffix) and len(body) > len(suffix):
            body = body[: -len(suffix)]
        if sentencepiece:
            # surface_form's sentencepiece case, inlined: this loop runs once per token (250k for XLM-R)
            m = BYTE_PIECE.match(body) if body.startswith("<0x") else None
            if m is not None:
                out[i] = _Token(i, content, False, True, "", False, "byte", bytes([int(m.group(1), 16)]))
            else:
                initial = body.startswith("▁")
                text = (body[1:] if initial else body).replace("▁", " ")
                out[i] = _Token(i, content, False, len(body) == 1, text, initial, "normal", None)
        else:
            s = surface_form(body, family)
            out[i] = _Token(i, content, False, len(body) == 1 or s.kind == "byte", s.text, s.word_initial, s.kind,
                            s.raw)
    source.cache["prune.tokens"] = out
    return out


class _TokenScripts(NamedTuple):
    """The script of every character of every token's surface text, as arrays (rows in token order)."""

    char_codes: Any  # np.ndarray[int16]: the position in ``codes`` of each character's script, row after row
    starts: Any  # np.ndarray[int64]: the characters of row r are char_codes[starts[r]:starts[r + 1]]
    codes: tuple[str, ...]

    @classmethod
    def of(cls, texts: list[str]) -> _TokenScripts:
        """The scripts of the characters of ``texts`` (one row per text)."""
        import numpy as np

        table, codes = script_table()
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=starts[1:])
        points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return cls(np.frombuffer(table, dtype=np.uint8)[points].astype(np.int16), starts, codes)

    def within(self, keep: frozenset[str]) -> list[bool]:
        """Per row: ``scripts_of(text) <= keep`` (every character of a kept or a neutral script)."""
        import numpy as np

        allowed = np.array([c in keep or c in NEUTRAL_SCRIPTS for c in self.codes], dtype=bool)
        outside = np.zeros(len(self.char_codes) + 1, dtype=np.int64)
        np.cumsum(~allowed[self.char_codes], out=outside[1:])  # characters outside keep, cumulated
        return (outside[self.starts[1:]] == outside[self.starts[:-1]]).tolist()  # type: ignore[no-any-return]

    def spans(self) -> tuple[list[int], list[int]]:
        """Per row: the lowest and highest position in ``codes`` of a non-neutral script of its text
        (``len(codes)`` and -1 when the text is script-neutral); equal when it has one script."""
        import numpy as np

        n = len(self.codes)
        neutral = np.array([c in NEUTRAL_SCRIPTS for c in self.codes], dtype=bool)[self.char_codes]
        lo = np.full(len(self.starts) - 1, n, dtype=np.int64)
        hi = np.full(len(self.starts) - 1, -1, dtype=np.int64)
        nonempty = self.starts[1:] > self.starts[:-1]
        if nonempty.any():
            # with empty texts left out, the starts of the others cut ``char_codes`` into exactly their characters
            at = self.starts[:-1][nonempty]
            lo[nonempty] = np.minimum.reduceat(np.where(neutral, n, self.char_codes), at)
            hi[nonempty] = np.maximum.reduceat(np.where(neutral, -1, self.char_codes), at)
        return lo.tolist(), hi.tolist()

    def scripts(self, rows: Any) -> frozenset[str]:
        """The non-neutral scripts of the characters of the rows where ``rows`` (booleans) is true."""
        import numpy as np

        chars = np.repeat(np.asarray(rows, dtype=bool), np.diff(self.starts))
        return frozenset(self.codes[k] for k in np.unique(self.char_codes[chars]).tolist()) - NEUTRAL_SCRIPTS


def _token_scripts(source: SourceTokenizer) -> _TokenScripts:
    """The :class:`_TokenScripts` of the surface texts of :func:`_tokens`, computed once per source."""
    cached = source.cache.get("prune.scripts")
    if cached is None:
        cached = source.cache["prune.scripts"] = _TokenScripts.of([t.text for t in _tokens(source).values()])
    return cached  # type: ignore[no-any-return]


def _label(tok: _Token) -> str:
    """The script label of a token in the report (see :class:`KeepReport`)."""
    if tok.added:
        return "special"
    if tok.kind in ("byte", "partial"):  # a lone byte; a byte-level token cut inside a character
        return tok.kind
    scripts = scripts_of(tok.text)
    return "+".join(sorted(scripts)) if scripts else "neutral"


def _labels(source: SourceTokenizer) -> dict[int, str]:
    """:func:`_label` of every token, by id (script labels computed in one vectorized pass)."""
    codes = _token_scripts(source).codes
    lo, hi = _token_scripts(source).spans()
    out: dict[int, str] = {}
    for (i, tok), a, b in zip(_tokens(source).items(), lo, hi, strict=True):
        if tok.added or tok.kind in ("byte", "partial") or (a != b and a < len(codes)):
            out[i] = _label(tok)  # special, byte, partial, or a text of several scripts
        else:
            out[i] = "neutral" if a == len(codes) else codes[a]
    return out


@lru_cache(maxsize=4096)
def _prefix_scripts(lead: bytes) -> frozenset[str]:
    """Scripts (neutral ones included) of every character whose UTF-8 encoding starts with ``lead``."""
    first = lead[0]
    length = 2 if first < 0xE0 else 3 if first < 0xF0 else 4
    value = first & (0x7F >> length)
    for b in lead[1:]:
        value = (value << 6) | (b & 0x3F)
    missing = 6 * (length - len(lead))
    lo, hi = value << missing, min((value << missing) | ((1 << missing) - 1), 0x10FFFF)
    return frozenset(char_script(chr(c)) for c in range(lo, hi + 1))


def _bytes_compatible(raw: bytes, keep: frozenset[str]) -> bool:
    """Whether a byte-level token can occur inside text whose scripts are all in ``keep``.

    The complete characters must be of kept (or neutral) scripts. A token that ends inside a
    character (its last bytes start a multi-byte sequence) needs that character to possibly be of a
    kept or neutral script: ``b"\\xe1\\x8a"`` starts only Ethiopic characters (U+1280..U+12BF) and is
    dropped without Ethiopic, ``b"\\xe1"`` also starts Latin Extended Additional ones. Leading
    continuation bytes end a character that began in an earlier token; nearly any script could own
    it, so they constrain nothing.
    """
    start = 0
    while start < len(raw) and 0x80 <= raw[start] < 0xC0:
        start += 1
    body = raw[start:]
    end = len(body)
    for back in range(1, min(4, len(body)) + 1):
        b = body[-back]
        if b < 0x80:
            break
        if b >= 0xC0:  # the lead byte of the last character
            needed = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if needed > back:
                end = len(body) - back
            break
    try:
        text = body[:end].decode("utf-8")
    except UnicodeDecodeError:
        return True  # not UTF-8 (bytes C0, C1, F5..FF): never built from real text; keep, as bytes are
    if not scripts_of(text) <= keep:
        return False
    tail = body[end:]
    if not tail or tail[0] > 0xF4:
        return True
    possible = _prefix_scripts(tail)
    return bool(possible & (keep | NEUTRAL_SCRIPTS))


# --------------------------------------------------------------------------------------------------
# Keep sets


def keep_by_scripts(source: SourceTokenizer, keep_scripts: Iterable[str] | str) -> KeepSet:
    """Ids of the tokens whose surface form has only scripts of ``keep_scripts``.

    Script-neutral tokens (digits, punctuation, spaces, combining marks: Common and Inherited) go
    with any script and are kept. Scripts are names or ISO 15924 codes (``"Latin"``, ``"Latn"``).
    Added/special tokens are not judged by script: :func:`prune_tokenizer` keeps all of them.
    """
    keep = resolve_scripts(keep_scripts)
    byte_level = source.family is TokenizerFamily.BYTE_LEVEL_BPE
    ids = []
    for t, within in zip(_tokens(source).values(), _token_scripts(source).within(keep), strict=True):
        if t.added:
            continue
        if byte_level and t.raw is not None:  # judged by its bytes, which may end inside a character
            within = _bytes_compatible(t.raw, keep)
        if within:
            ids.append(t.id)
    return KeepSet(ids, "script")


def keep_by_frequency(source: SourceTokenizer, texts: Iterable[str], min_count: int = 1,
                      batch_size: int = 1000) -> KeepSet:
    """Ids that the source tokenizer uses at least ``min_count`` times on ``texts`` (no special tokens added)."""
    import numpy as np

    if min_count < 1:
        raise ConfigError(f"min_count must be at least 1, got {min_count}")
    backend = source.backend
    size = backend.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(size, dtype=np.int64)
    n_texts = 0
    batch: list[str] = []
    # A tokenizer.json may carry truncation/padding (MiniLM's truncates at 128): counting must see every
    # token of every text, so switch both off for the count and restore them after.
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        for text in itertools.chain(texts, [None]):  # None flushes the last batch
            if text is not None:
                n_texts += 1
                batch.append(text)
            if batch and (text is None or len(batch) >= batch_size):
                # one Rust call per batch (parallel); one bincount per batch
                encodings = backend.encode_batch(batch, add_special_tokens=False)
                ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64)
                counts += np.bincount(ids, minlength=size)[:size]
                batch = []
    finally:
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**{k: v for k, v in padding.items() if k != "length" or v is not None})
    if n_texts == 0:
        raise ConfigError("the corpus for frequency pruning gave no text", hint="check the corpus paths")
    return KeepSet(np.flatnonzero(counts >= min_count).tolist(), "frequency")


def build_keep_set(source: SourceTokenizer, keep_scripts: Iterable[str] | str | None = None,
                   texts: Iterable[str] | None = None, min_count: int = 1) -> KeepSet:
    """The keep set of a pruning run: tokens whose scripts are all kept, plus tokens used at least
    ``min_count`` times in ``texts``. With both, the union; with one, that one alone.

    Raises :class:`ConfigError` when neither scripts nor texts are given.
    """
    if keep_scripts is None and texts is None:
        raise ConfigError("nothing to prune by: give keep scripts, a corpus for frequency pruning, or both")
    keep = KeepSet()
    if keep_scripts is not None:
        by_scripts = keep_by_scripts(source, keep_scripts)
        keep.add_reason(by_scripts, "script")
    if texts is not None:
        by_frequency = keep_by_frequency(source, texts, min_count)
        keep.add_reason(sorted(by_frequency), "frequency")
    return keep


# --------------------------------------------------------------------------------------------------
# What a keep set must be completed with


def _always_kept(tokens: Mapping[int, _Token], source: SourceTokenizer) -> list[tuple[int, str]]:
    """Added tokens, the unk token and the byte alphabet, with their reasons."""
    model = source.backend_json["model"]
    out = [(t.id, "special") for t in tokens.values() if t.added]
    unk_id = model.get("unk_id") if model["type"] == "Unigram" else source.token_to_id.get(model.get("unk_token") or "")
    if unk_id is not None:
        out.append((unk_id, "unk"))
    for t in tokens.values():
        if t.added:
            continue
        if source.family is TokenizerFamily.BYTE_LEVEL_BPE:
            if t.base and t.raw is not None and len(t.raw) == 1:
                out.append((t.id, "byte"))
        elif t.kind == "byte":
            out.append((t.id, "byte"))
    return out


def _coverage_characters(source: SourceTokenizer, keep: set[int]) -> list[int]:
    """Single-character tokens of the scripts of the kept tokens, Common and Inherited included.

    WordPiece needs both ``c`` and ``##c``; sentencepiece needs ``c`` and the bare ``▁``. Byte-level
    BPE needs none: its 256 byte tokens cover everything.
    """
    tokens = _tokens(source)
    family = source.family
    frozen = _token_scripts(source).scripts([i in keep and not t.added and t.kind == "normal" for i, t in tokens.items()])
    wordpiece = family is TokenizerFamily.WORDPIECE
    out = []
    for t in tokens.values():
        if t.added or t.kind != "normal":
            continue
        if wordpiece:
            single = len(t.text) == 1
        else:
            single = (len(t.text) == 1 and not t.initial) or (t.text == "" and t.initial)
        if single and scripts_of(t.text) <= frozen:
            out.append(t.id)
    return out


def _load_proto(path: Path) -> Any:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise TokenizerError(f"cannot read the sentencepiece model ({err})", path=path) from err
    return proto


def _lowest_score_ids(source: SourceTokenizer, proto: Any | None) -> list[int]:
    """Unigram: the pieces whose score sets the unknown-character score (``min_score - 10``).

    ``tokenizers`` takes the minimum over every vocabulary entry, sentencepiece over the normal
    pieces. Keeping the piece that holds each minimum keeps both exactly, and with them the scores
    Viterbi compares on text with characters the vocabulary lacks.
    """
    scores = [score for _piece, score in source.backend_json["model"]["vocab"]]
    out = [scores.index(min(scores))] if scores else []  # the first lowest, as min() picks it
    if proto is not None:
        from sentencepiece import sentencepiece_model_pb2 as pb

        normal = pb.ModelProto.SentencePiece.NORMAL
        lowest = min((p for p in proto.pieces if p.type == normal), key=attrgetter("score"), default=None)
        if lowest is not None:
            i = source.token_to_id.get(lowest.piece)
            if i is not None:
                out.append(i)
    return out


def _merge_pairs(model: Mapping[str, Any]) -> list[tuple[str, str]]:
    # tokenizers writes merges as ["a", "b"] pairs; older files as "a b" strings
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in model["merges"]]  # type: ignore[misc]


def _merge_table(model: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(left, right, result) strings of every merge, in rank order."""
    # tokenizers drops the continuing-subword prefix of the right part: ("a", "##b") -> "ab"
    cut = len((model.get("continuing_subword_prefix") or "").encode("utf-8"))
    return [(a, b, a + b.encode("utf-8")[cut:].decode("utf-8", errors="replace") if cut else a + b)
            for a, b in _merge_pairs(model)]


def _merge_ids(model: Mapping[str, Any], table: list[tuple[str, str, str]]) -> Any:
    """``[M, 3]`` int64 array: (left id, right id, result id) of every merge, -1 where a string is not
    in the vocabulary."""
    import numpy as np

    get = model["vocab"].get
    out = np.empty((len(table), 3), dtype=np.int64)
    for column in range(3):  # three list comprehensions: a third faster than one generator over the triples
        out[:, column] = [get(triple[column], -1) for triple in table]
    return out


def _bpe_path(token: str, ranks: Mapping[tuple[str, str], tuple[int, str]], prefix: str, suffix: str) -> list[str]:
    """Every symbol BPE holds while it encodes ``token`` alone: its characters, then each merge result.

    This mirrors ``tokenizers``: the word starts as characters (the continuing-subword prefix on
    all but the first, the end-of-word suffix on the last) and the lowest-ranked adjacent pair is
    merged first, the leftmost one on a tie. Within a word, a final token is built by exactly the
    merges that build it alone (a merge across its edges would have changed its edges), so these are
    the tokens a kept token needs to stay reachable, in context as alone.
    """
    body = token
    if prefix and body.startswith(prefix) and len(body) > len(prefix):
        body = body[len(prefix):]
    if suffix and body.endswith(suffix) and len(body) > len(suffix):
        body = body[: -len(suffix)]
    symbols = [c if i == 0 else prefix + c for i, c in enumerate(body)]
    if token.startswith(prefix) and prefix and symbols:
        symbols[0] = prefix + symbols[0]
    if suffix and symbols and token.endswith(suffix) and token != body:
        symbols[-1] += suffix
    seen = list(symbols)
    while len(symbols) > 1:
        best: tuple[int, int, str] | None = None
        for i in range(len(symbols) - 1):
            hit = ranks.get((symbols[i], symbols[i + 1]))
            if hit is not None and (best is None or hit[0] < best[0]):
                best = (hit[0], i, hit[1])
        if best is None:
            break
        _, i, merged = best
        symbols[i: i + 2] = [merged]
        seen.append(merged)
    return seen


def _close_under_merges(model: Mapping[str, Any], table: list[tuple[str, str, str]], merges: Any,
                        tokens: Mapping[int, _Token], reasons: dict[int, str]) -> None:
    """Add the merge ancestors of every kept BPE token to ``reasons`` (as ``"closure"``).

    The ancestors are the symbols of :func:`_bpe_path`. A token made by one merge only (every token of
    a trained BPE) needs that merge's two parts, whose own ancestors follow; a token that several merges
    make (converted sentencepiece BPE) needs the symbols of its own :func:`_bpe_path`. A token that BPE
    cannot build from its own characters (hand-added, or unreachable in the source too) keeps the parts
    of the first merge that produces it; a token that no merge produces is kept as is. ``merges`` is
    :func:`_merge_ids` of ``table``; the walk is vectorized over the one-merge tokens (a 262k-token
    vocabulary closes in milliseconds), level by level.
    """
    import numpy as np

    vocab = model["vocab"]
    size = max(len(tokens), int(merges.max()) + 1 if merges.size else 0)
    valid = (merges >= 0).all(axis=1) if merges.size else np.zeros(0, dtype=bool)
    # merges whose three strings are in the vocabulary, as tokenizers keeps them; by result
    producers = np.bincount(merges[valid, 2], minlength=size)
    first = np.full(size, -1, dtype=np.int64)  # the lowest-ranked merge that makes each token
    rows = np.flatnonzero(valid)[::-1]
    first[merges[rows, 2]] = rows  # assigned last-to-first: the first merge wins
    skip = np.zeros(size, dtype=bool)  # added and base tokens need no ancestors
    for i, tok in tokens.items():
        skip[i] = tok.added or tok.base
    kept = np.zeros(size, dtype=bool)
    kept[list(reasons)] = True
    frontier = np.flatnonzero(kept)
    ranks: dict[tuple[str, str], tuple[int, str]] | None = None
    prefix = model.get("continuing_subword_prefix") or ""
    suffix = model.get("end_of_word_suffix") or ""
    while frontier.size:
        frontier = frontier[~skip[frontier] & (producers[frontier] > 0)]
        single = frontier[producers[frontier] == 1]
        needed = [merges[first[single], 0], merges[first[single], 1]]
        several = frontier[producers[frontier] > 1]
        if several.size:
            if ranks is None:
                ranks = {}
                for rank in np.flatnonzero(valid).tolist():
                    a, b, c = table[rank]
                    ranks.setdefault((a, b), (rank, c))
            extra = []
            for i in several.tolist():
                tok = tokens[i]
                path = _bpe_path(tok.content, ranks, prefix, suffix)
                symbols = path if path[-1] == tok.content else list(table[int(first[i])][:2])
                extra.extend(j for j in map(vocab.get, symbols) if j is not None)
            needed.append(np.asarray(extra, dtype=np.int64))
        candidates = np.unique(np.concatenate(needed)) if needed else np.zeros(0, dtype=np.int64)
        frontier = candidates[~kept[candidates]]
        kept[frontier] = True
        for i in frontier.tolist():
            reasons[i] = "closure"


# --------------------------------------------------------------------------------------------------
# Pruning


def prune_tokenizer(source: SourceTokenizer, keep: set[int], *, keep_characters: bool = True,
                    on_id_map: Callable[[list[int]], None] | None = None) -> PrunedTokenizer:
    """Build the tokenizer that keeps only the ids of ``keep`` (plus what every tokenizer needs).

    Special/added tokens, the unk token and the byte alphabet are always kept, whether ``keep`` holds
    them or not. See the module docstring for the per-family rules and for why text in kept scripts
    tokenizes exactly as before.

    Args:
        source: the tokenizer to prune.
        keep: source ids to keep, e.g. from :func:`build_keep_set`.
        keep_characters: WordPiece and sentencepiece: also keep the single-character tokens of the
            scripts that the kept tokens use, so text in those scripts stays segmentable after
            frequency pruning (a no-op after script pruning, which keeps them anyway).
        on_id_map: called with the ``id_map`` as soon as it is known, before the tokenizer files are
            built (the weights can be written meanwhile: :func:`vocabshift.vocabulary.prune`).
    """
    tokens = _tokens(source)
    spec = source.backend_json
    model = spec["model"]
    family = source.family
    missing = sorted(i for i in keep if i not in tokens)
    if missing:
        raise ConfigError(f"keep set holds {len(missing)} ids that the source vocabulary lacks "
                          f"(first: {missing[:5]})", path=source.path,
                          hint="build it from this tokenizer, e.g. with build_keep_set")

    reasons: dict[int, str] = {}
    for i, why in _always_kept(tokens, source):
        reasons.setdefault(i, why)
    given: Mapping[int, str] = getattr(keep, "reasons", {})
    for i in sorted(keep):
        reasons.setdefault(i, given.get(i, "requested"))
    if keep_characters and family is not TokenizerFamily.BYTE_LEVEL_BPE:
        for i in _coverage_characters(source, keep):
            reasons.setdefault(i, "character")
    proto = _load_proto(source.sentencepiece_model) if source.sentencepiece_model is not None else None
    if model["type"] == "Unigram":
        for i in _lowest_score_ids(source, proto):
            reasons.setdefault(i, "unk_score")
    table = _merge_table(model) if model["type"] == "BPE" else None
    merges = _merge_ids(model, table) if table is not None else None
    if table is not None:
        _close_under_merges(model, table, merges, tokens, reasons)

    kept = sorted(reasons)
    if on_id_map is not None:
        on_id_map(kept)
    new_id = {old: new for new, old in enumerate(kept)}
    tokenizer_json, backend = _pruned_json(spec, new_id, merges)
    sp_bytes = _pruned_sentencepiece(proto, source.token_to_id, new_id) if proto is not None else None

    labels = _labels(source)
    count = Counter(reasons.values())
    report = KeepReport(
        family=family.value, source_size=len(tokens), kept=len(kept), removed=len(tokens) - len(kept),
        reasons={r: count[r] for r in REASONS if count[r]},
        kept_by_script=dict(Counter(labels[i] for i in kept).most_common()),
        removed_by_script=dict(Counter(labels[i] for i in tokens if i not in new_id).most_common()),
    )
    if merges is not None:
        report.merges_kept = len(tokenizer_json["model"]["merges"])
        report.merges_removed = len(merges) - report.merges_kept
        produced = set(merges[:, 2].tolist())
        report.unmerged = sum(1 for i in kept if not tokens[i].added and not tokens[i].base and i not in produced)
    log.info("pruned %s tokenizer %s: kept %d of %d tokens (%s); removed by script: %s",
             family.value, source.path, report.kept, report.source_size,
             ", ".join(f"{k} {v}" for k, v in report.reasons.items()),
             ", ".join(f"{k} {v}" for k, v in list(report.removed_by_script.items())[:8]) or "none")
    return PrunedTokenizer(tokenizer_json=tokenizer_json, sentencepiece_model=sp_bytes, id_map=kept, report=report,
                           reasons=[reasons[i] for i in kept], backend=backend)


def _pruned_json(spec: Mapping[str, Any], new_id: Mapping[int, int], merges: Any) -> tuple[dict[str, Any], Any]:
    """The pruned ``tokenizer.json`` and its ``tokenizers.Tokenizer`` (built once, which checks it)."""
    from tokenizers import Tokenizer

    model = spec["model"]
    out = {k: copy.deepcopy(v) for k, v in spec.items() if k != "model"}
    new_model = {k: copy.deepcopy(v) for k, v in model.items() if k not in ("vocab", "merges")}
    if model["type"] == "Unigram":
        kept_pieces = [i for i in range(len(model["vocab"])) if i in new_id]
        if [new_id[i] for i in kept_pieces] != list(range(len(kept_pieces))):
            raise TokenizerError("cannot prune: the Unigram vocabulary does not come before the added tokens")
        new_model["vocab"] = [list(model["vocab"][i]) for i in kept_pieces]
        if model.get("unk_id") is not None:
            new_model["unk_id"] = new_id[model["unk_id"]]
    else:
        new_model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    if merges is not None:
        # merges whose parts and result are all kept stay, in their order (rank); the others go
        import numpy as np

        # one slot more than any id: the -1 of a string missing from the vocabulary reads it (False)
        top = int(merges.max()) + 1 if len(merges) else 0
        kept = np.zeros(max(max(new_id, default=-1) + 1, top) + 1, dtype=bool)
        kept[list(new_id)] = True
        whole = kept[merges].all(axis=1).tolist()
        new_model["merges"] = [m if isinstance(m, str) else [m[0], m[1]]
                               for m, k in zip(model["merges"], whole, strict=True) if k]
    out["model"] = new_model
    out["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec.get("added_tokens", [])]
    ids = _token_to_id(out)
    out["post_processor"] = _remap_post_processor(spec.get("post_processor"), ids)
    padding = out.get("padding")
    if isinstance(padding, dict) and padding.get("pad_token") in ids:
        padding["pad_id"] = ids[padding["pad_token"]]
    try:
        backend = Tokenizer.from_str(json.dumps(out))
    except Exception as err:  # the Rust side names the inconsistency
        raise TokenizerError(f"the pruned tokenizer does not load: {err}") from err
    size = backend.get_vocab_size(with_added_tokens=True)
    if size != len(new_id):
        raise TokenizerError(f"the pruned tokenizer has {size} tokens, expected {len(new_id)}")
    return out, backend


def _pruned_sentencepiece(proto: Any, hf_ids: Mapping[str, int], new_id: Mapping[int, int]) -> bytes:
    """The .model with only the pieces of kept ids, in order, with their scores and types.

    Pieces are matched to Hugging Face ids by string: the ids may be offset (XLM-R puts ``<pad>``
    at 1 and appends ``<mask>``). Control, unknown and user-defined pieces that the Hugging Face
    vocabulary does not list are kept too.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    kinds = pb.ModelProto.SentencePiece
    pieces = list(proto.pieces)
    kept: list[int] = []  # positions of the kept pieces in the source .model, increasing
    unmatched = 0
    for k, piece in enumerate(pieces):
        i = hf_ids.get(piece.piece)
        if i is None:
            unmatched += piece.type == kinds.NORMAL
            if piece.type not in (kinds.CONTROL, kinds.UNKNOWN, kinds.USER_DEFINED):
                continue
        elif i not in new_id:
            continue
        kept.append(k)
    if unmatched:
        log.warning("%d normal pieces of the sentencepiece model are not in tokenizer.json; dropped", unmatched)
    new = pb.ModelProto()
    new.CopyFrom(proto)
    del new.pieces[:]
    new.pieces.extend(pieces[k] for k in kept)
    spec = new.trainer_spec
    for name in ("unk", "bos", "eos", "pad"):
        old = getattr(spec, f"{name}_id")
        if 0 <= old < len(pieces):
            # its position among the kept pieces (pieces are unique strings), or -1 when it went
            j = bisect.bisect_left(kept, old)
            setattr(spec, f"{name}_id", j if j < len(kept) and kept[j] == old else -1)
    spec.vocab_size = len(new.pieces)
    return new.SerializeToString()


def write_pruned_tokenizer(pruned: PrunedTokenizer, source: SourceTokenizer, out_dir: str | Path, *,
                           force: bool = False) -> None:
    """Write the tokenizer files of ``pruned`` into ``out_dir``, a directory ``AutoTokenizer`` loads.

    Files, as :func:`~vocabshift.tokenization.train.train_tokenizer` writes them: ``tokenizer.json``,
    the source's ``tokenizer_config.json`` (without the keys that describe the old files), the
    rewritten ``.model`` under the source's file name, ``vocab.txt`` (WordPiece) or ``vocab.json`` +
    ``merges.txt`` (byte-level BPE), and the source's other files (chat template, special-tokens
    map). The ``id_map`` and the report are the vocabulary stage's to write, beside these.

    ``out_dir`` may be missing or an empty directory (a stage's temporary output directory, which
    the stage renames into place atomically); a directory with files in it is refused unless
    ``force``. The written files are checked against the tokenizer built (vocabulary, ids, added and
    named special tokens), and reloaded with ``AutoTokenizer`` too when that is cheap or asked for
    (see :func:`~vocabshift.tokenization.train._verify_reload`).
    """
    write_pruned_tokenizer_files(pruned, source, empty_output_dir(out_dir, force))


def write_pruned_tokenizer_files(pruned: PrunedTokenizer, source: SourceTokenizer, out_dir: Path) -> None:
    """:func:`write_pruned_tokenizer` into an existing directory that need not be empty (the vocabulary
    stage's temporary output, into which the weights are being written at the same time)."""
    backend = _write_output(out_dir, source, pruned.tokenizer_json, pruned.sentencepiece_model, backend=pruned.backend)
    _verify_reload(out_dir, pruned.tokenizer_json, probe=[], backend=backend)
    log.info("wrote pruned tokenizer (%d tokens) -> %s", len(pruned.id_map), out_dir)


__all__ = ["KeepReport", "KeepSet", "PrunedTokenizer", "build_keep_set", "keep_by_frequency", "keep_by_scripts",
           "prune_tokenizer", "write_pruned_tokenizer", "write_pruned_tokenizer_files"]
