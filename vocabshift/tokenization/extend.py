"""Extend a source tokenizer with the tokens of a target-language tokenizer of the same family.

The source vocabulary is kept whole: every source token, special tokens included, keeps its id, its
string and its flags, and the post-processor is unchanged. Target tokens the source lacks get the ids
after the last source id (after added tokens too, e.g. XLM-R's ``<mask>``), in the target's order,
and the ``id_map`` marks them ``-1`` for :func:`vocabshift.surgery.remap_vocab`. Tokens are compared
in the family's raw vocabulary form, which two tokenizers of one family share (``Ġ``-bytes, ``▁``,
``##``), so the target should come from :func:`vocabshift.tokenization.train.train_tokenizer` with
this source.

Per family:

* **BPE (byte-level and sentencepiece).** A new token gets one merge per way of splitting it into two
  tokens that exist (source or added), ranked after every merge that makes a source token. This is
  how sentencepiece itself treats a BPE vocabulary (any adjacent pair whose concatenation is a piece
  may merge, by piece score) and what ``transformers`` builds from a ``.model`` (``generate_merges``);
  for byte-level BPE it is a choice: appending only the target's own merge leaves most new tokens
  unreachable, because the source's merges segment target words differently (measured on SmolLM2 +
  a Spanish Bible tokenizer: held-out Spanish fertility 2.10 -> 1.71 with the target's merges alone,
  -> 1.48 with every split; the target tokenizer itself reaches 1.45).
* **sentencepiece Unigram.** New pieces get the target's log-probabilities moved onto the source's
  scale (see :func:`calibrate_scores`), so they neither dominate nor never win.
* **WordPiece.** New entries (word-initial and ``##`` forms) are appended to the vocabulary.

What "source-language text tokenizes as before" means. Because every new merge ranks after all
source merges, a BPE tokenization first reaches the source's own result; a new merge then fires only
where two source tokens it joins stand side by side in that result. Unigram and WordPiece have no
such order: a new piece changes a word when it wins the Viterbi search, a new WordPiece entry when
it is a longer match. In all three a line changes only by using new tokens, but none can leave *all*
text alone (a word spelled like a new token is tokenized differently). So the change is measured
(:func:`tokenization_change`), and ``protect`` makes it exact on given source-language text: new
merges, pieces or entries that would change its tokenization are left out.

Measured (share of English words whose tokens change; English Bible verses 20,000+ held out of every
training corpus, and the English UDHR; targets trained on the Spanish Bible or the Swahili UDHR):

=====================================  ==============  =============  ============================
source (family)                        + Spanish       + Swahili      ``protect``: 10k Bible verses
=====================================  ==============  =============  ============================
SmolLM2, 49k (byte-level BPE)          0.18%, UDHR 0   0, UDHR 0      Spanish: 0.03%, UDHR 0
8k sentencepiece BPE on English Bible  0.51%           0.03%          Spanish: 0.30%
8k sentencepiece Unigram, same text    1.0%            0.40%          Spanish: 0.35%
MiniLM, 30k (WordPiece)                0.89%           —              Spanish: 0.15%
=====================================  ==============  =============  ============================

Changed words are mostly names the target learned as tokens ("Lamech", "Nimshi") and rare words that
the source splits into characters; over the whole English Bible (Old Testament names included)
SmolLM2 + Spanish changes 0.55% of words (0.35% of pre-tokens if only the target's own merges were
appended, 0.46% with every split). Held-out Spanish fertility drops from 2.10 to 1.48 (SmolLM2),
2.87 to 1.63 (sentencepiece BPE), 2.92 to 1.58 (Unigram), 1.92 to 1.39 (MiniLM).

A source that ships a native sentencepiece ``.model`` gets a rewritten one: the new pieces are
appended as NORMAL pieces with the same scores as in ``tokenizer.json``. Tokens that the source's
``transformers`` class appends after the ``.model`` pieces (XLM-R's ``<mask>``) are first written
into the ``.model`` as CONTROL pieces at their ids, so that ``.model`` ids keep the class's fixed
offset for every piece. ``tokenizer.json`` stays authoritative: XLM-R's class, loading the
``.model`` alone, still appends ``<mask>`` once more at the end (see the report's
``sentencepiece_model`` entry, which compares the two).
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.errors import TokenizerError
from vocabshift.outputs import empty_output_dir
from vocabshift.tokenization.source import SourceTokenizer, TokenizerFamily
from vocabshift.tokenization.train import (
    BYTE_FALLBACK_PIECES,
    _convert_sentencepiece,
    _token_to_id,
    _verify_reload,
    _write_output,
)

log = logging.getLogger(__name__)

_BYTE_PIECES = frozenset(BYTE_FALLBACK_PIECES)
_MAX_PROTECT_ROUNDS = 50
_WORD = re.compile(r"\S+")


@dataclass
class ExtendedTokenizer:
    """A source tokenizer with target tokens appended, and how its ids map to the source's."""

    tokenizer_json: dict[str, Any]
    sentencepiece_model: bytes | None  # the rewritten .model when the source ships one (and it can be aligned)
    id_map: list[int]  # new id -> source id, -1 for added tokens; id_map[:n_source] == range(n_source)
    added: list[str]  # the new tokens (raw vocabulary strings) in id order, ids n_source, n_source + 1, ...
    report: dict[str, Any]  # counts: target vocab size, already present, added, skipped and why, ...

    @property
    def n_source(self) -> int:
        return len(self.id_map) - len(self.added)

    @property
    def vocab_size(self) -> int:
        return len(self.id_map)


# --------------------------------------------------------------------------------------------------
# Public entry points


def extend_tokenizer(
    source: SourceTokenizer,
    target: SourceTokenizer,
    max_new: int | None = None,
    protect: Iterable[str] | None = None,
) -> ExtendedTokenizer:
    """Append the target's tokens that the source lacks to the source tokenizer.

    ``max_new`` keeps the first ``max_new`` new tokens in the target's order (for BPE, a token is
    taken only once tokens it merges from are in: the kept set is closed, within the budget).
    ``protect`` is source-language text (one document per item) whose tokenization must not change:
    new tokens (BPE: new merges) that would change it are left out. Raises :class:`TokenizerError`
    when the two tokenizers are of different families.
    """
    if source.family is not target.family:
        raise TokenizerError(
            f"target tokenizer is {target.family.value} but the source is {source.family.value}",
            path=target.path,
            hint="extend with a target of the source's own family (train it with `vocabshift tokenizer train` "
                 "from this source)",
        )
    if max_new is not None and max_new < 0:
        raise TokenizerError(f"max_new must be >= 0, got {max_new}")
    src_json, tgt_json = source.backend_json, target.backend_json
    _warn_pipeline_differences(src_json, tgt_json, target.path)

    src_ids = _token_to_id(src_json)
    n_source = max(src_ids.values()) + 1
    tgt_specials = {t["content"] for t in tgt_json.get("added_tokens", [])}
    tgt_tokens = [t for t in _vocab_in_id_order(tgt_json) if t not in tgt_specials]
    skipped: Counter[str] = Counter()
    new: list[str] = []
    for tok in tgt_tokens:
        if tok in src_ids:
            continue
        if tok in _BYTE_PIECES and source.family.is_sentencepiece:
            skipped["byte_piece"] += 1  # the source has no byte fallback: a lone <0xNN> piece would be dead
            continue
        new.append(tok)
    already = len(tgt_tokens) - len(new) - skipped["byte_piece"]
    protect_lines = [t for t in protect if t.strip()] if protect is not None else []

    if source.family in (TokenizerFamily.BYTE_LEVEL_BPE, TokenizerFamily.SENTENCEPIECE_BPE):
        builder: _Builder = _BpeBuilder(source, src_ids, n_source, new, protect_lines)
    elif source.family is TokenizerFamily.SENTENCEPIECE_UNIGRAM:
        builder = _UnigramBuilder(source, tgt_json, src_ids, n_source, new)
    else:
        builder = _WordPieceBuilder(source, n_source)

    chosen, tokenizer_json, protect_info = _select_protected(builder, new, max_new, protect_lines, src_json, n_source)
    # transformers pads and truncates per call; a tokenizer.json that pads (MiniLM pads to 128) is not wanted
    tokenizer_json["padding"] = None
    tokenizer_json["truncation"] = None
    skipped.update(builder.skipped)
    excluded = set(new) - set(chosen)
    skipped["protected"] = sum(1 for t in excluded if t in builder.protected)
    skipped["unreachable"] = sum(1 for t in excluded if t in builder.unreachable and t not in builder.protected)
    skipped["max_new"] = len(excluded) - skipped["protected"] - skipped["unreachable"]

    id_map = list(range(n_source)) + [-1] * len(chosen)
    report: dict[str, Any] = {
        "family": source.family.value,
        "source": str(source.path),
        "target": str(target.path),
        "source_vocab_size": n_source,
        "target_vocab_size": len(_token_to_id(tgt_json)),
        "target_special_tokens": len(tgt_specials),
        "already_present": already,
        "candidates": len(new) + skipped["byte_piece"],  # target tokens the source lacks
        "added": len(chosen),
        "vocab_size": len(id_map),
        "max_new": max_new,
        "skipped": {k: v for k, v in sorted(skipped.items()) if v},
        **builder.info(tokenizer_json),
    }
    if protect is not None:
        report["protect"] = protect_info

    sp_bytes = None
    if source.sentencepiece_model is not None:
        sp_bytes, report["sentencepiece_model"] = _extend_sentencepiece_model(
            source, tokenizer_json, chosen, builder.piece_scores(chosen))
    log.info("extended %s tokenizer %s with %d of %d target tokens not in it (%d already present; skipped: %s) -> %d tokens",
             source.family.value, source.path, len(chosen), len(new), already, report["skipped"] or "none", len(id_map))
    return ExtendedTokenizer(tokenizer_json=tokenizer_json, sentencepiece_model=sp_bytes, id_map=id_map,
                             added=list(chosen), report=report)


def write_extended_tokenizer(ext: ExtendedTokenizer, source: SourceTokenizer, out_dir: str | Path, *,
                             force: bool = False) -> None:
    """Write the tokenizer files of ``ext`` into ``out_dir``, a directory ``AutoTokenizer`` loads.

    Files, as :func:`~vocabshift.tokenization.train.train_tokenizer` writes them: ``tokenizer.json``,
    the source's ``tokenizer_config.json`` (without the keys that describe the old files), the
    rewritten ``.model`` under the source's file name, ``vocab.txt`` (WordPiece) or ``vocab.json`` +
    ``merges.txt`` (byte-level BPE), and the source's other files. The ``id_map`` and the report are
    the vocabulary stage's to write, beside these (as for pruning).

    ``out_dir`` may be missing or an empty directory (a stage's temporary output directory, which the
    stage renames into place atomically); a directory with files in it is refused unless ``force``.
    The written directory is reloaded with ``AutoTokenizer`` and checked against ``ext``.
    """
    from tokenizers import Tokenizer

    out = empty_output_dir(out_dir, force)
    backend = Tokenizer.from_str(json.dumps(ext.tokenizer_json))
    new_text = "".join(backend.decode([i]) for i in range(ext.n_source, min(ext.vocab_size, ext.n_source + 200)))
    _write_output(out, source, ext.tokenizer_json, ext.sentencepiece_model)
    size = _verify_reload(out, ext.tokenizer_json, [t for t in ("Hello world, this is a test.", new_text) if t])
    if size != ext.vocab_size:
        raise TokenizerError(f"reloaded tokenizer has {size} tokens, the id map {ext.vocab_size}", path=out)
    log.info("wrote extended tokenizer (%d tokens, %d new) -> %s", ext.vocab_size, len(ext.added), out)


def tokenization_change(before: Any, after: Any, texts: Iterable[str], examples: int = 10) -> dict[str, Any]:
    """How many lines and whitespace-separated words of ``texts`` tokenize differently.

    ``before``/``after`` are ``tokenizers.Tokenizer`` objects or ``tokenizer.json`` dicts. Tokens are
    given to the word their last character falls in (whitespace-only tokens to the next word), so
    context-dependent tokenizers (sentencepiece BPE tokenizes whole lines) are compared in context.
    """
    tok_a, tok_b = _as_tokenizer(before), _as_tokenizer(after)
    lines = [t for t in texts if t.strip()]
    enc_a = tok_a.encode_batch(lines, add_special_tokens=False)
    enc_b = tok_b.encode_batch(lines, add_special_tokens=False)
    words = changed_words = changed_lines = 0
    shown: list[dict[str, Any]] = []
    for line, a, b in zip(lines, enc_a, enc_b, strict=True):
        spans = [m.span() for m in _WORD.finditer(line)]
        words += len(spans)
        if a.ids == b.ids:
            continue
        changed_lines += 1
        groups_a, groups_b = _group_by_word(a, spans), _group_by_word(b, spans)
        for i, (ga, gb) in enumerate(zip(groups_a, groups_b, strict=True)):
            if [t for t, _ in ga] != [t for t, _ in gb]:
                changed_words += 1
                if len(shown) < examples:
                    shown.append({"word": line[spans[i][0]:spans[i][1]], "before": [s for _, s in ga],
                                  "after": [s for _, s in gb]})
    return {
        "lines": len(lines),
        "changed_lines": changed_lines,
        "words": words,
        "changed_words": changed_words,
        "changed_word_rate": changed_words / words if words else 0.0,
        "examples": shown,
    }


def calibrate_scores(source_vocab: Sequence[Sequence[Any]], target_vocab: Sequence[Sequence[Any]],
                     skip: Iterable[str] = ()) -> tuple[Callable[[float], float], dict[str, Any]]:
    """Map target Unigram log-probabilities onto the source's scale: a shift by the median difference.

    The shift is the median of ``source_score - target_score`` over the pieces both vocabularies hold
    (special and byte pieces excluded): a new piece then scores what the source would give a piece
    the target finds equally frequent *relative to the pieces they share*. Scores never go below the
    source's lowest score, because ``tokenizers`` derives the unknown-token penalty from the lowest
    score in the vocabulary and a lower one could change how source text with unknown characters
    tokenizes; nor above the source's best piece score. Falls back to matching the medians of all
    scores when the two share fewer than 20 pieces.

    A further penalty on new pieces buys little: on an 8k English Unigram + Swahili, 3 nats cut the
    English change from 0.40% to 0.25% of words and 8 nats to 0.21%, because the words that change
    are those the source splits into characters (quantile matching instead of the shift: 0.37%).
    """
    skipped = set(skip) | _BYTE_PIECES
    src = {p: s for p, s in source_vocab if p not in skipped}
    tgt = {p: s for p, s in target_vocab if p not in skipped}
    shared = [p for p in tgt if p in src]
    if len(shared) >= 20:
        offset = statistics.median(src[p] - tgt[p] for p in shared)
        method = "median shift over shared pieces"
    else:
        offset = statistics.median(src.values()) - statistics.median(tgt.values())
        method = "median shift over all pieces (too few shared pieces)"
    floor = min(s for _, s in source_vocab)
    ceiling = max(src.values())

    def calibrate(score: float) -> float:
        return min(max(score + offset, floor), ceiling)

    return calibrate, {"method": method, "shared_pieces": len(shared), "offset": offset, "floor": floor,
                       "ceiling": ceiling}


# --------------------------------------------------------------------------------------------------
# Selection under max_new and protect


class _Builder:
    """Family-specific part: which new tokens can be taken, and the tokenizer.json for a choice."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.protected: set[str] = set()  # tokens left out (or whose merges were) because of protect text
        self.unreachable: set[str] = set()

    def select(self, new: list[str], excluded: set[str], max_new: int | None) -> list[str]:
        order = [t for t in new if t not in excluded]
        return order if max_new is None else order[:max_new]

    def build(self, chosen: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def info(self, tokenizer_json: dict[str, Any]) -> dict[str, Any]:
        return {}

    def piece_scores(self, chosen: list[str]) -> list[float]:
        return [0.0] * len(chosen)


def _select_protected(builder: _Builder, new: list[str], max_new: int | None, protect_lines: list[str],
                      src_json: dict[str, Any], n_source: int) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Choose the new tokens, leaving out those that change the tokenization of ``protect_lines``.

    The builder may already have ruled out what it can predict (BPE merges between two source tokens
    that stand side by side in the protected text); anything else found here is dropped and the
    choice redone until the protected text tokenizes exactly as with the source.
    """
    excluded: set[str] = set(builder.protected)
    source_tok = _as_tokenizer(src_json)
    before = source_tok.encode_batch(protect_lines, add_special_tokens=False) if protect_lines else []
    for round_ in range(_MAX_PROTECT_ROUNDS):
        chosen = builder.select(new, excluded, max_new)
        tokenizer_json = builder.build(chosen)
        if not protect_lines:
            return chosen, tokenizer_json, {"lines": 0, "words": 0, "changed_lines": 0, "rounds": 0}
        ext_tok = _as_tokenizer(tokenizer_json)
        after = ext_tok.encode_batch(protect_lines, add_special_tokens=False)
        culprits: set[str] = set()
        changed = 0
        for a, b in zip(before, after, strict=True):
            if a.ids == b.ids:
                continue
            changed += 1
            used = {tok for i, tok in zip(b.ids, b.tokens, strict=True) if i >= n_source}
            if not used:
                # sentencepiece BPE: a new piece formed and merged on into a source piece. The culprits are
                # the new pieces that split into two source tokens standing side by side here.
                pairs = set(zip(a.tokens, a.tokens[1:], strict=False))
                used = {t for t in chosen if any((t[:i], t[i:]) in pairs for i in range(1, len(t)))}
            culprits |= used
        if not changed:
            words = sum(len(_WORD.findall(line)) for line in protect_lines)
            return chosen, tokenizer_json, {"lines": len(protect_lines), "words": words, "changed_lines": 0,
                                            "rounds": round_ + 1}
        if not culprits:
            raise TokenizerError(f"{changed} protected lines tokenize differently but use no new token; "
                                 "cannot tell which new token to leave out")
        log.info("protect: %d lines changed; leaving out %d new tokens", changed, len(culprits))
        builder.protected.update(culprits)
        excluded |= culprits
    raise TokenizerError(f"protected text still changes after {_MAX_PROTECT_ROUNDS} rounds of leaving tokens out")


# --------------------------------------------------------------------------------------------------
# BPE


class _BpeBuilder(_Builder):
    """Byte-level and sentencepiece BPE: new tokens with merges for every split, after the source's merges."""

    def __init__(self, source: SourceTokenizer, src_ids: dict[str, int], n_source: int, new: list[str],
                 protect_lines: list[str]) -> None:
        from transformers.tokenization_utils_base import generate_merges

        super().__init__()
        self.generate_merges = generate_merges
        self.src_json = source.backend_json
        self.model = self.src_json["model"]
        if self.model.get("continuing_subword_prefix") or self.model.get("end_of_word_suffix"):
            # splitting a token at any character would cut through the affix
            raise TokenizerError("BPE with a continuing-subword prefix or end-of-word suffix cannot be extended",
                                 path=source.path)
        self.family = source.family
        self.n_source = n_source
        self.src_ids = src_ids
        self.src_vocab: dict[str, int] = dict(self.model["vocab"])
        self.src_merges = [_pair(m) for m in self.model["merges"]]
        self.known = set(src_ids)
        newset = set(new)
        # sentencepiece BPE: the vocabulary defines the merges (any split whose halves are pieces), as in
        # sentencepiece and in transformers' .model conversion; keep that exact when the source follows it.
        self.vocab_defined = source.family is TokenizerFamily.SENTENCEPIECE_BPE
        self.interleave = self.vocab_defined and self.src_merges == generate_merges(self.src_vocab)
        pairs = _adjacent_pairs(self.src_json, protect_lines)
        whole = _protect_pretokens(self.src_json, protect_lines) if self.model.get("ignore_merges") else set()
        self.splits: dict[str, list[tuple[str, str]]] = {}
        self.blocked_merges = 0
        for tok in new:
            splits = [(tok[:i], tok[i:]) for i in range(1, len(tok))
                      if (tok[:i] in self.known or tok[:i] in newset) and (tok[i:] in self.known or tok[i:] in newset)]
            blocked = [s for s in splits if s in pairs]
            if tok in whole or (blocked and self.vocab_defined):
                # ignore_merges emits a whole pre-token found in the vocabulary; sentencepiece BPE cannot
                # leave out one split of a piece, only the piece.
                self.protected.add(tok)
                continue
            if blocked:
                self.blocked_merges += len(blocked)
                splits = [s for s in splits if s not in pairs]
                if not splits and len(tok) > 1:
                    self.protected.add(tok)
            self.splits[tok] = splits

    def select(self, new: list[str], excluded: set[str], max_new: int | None) -> list[str]:
        # Single characters (base symbols, reachable without a merge) first: a sentencepiece BPE lists its
        # alphabet after its merged pieces, but merged pieces need their characters.
        order = [t for t in new if len(t) == 1] + [t for t in new if len(t) > 1]
        chosen: list[str] = []
        have = set(self.known)
        self.unreachable = set()
        for tok in order:
            if tok in excluded or tok not in self.splits:
                continue
            if max_new is not None and len(chosen) >= max_new:
                break
            if len(tok) == 1 or any(a in have and b in have for a, b in self.splits[tok]):
                chosen.append(tok)
                have.add(tok)
            else:
                self.unreachable.add(tok)
        # ids follow the target's order, whatever order the closure was built in
        rank = {t: i for i, t in enumerate(new)}
        return sorted(chosen, key=rank.__getitem__)

    def build(self, chosen: list[str]) -> dict[str, Any]:
        vocab = dict(self.src_vocab)
        for k, tok in enumerate(chosen):
            vocab[tok] = self.n_source + k
        have = self.known | set(chosen)
        if self.interleave:
            merges = self.generate_merges(vocab)
        elif self.vocab_defined:
            chosen_set = set(chosen)
            merges = self.src_merges + [m for m in self.generate_merges(vocab)
                                        if m[0] in chosen_set or m[1] in chosen_set or m[0] + m[1] in chosen_set]
        else:
            merges = self.src_merges + [(a, b) for tok in chosen for a, b in self.splits[tok] if a in have and b in have]
        return _with_model(self.src_json, vocab=vocab, merges=[list(m) for m in merges])

    def info(self, tokenizer_json: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"merges_added": len(tokenizer_json["model"]["merges"]) - len(self.src_merges)}
        if self.blocked_merges:
            info["merges_left_out_for_protect"] = self.blocked_merges
        if self.vocab_defined:
            info["merge_order"] = ("transformers generate_merges over the extended vocabulary (as from a .model)"
                                   if self.interleave else "source merges, then generate_merges' new merges")
        return info

    def piece_scores(self, chosen: list[str]) -> list[float]:
        return [0.0] * len(chosen)  # the .model writer sets BPE scores from the rank


def _pair(merge: str | Sequence[str]) -> tuple[str, str]:
    if isinstance(merge, str):
        a, b = merge.split(" ", 1)
        return a, b
    return merge[0], merge[1]


def _adjacent_pairs(tokenizer_json: dict[str, Any], lines: list[str]) -> set[tuple[str, str]]:
    """Pairs of tokens that stand side by side in the tokenization of ``lines``."""
    if not lines:
        return set()
    tok = _as_tokenizer(tokenizer_json)
    pairs: set[tuple[str, str]] = set()
    for enc in tok.encode_batch(lines, add_special_tokens=False):
        pairs.update(zip(enc.tokens, enc.tokens[1:], strict=False))
    return pairs


def _protect_pretokens(tokenizer_json: dict[str, Any], lines: list[str]) -> set[str]:
    tok = _as_tokenizer(tokenizer_json)
    out: set[str] = set()
    for line in lines:
        text = tok.normalizer.normalize_str(line) if tok.normalizer else line
        pieces = tok.pre_tokenizer.pre_tokenize_str(text) if tok.pre_tokenizer else [(text, (0, len(text)))]
        out.update(p for p, _ in pieces)
    return out


# --------------------------------------------------------------------------------------------------
# Unigram


class _UnigramBuilder(_Builder):
    """sentencepiece Unigram: new pieces with target scores calibrated to the source's scale."""

    def __init__(self, source: SourceTokenizer, tgt_json: dict[str, Any], src_ids: dict[str, int], n_source: int,
                 new: list[str]) -> None:
        super().__init__()
        self.src_json = source.backend_json
        self.n_source = n_source
        specials = {t["content"] for t in self.src_json.get("added_tokens", [])}
        specials |= {t["content"] for t in tgt_json.get("added_tokens", [])}
        src_vocab = self.src_json["model"]["vocab"]
        tgt_vocab = tgt_json["model"]["vocab"]
        self.calibrate, self.calibration = calibrate_scores(
            [(p, s) for p, s in src_vocab if p not in specials], tgt_vocab, skip=specials)
        target_scores = {p: s for p, s in tgt_vocab}
        self.scores = {p: self.calibrate(target_scores[p]) for p in new}
        # ids are positions in the Unigram list: tokens held only as added tokens (beyond the list) need a
        # place-holding piece so that new pieces land after every source id.
        self.padding: list[list[Any]] = []
        if len(src_vocab) < n_source:
            by_id = {i: t for t, i in src_ids.items()}
            floor = min(s for _, s in src_vocab)
            self.padding = [[by_id.get(i, f"<unused{i}>"), floor] for i in range(len(src_vocab), n_source)]

    def build(self, chosen: list[str]) -> dict[str, Any]:
        vocab = [list(v) for v in self.src_json["model"]["vocab"]] + [list(v) for v in self.padding]
        return _with_model(self.src_json, vocab=vocab + [[p, self.scores[p]] for p in chosen])

    def info(self, tokenizer_json: dict[str, Any]) -> dict[str, Any]:
        return {"score_calibration": self.calibration}

    def piece_scores(self, chosen: list[str]) -> list[float]:
        return [self.scores[p] for p in chosen]


# --------------------------------------------------------------------------------------------------
# WordPiece


class _WordPieceBuilder(_Builder):
    def __init__(self, source: SourceTokenizer, n_source: int) -> None:
        super().__init__()
        self.src_json = source.backend_json
        self.n_source = n_source

    def build(self, chosen: list[str]) -> dict[str, Any]:
        vocab = dict(self.src_json["model"]["vocab"])
        for k, tok in enumerate(chosen):
            vocab[tok] = self.n_source + k
        return _with_model(self.src_json, vocab=vocab)


# --------------------------------------------------------------------------------------------------
# The native sentencepiece .model


def _extend_sentencepiece_model(source: SourceTokenizer, tokenizer_json: dict[str, Any], added: list[str],
                                scores: list[float]) -> tuple[bytes | None, dict[str, Any]]:
    """Append the new pieces to the source's ``.model`` and compare what transformers reads from it."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    assert source.sentencepiece_model is not None
    proto = pb.ModelProto()
    proto.ParseFromString(source.sentencepiece_model.read_bytes())
    ids = _token_to_id(source.backend_json)
    n_source = max(ids.values()) + 1
    normal = pb.ModelProto.SentencePiece.NORMAL
    # transformers classes shift .model ids by a fixed offset (XLM-R: +1, after <s> <pad> </s> <unk>)
    offsets = {ids[p.piece] - i for i, p in enumerate(proto.pieces) if p.type == normal and p.piece in ids}
    if len(offsets) != 1:
        reason = f".model pieces and tokenizer.json ids are not a fixed offset apart ({len(offsets)} offsets)"
        log.warning("%s: not writing a .model — %s; tokenizer.json alone is written", source.sentencepiece_model, reason)
        return None, {"written": False, "reason": reason}
    offset = offsets.pop()
    by_id = {i: t for t, i in ids.items()}
    trailing = list(range(len(proto.pieces) + offset, n_source))
    if any(i not in by_id for i in trailing):
        reason = "the source has ids after the .model pieces with no token"
        log.warning("%s: not writing a .model — %s", source.sentencepiece_model, reason)
        return None, {"written": False, "reason": reason}
    for i in trailing:  # e.g. XLM-R's <mask>, which the class appends after the .model pieces
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = by_id[i], 0.0, pb.ModelProto.SentencePiece.CONTROL
    if proto.trainer_spec.model_type == pb.TrainerSpec.BPE:
        # sentencepiece BPE merges by piece score: new pieces rank below every source piece, in order
        last = min((p.score for p in proto.pieces if p.type == normal), default=0.0)
        scores = [last - 1.0 - k for k in range(len(added))]
    for tok, score in zip(added, scores, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = tok, score, normal
    proto.trainer_spec.vocab_size = len(proto.pieces)
    sp_bytes = proto.SerializeToString()
    info: dict[str, Any] = {"written": True, "offset": offset, "control_pieces_inserted": [by_id[i] for i in trailing]}
    info.update(_compare_with_class(source, sp_bytes, tokenizer_json))
    if not info["agrees_with_tokenizer_json"]:
        log.warning("%s: %s loaded from the .model alone differs from tokenizer.json (%s); tokenizer.json is "
                    "authoritative", source.sentencepiece_model.name, source.tokenizer_config.get("tokenizer_class", "the tokenizer class"),
                    "; ".join(info["differences"]))
    return sp_bytes, info


def _compare_with_class(source: SourceTokenizer, sp_bytes: bytes, tokenizer_json: dict[str, Any]) -> dict[str, Any]:
    """What the source's transformers class builds from the new .model alone, against our tokenizer.json."""
    try:
        from_model = _convert_sentencepiece(source, sp_bytes)
    except TokenizerError as err:
        return {"agrees_with_tokenizer_json": False, "differences": [str(err)]}
    ours, theirs = _token_to_id(tokenizer_json), _token_to_id(from_model)
    differences = [f"{tok!r} at id {theirs.get(tok)} instead of {i}" for tok, i in ours.items() if theirs.get(tok) != i]
    extra = sorted(set(theirs) - set(ours))
    if extra:
        differences.append(f"extra tokens {extra[:5]}")
    size_ours, size_theirs = max(ours.values()) + 1, max(theirs.values()) + 1
    if size_ours != size_theirs:
        differences.append(f"{size_theirs} ids instead of {size_ours}")
    if tokenizer_json["model"]["type"] == "BPE" and [_pair(m) for m in tokenizer_json["model"]["merges"]] != [
            _pair(m) for m in from_model["model"]["merges"]]:
        differences.append("different merges")
    return {"agrees_with_tokenizer_json": not differences, "differences": differences[:10]}


# --------------------------------------------------------------------------------------------------
# Small helpers


def _with_model(tokenizer_json: dict[str, Any], **model: Any) -> dict[str, Any]:
    """A copy of ``tokenizer_json`` with some model fields replaced (the large vocab/merges are not deep-copied)."""
    out = copy.deepcopy({k: v for k, v in tokenizer_json.items() if k != "model"})
    src_model = tokenizer_json["model"]
    out["model"] = {**copy.deepcopy({k: v for k, v in src_model.items() if k not in model}), **model}
    return out


def _vocab_in_id_order(tokenizer_json: dict[str, Any]) -> list[str]:
    model = tokenizer_json["model"]
    if model["type"] == "Unigram":
        return [p for p, _ in model["vocab"]]
    return sorted(model["vocab"], key=model["vocab"].__getitem__)


def _warn_pipeline_differences(src: dict[str, Any], tgt: dict[str, Any], path: Path) -> None:
    # Same family is required; the same normalizer and pre-tokenizer make token strings comparable.
    differs = [k for k in ("normalizer", "pre_tokenizer") if src.get(k) != tgt.get(k)]
    if differs:
        log.warning("%s: the target's %s differs from the source's; its tokens are compared as raw strings "
                    "and may not mean the same text", path, " and ".join(differs))


def _as_tokenizer(tok: Any) -> Any:
    """A ``tokenizers.Tokenizer`` without padding or truncation (some tokenizer.json files pad to 128)."""
    from tokenizers import Tokenizer

    if isinstance(tok, dict):
        tok = json.dumps(tok)
    elif not isinstance(tok, str):
        tok = getattr(tok, "backend_tokenizer", tok)
        if tok.padding is None and tok.truncation is None:
            return tok
        tok = tok.to_str()
    backend = Tokenizer.from_str(tok)
    backend.no_padding()
    backend.no_truncation()
    return backend


def _group_by_word(enc: Any, spans: list[tuple[int, int]]) -> list[list[tuple[int, str]]]:
    groups: list[list[tuple[int, str]]] = [[] for _ in spans]
    if not spans:
        return groups
    starts = [s for s, _ in spans]
    for tid, tok, (s, e) in zip(enc.ids, enc.tokens, enc.offsets, strict=True):
        pos = e - 1 if e > s else s
        w = max(bisect.bisect_right(starts, pos) - 1, 0)
        if pos >= spans[w][1] and w + 1 < len(spans):
            w += 1  # a whitespace-only token goes with the next word
        groups[w].append((tid, tok))
    return groups


__all__ = ["ExtendedTokenizer", "calibrate_scores", "extend_tokenizer", "tokenization_change",
           "write_extended_tokenizer"]
