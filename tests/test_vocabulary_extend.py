"""The extend stage end to end: source ids unchanged, new rows the mean, English tokenized as before."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import udhr_lines
from tests.test_vocabulary import _pico_llama
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.tokenization.train import train_tokenizer
from vocabshift.vocabulary import ExtendConfig, extend, read_id_map


def test_extend_pico_llama(tmp_path, smollm2_source):
    source = _pico_llama(smollm2_source, tmp_path / "src", tied=False)
    corpus = tmp_path / "sw.txt"
    corpus.write_text("\n".join(udhr_lines("swh")), encoding="utf-8")
    target = tmp_path / "sw_tok"
    train_tokenizer(TokenizerTrainConfig(source=str(smollm2_source), corpus=corpus_from_paths([corpus]),
                                         vocab_size=800, out=str(target), show_progress=False))
    result = extend(ExtendConfig(model=str(source), tokenizer=str(target), out=str(tmp_path / "out"), max_new=200))
    id_map = read_id_map(result.out)
    n_src = len(AutoTokenizer.from_pretrained(source))
    assert id_map[:n_src] == list(range(n_src)) and 0 < sum(i < 0 for i in id_map) <= 200
    src_model = AutoModelForCausalLM.from_pretrained(source)
    new_model = AutoModelForCausalLM.from_pretrained(result.out)
    emb_src, emb_new = src_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight
    assert torch.equal(emb_new[:n_src], emb_src)
    torch.testing.assert_close(emb_new[n_src:], emb_src.mean(0, keepdim=True).expand(len(id_map) - n_src, -1))
    # English text tokenizes exactly as before and gives the same logits on the source ids
    src_tok, new_tok = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(result.out)
    for text in udhr_lines("eng")[:5]:
        a, b = src_tok(text, return_tensors="pt"), new_tok(text, return_tensors="pt")
        assert torch.equal(a["input_ids"], b["input_ids"])
        with torch.no_grad():
            torch.testing.assert_close(new_model(**b).logits[..., :n_src], src_model(**a).logits, rtol=0, atol=1e-5)




def test_extend_protects_source_language_text(tmp_path, roberta_source):
    """A tiny English source splits much English into characters, so a Spanish target would change it;
    the protect corpus keeps that text exactly as the source tokenizes it."""
    english = tmp_path / "en.txt"
    english.write_text("\n".join(udhr_lines("eng")), encoding="utf-8")
    spanish = tmp_path / "es.txt"
    spanish.write_text("\n".join(udhr_lines("spa")), encoding="utf-8")
    target = tmp_path / "es_tok"
    train_tokenizer(TokenizerTrainConfig(source=str(roberta_source), corpus=corpus_from_paths([spanish]),
                                         vocab_size=900, out=str(target), show_progress=False))
    free = extend(ExtendConfig(model=str(roberta_source), tokenizer=str(target), out=str(tmp_path / "free")))
    kept = extend(ExtendConfig(model=str(roberta_source), tokenizer=str(target), out=str(tmp_path / "kept"),
                               protect_corpus=corpus_from_paths([english])))
    src = AutoTokenizer.from_pretrained(roberta_source)
    free_tok, kept_tok = AutoTokenizer.from_pretrained(free.out), AutoTokenizer.from_pretrained(kept.out)
    changed = [line for line in udhr_lines("eng") if free_tok.tokenize(line) != src.tokenize(line)]
    assert changed  # without protection this small source does change some English
    assert all(kept_tok.tokenize(line) == src.tokenize(line) for line in udhr_lines("eng"))
    assert 0 < kept.report["vocab_size"] - kept.report["source_vocab_size"] < \
        free.report["vocab_size"] - free.report["source_vocab_size"]
