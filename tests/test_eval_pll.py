"""Per-document pseudo-log-likelihood of masked LMs (PLL-word-l2r, vocabshift.eval.lm.score_documents_pll)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from tests.conftest import udhr_lines
from vocabshift.errors import ConfigError, CorpusError, TokenizerError
from vocabshift.eval.lm import score_documents_pll

DOCS = ["Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
        "Everyone has the right to life, liberty and security of person.", "Article 3"]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory, roberta_source) -> tuple[BertForMaskedLM, object]:
    tok = AutoTokenizer.from_pretrained(roberta_source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    model = BertForMaskedLM(config)
    model.eval()
    return model, tok


def _reference(model, tok, doc: str) -> float:
    """PLL-word-l2r of one document, written out from the definition: one unbatched pass per token."""
    enc = tok(doc, add_special_tokens=False)
    ids, words = enc["input_ids"], enc.word_ids()
    total = 0.0
    for i in range(len(ids)):
        hidden = {i} | {j for j in range(i + 1, len(ids)) if words[i] is not None and words[j] == words[i]}
        masked = [tok.mask_token_id if j in hidden else t for j, t in enumerate(ids)]
        inp = torch.tensor([[tok.bos_token_id, *masked, tok.eos_token_id]])  # RobertaProcessing: <s> ... </s>
        with torch.no_grad():
            logits = model(input_ids=inp).logits[0, i + 1]
        total += float(F.cross_entropy(logits[None], torch.tensor([ids[i]])))
    return total


def test_pll_matches_the_definition_per_document(mlm):
    model, tok = mlm
    result = score_documents_pll(model, tok, DOCS, window=128)
    for d, doc in enumerate(DOCS):
        assert result.per_document.nll[d] == pytest.approx(_reference(model, tok, doc), rel=1e-5)
    assert result.per_document.bytes == [len(d.encode("utf-8")) for d in DOCS]
    assert result.predicted_tokens == sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in DOCS)
    assert result.bits_per_byte == pytest.approx(result.total_nll_nats / math.log(2) / result.bytes)
    assert result.pseudo and result.objective == "mlm" and "PLL-word-l2r" in result.note


def test_later_pieces_of_a_word_are_masked_with_it(mlm):
    """A word in several pieces: the copy that scores its first piece hides the others (l2r), not the earlier."""
    from vocabshift.eval.lm import _pll_items

    _, tok = mlm
    doc = "inalienables dignidad"
    enc = tok([doc], add_special_tokens=False)
    words = enc.word_ids(0)
    assert words.count(words[0]) >= 2, "the test needs a word cut into pieces"
    items, counts = _pll_items(enc, 1, tok, 128)
    assert counts == [len(words)] and len(items) == len(words)
    end = {w: max(j for j, v in enumerate(words) if v == w) + 1 for w in set(words)}  # one past each word's last piece
    for i, (_, inp, pos, target) in enumerate(items):
        body = inp[1:-1]
        assert pos == i + 1 and target == enc["input_ids"][0][i]
        masked = [j for j, t in enumerate(body) if t == tok.mask_token_id]
        assert masked == list(range(i, end[words[i]]))  # this piece and the rest of its word, nothing before


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_the_head_only_on_scored_positions_changes_nothing(mlm, monkeypatch, family):
    """The MLM head (BERT's cls, XLM-R's lm_head) applied to the masked positions alone = the whole
    model's logits gathered after."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from vocabshift.eval import lm

    model, tok = mlm
    if family == "xlm-roberta":
        torch.manual_seed(0)
        model = XLMRobertaForMaskedLM(XLMRobertaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=130, pad_token_id=tok.pad_token_id)).eval()
    assert lm._mlm_head(model) is not None
    fast = score_documents_pll(model, tok, DOCS, window=128)
    monkeypatch.setattr(lm, "_mlm_head", lambda m: None)
    full = score_documents_pll(model, tok, DOCS, window=128)
    assert fast.per_document.nll == pytest.approx(full.per_document.nll, rel=1e-5)


def test_batching_and_chunking_do_not_change_scores(mlm):
    model, tok = mlm
    one = score_documents_pll(model, tok, DOCS, window=128, batch_size=1)
    many = score_documents_pll(model, tok, DOCS, window=128, batch_size=64)
    assert many.per_document.nll == pytest.approx(one.per_document.nll, rel=1e-5)
    # A window of 8 (6 tokens of text after <s> and before </s>): every token still scored exactly once.
    small = score_documents_pll(model, tok, DOCS, window=8)
    assert small.predicted_tokens == one.predicted_tokens and small.windows == one.windows


def test_pll_on_real_text_prefers_the_trained_language(tmp_path, roberta_source):
    """A pico MLM trained a few steps on Spanish scores held-out Spanish better than its untrained self."""
    tok = AutoTokenizer.from_pretrained(roberta_source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    model = BertForMaskedLM(config)
    lines = udhr_lines("spa")
    train, held = lines[:-5], lines[-5:]
    before = score_documents_pll(model, tok, held, window=64).bits_per_byte
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    batch = tok(train, truncation=True, max_length=64, padding=True, return_tensors="pt")
    model.train()
    for _ in range(40):
        ids = batch["input_ids"].clone()
        pick = (torch.rand(ids.shape, generator=gen) < 0.15) & (batch["attention_mask"] == 1)
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        ids[pick] = tok.mask_token_id
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = score_documents_pll(model, tok, held, window=64).bits_per_byte
    assert after < 0.8 * before


def test_pll_refuses_bad_inputs(mlm, tmp_path):
    model, tok = mlm
    with pytest.raises(CorpusError, match="no held-out documents"):
        score_documents_pll(model, tok, [], window=128)
    from transformers import LlamaConfig, LlamaForCausalLM

    causal = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ConfigError, match="needs a masked LM"):
        score_documents_pll(causal, tok, DOCS, window=128)
    no_mask = AutoTokenizer.from_pretrained(tok.name_or_path)
    no_mask.mask_token = None
    with pytest.raises(TokenizerError, match="no mask token"):
        score_documents_pll(model, no_mask, DOCS, window=128)
    with pytest.raises(ConfigError, match="leaves no room"):
        score_documents_pll(model, tok, DOCS, window=2)


def test_tokenizer_without_word_ids_is_refused(mlm):
    """A Python-only ("slow") tokenizer has no word_ids: PLL-word-l2r cannot find a token's word."""
    model, tok = mlm

    class Slow:
        is_fast = False
        mask_token_id = tok.mask_token_id

    with pytest.raises(TokenizerError, match="slow tokenizer"):
        score_documents_pll(model, Slow(), ["hola mundo"], window=16)


def test_a_broken_model_still_gets_its_scores(mlm):
    """Huge NLL (a broken init: rows with norms in the hundreds) gives inf perplexities, not an OverflowError."""
    import copy

    from vocabshift.eval.lm import perplexity

    assert perplexity(710.0 * 3, 3) == math.inf and perplexity(2.0, 2) == pytest.approx(math.e)
    model, tok = mlm
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.cls.predictions.decoder.bias.mul_(0)
        broken.get_input_embeddings().weight.mul_(1e5)  # tied: the output rows too
    result = score_documents_pll(broken, tok, DOCS[:1], window=128)
    assert math.isfinite(result.bits_per_byte) and result.bits_per_byte > 100
    assert result.word_perplexity == math.inf


def test_vocabshift_eval_compares_two_masked_lms_on_the_same_bytes(mlm, tmp_path):
    """`vocabshift eval` on an encoder and its baseline: per-document PLL for both, a paired verdict, a report."""
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.eval import EvalConfig, evaluate_model

    model, tok = mlm
    for name, seed in (("old", 0), ("new", 1)):
        torch.manual_seed(seed)
        BertForMaskedLM(model.config).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    corpus = tmp_path / "spa.txt"
    corpus.write_text("\n".join(udhr_lines("spa")[:20]) + "\n", encoding="utf-8")
    result = evaluate_model(EvalConfig(model=str(tmp_path / "new"), baseline=str(tmp_path / "old"),
                                       corpus=corpus_from_paths(corpus), max_documents=20, speed_words=50,
                                       speed_repeats=1, bootstrap=200, out=str(tmp_path / "report"), device="cpu"))
    old, new = result.lm["old"], result.lm["new"]
    assert old.protocol == new.protocol == "document" and old.pseudo and new.pseudo
    assert old.per_document.bytes == new.per_document.bytes and old.documents == 20
    assert result.comparison is not None and result.comparison.verdict
    assert any("pseudo-log-likelihood" in n for n in result.notes)
    assert (tmp_path / "report" / "report.md").exists()
