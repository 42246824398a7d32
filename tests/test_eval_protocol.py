"""The per-document protocol of ``vocabshift eval`` (lm-evaluation-harness's ``loglikelihood_rolling``),
the same-bytes invariant, the bootstrap and its verdict, bad input, and agreement with lm-eval itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from tests.test_train import pico_model
from vocabshift.corpus import corpus_from_paths, iter_corpus
from vocabshift.errors import ConfigError, CorpusError
from vocabshift.eval import EvalConfig, evaluate_model
from vocabshift.eval.bootstrap import (
    Interval,
    bits_per_byte_interval,
    compare_bits_per_byte,
    resample_bits_per_byte,
    verdict,
)
from vocabshift.eval.lm import count_words, rolling_windows, score_documents
from vocabshift.surgery.checkpoint import load_model

# Three documents and, for a window of 4 tokens, where the context of each token starts (an index into
# the document's tokens; None: from the prefix token), worked out by hand from lm-eval's windows.
# "...life and liberty" has 12 tokens t0..t11 (the test tokenizer: a 700-token English BPE):
#   stride 4 (disjoint, lm-eval's context_len=1): [P t0 t1 t2] -> t0..t3, [t3 t4 t5 t6] -> t4..t7,
#                                                 [t7 t8 t9 t10] -> t8..t11
#   stride 3: [P t0 t1 t2] -> t0..t3, [t2 t3 t4 t5] -> t4..t6, [t5 t6 t7 t8] -> t7..t9, [t7 t8 t9 t10] -> t10 t11
DOCS = ["Hola", "Everyone has the right to rest", "Everyone has the right to life and liberty"]
N_TOKENS = [3, 7, 12]
CONTEXT_STARTS = {
    4: [[None] * 3, [None] * 4 + [2] * 3, [None] * 4 + [3] * 4 + [7] * 4],
    3: [[None] * 3, [None] * 4 + [2] * 3, [None] * 4 + [2] * 3 + [5] * 3 + [7] * 2],
}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, roberta_source) -> Path:
    return pico_model("gpt2", roberta_source, tmp_path_factory.mktemp("gpt2") / "m")


@pytest.fixture(scope="module")
def spanish(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


def _token_by_token_nll(model, ids: list[int], prefix: int, starts: list[int | None]) -> float:
    """Sum of -log p(t_i | its context), one forward pass per token."""
    total = 0.0
    with torch.no_grad():
        for i, start in enumerate(starts):
            context = [prefix, *ids[:i]] if start is None else ids[start:i]
            logits = model(input_ids=torch.tensor([context])).logits[0, -1].double()
            total -= float(torch.log_softmax(logits, dim=-1)[ids[i]])
    return total


# -- rolling windows ---------------------------------------------------------------------------------------


def test_rolling_windows_by_hand():
    # Spans over [P] + tokens: read seq[start:end], score its last `scored` positions.
    assert rolling_windows(0, 4, 4) == []
    assert rolling_windows(3, 4, 4) == [(0, 3, 3)]
    assert rolling_windows(12, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 12, 4)]
    assert rolling_windows(12, 4, 3) == [(0, 4, 4), (3, 7, 3), (6, 10, 3), (8, 12, 2)]
    for n in range(30):
        for window in range(2, 7):
            for stride in range(1, window + 1):
                spans = rolling_windows(n, window, stride)
                assert all(end - start <= window for start, end, _ in spans)
                scored = [j for _, end, k in spans for j in range(end - k + 1, end + 1)]
                assert scored == list(range(1, n + 1))  # every token predicted exactly once, in order


# -- per-document scoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("stride", [4, 3])
def test_per_document_equals_token_by_token(request, kind, stride):
    path = request.getfixturevalue(kind)
    model, tok = load_model(path).eval(), AutoTokenizer.from_pretrained(path)
    encoded = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    assert [len(ids) for ids in encoded] == N_TOKENS  # the hand-worked windows assume these lengths
    r = score_documents(model, tok, DOCS, window=4, stride=stride, batch_size=3)
    assert r.prefix_token_id == tok.bos_token_id == 0
    expected = [_token_by_token_nll(model, ids, tok.bos_token_id, starts)
                for ids, starts in zip(encoded, CONTEXT_STARTS[stride], strict=True)]
    assert r.per_document.nll == pytest.approx(expected, rel=1e-5)
    assert r.per_document.tokens == N_TOKENS and r.predicted_tokens == sum(N_TOKENS)
    n_bytes = [len(d.encode("utf-8")) for d in DOCS]
    assert r.per_document.bytes == n_bytes and r.bytes == sum(n_bytes)
    assert r.per_document.words == [1, 6, 8] and r.words == 15
    total = sum(expected)
    assert r.total_nll_nats == pytest.approx(total, rel=1e-5)
    assert r.bits_per_byte == pytest.approx(total / sum(n_bytes) / math.log(2), rel=1e-5)
    assert r.byte_perplexity == pytest.approx(math.exp(total / sum(n_bytes)), rel=1e-5)
    assert r.word_perplexity == pytest.approx(math.exp(total / 15), rel=1e-5)
    assert r.windows == 1 + 2 + (3 if stride == 4 else 4)


def test_documents_do_not_see_each_other_and_window_covers_short_ones(llama):
    """A document's score does not depend on the others, and a window longer than it changes nothing."""
    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    together = score_documents(model, tok, DOCS, window=256, batch_size=2)
    alone = [score_documents(model, tok, [d], window=256).total_nll_nats for d in DOCS]
    assert together.per_document.nll == pytest.approx(alone, rel=1e-5)
    assert together.windows == 3 and together.window == together.stride == 256
    short = score_documents(model, tok, DOCS[:1], window=4)
    assert short.total_nll_nats == pytest.approx(alone[0], rel=1e-5)


def test_word_count_is_lm_evals():
    assert count_words("a b  c") == 3
    assert count_words("Hola") == 1


# -- same bytes --------------------------------------------------------------------------------------------


def test_same_bytes_for_models_with_different_tokenizers(tmp_path, llama, llama_other, spanish):
    out = tmp_path / "report"
    result = evaluate_model(EvalConfig(model=str(llama_other), baseline=str(llama),
                                       corpus=corpus_from_paths(spanish), max_documents=15, speed_words=50,
                                       speed_repeats=1, neighbours=0, device="cpu", bootstrap=200, out=str(out)))
    old, new = result.lm["old"], result.lm["new"]
    docs = list(iter_corpus(corpus_from_paths(spanish, max_documents=15)))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    assert old.per_document.bytes == new.per_document.bytes
    assert old.bytes == new.bytes == result.comparison.bytes == n_bytes and old.documents == new.documents == 15
    assert old.words == new.words == sum(count_words(d) for d in docs)
    assert old.predicted_tokens != new.predicted_tokens  # different tokenizers, same text
    data = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert data["protocol"] == "document" and data["comparison"]["bytes"] == n_bytes
    assert data["lm"]["new"]["per_document"]["bytes"] == data["lm"]["old"]["per_document"]["bytes"]
    assert data["comparison"]["difference"]["resamples"] == 200
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"the same {n_bytes:,} bytes for both" in report and "95% interval" in report
    assert result.comparison.verdict in report


def test_every_document_is_scored_by_default(tmp_path, llama):
    """No --max-documents: every held-out document is read and scored, not a fixed count."""
    lines = udhr_lines("spa")[:37]
    corpus = tmp_path / "held.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = EvalConfig(model=str(llama), baseline=str(llama), corpus=corpus_from_paths(corpus), speed_words=20,
                        speed_repeats=1, speed_max_seconds=1, neighbours=0, device="cpu", bootstrap=0)
    assert config.max_documents is None
    result = evaluate_model(config)
    assert result.lm["new"].documents == result.lm["old"].documents == len(lines)
    assert result.lm["new"].bytes == sum(len(line.encode("utf-8")) for line in lines)
    with pytest.raises(ConfigError, match="max_documents"):
        EvalConfig(model=str(llama), corpus=corpus_from_paths(corpus), max_documents=0)


def test_cli_protocol_stride_and_bootstrap(capsys, tmp_path, llama, spanish):
    code, stdout, err = run_cli(capsys, "eval", "--model", llama, "--baseline", llama, "--corpus", spanish, "--json",
                                "--max-documents", 8, "--seq-len", 16, "--stride", 8, "--bootstrap", 100,
                                "--speed-words", 30, "--speed-repeats", 1, "--neighbours", 0, "--device", "cpu")
    assert code == 0, err
    data = json.loads(stdout)
    new = data["lm"]["new"]
    assert new["protocol"] == "document" and new["window"] == 16 and new["stride"] == 8 and new["documents"] == 8
    assert new["windows"] > 8  # UDHR lines are longer than 16 tokens: rolling windows
    # The same model as its own baseline: a difference of exactly 0, within noise.
    assert data["comparison"]["difference"]["estimate"] == 0 and data["comparison"]["verdict"] == "within noise"
    code, stdout, err = run_cli(capsys, "eval", "--model", llama, "--corpus", spanish, "--json", "--protocol",
                                "packed", "--max-documents", 8, "--speed-words", 30, "--speed-repeats", 1,
                                "--device", "cpu")
    assert code == 0, err
    assert json.loads(stdout)["lm"]["new"]["protocol"] == "packed"


# -- bootstrap ---------------------------------------------------------------------------------------------


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_bytes = rng.integers(20, 400, size=n).astype(float)
    nll = n_bytes * math.log(2) * rng.normal(2.0, 0.4, size=n).clip(0.5)
    return nll, n_bytes


def test_bootstrap_is_seeded_and_reproducible():
    nll, n_bytes = _synthetic(50)
    a = resample_bits_per_byte(nll, n_bytes, resamples=300, seed=7)
    b = resample_bits_per_byte(nll, n_bytes, resamples=300, seed=7)
    c = resample_bits_per_byte(nll, n_bytes, resamples=300, seed=8)
    assert a.shape == (300,) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert bits_per_byte_interval(nll, n_bytes, seed=3) == bits_per_byte_interval(nll, n_bytes, seed=3)


def test_bootstrap_is_a_ratio_of_sums_and_contains_the_estimate():
    # Every document at exactly 1.5 bits per byte: every resample is 1.5, whatever it draws.
    n_bytes = np.array([10.0, 200.0, 35.0])
    same = resample_bits_per_byte(1.5 * math.log(2) * n_bytes, n_bytes, resamples=50)
    assert np.allclose(same, 1.5)
    nll, n_bytes = _synthetic(200)
    interval = bits_per_byte_interval(nll, n_bytes, resamples=1000, seed=0)
    assert interval.estimate == pytest.approx(nll.sum() / n_bytes.sum() / math.log(2))  # not a mean of ratios
    assert interval.low < interval.estimate < interval.high and interval.resamples == 1000
    ratios = nll / n_bytes / math.log(2)
    samples = resample_bits_per_byte(nll, n_bytes, resamples=1000, seed=0)
    assert ratios.min() <= samples.min() and samples.max() <= ratios.max()


def test_interval_narrows_with_more_documents():
    widths = []
    for n in (20, 200, 2000):
        nll, n_bytes = _synthetic(n, seed=1)
        i = bits_per_byte_interval(nll, n_bytes, resamples=500, seed=0)
        widths.append(i.high - i.low)
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[0] / widths[2] > 5  # about sqrt(100) = 10


def test_paired_difference_uses_the_same_documents():
    """A model better by exactly 0.1 bits on every byte: the paired interval is [-0.1, -0.1], although each
    model's own interval is far wider than 0.1 (unpaired intervals would overlap)."""
    nll, n_bytes = _synthetic(30, seed=2)
    better = nll - 0.1 * math.log(2) * n_bytes
    c = compare_bits_per_byte(nll, better, n_bytes, resamples=500, seed=0)
    assert c.difference.low == pytest.approx(-0.1) and c.difference.high == pytest.approx(-0.1)
    assert c.old.high - c.old.low > 0.2 and c.new.low < c.old.high  # the unpaired intervals overlap
    assert c.verdict == "better" and c.documents == 30 and c.bytes == int(n_bytes.sum())
    assert compare_bits_per_byte(better, nll, n_bytes, resamples=500).verdict == "worse"
    noisy = nll * np.random.default_rng(5).normal(1.0, 0.05, size=30)
    c = compare_bits_per_byte(nll, noisy, n_bytes, resamples=500)
    assert c.verdict == "within noise" and c.difference.low < 0 < c.difference.high


def test_verdict_rule():
    def iv(low: float, high: float) -> Interval:
        return Interval(estimate=(low + high) / 2, low=low, high=high, confidence=0.95, resamples=1000, seed=0)

    assert verdict(iv(-0.5, -0.1)) == "better"
    assert verdict(iv(0.1, 0.3)) == "worse"
    assert verdict(iv(-0.2, 0.05)) == "within noise"
    assert verdict(iv(-0.2, 0.0)) == "within noise"  # touching 0 is not "entirely below"
    # The point estimate alone never decides: a negative estimate with an interval across 0 is noise.
    assert verdict(Interval(estimate=-0.3, low=-0.6, high=0.01, confidence=0.95, resamples=1000, seed=0)) \
        == "within noise"


# -- bad input ---------------------------------------------------------------------------------------------


def test_no_held_out_documents(tmp_path, llama):
    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    with pytest.raises(CorpusError, match="no held-out documents"):
        score_documents(model, tok, [], window=8)
    # A corpus that holds nothing once capped: refused before any model is scored, nothing written.
    corpus = tmp_path / "c.txt"
    corpus.write_text("Everyone has the right to life.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no document"):
        evaluate_model(EvalConfig(model=str(llama), corpus=corpus_from_paths(corpus, max_bytes=4), device="cpu",
                                  out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_stride_zero_and_small_windows_are_refused(capsys, tmp_path, llama, spanish):
    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    long_doc = [DOCS[2]]  # 12 tokens: longer than a window of 4
    with pytest.raises(ConfigError, match="stride must be between 1 and the window"):
        score_documents(model, tok, long_doc, window=4, stride=0)
    with pytest.raises(ConfigError, match="stride must be between 1 and the window"):
        score_documents(model, tok, long_doc, window=4, stride=5)
    with pytest.raises(ConfigError, match="at least 2 tokens"):
        score_documents(model, tok, long_doc, window=1)
    with pytest.raises(ConfigError, match="stride must be an integer >= 1"):
        EvalConfig(model=str(llama), corpus=corpus_from_paths(spanish), stride=0)
    with pytest.raises(ConfigError, match="stride must be between 1 and the window"):
        EvalConfig(model=str(llama), corpus=corpus_from_paths(spanish), seq_len=16, stride=17)
    with pytest.raises(ConfigError, match="protocol must be one of"):
        EvalConfig(model=str(llama), corpus=corpus_from_paths(spanish), protocol="rolling")
    # Without --seq-len the window is the model's 256 positions: a larger stride fails before loading weights.
    with pytest.raises(ConfigError, match="256 tokens"):
        evaluate_model(EvalConfig(model=str(llama), corpus=corpus_from_paths(spanish), stride=300, device="cpu"))
    capsys.readouterr()  # the weight-loading bars above
    code, _, err = run_cli(capsys, "eval", "--model", llama, "--corpus", spanish, "--stride", 0, "--out",
                           tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "stride" in err
    assert not (tmp_path / "out").exists()


def test_masked_lm_goes_to_the_pseudo_log_likelihood_scorer(tmp_path, minilm_source):
    """score_documents is the causal scorer; a masked LM (MiniLM's WordPiece) gets score_documents_pll."""
    from vocabshift.eval.lm import score_documents_pll

    path = pico_model("bert", minilm_source, tmp_path / "bert")
    model, tok = load_model(path), AutoTokenizer.from_pretrained(path)
    with pytest.raises(ConfigError, match="causal LM.*score_documents_pll"):
        score_documents(model, tok, DOCS, window=16)
    result = score_documents_pll(model, tok, DOCS, window=16)
    assert result.pseudo and result.per_document.bytes == [len(d.encode("utf-8")) for d in DOCS]


# -- agreement with lm-evaluation-harness ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [8, 256])
def test_agrees_with_lm_evaluation_harness(monkeypatch, llama, max_length):
    """lm-eval's HFLM.loglikelihood_rolling on the same model and documents gives the same NLL per document.

    ``add_bos_token=False``: lm-eval then encodes without the tokenizer's special tokens, as vocabshift does
    (its default encodes with them, and this test tokenizer's post-processor adds <s> ... </s>).
    max_length 8 exercises the rolling windows; 256 (the model's positions, lm-eval's default) does not.
    """
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    docs = [*DOCS, " ".join(udhr_lines("eng")[:3])]
    harness = HFLM(pretrained=str(llama), backend="causal", device="cpu", batch_size=2, max_length=max_length,
                   add_bos_token=False, dtype="float32")
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(d,), idx=i)
                for i, d in enumerate(docs)]
    theirs = -np.array(harness.loglikelihood_rolling(requests, disable_tqdm=True), dtype=np.float64)
    ours = score_documents(load_model(llama), AutoTokenizer.from_pretrained(llama), docs, window=max_length)
    assert ours.window == harness.max_length and ours.prefix_token_id == harness.prefix_token_id
    assert ours.per_document.nll == pytest.approx(theirs.tolist(), rel=5e-3)
    their_bpb = theirs.sum() / sum(len(d.encode("utf-8")) for d in docs) / math.log(2)
    assert ours.bits_per_byte == pytest.approx(their_bpb, rel=5e-3)
