"""Tokenizer pruning: kept-script text tokenizes exactly as before, for every family.

Also: removed-script text still encodes (bytes, byte fallback or UNK), special tokens and the
post-processor survive, multilingual vocabularies shrink to their kept scripts, BPE keep sets are
closed under merge ancestry (a hand-worked example), frequency pruning keeps what a corpus uses, and
a rewritten sentencepiece ``.model`` agrees with the pruned ``tokenizer.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from tests.conftest import udhr_lines
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, OutputExistsError, TokenizerError
from vocabshift.tokenization.prune import (
    KeepSet,
    PrunedTokenizer,
    _bytes_compatible,
    _label,
    _labels,
    _tokens,
    _TokenScripts,
    build_keep_set,
    keep_by_frequency,
    keep_by_scripts,
    prune_tokenizer,
    write_pruned_tokenizer,
)
from vocabshift.tokenization.scripts import char_script, resolve_scripts, scripts_of
from vocabshift.tokenization.source import SourceTokenizer, TokenizerFamily, load_source_tokenizer
from vocabshift.tokenization.surface import Surface, surface_form, surface_forms
from vocabshift.tokenization.train import (
    FULL_RELOAD_CHECK_ENV,
    _tokenizer_config,
    _verify_reload,
    train_tokenizer,
)

LATIN_LANGS = ["eng", "spa", "fra", "deu", "vie", "yor", "hun", "swh", "zul", "hau_NG"]
OTHER_LANGS = {"amh": "Ethi", "rus": "Cyrl", "arb": "Arab", "hin": "Deva", "cmn_hans": "Hani"}
# every family fixture pruned to Latin, and one pruned to Latin + Cyrillic
CASES = [(name, "Latn") for name in ("minilm_source", "smollm2_source", "roberta_source", "xlmr_source",
                                      "llama2_source", "unigram_json_source", "llama2_json_source")]
CASES.append(("smollm2_source", "Latn,Cyrl"))

# Latin letters (with Vietnamese and Yoruba ones), combining marks (Inherited), digits, punctuation, spaces
LATIN_ALPHABET = sorted(
    {chr(c) for c in [*range(0x41, 0x250), *range(0x1E00, 0x1F00)]
     if unicodedata.category(chr(c)).startswith("L") and char_script(chr(c)) == "Latn"}
    | {chr(c) for c in range(0x300, 0x370)} | set(string.digits + string.punctuation + "  \n")
)


@dataclass
class Pruned:
    name: str
    scripts: frozenset[str]
    source: SourceTokenizer
    pruned: PrunedTokenizer
    out: Path
    hf: Any

    @property
    def byte_complete(self) -> bool:
        """Every text encodes losslessly: byte-level BPE or byte fallback."""
        return (self.source.family is TokenizerFamily.BYTE_LEVEL_BPE
                or bool(self.source.backend_json["model"].get("byte_fallback")))


def prune_and_write(source_dir: Path, out: Path, keep_scripts: str | None = None, texts: list[str] | None = None,
                    min_count: int = 1, name: str = "") -> Pruned:
    source = load_source_tokenizer(source_dir)
    keep = build_keep_set(source, keep_scripts, texts, min_count)
    pruned = prune_tokenizer(source, keep)
    write_pruned_tokenizer(pruned, source, out)
    scripts = resolve_scripts(keep_scripts) if keep_scripts else frozenset()
    return Pruned(name, scripts, source, pruned, out, AutoTokenizer.from_pretrained(out))


def assert_same_tokens(case: Pruned, texts: list[str]) -> None:
    """Identical token strings, and ids that map back through id_map to the source's ids."""
    src_ids = case.source.hf(texts, add_special_tokens=False)["input_ids"]
    new_ids = case.hf(texts, add_special_tokens=False)["input_ids"]
    for text, old, new in zip(texts, src_ids, new_ids, strict=True):
        assert case.hf.convert_ids_to_tokens(new) == case.source.hf.convert_ids_to_tokens(old), text[:80]
        assert [case.pruned.id_map[i] for i in new] == old, text[:80]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{s}" for n, s in CASES])
def case(request, tmp_path_factory) -> Pruned:
    name, scripts = request.param
    out = tmp_path_factory.mktemp(name) / "pruned"
    return prune_and_write(request.getfixturevalue(name), out, keep_scripts=scripts, name=name)


def test_kept_script_text_tokenizes_identically(case):
    langs = LATIN_LANGS + [code for code, script in OTHER_LANGS.items() if script in case.scripts]
    for code in langs:
        assert_same_tokens(case, udhr_lines(code))


@given(text=st.text(alphabet=st.sampled_from(LATIN_ALPHABET), max_size=80))
@settings(max_examples=40, deadline=None)
def test_random_latin_text_tokenizes_identically(case, text):
    assert_same_tokens(case, [text])


def test_removed_script_text_still_encodes(case):
    for code, script in OTHER_LANGS.items():
        if script in case.scripts:
            continue
        lines = udhr_lines(code)[:10]
        ids = case.hf(lines, add_special_tokens=False)["input_ids"]
        assert all(0 <= i < len(case.hf) for row in ids for i in row)
        if case.byte_complete:
            assert case.hf.batch_decode(ids) == lines, code


def test_special_tokens_and_post_processor_survive(case):
    src_added = sorted(case.source.backend_json["added_tokens"], key=lambda t: t["id"])
    new_added = sorted(case.pruned.tokenizer_json["added_tokens"], key=lambda t: t["id"])
    assert [{**t, "id": case.pruned.id_map[t["id"]]} for t in new_added] == src_added
    for token in case.source.hf.all_special_tokens:
        assert case.pruned.id_map[case.hf.convert_tokens_to_ids(token)] == case.source.hf.convert_tokens_to_ids(token)
    # the post-processor's hard-coded ids (BERT [CLS]/[SEP], XLM-R <s>/</s>, RobertaProcessing) follow
    src = case.source.hf("Hello world.", "Second text")["input_ids"]
    new = case.hf("Hello world.", "Second text")["input_ids"]
    assert [case.pruned.id_map[i] for i in new] == src


def test_ids_are_dense_and_files_are_written(case):
    id_map = case.pruned.id_map
    assert id_map == sorted(set(id_map)) and len(id_map) == len(case.hf) == case.pruned.report.kept
    report = case.pruned.report.as_dict()
    assert json.loads(json.dumps(report)) == report
    assert report["kept"] + report["removed"] == report["source_size"] == len(case.source.hf)
    # ancestors of a token are its substrings, so a script keep set is closed already
    assert "closure" not in report["reasons"]
    family = case.source.family
    assert (case.out / "vocab.txt").exists() == (family is TokenizerFamily.WORDPIECE)
    assert (case.out / "merges.txt").exists() == (family is TokenizerFamily.BYTE_LEVEL_BPE)
    if case.source.sentencepiece_model is not None:
        assert (case.out / case.source.sentencepiece_model.name).read_bytes() == case.pruned.sentencepiece_model
    else:
        assert case.pruned.sentencepiece_model is None and not list(case.out.glob("*.model"))
    assert AutoTokenizer.from_pretrained(case.out).get_vocab() == case.hf.get_vocab()


# --------------------------------------------------------------------------------------------------
# Multilingual sources: the vocabulary shrinks to the kept scripts

MULTI_SOURCES = ["xlmr_source", "llama2_source", "smollm2_source"]


@pytest.fixture(scope="module", params=MULTI_SOURCES)
def multilingual_source(request, tmp_path_factory, multilingual_corpus) -> Path:
    """A 3000-token tokenizer trained on eight languages in six scripts, in the fixture's family."""
    out = tmp_path_factory.mktemp(f"multi-{request.param}") / "tok"
    train_tokenizer(TokenizerTrainConfig(
        source=str(request.getfixturevalue(request.param)), corpus=corpus_from_paths([multilingual_corpus]),
        vocab_size=3000, out=str(out), show_progress=False, character_coverage=1.0))
    return out


@pytest.mark.parametrize("scripts", ["Latn", "Latn,Cyrl"])
def test_multilingual_vocabulary_keeps_only_kept_scripts(multilingual_source, scripts, tmp_path):
    case = prune_and_write(multilingual_source, tmp_path / "pruned", keep_scripts=scripts)
    keep = case.scripts
    report = case.pruned.report
    assert report.kept < (0.6 if keep == {"Latn"} else 0.75) * report.source_size
    for script in ("Ethi", "Hani", "Arab", "Deva"):
        assert report.removed_by_script.get(script, 0) > 20 and script not in report.kept_by_script
    assert ("Cyrl" in report.kept_by_script) == ("Cyrl" in keep)
    kept = set(case.pruned.id_map)
    for i, surface in enumerate(surface_forms(case.source.hf)):
        if surface.kind == "normal":
            # a complete token is kept exactly when its scripts are
            assert (i in kept) == (scripts_of(surface.text) <= keep), surface
    for code in ["spa", "vie", "yor", "eng", "hun"] + (["rus"] if "Cyrl" in keep else []):
        assert_same_tokens(case, udhr_lines(code))
    for code, script in OTHER_LANGS.items():
        if script not in keep:
            lines = udhr_lines(code)[:5]
            ids = case.hf(lines, add_special_tokens=False)["input_ids"]
            if case.byte_complete:
                assert case.hf.batch_decode(ids) == lines
    if case.source.sentencepiece_model is not None:
        check_sentencepiece_agreement(case, tmp_path / "model-only", kept_langs=["spa", "vie", "yor", "eng"])


# --------------------------------------------------------------------------------------------------
# sentencepiece: the rewritten .model agrees with the pruned tokenizer.json


def check_sentencepiece_agreement(case: Pruned, model_only: Path, kept_langs: list[str],
                                  same_as_source: bool = True) -> None:
    import sentencepiece as spm

    assert case.source.sentencepiece_model is not None and case.pruned.sentencepiece_model is not None
    # the .model alone, read by the source's transformers class, gives the same ids as tokenizer.json
    model_only.mkdir()
    (model_only / case.source.sentencepiece_model.name).write_bytes(case.pruned.sentencepiece_model)
    shutil.copy(case.out / "tokenizer_config.json", model_only)
    from_model = AutoTokenizer.from_pretrained(model_only)
    assert from_model.get_vocab() == case.hf.get_vocab()
    texts = [line for code in kept_langs + list(OTHER_LANGS) for line in udhr_lines(code)[:8]]
    assert from_model(texts)["input_ids"] == case.hf(texts)["input_ids"]
    # sentencepiece itself segments kept text as the pruned tokenizer.json does (and, after script
    # pruning, as before)
    sp = spm.SentencePieceProcessor(model_proto=case.pruned.sentencepiece_model)
    sp_source = spm.SentencePieceProcessor(model_file=str(case.source.sentencepiece_model))
    for text in [line for code in kept_langs for line in udhr_lines(code)]:
        pieces = [sp.id_to_piece(i) for i in sp.encode_as_ids(text)]  # "<unk>" for unknown characters
        if same_as_source:
            assert pieces == [sp_source.id_to_piece(i) for i in sp_source.encode_as_ids(text)]
        assert pieces == case.hf.convert_ids_to_tokens(case.hf(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("name", ["xlmr_source", "llama2_source"])
def test_sentencepiece_model_agrees_after_script_pruning(name, request, tmp_path):
    case = prune_and_write(request.getfixturevalue(name), tmp_path / "pruned", keep_scripts="Latn")
    check_sentencepiece_agreement(case, tmp_path / "model-only", kept_langs=LATIN_LANGS)


@pytest.mark.parametrize("multilingual_source", ["xlmr_source", "llama2_source"], indirect=True)
def test_sentencepiece_model_agrees_after_frequency_pruning(multilingual_source, tmp_path):
    # frequency pruning drops pieces that other pieces are built from: the closure must hold for
    # sentencepiece's own BPE (merges by piece score) as well as for the tokenizer.json merges
    corpus = udhr_lines("spa")[:15] + udhr_lines("rus")[:5]
    case = prune_and_write(multilingual_source, tmp_path / "pruned", texts=corpus, min_count=3)
    check_sentencepiece_agreement(case, tmp_path / "model-only", kept_langs=["spa", "rus", "eng"],
                                  same_as_source=False)


# --------------------------------------------------------------------------------------------------
# BPE merge closure, worked by hand


@pytest.fixture
def tiny_bpe(tmp_path) -> Path:
    """sentencepiece-style BPE. "▁abc" is built as ▁ + a + (b + c), since "bc" (rank 0) beats "ab" (rank 1);
    the merge ("ab", "c") also makes "abc" but never fires on it. "xyz" was added by hand (no merge)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "▁", "a", "b", "c", "d", "x", "y", "z",
                                         "bc", "ab", "abc", "▁abc", "cd", "xyz"])}
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc"), ("▁", "abc"), ("c", "d")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_bpe_closure_keeps_the_merge_path_ancestors(tiny_bpe):
    source = load_source_tokenizer(tiny_bpe)
    assert source.family is TokenizerFamily.SENTENCEPIECE_BPE
    ids = source.hf.get_vocab()
    pruned = prune_tokenizer(source, {ids["▁abc"], ids["xyz"]}, keep_characters=False)
    kept = {source.hf.convert_ids_to_tokens(i) for i in pruned.id_map}
    assert kept == {"<unk>", "▁abc", "xyz", "abc", "bc", "▁", "a", "b", "c"}
    report = pruned.report
    assert report.reasons == {"special": 1, "requested": 2, "closure": 6}
    assert report.unmerged == 1  # "xyz"
    assert (report.merges_kept, report.merges_removed) == (3, 3)
    assert pruned.tokenizer_json["model"]["merges"] == [["b", "c"], ["a", "bc"], ["▁", "abc"]]
    assert pruned.id_map == sorted(ids[t] for t in kept)

    from tokenizers import Tokenizer

    new = Tokenizer.from_str(json.dumps(pruned.tokenizer_json))
    assert new.encode("abc").tokens == source.hf.backend_tokenizer.encode("abc").tokens == ["▁abc"]
    assert new.encode("cab").tokens == ["▁", "c", "a", "b"]  # "ab" is gone with its merge
    assert new.encode("dab").tokens == ["▁", "<unk>", "a", "b"]  # no byte fallback: "d" was dropped


def test_bpe_closure_of_a_frequency_keep_set(multilingual_source, tmp_path):
    case = prune_and_write(multilingual_source, tmp_path / "pruned", texts=udhr_lines("spa")[:10], min_count=3)
    if case.source.family is TokenizerFamily.SENTENCEPIECE_UNIGRAM:
        assert "closure" not in case.pruned.report.reasons
        return
    assert case.pruned.report.reasons["closure"] > 0
    model = case.pruned.tokenizer_json["model"]
    vocab = model["vocab"]
    for a, b in model["merges"]:
        assert a in vocab and b in vocab
    # every kept token that its own characters reached before pruning still does
    src_model = case.source.hf.backend_tokenizer.model
    new_model = case.hf.backend_tokenizer.model
    for token in vocab:
        if [t.value for t in src_model.tokenize(token)] == [token]:
            assert [t.value for t in new_model.tokenize(token)] == [token]


def test_unigram_keeps_the_piece_that_sets_the_unknown_score(tmp_path):
    """The score of an unknown character is ``min_score - 10``: dropping the lowest-scored piece (here
    a Cyrillic one) would change how Latin text with an unknown "x" segments, so it stays."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0), ("▁", -2.0), ("b", -3.0), ("c", -15.0), ("xb", -20.0), ("bc", -1.0), ("б", -50.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "tiny")
    source = load_source_tokenizer(tmp_path / "tiny")
    assert source.hf.tokenize("xbc") == ["xb", "c"]
    keep = keep_by_scripts(source, "Latn")
    assert source.hf.convert_tokens_to_ids("б") not in keep
    pruned = prune_tokenizer(source, keep)
    assert pruned.reasons[-1] == "unk_score" and pruned.report.kept_by_script["Cyrl"] == 1
    new = Tokenizer.from_str(json.dumps(pruned.tokenizer_json))
    assert new.encode("xbc").tokens == ["xb", "c"]
    # what dropping it would do
    del pruned.tokenizer_json["model"]["vocab"][-1]
    assert Tokenizer.from_str(json.dumps(pruned.tokenizer_json)).encode("xbc").tokens == ["x", "bc"]


# --------------------------------------------------------------------------------------------------
# Frequency pruning and keep-set rules


def test_keep_by_frequency_counts_source_tokens(roberta_source):
    source = load_source_tokenizer(roberta_source)
    texts = udhr_lines("eng")[:20]
    ids = [i for row in source.hf(texts, add_special_tokens=False)["input_ids"] for i in row]
    counts = np.bincount(ids, minlength=len(source.hf))
    for min_count in (1, 2, 5):
        keep = keep_by_frequency(source, iter(texts), min_count, batch_size=7)
        assert keep == set(np.flatnonzero(counts >= min_count).tolist())
        assert set(keep.reasons.values()) == {"frequency"}
    assert keep_by_frequency(source, iter(texts), 10**9) == set()


def test_keep_by_frequency_ignores_truncation_in_tokenizer_json(roberta_source, tmp_path):
    """A tokenizer.json that truncates (MiniLM's does, at 128) must not hide the tail of long texts."""
    spec = json.loads((roberta_source / "tokenizer.json").read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    directory = tmp_path / "trunc"
    shutil.copytree(roberta_source, directory)
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    source = load_source_tokenizer(directory)
    text = udhr_lines("eng")[3]
    full = load_source_tokenizer(roberta_source).backend.encode(text, add_special_tokens=False).ids
    assert len(full) > 20
    assert keep_by_frequency(source, iter([text]), 1) == set(full)
    assert source.backend.truncation["max_length"] == 4  # the setting is restored afterwards


@pytest.mark.parametrize("name", ["minilm_source", "xlmr_source", "llama2_json_source", "roberta_source"])
def test_frequency_pruning_keeps_the_corpus_tokenization(name, request, tmp_path):
    """min_count=1 keeps every token the corpus uses (and, for BPE, what builds them): the corpus
    tokenizes exactly as before; other text still encodes, in smaller pieces where needed."""
    corpus = udhr_lines("eng")[:12] + udhr_lines("deu")[:4]
    case = prune_and_write(request.getfixturevalue(name), tmp_path / "pruned", texts=corpus, min_count=1)
    assert case.pruned.report.kept < 0.9 * case.pruned.report.source_size
    assert set(case.pruned.report.reasons) <= {"special", "unk", "byte", "frequency", "character", "unk_score", "closure"}
    assert_same_tokens(case, corpus)
    other = udhr_lines("spa")[:10] + udhr_lines("amh")[:3]
    ids = case.hf(other, add_special_tokens=False)["input_ids"]
    if case.byte_complete:
        assert case.hf.batch_decode(ids) == other
    if case.source.family is not TokenizerFamily.BYTE_LEVEL_BPE:
        # the single characters of the kept scripts stay: Spanish needs no more UNKs than before
        unk = case.hf.unk_token_id
        src_unk = case.source.hf.unk_token_id
        src_ids = case.source.hf(other[:10], add_special_tokens=False)["input_ids"]
        assert sum(row.count(unk) for row in ids[:10]) == sum(row.count(src_unk) for row in src_ids)


def test_build_keep_set_is_the_union_of_scripts_and_frequency(multilingual_source):
    source = load_source_tokenizer(multilingual_source)
    texts = udhr_lines("rus")[:5]
    by_scripts = keep_by_scripts(source, "Latin")
    by_frequency = keep_by_frequency(source, texts, 2)
    both = build_keep_set(source, keep_scripts=["Latin"], texts=texts, min_count=2)
    assert isinstance(both, KeepSet)
    assert both == by_scripts | by_frequency
    assert by_frequency - by_scripts  # Cyrillic tokens come in through the corpus
    assert {both.reasons[i] for i in by_scripts} == {"script"}
    assert {both.reasons[i] for i in by_frequency - by_scripts} == {"frequency"}
    assert build_keep_set(source, texts=texts, min_count=2) == by_frequency
    # the union's reasons reach the pruned tokenizer and its report (special and byte tokens count as such)
    pruned = prune_tokenizer(source, both)
    why = dict(zip(pruned.id_map, pruned.reasons, strict=True))
    assert {why[i] for i in by_scripts} <= {"script", "special", "unk", "byte"}
    assert {why[i] for i in by_frequency - by_scripts} <= {"frequency", "special", "unk", "byte"}
    assert pruned.report.reasons == dict(Counter(pruned.reasons))
    assert pruned.report.reasons["frequency"] > 0


def test_keep_set_errors(roberta_source):
    source = load_source_tokenizer(roberta_source)
    with pytest.raises(ConfigError, match="nothing to prune by"):
        build_keep_set(source)
    with pytest.raises(ConfigError, match="min_count"):
        keep_by_frequency(source, ["text"], 0)
    with pytest.raises(ConfigError, match="no text"):
        keep_by_frequency(source, [], 1)
    with pytest.raises(ConfigError, match="unknown Unicode script"):
        keep_by_scripts(source, "Klingon")
    with pytest.raises(ConfigError, match="ids that the source vocabulary lacks"):
        prune_tokenizer(source, {0, len(source.hf) + 5})


def test_write_refuses_a_directory_with_files(roberta_source, tmp_path):
    source = load_source_tokenizer(roberta_source)
    pruned = prune_tokenizer(source, keep_by_scripts(source, "Latn"))
    (tmp_path / "empty").mkdir()
    write_pruned_tokenizer(pruned, source, tmp_path / "empty")  # a stage's fresh temporary directory
    with pytest.raises(OutputExistsError):
        write_pruned_tokenizer(pruned, source, tmp_path / "empty")
    write_pruned_tokenizer(pruned, source, tmp_path / "empty", force=True)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "empty")) == len(pruned.id_map)


def test_specials_are_kept_even_when_the_keep_set_lacks_them(roberta_source):
    source = load_source_tokenizer(roberta_source)
    pruned = prune_tokenizer(source, set())
    report = pruned.report
    assert report.reasons == {"special": 5, "byte": 256}
    assert [t["content"] for t in pruned.tokenizer_json["added_tokens"]] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert pruned.tokenizer_json["model"]["merges"] == []


# --------------------------------------------------------------------------------------------------
# The fast paths agree with the plain definitions; the written files are checked without transformers


def test_written_files_carry_the_source_files(case):
    """tokenizer_config.json, without the keys of the old files; the others (special-tokens map, chat
    template) byte for byte; the output reloads with AutoTokenizer as the same class."""
    source = case.source
    assert json.loads((case.out / "tokenizer_config.json").read_text()) == _tokenizer_config(source)
    for name, data in source.files.items():
        if name != "tokenizer_config.json":
            assert (case.out / name).read_bytes() == data, name
    assert type(case.hf) is type(source.hf)


@pytest.mark.parametrize("name", [n for n, _ in CASES[:7]])
def test_token_table_matches_surface_forms(request, name):
    # prune's per-token table inlines surface_form's sentencepiece case: the two must agree
    source = load_source_tokenizer(request.getfixturevalue(name))
    forms = surface_forms(source.hf)
    tokens = _tokens(source)
    assert _tokens(source) is tokens  # computed once per source
    assert len(tokens) == len(forms) == source.vocab_size
    for i, tok in tokens.items():
        if not tok.added:
            assert tok.surface == forms[i], (i, tok)
    labels = _labels(source)
    assert labels == {i: _label(t) for i, t in tokens.items()}


def test_keep_by_scripts_and_labels_match_their_definitions(multilingual_source):
    source = load_source_tokenizer(multilingual_source)
    tokens = _tokens(source)
    for scripts in ("Latn", "Latn,Cyrl", "Ethi,Arab", "Hani"):
        keep = resolve_scripts(scripts)
        expected = {i for i, t in tokens.items() if not t.added and (
            _bytes_compatible(t.raw, keep) if source.family is TokenizerFamily.BYTE_LEVEL_BPE and t.raw is not None
            else scripts_of(t.text) <= keep)}
        assert keep_by_scripts(source, scripts) == expected
    assert _labels(source) == {i: _label(t) for i, t in tokens.items()}


@given(texts=st.lists(st.text(alphabet=st.sampled_from("aé1 ,ßбжሰላ中\u0301\u200d\ud800▁Ωα"), max_size=6), max_size=12),
       keep=st.sets(st.sampled_from(["Latn", "Cyrl", "Ethi", "Hani", "Grek"])))
@settings(max_examples=200, deadline=None)
def test_vectorized_scripts_match_scripts_of(texts, keep):
    scripts = _TokenScripts.of(texts)
    assert scripts.within(frozenset(keep)) == [scripts_of(t) <= keep for t in texts]
    lo, hi = scripts.spans()
    for text, a, b in zip(texts, lo, hi, strict=True):
        found = scripts_of(text)
        assert (a == len(scripts.codes)) == (not found)
        assert (a == b) == (len(found) == 1)
        if found:
            assert {scripts.codes[a], scripts.codes[b]} <= found
    rows = [len(t) % 2 == 0 for t in texts]
    assert scripts.scripts(rows) == frozenset().union(*[scripts_of(t) for t, r in zip(texts, rows, strict=True) if r])


def test_pruning_a_tokenizer_directory_does_not_import_torch(xlmr_source, tmp_path):
    code = (
        "import sys\n"
        "from vocabshift.tokenization.prune import build_keep_set, prune_tokenizer, write_pruned_tokenizer\n"
        "from vocabshift.tokenization.source import load_source_tokenizer\n"
        f"source = load_source_tokenizer({str(xlmr_source)!r})\n"
        "pruned = prune_tokenizer(source, build_keep_set(source, 'Latn'))\n"
        f"write_pruned_tokenizer(pruned, source, {str(tmp_path / 'out')!r})\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not leaked, leaked[:5]\n"
        "print(len(pruned.id_map))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != FULL_RELOAD_CHECK_ENV}
    proc = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    # the lean check passed; the output reloads with AutoTokenizer all the same
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out")) == int(proc.stdout.split()[-1])


def test_reload_check_catches_what_autotokenizer_would(roberta_source, tmp_path, monkeypatch):
    source = load_source_tokenizer(roberta_source)
    pruned = prune_tokenizer(source, keep_by_scripts(source, "Latn"))
    out = tmp_path / "out"
    write_pruned_tokenizer(pruned, source, out)
    assert _verify_reload(out, pruned.tokenizer_json, ["Hello world"], full=False) == len(pruned.id_map)
    assert _verify_reload(out, pruned.tokenizer_json, ["Hello world"], full=True) == len(pruned.id_map)
    # a config naming a special token the vocabulary lacks: AutoTokenizer would give it a new id
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "<missing>"}))
    with pytest.raises(TokenizerError, match="names special tokens the tokenizer lacks: '<missing>'"):
        _verify_reload(out, pruned.tokenizer_json, [], full=False)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    # tokenizer.json on disk is not the tokenizer built
    other = prune_tokenizer(source, set())
    other.backend.save(str(out / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="differs from the tokenizer built"):
        _verify_reload(out, pruned.tokenizer_json, [], full=False)
    with pytest.raises(TokenizerError, match="vocabulary or ids differ"):
        _verify_reload(out, pruned.tokenizer_json, [], backend=other.backend, full=False)
    # the AutoTokenizer reload runs when asked for, by argument or environment (and is cheap here)
    write_pruned_tokenizer(pruned, source, out, force=True)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", broken)
    _verify_reload(out, pruned.tokenizer_json, [], full=False)
    monkeypatch.setenv(FULL_RELOAD_CHECK_ENV, "0")
    _verify_reload(out, pruned.tokenizer_json, [])
    for setting in ("1", ""):  # "": auto, and transformers is loaded in this process, the tokenizer small
        monkeypatch.setenv(FULL_RELOAD_CHECK_ENV, setting)
        with pytest.raises(TokenizerError, match="does not reload with AutoTokenizer"):
            _verify_reload(out, pruned.tokenizer_json, [])


def _reference_surface_forms(hf: Any) -> list[Surface]:
    """surface_forms as first written: the whole tokenizer.json parsed, a dictionary lookup per character."""
    from vocabshift.tokenization.source import TokenizerFamily, detect_family
    from vocabshift.tokenization.surface import byte_decoder

    backend = hf.backend_tokenizer
    spec = json.loads(backend.to_str())
    family = detect_family(spec)
    prefix = spec["model"].get("continuing_subword_prefix") or "##"
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    out = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        token = backend.id_to_token(i)
        a = added.get(i)
        if token is None or (a is not None and a.get("special", True)):
            out.append(Surface("" if token is None else token, False, "special"))
        elif a is not None:
            out.append(Surface(token, False, "normal"))
        elif family is TokenizerFamily.BYTE_LEVEL_BPE:
            decoder = byte_decoder()
            if not all(c in decoder for c in token):
                out.append(Surface(token, False, "normal"))
                continue
            raw = bytes(decoder[c] for c in token)
            body = raw[1:] if raw.startswith(b" ") else raw
            try:
                out.append(Surface(body.decode("utf-8"), raw.startswith(b" "), "normal", raw))
            except UnicodeDecodeError:
                out.append(Surface(body.decode("utf-8", errors="replace"), raw.startswith(b" "),
                                   "byte" if len(raw) == 1 else "partial", raw))
        else:
            out.append(surface_form(token, family, continuing_prefix=prefix))
    return out


@pytest.mark.parametrize("name", [n for n, _ in CASES[:7]])
def test_surface_forms_equal_the_reference_reading(request, name):
    """The fast reading (the tokenizer's components instead of its whole JSON; byte-level tokens by one
    translate) gives every id the same surface form as the direct one, on real and trained tokenizers."""
    hf = load_source_tokenizer(request.getfixturevalue(name)).hf
    assert surface_forms(hf) == _reference_surface_forms(hf)
    # a byte-level token with a character outside the byte alphabet (an added plain-text token) stays as it is
    from vocabshift.tokenization.source import TokenizerFamily

    assert surface_form("hola mundo", TokenizerFamily.BYTE_LEVEL_BPE) == Surface("hola mundo", False, "normal")
    assert surface_form("Ġhola", TokenizerFamily.BYTE_LEVEL_BPE) == Surface("hola", True, "normal", b" hola")
