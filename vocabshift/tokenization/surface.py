"""Token strings to surface forms, for every supported tokenizer family.

A vocabulary entry is not the text it stands for: byte-level BPE stores bytes through GPT-2's
bytes-to-unicode map (``Ġ`` is a space, ``Ã©`` is "é", and a token may be a partial UTF-8 sequence),
sentencepiece marks word starts with ``▁`` and has ``<0xNN>`` byte-fallback pieces, WordPiece marks
continuations with ``##``. Pruning by script, fastText lookups, overlap matching and initialization
all compare *surface forms*: the decoded text plus whether the token begins a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from vocabshift.tokenization.source import TokenizerFamily, detect_family

BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # sentencepiece byte-fallback piece: <0xE2>


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the printable character that stands for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)  # unprintable bytes are shifted past 255
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@lru_cache(maxsize=1)
def _to_bytes_table() -> dict[int, int]:
    """``str.translate`` table: each byte-level character to its byte (as a latin-1 character); the
    characters below 256 that are not byte-level ones go past 255, so that encoding to latin-1 fails
    exactly for the tokens with a character outside the byte-level alphabet."""
    table = {ord(c): b for c, b in byte_decoder().items()}
    for i in range(256):
        table.setdefault(i, 0xFFFE)
    return table


@dataclass(frozen=True)
class Surface:
    """What a token stands for in text."""

    text: str  # decoded text without the word-boundary marker ("" for a bare boundary token)
    word_initial: bool  # the token starts a word (Ġ / ▁ prefix, or a WordPiece entry without ##)
    kind: str  # "normal", "special" (added/special token), "byte" (a lone byte), or "partial" (partial UTF-8)
    raw: bytes | None = None  # byte-level BPE and byte-fallback pieces: the bytes themselves


def surface_form(token: str, family: TokenizerFamily, *, special: bool = False,
                 continuing_prefix: str = "##") -> Surface:
    """Surface form of one vocabulary entry of a tokenizer of ``family``."""
    if special:
        return Surface(token, False, "special")
    if family is TokenizerFamily.BYTE_LEVEL_BPE:
        try:  # one translate and encode instead of a dictionary lookup per character
            raw = token.translate(_to_bytes_table()).encode("latin-1")
        except UnicodeEncodeError:
            return Surface(token, False, "normal")  # e.g. an added plain-text token
        initial = raw.startswith(b" ")
        body = raw[1:] if initial else raw
        try:
            return Surface(body.decode("utf-8"), initial, "normal", raw)
        except UnicodeDecodeError:
            kind = "byte" if len(raw) == 1 else "partial"
            return Surface(body.decode("utf-8", errors="replace"), initial, kind, raw)
    if family.is_sentencepiece:
        m = BYTE_PIECE.match(token)
        if m:
            return Surface("", False, "byte", bytes([int(m.group(1), 16)]))
        initial = token.startswith("▁")
        return Surface(token[1:].replace("▁", " ") if initial else token.replace("▁", " "), initial, "normal")
    # WordPiece
    if continuing_prefix and token.startswith(continuing_prefix) and len(token) > len(continuing_prefix):
        return Surface(token[len(continuing_prefix):], False, "normal")
    return Surface(token, True, "normal")


def _classifying_spec(backend: Any) -> dict[str, Any]:
    """The parts of ``tokenizer.json`` that :func:`detect_family` reads, without serializing the vocabulary
    and merges (parsing the whole JSON of a 49k-token BPE takes ~0.3 s)."""
    try:
        model = backend.model
        spec: dict[str, Any] = {"model": {"type": type(model).__name__,
                                          "byte_fallback": getattr(model, "byte_fallback", None),
                                          "continuing_subword_prefix": getattr(model, "continuing_subword_prefix",
                                                                               None)}}
        for name in ("pre_tokenizer", "normalizer"):
            component = getattr(backend, name)
            spec[name] = None if component is None else json.loads(component.__getstate__())
        return spec
    except (AttributeError, TypeError, ValueError):  # a tokenizers version without these: the whole JSON
        return json.loads(backend.to_str())


def surface_forms(tokenizer: Any) -> list[Surface]:
    """Surface forms of every id of a transformers (fast) tokenizer, indexed by token id."""
    backend = tokenizer.backend_tokenizer
    spec = _classifying_spec(backend)
    family = detect_family(spec)
    prefix = spec["model"].get("continuing_subword_prefix") or "##"
    added = {i: bool(t.special) for i, t in backend.get_added_tokens_decoder().items()}
    size = backend.get_vocab_size(with_added_tokens=True)
    out = []
    for i in range(size):
        token = backend.id_to_token(i)
        if token is None:
            out.append(Surface("", False, "special"))
            continue
        a = added.get(i)
        if a is True:
            out.append(Surface(token, False, "special"))
        elif a is not None:
            out.append(Surface(token, False, "normal"))
        else:
            out.append(surface_form(token, family, continuing_prefix=prefix))
    return out


def covered_characters(tokenizer: Any) -> frozenset[str]:
    """Characters that occur in some complete (non-byte, non-special) token's surface form."""
    chars: set[str] = set()
    for s in surface_forms(tokenizer):
        if s.kind == "normal":
            chars.update(s.text)
    return frozenset(chars)
