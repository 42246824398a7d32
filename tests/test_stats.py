"""Tokenization statistics agree with hand-counted values on a hand-built WordPiece vocabulary."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.conftest import udhr_lines
from vocabshift.tokenization.stats import tokenizer_stats
from vocabshift.tokenization.surface import covered_characters


@pytest.fixture()
def tiny_wordpiece() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "hello": 1, "wor": 2, "##ld": 3, "ሰ": 4}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_hand_counted_values(tiny_wordpiece):
    # hello | wor ##ld | [UNK] (ላ is not in the vocabulary, so the whole word is UNK) | [UNK] [UNK]
    (stats,) = tokenizer_stats({"tiny": tiny_wordpiece}, ["Hello world ሰላ", "!!"])
    latn, ethi, common = stats.scripts["Latn"], stats.scripts["Ethi"], stats.scripts["Zyyy"]
    assert (latn.words, latn.chars, latn.bytes, latn.tokens, latn.unk_tokens, latn.covered_chars) == (2, 10, 10, 3, 0, 10)
    assert latn.fertility == 1.5 and latn.bytes_per_token == pytest.approx(10 / 3)
    assert (ethi.words, ethi.chars, ethi.bytes, ethi.tokens, ethi.unk_tokens, ethi.covered_chars) == (1, 2, 6, 1, 1, 1)
    assert ethi.unk_rate == 1.0 and ethi.char_coverage == 0.5
    assert (common.words, common.tokens, common.unk_tokens, common.covered_chars) == (1, 2, 2, 0)
    total = stats.total
    assert (total.words, total.tokens, total.unk_tokens) == (4, 6, 3)
    assert stats.documents == 2
    d = stats.as_dict()
    assert d["scripts"]["Latn"]["script_name"] == "Latin" and d["total"]["fertility"] == 1.5


def test_uppercase_is_covered_through_the_normalizer(tiny_wordpiece):
    assert "H" not in covered_characters(tiny_wordpiece)
    (stats,) = tokenizer_stats({"tiny": tiny_wordpiece}, ["HELLO"])
    assert stats.scripts["Latn"].char_coverage == 1.0


def test_byte_level_has_no_unk_but_low_coverage_on_unseen_script(roberta_source):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(roberta_source)  # trained on English/French/German only
    (stats,) = tokenizer_stats({"en": tok}, udhr_lines("amh")[:10] + udhr_lines("eng")[:10])
    assert stats.scripts["Ethi"].unk_rate == 0.0
    assert stats.scripts["Ethi"].char_coverage < 0.05
    assert stats.scripts["Latn"].char_coverage > 0.99
    # Ethiopic characters are 3 UTF-8 bytes and need about a token per byte without merges
    assert stats.scripts["Ethi"].tokens_per_char > 2
