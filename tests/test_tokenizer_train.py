"""Target tokenizer training: every family mirrors its source, round-trips text, and reloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from tests.conftest import MULTI_LANGS, udhr_lines
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, TokenizerError
from vocabshift.tokenization.source import TokenizerFamily, load_source_tokenizer
from vocabshift.tokenization.train import train_tokenizer

# source fixture -> (family, trainer that must be used, vocab size)
SOURCES = {
    "minilm_source": (TokenizerFamily.WORDPIECE, "tokenizers", 2500),
    "smollm2_source": (TokenizerFamily.BYTE_LEVEL_BPE, "tokenizers", 2000),
    "roberta_source": (TokenizerFamily.BYTE_LEVEL_BPE, "tokenizers", 2000),
    "xlmr_source": (TokenizerFamily.SENTENCEPIECE_UNIGRAM, "sentencepiece", 2500),
    "llama2_source": (TokenizerFamily.SENTENCEPIECE_BPE, "sentencepiece", 2500),
    "unigram_json_source": (TokenizerFamily.SENTENCEPIECE_UNIGRAM, "tokenizers", 2500),
    "llama2_json_source": (TokenizerFamily.SENTENCEPIECE_BPE, "tokenizers", 2500),
}


@pytest.fixture(scope="module", params=list(SOURCES))
def trained(request, tmp_path_factory, multilingual_corpus):
    source = request.getfixturevalue(request.param)
    family, trainer, vocab_size = SOURCES[request.param]
    out = tmp_path_factory.mktemp(request.param) / "target"
    result = train_tokenizer(TokenizerTrainConfig(
        source=str(source), corpus=corpus_from_paths([multilingual_corpus]), vocab_size=vocab_size,
        out=str(out), show_progress=False,
        character_coverage=1.0))  # sentencepiece: keep rare Han characters so every text round-trips
    return request.param, Path(source), result


def _canonical(text: str) -> str:
    return " ".join(text.split())


def test_family_trainer_and_size(trained):
    name, _source, result = trained
    family, trainer, vocab_size = SOURCES[name]
    assert result.family is family
    assert result.trainer == trainer
    assert result.vocab_size == vocab_size
    tok = AutoTokenizer.from_pretrained(result.out)
    assert len(tok) == vocab_size


def test_special_tokens_keep_strings_flags_and_come_first(trained):
    _name, source, result = trained
    src = json.loads((source / "tokenizer.json").read_text())
    new = json.loads((result.out / "tokenizer.json").read_text())
    src_added = sorted(src["added_tokens"], key=lambda t: t["id"])
    new_added = sorted(new["added_tokens"], key=lambda t: t["id"])
    assert [t["content"] for t in new_added] == [t["content"] for t in src_added]
    strip = ("id",)
    assert [{k: v for k, v in t.items() if k not in strip} for t in new_added] == \
           [{k: v for k, v in t.items() if k not in strip} for t in src_added]
    if result.trainer == "tokenizers":
        # placed first, in the source's order
        assert [t["id"] for t in new_added] == list(range(len(new_added)))
    else:
        # the sentencepiece path keeps the source's own layout (XLM-R appends <mask> at the end)
        src_ids = [t["id"] for t in src_added]
        new_ids = [t["id"] for t in new_added]
        assert [i if i < 10 else "end" for i in src_ids] == [i if i < 10 else "end" for i in new_ids]


def test_pipeline_mirrors_source(trained):
    _name, source, result = trained
    src = json.loads((source / "tokenizer.json").read_text())
    new = json.loads((result.out / "tokenizer.json").read_text())
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        assert new[key] == src[key], key
    assert new["model"]["type"] == src["model"]["type"]
    if "byte_fallback" in src["model"]:
        assert new["model"]["byte_fallback"] == src["model"]["byte_fallback"]
    src_tok = AutoTokenizer.from_pretrained(source)
    new_tok = AutoTokenizer.from_pretrained(result.out)
    assert type(new_tok) is type(src_tok)
    for attr in ("model_max_length", "padding_side", "truncation_side", "bos_token", "eos_token", "pad_token",
                 "unk_token", "mask_token", "cls_token", "sep_token"):
        assert getattr(new_tok, attr, None) == getattr(src_tok, attr, None), attr
    # special tokens added by the post-processor are the same strings, at their new ids
    a = src_tok.convert_ids_to_tokens(src_tok("hola")["input_ids"])
    b = new_tok.convert_ids_to_tokens(new_tok("hola")["input_ids"])
    specials = set(src_tok.all_special_tokens)
    assert [t for t in a if t in specials] == [t for t in b if t in specials]


@pytest.mark.parametrize("code", MULTI_LANGS)
def test_round_trip_on_every_script(trained, code):
    _name, _source, result = trained
    tok = AutoTokenizer.from_pretrained(result.out)
    normalizer = tok.backend_tokenizer.normalizer
    for text in udhr_lines(code)[:15]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        decoded = tok.decode(ids)
        expected = normalizer.normalize_str(text) if normalizer else text
        if result.family is TokenizerFamily.WORDPIECE:
            # WordPiece decoding re-spaces punctuation: compare with whitespace removed
            assert "".join(decoded.split()) == "".join(expected.split())
        else:
            assert _canonical(decoded) == _canonical(expected)


def test_target_vocabulary_is_target_language(trained):
    _name, _source, result = trained
    tok = AutoTokenizer.from_pretrained(result.out)
    # frequent words of the training languages are single tokens (or two for sentencepiece's ▁)
    assert len(tok.tokenize(" derecho")) <= 2
    assert len(tok.tokenize(" права")) <= 2


def test_sentencepiece_model_agrees_with_tokenizer_json(trained, tmp_path):
    name, source, result = trained
    if SOURCES[name][1] != "sentencepiece":
        pytest.skip("only sources that ship a .model get one")
    import shutil

    import sentencepiece as spm

    model_name = next(source.glob("*.model")).name
    sp = spm.SentencePieceProcessor(model_file=str(result.out / model_name))
    tok = AutoTokenizer.from_pretrained(result.out)
    # the .model alone (no tokenizer.json) loads to the same tokenizer, as a slow-path reload does
    only_model = tmp_path / "only_model"
    shutil.copytree(result.out, only_model)
    (only_model / "tokenizer.json").unlink()
    from_model = AutoTokenizer.from_pretrained(only_model)
    assert len(from_model) == len(tok)
    for code in MULTI_LANGS:
        for text in udhr_lines(code)[:5]:
            assert sp.encode(text, out_type=str) == tok.tokenize(text)
            assert from_model(text)["input_ids"] == tok(text)["input_ids"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=60))
def test_byte_level_round_trips_any_text(trained, text):
    name, _source, result = trained
    if name != "smollm2_source":
        return
    tok = _cached_tokenizer(result.out)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


_CACHE: dict[Path, object] = {}


def _cached_tokenizer(path: Path):
    if path not in _CACHE:
        _CACHE[path] = AutoTokenizer.from_pretrained(path)
    return _CACHE[path]


def test_byte_fallback_covers_unseen_scripts(trained):
    name, _source, result = trained
    if name not in ("llama2_source", "llama2_json_source", "smollm2_source", "roberta_source"):
        pytest.skip("needs bytes or byte fallback")
    tok = AutoTokenizer.from_pretrained(result.out)
    for code in ("tha", "kor", "heb"):  # scripts absent from the training text
        text = udhr_lines(code)[0]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert _canonical(tok.decode(ids)) == _canonical(text)


# ---------------------------------------------------------------------------------------------
# Fertility on real text: a target tokenizer is clearly better on held-out text of its language


@pytest.fixture(scope="module")
def spanish_split(tmp_path_factory):
    """The Spanish Bible: all but the last 3,000 verses to train on, those held out (Revelation and more)."""
    import gzip

    from vocabshift.data import sample_path

    lines = gzip.open(sample_path("bible.spa.txt.gz"), "rt", encoding="utf-8").read().splitlines()
    d = tmp_path_factory.mktemp("spa")
    (d / "train.txt").write_text("\n".join(lines[:-3000]), encoding="utf-8")
    return d / "train.txt", lines[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("source_fixture", ["smollm2_source", "minilm_source"])
def test_spanish_target_has_lower_fertility_than_source(request, source_fixture, spanish_split, tmp_path):
    from vocabshift.tokenization.stats import tokenizer_stats

    source = request.getfixturevalue(source_fixture)
    train, held_out = spanish_split
    result = train_tokenizer(TokenizerTrainConfig(
        source=str(source), corpus=corpus_from_paths([train]), vocab_size=8000, out=str(tmp_path / "es"),
        show_progress=False))
    src_stats, tgt_stats = tokenizer_stats(
        {"src": AutoTokenizer.from_pretrained(source), "tgt": AutoTokenizer.from_pretrained(result.out)}, held_out)
    src_f, tgt_f = src_stats.scripts["Latn"].fertility, tgt_stats.scripts["Latn"].fertility
    # measured: SmolLM2 2.08 -> 1.37, MiniLM (uncased English WordPiece) similar
    assert tgt_f < 0.8 * src_f, (src_f, tgt_f)


@pytest.mark.slow
def test_amharic_target_beats_english_byte_level_source(smollm2_source, tmp_path):
    from vocabshift.tokenization.stats import tokenizer_stats

    lines = udhr_lines("amh")
    train, held = lines[: len(lines) * 3 // 4], lines[len(lines) * 3 // 4:]
    corpus = tmp_path / "amh.txt"
    corpus.write_text("\n".join(train), encoding="utf-8")
    result = train_tokenizer(TokenizerTrainConfig(
        source=str(smollm2_source), corpus=corpus_from_paths([corpus]), vocab_size=600, out=str(tmp_path / "am"),
        show_progress=False))
    src_stats, tgt_stats = tokenizer_stats(
        {"src": AutoTokenizer.from_pretrained(smollm2_source), "tgt": AutoTokenizer.from_pretrained(result.out)}, held)
    # SmolLM2 has almost no Ethiopic merges: ~2 tokens per character; the target merges whole syllables
    assert tgt_stats.scripts["Ethi"].tokens_per_char < 0.6 * src_stats.scripts["Ethi"].tokens_per_char


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing written


def test_vocab_size_below_minimum(smollm2_source, multilingual_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"below the minimum .* 256 byte tokens"):
        train_tokenizer(TokenizerTrainConfig(source=str(smollm2_source), corpus=corpus_from_paths([multilingual_corpus]),
                                             vocab_size=100, out=str(tmp_path / "o"), show_progress=False))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("source_fixture", ["roberta_source", "llama2_source"])
def test_vocab_size_larger_than_corpus_supports(request, source_fixture, tmp_path):
    source = request.getfixturevalue(source_fixture)
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("uno dos tres\ncuatro cinco seis\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="larger than the corpus supports"):
        train_tokenizer(TokenizerTrainConfig(source=str(source), corpus=corpus_from_paths([corpus]),
                                             vocab_size=5000, out=str(tmp_path / "o"), show_progress=False))
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.txt"]  # no temporary sibling left either


def test_unsupported_tokenizer_type_is_named(tmp_path, multilingual_corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hola": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "wl")
    with pytest.raises(TokenizerError, match="unsupported tokenizer type: WordLevel"):
        load_source_tokenizer(tmp_path / "wl")


def test_missing_source(tmp_path, multilingual_corpus):
    with pytest.raises(TokenizerError, match="does not exist"):
        train_tokenizer(TokenizerTrainConfig(source=str(tmp_path / "nope"), corpus=corpus_from_paths([multilingual_corpus]),
                                             vocab_size=1000, out=str(tmp_path / "o"), show_progress=False))
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------
# Reading sources: tokenizer.json as it is, without transformers (or torch)

READ_SOURCES = ["minilm_source", "smollm2_source", "roberta_source", "xlmr_source", "llama2_source",
                "unigram_json_source", "llama2_json_source"]


@pytest.mark.parametrize("name", READ_SOURCES)
def test_source_read_from_tokenizer_json_agrees_with_autotokenizer(request, name):
    path = Path(request.getfixturevalue(name))
    source = load_source_tokenizer(path)
    assert source.tokenizer_file == path / "tokenizer.json" and source._hf is None  # no transformers involved
    hf = AutoTokenizer.from_pretrained(path)
    hf_json = json.loads(hf.backend_tokenizer.to_str())
    # the very JSON transformers' backend holds; an old file may leave out defaults (MiniLM's truncation
    # has no "direction"), which the Rust tokenizer fills in alike
    assert {k: v for k, v in source.backend_json.items() if k != "truncation"} == {
        k: v for k, v in hf_json.items() if k != "truncation"}
    assert source.backend.truncation == hf.backend_tokenizer.truncation
    assert source.vocab_size == len(hf) == len(source.token_to_id)
    assert source.backend.get_vocab(with_added_tokens=True) == hf.get_vocab() == source.token_to_id
    # the files the writers carry over are the directory's own, byte for byte
    assert set(source.files) == {n for n in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                                             "chat_template.json") if (path / n).is_file()}
    for name_, data in source.files.items():
        assert data == (path / name_).read_bytes()
    assert type(source.hf) is type(hf)  # the transformers tokenizer still loads on first use


def test_reading_a_tokenizer_directory_does_not_import_torch(xlmr_source, roberta_source, tmp_path):
    code = (
        "import sys\n"
        "from vocabshift.tokenization.source import load_source_tokenizer\n"
        f"s = load_source_tokenizer({str(xlmr_source)!r})\n"
        "assert s.vocab_size == 902 and s.family.value == 'sentencepiece_unigram' and s.sentencepiece_model\n"
        f"s = load_source_tokenizer({str(roberta_source)!r})\n"
        "assert s.vocab_size == 700 and ''.join(s.backend.encode('Hello world', add_special_tokens=False).tokens) == 'HelloĠworld'\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not leaked, leaked[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def _train_in_a_fresh_process(source: Path, corpus: Path, vocab_size: int, trainer: str, out: Path) -> None:
    """train_tokenizer in a new interpreter, which must use ``trainer`` and never import torch or transformers."""
    code = (
        "import sys\n"
        "from vocabshift.config import TokenizerTrainConfig\n"
        "from vocabshift.corpus import corpus_from_paths\n"
        "from vocabshift.tokenization.train import train_tokenizer\n"
        f"r = train_tokenizer(TokenizerTrainConfig(source={str(source)!r}, corpus=corpus_from_paths({str(corpus)!r}),"
        f" vocab_size={vocab_size}, out={str(out)!r}, show_progress=False))\n"
        f"assert r.trainer == {trainer!r} and r.vocab_size == {vocab_size}\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not leaked, leaked[:5]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VOCABSHIFT_FULL_RELOAD_CHECK"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).resolve().parent.parent)


def test_training_from_a_tokenizer_directory_does_not_import_torch(roberta_source, tmp_path):
    # the tokenizers trainers, the lean reload check: issue 3's overhead over the raw trainer was torch's import
    corpus = tmp_path / "spa.txt"
    corpus.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    _train_in_a_fresh_process(roberta_source, corpus, 600, "tokenizers", tmp_path / "out")
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out")) == 600


@pytest.mark.parametrize("key, value", [("extra_special_tokens", ["<extra>"]), ("mask_token", "<newmask>")])
def test_special_token_missing_from_tokenizer_json_goes_through_transformers(roberta_source, tmp_path, key, value):
    # AutoTokenizer appends a special token that the config names and tokenizer.json lacks: a new id
    # that tokenizer.json alone would not have, so such a directory is read the way transformers reads it
    src = tmp_path / "tok"
    shutil.copytree(roberta_source, src)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config[key] = value
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    source = load_source_tokenizer(src)
    token = value[0] if isinstance(value, list) else value
    assert source.tokenizer_file is None and source.vocab_size == len(AutoTokenizer.from_pretrained(src)) == 701
    assert source.token_to_id[token] == 700 and source.special_tokens[-1]["content"] == token


def test_broken_tokenizer_json_is_named(roberta_source, tmp_path):
    src = tmp_path / "tok"
    shutil.copytree(roberta_source, src)
    (src / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load a tokenizer from it \\(tokenizer.json"):
        load_source_tokenizer(src)
    (src / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    with pytest.raises(TokenizerError, match="tokenizer.json has no model"):
        load_source_tokenizer(src)


SPM_CLASSES = {  # transformers class -> (.model file name, extra config, trainer ids); each lays out its .model its own way
    "XLMRobertaTokenizer": ("sentencepiece.bpe.model", {}, {}),  # fairseq <s> <pad> </s> <unk> first, <mask> last
    "T5Tokenizer": ("spiece.model", {"extra_ids": 5},  # the .model as is, <extra_id_*> after it
                    {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}),
    "CamembertTokenizer": ("sentencepiece.bpe.model", {}, {}),  # <s>NOTUSED ... first
}


@pytest.mark.parametrize("cls", list(SPM_CLASSES))
def test_unigram_conversion_without_transformers_is_exact(cls, english_file, multilingual_corpus, tmp_path, monkeypatch):
    """The trained .model converted by reading the source's layout equals AutoTokenizer's conversion, file for file."""
    from tests.conftest import _hf_from_spm, _train_spm
    from vocabshift.tokenization import train as train_module

    name, extra, ids = SPM_CLASSES[cls]
    source = _hf_from_spm(tmp_path / "src", name, _train_spm(english_file, vocab_size=900, model_type="unigram", **ids),
                          {"tokenizer_class": cls, "model_max_length": 512, **extra})
    config = {"source": str(source), "corpus": corpus_from_paths([multilingual_corpus]), "vocab_size": 1500,
              "show_progress": False, "character_coverage": 1.0}
    used = []
    direct = train_module._unigram_model_from_layout
    monkeypatch.setattr(train_module, "_unigram_model_from_layout",
                        lambda *a: used.append(m := direct(*a)) or m)
    fast = train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "fast"), **config))
    monkeypatch.setattr(train_module, "_unigram_model_from_layout", lambda *a: None)
    slow = train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "slow"), **config))
    if cls in ("XLMRobertaTokenizer", "T5Tokenizer"):
        assert used and used[0] is not None, f"{cls}: the layout should be read off the source"
    files = sorted(p.name for p in fast.out.iterdir())
    assert files == sorted(p.name for p in slow.out.iterdir())
    for f in files:
        if f != "vocabshift_tokenizer.json":  # holds the seconds
            assert (fast.out / f).read_bytes() == (slow.out / f).read_bytes(), f
    assert fast.vocab_size == slow.vocab_size == len(AutoTokenizer.from_pretrained(fast.out))


def test_sentencepiece_training_from_an_xlmr_folder_does_not_import_transformers(xlmr_source, tmp_path):
    corpus = tmp_path / "spa.txt"
    corpus.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    _train_in_a_fresh_process(xlmr_source, corpus, 600, "sentencepiece", tmp_path / "out")
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out")) == 600
