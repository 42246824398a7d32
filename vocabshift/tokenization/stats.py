"""Tokenization statistics per tokenizer and per Unicode script.

For each whitespace-separated word of the corpus we take its dominant script (Common characters such
as digits and punctuation go with any script; a word of only such characters counts as ``Common``)
and attribute to it the tokens that start inside it. Per script we then report:

* ``fertility`` — tokens per word (Rust et al., 2021; lower is better for the same text),
* ``tokens_per_char`` and ``bytes_per_token`` (UTF-8 bytes of the text per token; higher means each
  token carries more text, i.e. shorter sequences),
* ``unk_rate`` — share of tokens that are the unknown token,
* ``char_coverage`` — share of character occurrences (after the tokenizer's normalizer) that appear in
  some vocabulary token's surface form; characters reached only through byte pieces or ``UNK`` are
  not covered. A byte-level BPE never produces ``UNK`` but may still cover a script poorly.

Texts are encoded in batches by the Rust backend with offsets, so no per-token Python work happens
beyond counting. Memory does not grow with the corpus or its line lengths: a text is encoded in
pieces of at most ``PIECE_BYTES``, cut at whitespace (:func:`vocabshift.corpus.split_document`, so
words stay whole and the counts hardly change), and only one batch of at most ``batch_size`` pieces
and about ``BATCH_CHARS`` characters is held with its encodings (some 170 bytes a character); the
rest is counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from vocabshift.corpus import CorpusConfig, iter_corpus, split_document
from vocabshift.tokenization.scripts import dominant_script, script_name
from vocabshift.tokenization.source import detect_family, load_hf_tokenizer
from vocabshift.tokenization.surface import covered_characters

PIECE_BYTES = 1 << 16  # longest text encoded at once
BATCH_CHARS = 1 << 19  # text per encode_batch call

@dataclass
class ScriptStats:
    """Counts and ratios for the words of one script."""

    script: str
    words: int = 0
    chars: int = 0
    bytes: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    covered_chars: int = 0

    @property
    def fertility(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / self.chars if self.chars else 0.0

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.tokens if self.tokens else 0.0

    @property
    def char_coverage(self) -> float:
        return self.covered_chars / self.chars if self.chars else 0.0

    def add(self, other: ScriptStats) -> None:
        for name in ("words", "chars", "bytes", "tokens", "unk_tokens", "covered_chars"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["script_name"] = "All" if self.script == "all" else script_name(self.script)
        for name in ("fertility", "tokens_per_char", "bytes_per_token", "unk_rate", "char_coverage"):
            d[name] = round(getattr(self, name), 6)
        return d


@dataclass
class TokenizerStats:
    """Statistics of one tokenizer on one corpus: per script and in total."""

    name: str
    vocab_size: int
    family: str
    documents: int = 0
    scripts: dict[str, ScriptStats] = field(default_factory=dict)

    @property
    def total(self) -> ScriptStats:
        total = ScriptStats("all")
        for s in self.scripts.values():
            total.add(s)
        return total

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.scripts.values(), key=lambda s: -s.words)
        return {
            "tokenizer": self.name,
            "vocab_size": self.vocab_size,
            "family": self.family,
            "documents": self.documents,
            "total": self.total.as_dict(),
            "scripts": {s.script: s.as_dict() for s in ordered},
        }


def _word_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = None
    for i, ch in enumerate(text):
        if ch.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


class StatsAccumulator:
    """Accumulates :class:`TokenizerStats` of one tokenizer over batches of texts."""

    def __init__(self, tokenizer: Any, name: str | None = None) -> None:
        import json

        self.backend = tokenizer.backend_tokenizer
        family = detect_family(json.loads(self.backend.to_str()))
        self.unk_id = tokenizer.unk_token_id
        self.covered = covered_characters(tokenizer)
        self.normalizer = self.backend.normalizer
        self._covered_cache: dict[str, bool] = {}
        self.stats = TokenizerStats(name=name or str(getattr(tokenizer, "name_or_path", "tokenizer")),
                                    vocab_size=len(tokenizer), family=family.value)

    def _is_covered(self, ch: str) -> bool:
        hit = self._covered_cache.get(ch)
        if hit is None:
            normalized = self.normalizer.normalize_str(ch) if self.normalizer is not None else ch
            # Characters the normalizer deletes (e.g. accents stripped by BERT) are trivially covered.
            hit = all(c in self.covered or c.isspace() for c in normalized)
            self._covered_cache[ch] = hit
        return hit

    def update(
        self, batch: list[str], words: list[list[tuple[int, int, str]]], documents: int | None = None
    ) -> None:
        """Add a batch of texts with their word spans ``(start, end, script)``; they hold ``documents``
        new documents (default: one each; fewer when texts are pieces of longer documents)."""
        stats = self.stats
        stats.documents += len(batch) if documents is None else documents
        encodings = self.backend.encode_batch(batch, add_special_tokens=False)
        for text, enc, spans in zip(batch, encodings, words, strict=True):
            if not spans:
                continue
            for start, end, script in spans:
                s = stats.scripts.get(script)
                if s is None:
                    s = stats.scripts[script] = ScriptStats(script)
                word = text[start:end]
                s.words += 1
                s.chars += len(word)
                s.bytes += len(word.encode("utf-8"))
                s.covered_chars += sum(1 for ch in word if self._is_covered(ch))
            # Attribute each token to the word its first character falls in (two-pointer walk).
            counts: Counter[int] = Counter()
            unks: Counter[int] = Counter()
            w = 0
            for tok_id, (start, _end) in zip(enc.ids, enc.offsets, strict=True):
                while w + 1 < len(spans) and start >= spans[w][1]:
                    w += 1
                counts[w] += 1
                if tok_id == self.unk_id:
                    unks[w] += 1
            for w, n in counts.items():
                s = stats.scripts[spans[w][2]]
                s.tokens += n
                s.unk_tokens += unks[w]


def _words_with_scripts(text: str) -> list[tuple[int, int, str]]:
    return [(a, b, dominant_script(text[a:b])) for a, b in _word_spans(text)]


def _batches(texts: Iterable[str], batch_size: int) -> Iterator[tuple[list[str], int]]:
    """(pieces, documents started in them): at most ``batch_size`` pieces of at most :data:`PIECE_BYTES`,
    a batch closed once it holds :data:`BATCH_CHARS` characters."""
    batch: list[str] = []
    chars = documents = 0
    for text in texts:
        documents += 1
        for piece in split_document(text, PIECE_BYTES):
            batch.append(piece)
            chars += len(piece)
            if len(batch) >= batch_size or chars >= BATCH_CHARS:
                yield batch, documents
                batch, chars, documents = [], 0, 0
    if batch or documents:
        yield batch, documents


def tokenizer_stats(tokenizers: dict[str, Any], texts: Iterable[str], batch_size: int = 256) -> list[TokenizerStats]:
    """Compute :class:`TokenizerStats` for each named transformers tokenizer over one pass of ``texts``."""
    accs = [StatsAccumulator(tok, name) for name, tok in tokenizers.items()]
    for batch, documents in _batches(texts, batch_size):
        words = [_words_with_scripts(t) for t in batch]
        for acc in accs:
            acc.update(batch, words, documents)
    return [acc.stats for acc in accs]


def corpus_stats(tokenizer_paths: list[str], corpus: CorpusConfig) -> list[TokenizerStats]:
    """Load tokenizers from local directories and measure them on a corpus (``vocabshift tokenizer stats``)."""
    tokenizers = {str(p): load_hf_tokenizer(p) for p in tokenizer_paths}
    return tokenizer_stats(tokenizers, iter_corpus(corpus))


def render_stats_table(results: list[TokenizerStats], console: Any = None) -> None:
    """Print one rich table per tokenizer: a row per script (most words first) and the total."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for r in results:
        table = Table(title=f"{r.name} — {r.family}, {r.vocab_size:,} tokens, {r.documents:,} documents",
                      title_justify="left")
        for col in ("script", "words", "fertility", "tok/char", "bytes/tok", "UNK", "char cov."):
            table.add_column(col, justify="left" if col == "script" else "right")
        rows = sorted(r.scripts.values(), key=lambda s: -s.words)
        for i, s in enumerate(rows + [r.total]):
            is_total = i == len(rows)
            table.add_row("all" if is_total else f"{script_name(s.script)} ({s.script})", f"{s.words:,}",
                          f"{s.fertility:.3f}", f"{s.tokens_per_char:.3f}", f"{s.bytes_per_token:.2f}",
                          f"{s.unk_rate:.2%}", f"{s.char_coverage:.2%}",
                          style="bold" if is_total else None, end_section=(i == len(rows) - 1))
        console.print(table)
