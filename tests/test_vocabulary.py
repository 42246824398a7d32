"""The vocabulary stage end to end: model + tokenizer pruned/extended, reloaded with Auto classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from tests.conftest import udhr_lines
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, OutputExistsError
from vocabshift.tokenization.train import train_tokenizer
from vocabshift.vocabulary import PruneConfig, prune, read_id_map

LATIN_TEXTS = udhr_lines("eng")[:6] + udhr_lines("spa")[:4] + udhr_lines("vie")[:2]


@pytest.fixture(scope="module")
def multilingual_bpe(tmp_path_factory, smollm2_source, multilingual_corpus) -> Path:
    """A 3,000-token byte-level BPE trained on eight languages in six scripts (SmolLM2's family)."""
    out = tmp_path_factory.mktemp("mbpe") / "tok"
    train_tokenizer(TokenizerTrainConfig(source=str(smollm2_source), corpus=corpus_from_paths([multilingual_corpus]),
                                         vocab_size=3000, out=str(out), show_progress=False))
    return out


def _pico_llama(tokenizer_dir: Path, directory: Path, tied: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                         bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _pico_bert_mlm(tokenizer_dir: Path, directory: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, pad_token_id=tok.pad_token_id)).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # a non-trivial MLM bias, so that its remapping is checked
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _check_pruned(source_dir: Path, out: Path, model_cls, texts: list[str]) -> None:
    src_tok, new_tok = AutoTokenizer.from_pretrained(source_dir), AutoTokenizer.from_pretrained(out)
    src_model, new_model = model_cls.from_pretrained(source_dir).eval(), model_cls.from_pretrained(out).eval()
    id_map = read_id_map(out)
    assert id_map is not None and len(id_map) == len(new_tok) <= new_model.config.vocab_size  # padding allowed
    ids = torch.tensor(id_map)
    n = len(ids)
    # kept rows bit-identical: input, output head, MLM bias
    assert torch.equal(new_model.get_input_embeddings().weight[:n], src_model.get_input_embeddings().weight[ids])
    assert torch.equal(new_model.get_output_embeddings().weight[:n], src_model.get_output_embeddings().weight[ids])
    src_bias = getattr(src_model.get_output_embeddings(), "bias", None)
    if src_bias is not None:
        assert torch.equal(new_model.get_output_embeddings().bias[:n], src_bias[ids])
    for text in texts:
        a = src_tok(text, return_tensors="pt")
        b = new_tok(text, return_tensors="pt")
        assert src_tok.convert_ids_to_tokens(a["input_ids"][0]) == new_tok.convert_ids_to_tokens(b["input_ids"][0])
        assert torch.equal(ids[b["input_ids"][0]], a["input_ids"][0])
        with torch.no_grad():
            la, lb = src_model(**a).logits, new_model(**b).logits
        torch.testing.assert_close(lb[..., :n], la[..., ids], rtol=0, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_prune_pico_llama_to_latin(tmp_path, multilingual_bpe, tied):
    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied)
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    _check_pruned(source, result.out, AutoModelForCausalLM, LATIN_TEXTS)
    report = json.loads((result.out / "prune_report.json").read_text())
    assert report["vocab_size"] < report["source_vocab_size"]
    assert report["model"]["parameters_after"] < report["model"]["parameters_before"]
    new_model = AutoModelForCausalLM.from_pretrained(result.out)
    if tied:
        assert new_model.get_output_embeddings().weight.data_ptr() == new_model.get_input_embeddings().weight.data_ptr()
    # special ids follow their tokens
    tok = AutoTokenizer.from_pretrained(result.out)
    assert new_model.config.bos_token_id == tok.convert_tokens_to_ids("<|im_start|>")
    # removed scripts still encode (bytes) and decode back
    amharic = udhr_lines("amh")[0]
    assert tok.decode(tok(amharic, add_special_tokens=False)["input_ids"]) == amharic


def test_prune_pico_bert_mlm_with_frequency(tmp_path, minilm_source):
    source = _pico_bert_mlm(minilm_source, tmp_path / "src")
    corpus = tmp_path / "en.txt"
    corpus.write_text("\n".join(udhr_lines("eng")), encoding="utf-8")
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "out"),
                               keep_corpus=corpus_from_paths([corpus]), min_count=1))
    # English UDHR used a small part of BERT's 30,522 tokens; the text itself is unchanged
    assert result.report["vocab_size"] < 5000
    _check_pruned(source, result.out, AutoModelForMaskedLM, udhr_lines("eng")[:8])


def test_prune_pad_to_multiple_of(tmp_path, multilingual_bpe):
    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied=True)
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "out"), keep_scripts=["Latn", "Cyrl"],
                               pad_to_multiple_of=64))
    model = AutoModelForCausalLM.from_pretrained(result.out)
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(result.id_map)


def test_tokenizer_only_source_writes_tokenizer_and_id_map(tmp_path, multilingual_bpe):
    result = prune(PruneConfig(model=str(multilingual_bpe), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    assert result.report["model"] is None
    assert (result.out / "tokenizer.json").exists() and not (result.out / "model.safetensors").exists()
    assert read_id_map(result.out) == result.id_map


def test_bad_inputs(tmp_path, multilingual_bpe):
    with pytest.raises(ConfigError, match="unknown"):
        PruneConfig(model=str(multilingual_bpe), out=str(tmp_path / "o"), keep_scripts=["Klingon"])
    with pytest.raises(ConfigError, match="nothing to keep by"):
        PruneConfig(model=str(multilingual_bpe), out=str(tmp_path / "o"))
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        prune(PruneConfig(model=str(multilingual_bpe), out=str(tmp_path / "exists"), keep_scripts=["Latin"]))
    assert list((tmp_path / "exists").iterdir()) == []


@pytest.mark.parametrize("arch", ["llama_tied", "llama_untied", "bert_mlm"])
def test_lean_safetensors_path_equals_in_memory_path(tmp_path, multilingual_bpe, minilm_source, arch, monkeypatch):
    from safetensors.torch import load_file

    import vocabshift.surgery.lazy as lazy
    import vocabshift.surgery.resize as resize

    # tiny chunks, so that streaming crosses many chunk boundaries and runs of kept rows
    monkeypatch.setattr(lazy, "ROWS_PER_CHUNK", 7)
    monkeypatch.setattr(resize, "MEAN_CHUNK_ROWS", 5)

    if arch == "bert_mlm":
        source, scripts = _pico_bert_mlm(minilm_source, tmp_path / "src"), ["Latin"]
    else:
        source, scripts = _pico_llama(multilingual_bpe, tmp_path / "src", tied=arch == "llama_tied"), ["Latin"]
    # re-save sharded, so that the lean path streams several shards and rewrites the index
    cls = AutoModelForMaskedLM if arch == "bert_mlm" else AutoModelForCausalLM
    sharded = tmp_path / "sharded"
    cls.from_pretrained(source).save_pretrained(sharded, max_shard_size="100KB")
    AutoTokenizer.from_pretrained(source).save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").exists()
    lean = prune(PruneConfig(model=str(sharded), out=str(tmp_path / "lean"), keep_scripts=scripts,
                             pad_to_multiple_of=8))
    full = prune(PruneConfig(model=str(sharded), out=str(tmp_path / "full"), keep_scripts=scripts,
                             pad_to_multiple_of=8, in_memory=True))
    assert lean.report["model"]["path"].startswith("lean") and full.report["model"]["path"] == "in memory"
    a = {k: v for f in sorted(lean.out.glob("*.safetensors")) for k, v in load_file(f).items()}
    b = {k: v for f in sorted(full.out.glob("*.safetensors")) for k, v in load_file(f).items()}
    # the in-memory save drops tied aliases the same way; compare the tensors both have, all of them
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca, cb = (json.loads((d.out / "config.json").read_text()) for d in (lean, full))
    for key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings"):
        assert ca.get(key) == cb.get(key), key
    _check_pruned(source, lean.out, cls, LATIN_TEXTS[:4])


@pytest.mark.parametrize("failing", ["tokenizer files", "weights"])
def test_a_failure_on_either_thread_leaves_nothing(tmp_path, multilingual_bpe, failing, monkeypatch):
    """prune() writes the weights on a second thread while the tokenizer files are written: a failure on
    either side is raised as it is, after the other side has stopped, and leaves no output behind."""
    import vocabshift.surgery.row_prune as row_prune
    import vocabshift.tokenization.prune as tprune

    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied=True)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(row_prune if failing == "weights" else tprune,
                        "prune_rows" if failing == "weights" else "write_pruned_tokenizer_files", fail)
    out = tmp_path / "out"
    from vocabshift.errors import DiskFullError

    with pytest.raises(DiskFullError, match="no space left on device.*nothing was replaced"):
        prune(PruneConfig(model=str(source), out=str(out), keep_scripts=["Latin"]))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temporary directory left either
    import threading

    assert not [t for t in threading.enumerate() if t.name == "vocabshift-prune-weights"]


def test_prune_report_names_the_weights_path(tmp_path, multilingual_bpe):
    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied=False)
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    report = json.loads((result.out / "prune_report.json").read_text())
    assert report["model"]["path"] == "lean (safetensors rows, no model)"
    assert report["model"]["vocab_size"] == report["vocab_size"] == len(result.id_map)
    assert list(report)[:6] == ["stage", "source", "config", "source_vocab_size", "vocab_size", "tokens"]
