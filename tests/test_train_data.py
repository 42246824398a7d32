"""Tests for vocabshift.train.data: packing, held-out split, masking, objectives, resuming, errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import udhr_lines
from vocabshift.corpus import CorpusConfig, CorpusSource, corpus_from_paths, iter_corpus
from vocabshift.data import sample_path
from vocabshift.errors import ConfigError, CorpusError
from vocabshift.train.data import (
    IGNORE_INDEX,
    DataConfig,
    PackedStream,
    bits_per_byte,
    build_eval_set,
    resolve_objective,
)

SPA = sample_path("udhr.spa.txt")


@pytest.fixture(scope="module")
def bert(minilm_source):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_source))


@pytest.fixture(scope="module")
def smol(smollm2_source):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_source))


def spa_corpus(**kwargs) -> CorpusConfig:
    return corpus_from_paths(SPA, **kwargs)


def mixed_corpus() -> CorpusConfig:
    """Three languages mixed with temperature smoothing: the small ones are restarted (upsampled)."""
    return CorpusConfig(
        sources=[CorpusSource([str(SPA)], lang="spa"),
                 CorpusSource([str(sample_path("udhr.yor.txt"))], lang="yor"),
                 CorpusSource([str(sample_path("udhr.zul.txt"))], lang="zul")],
        temperature=3.0, seed=7)


def config(**kwargs) -> DataConfig:
    defaults = {"seq_len": 64, "eval_documents": 5, "num_workers": 0, "tokenize_batch_documents": 8}
    return DataConfig(**{**defaults, **kwargs})


def take(stream: PackedStream, batch_size: int, n: int | None = None) -> list[dict[str, torch.Tensor]]:
    out = []
    iterator = stream.batches(batch_size)
    for batch in iterator:
        out.append(batch)
        if n is not None and len(out) == n:
            break
    stream.close()
    return out


def original_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The unmasked tokens of a batch: labels where predicted, inputs elsewhere."""
    return torch.where(batch["labels"] == IGNORE_INDEX, batch["input_ids"], batch["labels"])


def same_batches(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_packing_reproduces_the_token_stream_without_padding(bert, smol, objective):
    tok = bert if objective == "mlm" else smol
    cfg = config(seq_len=100, eval_documents=5)
    batches = take(PackedStream(tok, spa_corpus(), cfg, objective, epochs=1), 8)
    for batch in batches:
        assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[1] == 100
        assert batch["attention_mask"].all()  # no padding anywhere
    produced = torch.cat([original_ids(b) for b in batches]).flatten().tolist()

    # Every document that is not held out, as the tokenizer encodes it, with an eos after each for CLM.
    expected: list[int] = []
    for doc in udhr_lines("spa")[5:]:
        ids = tok(doc)["input_ids"]
        expected += ids + [tok.eos_token_id] if objective == "clm" else ids
    if objective == "mlm":
        assert expected[0] == tok.cls_token_id and expected[-1] == tok.sep_token_id
    assert len(produced) == len(expected) // 100 * 100  # only the final partial block is dropped
    assert produced == expected[:len(produced)]


def test_clm_labels_equal_inputs_and_documents_end_with_eos(smol):
    batch = take(PackedStream(smol, spa_corpus(), config(seq_len=256), "clm"), 4, 1)[0]
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert batch["labels"] is not batch["input_ids"]
    n_eos = int((batch["input_ids"] == smol.eos_token_id).sum())
    text = smol.decode(batch["input_ids"].flatten().tolist())
    assert n_eos >= 3 and text.count(smol.eos_token) == n_eos


def test_llama_style_tokenizer_gets_bos_and_eos_per_document(llama2_json_source):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(llama2_json_source), add_bos_token=True)  # as Llama-2 ships
    assert tok("hola")["input_ids"][0] == tok.bos_token_id
    ids = take(PackedStream(tok, spa_corpus(), config(seq_len=512), "clm"), 2, 1)[0]["input_ids"].flatten().tolist()
    assert ids[0] == tok.bos_token_id
    # Every eos is followed by the bos of the next document.
    after_eos = [ids[i + 1] for i, t in enumerate(ids[:-1]) if t == tok.eos_token_id]
    assert after_eos and all(t == tok.bos_token_id for t in after_eos)


@pytest.mark.parametrize("source", ["roberta_source", "xlmr_source"])
def test_encoder_families_wrap_documents_and_mask_whole_words(source, request):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(request.getfixturevalue(source)))
    cfg = config(seq_len=128, whole_word_masking=True)
    batch = take(PackedStream(tok, spa_corpus(), cfg, "mlm"), 4, 1)[0]
    ids = original_ids(batch).flatten().tolist()
    assert ids[0] == tok.cls_token_id  # <s> from the post-processor
    after_sep = [ids[i + 1] for i, t in enumerate(ids[:-1]) if t == tok.sep_token_id]
    assert after_sep and set(after_sep) == {tok.cls_token_id}  # </s><s> between documents
    assert (batch["input_ids"] == tok.mask_token_id).any()


def test_tokenizer_can_be_a_path_and_truncation_in_tokenizer_json_is_ignored(minilm_source, bert):
    # MiniLM's tokenizer.json truncates at 128 tokens; packing must see whole documents.
    long_doc = max(udhr_lines("spa"), key=len)
    assert len(bert(long_doc)["input_ids"]) > 128
    a = take(PackedStream(minilm_source, spa_corpus(), config(), "mlm"), 4, 2)
    b = take(PackedStream(bert, spa_corpus(), config(), "mlm"), 4, 2)
    assert same_batches(a, b)


def test_finite_stream_ends_with_a_short_batch(bert):
    cfg = config(seq_len=128, eval_documents=0)
    batches = take(PackedStream(bert, spa_corpus(), cfg, "mlm", epochs=2), 16)
    total = sum(len(bert(d)["input_ids"]) for d in udhr_lines("spa"))
    n_sequences = sum(len(b["input_ids"]) for b in batches)
    # Tokens carry over from epoch 1 into epoch 2; only the very last partial block is dropped.
    assert n_sequences == 2 * total // 128
    assert len(batches[-1]["input_ids"]) == n_sequences % 16 or n_sequences % 16 == 0


# --------------------------------------------------------------------------------------------------
# Held-out split


def test_held_out_documents_never_reach_training(smol, tmp_path):
    # A mixture whose small sources restart, plus a source that repeats all of the zul source verbatim.
    corpus = mixed_corpus()
    extra = tmp_path / "dup.txt"
    extra.write_text("\n".join(udhr_lines("eng")[:10] + udhr_lines("zul")) + "\n", encoding="utf-8")
    corpus.sources.append(CorpusSource([str(extra)], lang="eng"))
    held_out = list(iter_corpus(corpus))[:12]
    assert set(held_out) & set(udhr_lines("zul"))  # some held-out documents have duplicates elsewhere

    cfg = config(seq_len=128, eval_documents=12)
    stream = PackedStream(smol, corpus, cfg, "clm", epochs=3)
    text = smol.decode(torch.cat([b["input_ids"] for b in take(stream, 16)]).flatten().tolist())
    for doc in held_out:
        assert doc not in text
    assert any(line in text for line in udhr_lines("eng")[:10] if line not in held_out)  # that source is read

    eval_set = build_eval_set(smol, corpus, cfg, "clm")
    eval_text = smol.decode(eval_set.sequences.flatten().tolist())
    assert held_out[0] in eval_text and held_out[1] in eval_text
    eval_stream = take(PackedStream(smol, corpus, cfg, "clm", split="eval", epochs=1), 4)
    assert smol.decode(eval_stream[0]["input_ids"].flatten().tolist()) in eval_text


def test_eval_set_bytes_and_predicted_tokens(smol):
    cfg = config(seq_len=128, eval_documents=6, eval_max_sequences=3)
    eval_set = build_eval_set(smol, spa_corpus(), cfg, "clm")
    assert eval_set.sequences.shape == (3, 128)
    assert eval_set.n_predicted_tokens == 3 * 127
    # Byte-level BPE decodes exactly: the covered text is the decoded sequences without separators.
    ids = [t for t in eval_set.sequences.flatten().tolist() if t != smol.eos_token_id]
    covered = smol.decode(ids)
    assert eval_set.n_bytes == len(covered.encode("utf-8"))
    assert covered.startswith(udhr_lines("spa")[0])
    batches = list(eval_set.batches(2))
    assert [len(b["input_ids"]) for b in batches] == [2, 1]
    assert math.isclose(eval_set.bits_per_byte(100.0), 100.0 / math.log(2) / eval_set.n_bytes)


def test_eval_set_mlm_is_deterministic_and_masked(bert):
    cfg = config(seq_len=64, eval_documents=10, eval_max_sequences=4)
    a = build_eval_set(bert, spa_corpus(), cfg, "mlm")
    b = build_eval_set(bert, spa_corpus(), cfg, "mlm")
    assert a.n_predicted_tokens == int((a.labels != IGNORE_INDEX).sum()) > 0
    assert same_batches(list(a.batches(3)), list(b.batches(3)))
    assert build_eval_set(bert, spa_corpus(), config(eval_documents=0), "mlm") is None


def test_bits_per_byte_hand_computed():
    # 4 bytes at 2 bits each = 8 bits = 8 ln 2 nats.
    assert bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)
    assert bits_per_byte(0.0, 10) == 0.0
    with pytest.raises(ConfigError, match="positive number of bytes"):
        bits_per_byte(1.0, 0)


# --------------------------------------------------------------------------------------------------
# Masking


def test_mlm_masking_statistics(bert):
    cfg = config(seq_len=128, eval_documents=0)
    batches = take(PackedStream(bert, corpus_from_paths([SPA, sample_path("udhr.fra.txt")]), cfg, "mlm"), 16, 8)
    inputs = torch.cat([b["input_ids"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    original = original_ids({"input_ids": inputs, "labels": labels})
    special = torch.isin(original, torch.tensor(bert.all_special_ids))
    chosen = labels != IGNORE_INDEX

    assert not (chosen & special).any()  # special tokens are never predicted
    assert torch.equal(inputs[~chosen], original[~chosen])  # labels -100 exactly where nothing changed
    n = int((~special).sum())
    assert n > 15_000
    assert abs(int(chosen.sum()) / n - 0.15) < 0.01
    masked = inputs[chosen] == bert.mask_token_id
    kept = inputs[chosen] == original[chosen]
    replaced = ~masked & ~kept
    share = [float(x.float().mean()) for x in (masked, replaced, kept)]
    assert share == pytest.approx([0.8, 0.1, 0.1], abs=0.025)
    assert not torch.isin(inputs[chosen][replaced], torch.tensor(bert.all_special_ids)).any()


def test_whole_word_masking_masks_complete_words(bert):
    from vocabshift.tokenization.surface import surface_forms

    initial = [f.word_initial for f in surface_forms(bert)]
    specials = set(bert.all_special_ids)
    cfg = config(seq_len=128, eval_documents=0, whole_word_masking=True)
    batches = take(PackedStream(bert, spa_corpus(), cfg, "mlm"), 8, 3)
    n_chosen = n_tokens = n_multi = 0
    for batch in batches:
        for ids, labels in zip(original_ids(batch).tolist(), batch["labels"].tolist(), strict=True):
            words: list[list[int]] = []  # positions of each word
            for i, t in enumerate(ids):
                if t in specials:
                    words.append([])
                elif not words or not words[-1] or initial[t] or i == 0:
                    words.append([i])
                else:
                    words[-1].append(i)
            for word in filter(None, words):
                picked = {labels[i] != IGNORE_INDEX for i in word}
                assert len(picked) == 1, f"word {[ids[i] for i in word]} is partly masked"
                n_multi += len(word) > 1 and picked == {True}
            n_chosen += sum(label != IGNORE_INDEX for label in labels)
            n_tokens += sum(t not in specials for t in ids)
    assert n_multi > 5  # multi-token words were masked as a whole
    assert 0.10 < n_chosen / n_tokens < 0.20


def test_masks_are_deterministic_and_independent_of_batch_size(bert):
    a = take(PackedStream(bert, spa_corpus(), config(), "mlm"), 4, 2)
    b = take(PackedStream(bert, spa_corpus(), config(), "mlm"), 2, 4)
    assert torch.equal(torch.cat([x["input_ids"] for x in a]), torch.cat([x["input_ids"] for x in b]))
    assert torch.equal(torch.cat([x["labels"] for x in a]), torch.cat([x["labels"] for x in b]))
    c = take(PackedStream(bert, spa_corpus(), config(seed=1), "mlm"), 4, 2)
    assert torch.equal(original_ids(a[0]), original_ids(c[0]))  # same tokens ...
    assert not torch.equal(a[0]["labels"], c[0]["labels"])  # ... other masks


def test_data_parallel_ranks_split_each_step(bert):
    whole = take(PackedStream(bert, spa_corpus(), config(), "mlm"), 4, 3)
    for rank in (0, 1):
        stream = PackedStream(bert, spa_corpus(), config(), "mlm")
        part = [b for _, b in zip(range(3), stream.batches(2, rank=rank, world_size=2), strict=False)]
        for mine, full in zip(part, whole, strict=True):
            assert torch.equal(mine["labels"], full["labels"][2 * rank:2 * rank + 2])
        assert stream.sequences_seen == 12  # the same state on every rank
        stream.close()


# --------------------------------------------------------------------------------------------------
# Resuming


RESUME_CASES = {
    "plain": ({}, spa_corpus),
    "epoch boundary": ({"seq_len": 128}, spa_corpus),  # 32 blocks of 128 pass the end of the corpus (~26)
    "replay": ({"replay": corpus_from_paths(sample_path("udhr.eng.txt")), "replay_weight": 0.3}, spa_corpus),
    "temperature mixing": ({}, mixed_corpus),
    "shuffle buffer": ({"shuffle_buffer": 5}, spa_corpus),
    "whole words": ({"whole_word_masking": True}, spa_corpus),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_gives_the_same_batches(bert, case):
    overrides, make_corpus = RESUME_CASES[case]
    cfg = config(**overrides)
    one_go = take(PackedStream(bert, make_corpus(), cfg, "mlm"), 8, 4)

    first = PackedStream(bert, make_corpus(), cfg, "mlm")
    head = take(first, 8, 2)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = PackedStream(bert, make_corpus(), cfg, "mlm")
    resumed.load_state_dict(state)
    tail = take(resumed, 8, 2)
    assert same_batches(head + tail, one_go)
    assert resumed.sequences_seen == 32 and resumed.tokens_seen == 32 * cfg.seq_len
    if case == "epoch boundary":
        assert state["positions"]["train"]["epoch"] == 0 and resumed.state_dict()["positions"]["train"]["epoch"] == 1
    if case == "replay":
        english = [row for b in one_go for row in original_ids(b) if " the " in bert.decode(row)]
        assert state["positions"]["replay"]["document"] > 0 and 2 <= len(english) <= 20


@pytest.mark.slow  # starts worker processes (the fork server imports torch once)
def test_resume_with_worker_processes_matches_in_process(smol):
    cfg = config(seq_len=128, num_workers=2, tokenize_batch_documents=4,
                 replay=corpus_from_paths(sample_path("udhr.eng.txt")), replay_weight=0.25)
    in_process = take(PackedStream(smol, mixed_corpus(), config(**{**cfg.__dict__, "num_workers": 0}), "clm"), 8, 4)
    first = PackedStream(smol, mixed_corpus(), cfg, "clm")
    head = take(first, 8, 2)
    resumed = PackedStream(smol, mixed_corpus(), cfg, "clm")
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert same_batches(head + take(resumed, 8, 2), in_process)


def test_a_second_batches_call_continues_the_stream(bert):
    one_go = take(PackedStream(bert, spa_corpus(), config(), "mlm"), 4, 4)
    stream = PackedStream(bert, spa_corpus(), config(), "mlm")
    assert same_batches(take(stream, 4, 2) + take(stream, 4, 2), one_go)


def test_resume_with_other_settings_is_refused(bert):
    stream = PackedStream(bert, spa_corpus(), config(), "mlm")
    take(stream, 4, 1)
    state = stream.state_dict()
    other = PackedStream(bert, spa_corpus(), config(seq_len=128), "mlm")
    with pytest.raises(ConfigError, match=r"seq_len=64 but this one has seq_len=128"):
        other.load_state_dict(state)
    with pytest.raises(ConfigError, match="not a data-stream state"):
        other.load_state_dict({"format": "something else"})


def test_resume_on_a_shrunken_corpus_is_refused(bert, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    stream = PackedStream(bert, corpus_from_paths(path), config(), "mlm")
    take(stream, 8, 3)
    state = stream.state_dict()
    path.write_text("\n".join(udhr_lines("spa")[:8]) + "\n", encoding="utf-8")
    resumed = PackedStream(bert, corpus_from_paths(path), config(), "mlm")
    resumed.load_state_dict(state)
    with pytest.raises(CorpusError, match="cannot resume: epoch 0 of the corpus has 8 documents"):
        take(resumed, 8, 1)


# --------------------------------------------------------------------------------------------------
# Objectives


def _tiny(name: str, **extra):
    import transformers

    if name.startswith("Bert"):
        cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=32, **extra)
    elif name.startswith("Llama"):
        cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=32)
    else:
        cfg = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    return getattr(transformers, name)(cfg)


def test_resolve_objective_auto_and_explicit():
    assert resolve_objective(_tiny("BertForMaskedLM"), "auto") == "mlm"
    assert resolve_objective(_tiny("BertForMaskedLM"), "mlm") == "mlm"
    assert resolve_objective(_tiny("LlamaForCausalLM"), "auto") == "clm"
    assert resolve_objective(_tiny("GPT2LMHeadModel"), "auto") == "clm"
    assert resolve_objective(_tiny("GPT2LMHeadModel"), "clm") == "clm"
    assert resolve_objective(_tiny("BertLMHeadModel", is_decoder=True), "auto") == "clm"
    # Configs alone: by architectures, or by model type and is_decoder.
    from transformers import BertConfig, LlamaConfig

    assert resolve_objective(LlamaConfig(), "auto") == "clm"
    assert resolve_objective(BertConfig(), "auto") == "mlm"
    assert resolve_objective(BertConfig(is_decoder=True), "auto") == "clm"
    assert resolve_objective(BertConfig(architectures=["BertForMaskedLM"]), "auto") == "mlm"


def test_resolve_objective_errors_name_the_model():
    with pytest.raises(ConfigError, match=r"needs a masked-LM head, but LlamaForCausalLM is a causal LM \(supports: clm\)"):
        resolve_objective(_tiny("LlamaForCausalLM"), "mlm")
    with pytest.raises(ConfigError, match=r"needs a causal-LM head, but BertForMaskedLM is a masked LM \(supports: mlm\)"):
        resolve_objective(_tiny("BertForMaskedLM"), "clm")
    with pytest.raises(ConfigError, match="BertModel has no language-model head.*AutoModelForMaskedLM"):
        resolve_objective(_tiny("BertModel"), "auto")
    with pytest.raises(ConfigError, match="BertModel has no language-model head"):
        resolve_objective(_tiny("BertModel"), "mlm")
    with pytest.raises(ConfigError, match="BertLMHeadModel has a causal LM head but config.is_decoder is False"):
        resolve_objective(_tiny("BertLMHeadModel"), "clm")
    with pytest.raises(ConfigError, match="objective must be one of auto, mlm, clm, got 'mask'"):
        resolve_objective(_tiny("BertForMaskedLM"), "mask")


# --------------------------------------------------------------------------------------------------
# Bad input


def test_corpus_shorter_than_one_sequence(bert, tmp_path):
    lines = udhr_lines("spa")[:6]
    path = tmp_path / "short.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kept = sum(len(bert(doc)["input_ids"]) for doc in lines[2:])
    with pytest.raises(CorpusError) as err:
        PackedStream(bert, corpus_from_paths(path), config(seq_len=2048, eval_documents=2), "mlm")
    assert (f"corpus has {kept} tokens after holding out 2 documents for evaluation; one sequence needs 2048 "
            "(seq_len) — give more text, a smaller --seq-len or fewer eval documents") in str(err.value)
    assert str(path) in str(err.value)
    with pytest.raises(CorpusError, match=r"corpus has 0 tokens after holding out 6 documents \(all of them\)"):
        PackedStream(bert, corpus_from_paths(path), config(eval_documents=200), "mlm")
    total = sum(len(bert(doc)["input_ids"]) for doc in lines)
    with pytest.raises(CorpusError, match=rf"corpus has {total} tokens; one sequence needs 2048 \(seq_len\)"):
        PackedStream(bert, corpus_from_paths(path), config(seq_len=2048, eval_documents=0), "mlm")
    with pytest.raises(CorpusError, match=r"the 2 evaluation documents have \d+ tokens; one evaluation sequence needs 2048"):
        build_eval_set(bert, corpus_from_paths(path), config(seq_len=2048, eval_documents=2), "mlm")
    with pytest.raises(CorpusError, match=r"replay corpus has \d+ tokens; one sequence needs 2048"):
        PackedStream(bert, spa_corpus(), config(seq_len=2048, eval_documents=0, replay=corpus_from_paths(path),
                                                replay_weight=0.1), "mlm")


def test_empty_corpus(bert, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        PackedStream(bert, corpus_from_paths(path), config(), "mlm")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seq_len": 4}, "seq_len must be an integer >= 8, got 4"),
    ({"mlm_probability": 0.0}, r"mlm_probability must be in \(0, 1\), got 0.0"),
    ({"mlm_probability": 1.0}, r"mlm_probability must be in \(0, 1\), got 1.0"),
    ({"objective": "mask"}, "objective must be one of auto, mlm, clm"),
    ({"replay_weight": 0.2}, "replay_weight is 0.2 but no replay corpus is set"),
    ({"replay": CorpusConfig(sources=[CorpusSource(["x.txt"])])}, "replay_weight is 0"),
    ({"replay_weight": 1.0}, r"replay_weight must be in \[0, 1\)"),
    ({"eval_documents": -1}, "eval_documents must be an integer >= 0"),
    ({"num_workers": -1}, "num_workers must be an integer >= 0"),
])
def test_bad_config_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


def test_config_round_trips_through_dict():
    cfg = DataConfig(seq_len=128, replay=corpus_from_paths("eng.txt"), replay_weight=0.1)
    again = DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.replay, CorpusConfig)
    with pytest.raises(ConfigError, match="did you mean 'seq_len'"):
        DataConfig.from_dict({"seq_length": 128})


def test_mlm_needs_a_mask_token_and_clm_an_eos(smol, bert):
    with pytest.raises(ConfigError, match=r"objective 'mlm' needs a mask token, but \w+ has none"):
        PackedStream(smol, spa_corpus(), config(), "mlm")
    from vocabshift.errors import TokenizerError

    with pytest.raises(TokenizerError, match="has no eos token"):
        PackedStream(bert, spa_corpus(), config(), "clm")
    with pytest.raises(ConfigError, match="resolve 'auto' with resolve_objective"):
        PackedStream(bert, spa_corpus(), config(), "auto")


def test_missing_tokenizer_directory(tmp_path):
    from vocabshift.errors import TokenizerError

    with pytest.raises(TokenizerError, match=re.escape(f"{tmp_path / 'nope'}: no such tokenizer directory")):
        PackedStream(tmp_path / "nope", spa_corpus(), config(), "mlm")


def test_docs_section_exists():
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    assert "## Data" in text
