"""The init stage end to end: pico models with real tokenizers, rows checked against the methods' definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, InitError, VectorsError
from vocabshift.init.apply import (
    InitConfig,
    decompositions,
    init_model,
    match_shared,
    surface_key,
)
from vocabshift.tokenization.surface import Surface, surface_forms
from vocabshift.tokenization.train import train_tokenizer


def _pico_llama(tokenizer_dir: Path, directory: Path, tied: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _pico_bert_mlm(tokenizer_dir: Path, directory: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, pad_token_id=tok.pad_token_id))
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def spanish_file(tmp_path_factory) -> Path:
    import gzip
    import itertools

    from vocabshift.data import sample_path

    with gzip.open(sample_path("bible.spa.txt.gz"), "rt", encoding="utf-8") as f:
        bible = [line.rstrip("\n") for line in itertools.islice(f, 3000)]
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa") + bible) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def target_bpe(tmp_path_factory, roberta_source, spanish_file) -> Path:
    """A Spanish byte-level BPE in the RoBERTa-style source's family (same specials first)."""
    out = tmp_path_factory.mktemp("tgt") / "tok"
    train_tokenizer(TokenizerTrainConfig(source=str(roberta_source), corpus=corpus_from_paths([spanish_file]),
                                         vocab_size=600, out=str(out), show_progress=False))
    return out


@pytest.fixture(scope="module")
def llama_untied(tmp_path_factory, roberta_source) -> Path:
    return _pico_llama(roberta_source, tmp_path_factory.mktemp("llu") / "m", tied=False)


@pytest.fixture(scope="module")
def llama_tied(tmp_path_factory, roberta_source) -> Path:
    return _pico_llama(roberta_source, tmp_path_factory.mktemp("llt") / "m", tied=True)


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory, roberta_source) -> Path:
    return _pico_bert_mlm(roberta_source, tmp_path_factory.mktemp("bert") / "m")


def _report(out: Path) -> dict:
    return json.loads((out / "init_report.json").read_text())


def test_surface_key_and_overlap_matching():
    src = [Surface("<s>", False, "special"), Surface("la", True, "normal"), Surface("la", False, "normal"),
           Surface("\ufffd", False, "partial", b"\xc3"), Surface("casa", True, "normal")]
    tgt = [Surface("<s>", False, "special"), Surface("casa", True, "normal"), Surface("la", False, "normal"),
           Surface("\ufffd", False, "partial", b"\xc3"), Surface("\ufffd", False, "partial", b"\xc4"),
           Surface("perro", True, "normal")]
    assert surface_key(src[0]) is None  # specials are matched by role, never by surface
    assert match_shared(src, tgt) == [-1, 4, 2, 3, -1, -1]


def test_fvt_decomposition_is_the_source_split(roberta_source):
    hf = AutoTokenizer.from_pretrained(roberta_source)
    surfaces = [Surface("derechos", True, "normal"), Surface("ción", False, "normal"),
                Surface("", False, "byte", b"\xc3"), Surface("<s>", False, "special")]
    dec = decompositions(hf, surfaces, [True] * 4)
    assert dec[0] == hf(" derechos", add_special_tokens=False)["input_ids"]
    assert dec[1] == hf("ción", add_special_tokens=False)["input_ids"]
    assert dec[2] == [hf.convert_tokens_to_ids("Ã")]  # the byte-level character that stands for 0xC3
    assert dec[3] == []


def test_mean_replacement_tied_llama(llama_tied, target_bpe, tmp_path):
    out = tmp_path / "out"
    init_model(InitConfig(method="mean", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out)))
    src = AutoModelForCausalLM.from_pretrained(llama_tied)
    new = AutoModelForCausalLM.from_pretrained(out)
    src_tok, tok = AutoTokenizer.from_pretrained(llama_tied), AutoTokenizer.from_pretrained(out)
    assert len(tok) == len(AutoTokenizer.from_pretrained(target_bpe)) == new.config.vocab_size
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(target_bpe).get_vocab()
    # tied stays tied
    assert new.get_output_embeddings().weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()
    id_map = json.loads((out / "id_map.json").read_text())["id_map"]
    w_src, w_new = src.get_input_embeddings().weight, new.get_input_embeddings().weight
    copied = [i for i, s in enumerate(id_map) if s >= 0]
    # mean copies no overlap (a pure baseline): only the specials, matched by role
    assert sorted(tok.convert_ids_to_tokens(copied)) == sorted(set(tok.all_special_tokens))
    for i in copied:
        assert torch.equal(w_new[i], w_src[id_map[i]])
    computed = torch.tensor([s < 0 for s in id_map])
    torch.testing.assert_close(w_new[computed], w_src.mean(0).expand(int(computed.sum()), -1), rtol=0, atol=1e-6)
    # config ids are the target tokenizer's
    assert new.config.eos_token_id == tok.eos_token_id and new.config.pad_token_id == tok.pad_token_id
    report = _report(out)
    assert report["matrices"]["input_embeddings"]["counts"]["copied"] == len(copied)
    assert report["mode"] == "replace" and "lm_head" not in report["matrices"]
    with torch.no_grad():  # the checkpoint runs
        logits = new(**tok("La casa es grande.", return_tensors="pt")).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(tok)
    del src_tok


def test_fvt_replacement_untied_head_follows_definition(llama_untied, target_bpe, tmp_path):
    out = tmp_path / "out"
    init_model(InitConfig(method="fvt", model=str(llama_untied), tokenizer=str(target_bpe), out=str(out)))
    src, new = AutoModelForCausalLM.from_pretrained(llama_untied), AutoModelForCausalLM.from_pretrained(out)
    src_tok, tok = AutoTokenizer.from_pretrained(llama_untied), AutoTokenizer.from_pretrained(out)
    id_map = json.loads((out / "id_map.json").read_text())["id_map"]
    shared = match_shared(surface_forms(src_tok), surface_forms(tok))
    n_shared = sum(1 for i, s in enumerate(shared) if s >= 0)
    assert n_shared > 100  # English and Spanish byte-level BPEs share many pieces
    for name in ("input", "output"):
        get = (lambda m: m.get_input_embeddings().weight) if name == "input" else (
            lambda m: m.get_output_embeddings().weight)
        w_src, w_new = get(src), get(new)
        for i, s in enumerate(shared):
            if s >= 0:  # FVT copies overlapping tokens
                assert id_map[i] == s and torch.equal(w_new[i], w_src[s])
        # a new token is the mean of the source rows of its source-tokenizer split
        new_ids = [i for i, s in enumerate(id_map) if s < 0 and tok.convert_ids_to_tokens(i).startswith("Ġ")]
        assert new_ids
        for i in new_ids[:20]:
            text = tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)])
            parts = src_tok(text, add_special_tokens=False)["input_ids"]
            torch.testing.assert_close(w_new[i], w_src[parts].mean(0), rtol=0, atol=1e-6)
    assert set(_report(out)["matrices"]) == {"input_embeddings", "lm_head"}


def test_mlm_bias_copied_for_shared_and_mean_elsewhere(bert_mlm, target_bpe, tmp_path):
    out = tmp_path / "out"
    init_model(InitConfig(method="fvt", model=str(bert_mlm), tokenizer=str(target_bpe), out=str(out)))
    src, new = AutoModelForMaskedLM.from_pretrained(bert_mlm), AutoModelForMaskedLM.from_pretrained(out)
    id_map = torch.tensor(json.loads((out / "id_map.json").read_text())["id_map"])
    b_src, b_new = src.cls.predictions.bias, new.cls.predictions.bias
    keep = id_map >= 0
    assert torch.equal(b_new[keep], b_src[id_map[keep]])
    torch.testing.assert_close(b_new[~keep], b_src.mean().expand(int((~keep).sum())), rtol=0, atol=1e-6)


def test_after_extend_kept_rows_stay_and_new_rows_are_computed(llama_untied, target_bpe, tmp_path):
    from vocabshift.vocabulary import ExtendConfig, extend

    ext = tmp_path / "ext"
    extend(ExtendConfig(model=str(llama_untied), tokenizer=str(target_bpe), out=str(ext)))
    out = tmp_path / "out"
    init_model(InitConfig(method="fvt", model=str(ext), out=str(out)))
    before, after = AutoModelForCausalLM.from_pretrained(ext), AutoModelForCausalLM.from_pretrained(out)
    data = json.loads((out / "id_map.json").read_text())
    assert data["init"] == "fvt" and data["id_map"] == json.loads((ext / "id_map.json").read_text())["id_map"]
    id_map = torch.tensor(data["id_map"])
    kept = id_map >= 0
    w0, w1 = before.get_input_embeddings().weight, after.get_input_embeddings().weight
    assert torch.equal(w1[kept], w0[kept])
    assert torch.equal(after.get_output_embeddings().weight[kept], before.get_output_embeddings().weight[kept])
    assert not torch.equal(w1[~kept], w0[~kept])  # extend's mean placeholders were replaced
    src_tok, tok = AutoTokenizer.from_pretrained(llama_untied), AutoTokenizer.from_pretrained(out)
    i = int(torch.nonzero(~kept)[0])
    parts = src_tok(tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]), add_special_tokens=False)["input_ids"]
    rows = [int(torch.nonzero(id_map == p)[0]) for p in parts]  # source id -> row in the extended model
    torch.testing.assert_close(w1[i], w0[rows].mean(0), rtol=0, atol=1e-6)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(ext).get_vocab()


def _state(directory: Path, cls=AutoModelForCausalLM) -> dict[str, torch.Tensor]:
    model = cls.from_pretrained(directory)
    return {k: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", ["tied", "untied", "bert", "after_extend", "padded"])
def test_lean_init_writes_what_the_in_memory_path_writes(case, llama_tied, llama_untied, bert_mlm, target_bpe,
                                                         tmp_path):
    from vocabshift.vocabulary import ExtendConfig, extend

    cls = AutoModelForMaskedLM if case == "bert" else AutoModelForCausalLM
    model = {"tied": llama_tied, "untied": llama_untied, "bert": bert_mlm, "padded": llama_tied}.get(case)
    cfg = {"method": "fvt", "tokenizer": str(target_bpe)}
    if case == "after_extend":
        model = tmp_path / "ext"
        extend(ExtendConfig(model=str(llama_untied), tokenizer=str(target_bpe), out=str(model)))
        cfg = {"method": "fvt"}
    if case == "padded":
        cfg["pad_to_multiple_of"] = 64
    lean, full = tmp_path / "lean", tmp_path / "full"
    init_model(InitConfig(model=str(model), out=str(lean), **cfg))
    init_model(InitConfig(model=str(model), out=str(full), in_memory=True, **cfg))
    assert _report(lean)["path"].startswith("lean") and _report(full)["path"].startswith("in memory")
    a, b = _state(lean, cls), _state(full, cls)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (lean, full))
    for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"):
        assert ca.get(key) == cb.get(key), key
    assert _report(lean)["parameters_after"] == _report(full)["parameters_after"]
    assert (json.loads((lean / "id_map.json").read_text()) == json.loads((full / "id_map.json").read_text()))


def test_lean_init_keeps_a_bf16_checkpoint_bf16_and_reads_only_vocabulary_tensors(llama_untied, target_bpe,
                                                                                  tmp_path, monkeypatch):
    import vocabshift.surgery.checkpoint as checkpoint

    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(llama_untied, dtype=torch.bfloat16).save_pretrained(bf16)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (llama_untied / f).exists():
            (bf16 / f).write_bytes((llama_untied / f).read_bytes())

    def no_full_load(*args, **kwargs):
        raise AssertionError("the lean path loaded the whole model")

    monkeypatch.setattr(checkpoint, "load_model", no_full_load)
    out = tmp_path / "out"
    init_model(InitConfig(method="fvt", model=str(bf16), tokenizer=str(target_bpe), out=str(out)))
    monkeypatch.undo()
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    src = AutoModelForCausalLM.from_pretrained(bf16, dtype=torch.bfloat16)
    new = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    id_map = torch.tensor(json.loads((out / "id_map.json").read_text())["id_map"])
    keep = id_map >= 0
    assert torch.equal(new.get_input_embeddings().weight[keep], src.get_input_embeddings().weight[id_map[keep]])
    # the body is streamed byte for byte
    assert torch.equal(new.model.layers[0].mlp.up_proj.weight, src.model.layers[0].mlp.up_proj.weight)


def _write_vec(path: Path, words: list[str], vectors: np.ndarray) -> Path:
    lines = [f"{len(words)} {vectors.shape[1]}"] + [w + " " + " ".join(f"{x:.6f}" for x in v)
                                                    for w, v in zip(words, vectors, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shared_space_vectors(tmp_path_factory):
    """English and Spanish word vectors that already share a space (translation pairs get the same vector)."""
    rng = np.random.default_rng(0)
    pairs = [("human", "humano"), ("rights", "derechos"), ("person", "persona"), ("freedom", "libertad"),
             ("law", "ley"), ("everyone", "toda"), ("dignity", "dignidad"), ("family", "familia"),
             ("work", "trabajo"), ("education", "educación"), ("the", "la"), ("of", "de")]
    vecs = rng.normal(size=(len(pairs), 16)).astype(np.float32)
    d = tmp_path_factory.mktemp("vec")
    en = _write_vec(d / "en.vec", [p[0] for p in pairs], vecs)
    es = _write_vec(d / "es.vec", [p[1] for p in pairs], vecs + 0.01 * rng.normal(size=vecs.shape).astype(np.float32))
    return en, es


@pytest.mark.parametrize("method", ["wechsel", "ofa"])
def test_vector_methods_with_aligned_vectors(method, llama_tied, target_bpe, shared_space_vectors, tmp_path):
    en, es = shared_space_vectors
    out = tmp_path / method
    cfg = dict(method=method, model=str(llama_tied), tokenizer=str(target_bpe), source_vectors=str(en),
               target_vectors=str(es), aligned=True, out=str(out))
    init_model(InitConfig(**cfg))
    report = _report(out)
    counts = report["matrices"]["input_embeddings"]["counts"]
    assert counts["computed"] > 0 and report["vectors"]["target_tokens_with_vector"] > 0
    w = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight
    assert torch.isfinite(w).all()
    again = tmp_path / f"{method}-again"
    init_model(InitConfig(**{**cfg, "out": str(again)}))
    assert torch.equal(AutoModelForCausalLM.from_pretrained(again).get_input_embeddings().weight, w)  # seeded
    if method == "ofa":
        assert (out / "factorized_embedding.safetensors").exists()


def test_focus_trains_token_vectors_on_target_text(llama_tied, target_bpe, spanish_file, tmp_path):
    out = tmp_path / "focus"
    init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe),
                          corpus=corpus_from_paths([spanish_file]), threads=1, out=str(out)))
    report = _report(out)
    assert report["copy_overlap"] is True and report["shared_tokens"] > 100
    assert report["matrices"]["input_embeddings"]["counts"]["computed"] > 0
    assert report["token_vectors"]["target_tokens_with_vector"] > 0
    assert report["method_config"]["fasttext_model"] == "cbow" and report["method_config"]["fasttext_dim"] == 100


def test_focus_takes_a_trained_token_model_and_rejects_another_tokenizers(llama_tied, target_bpe, spanish_file,
                                                                          tmp_path, capsys):
    from vocabshift.vectors import StaticVectors, save_vectors

    corpus = corpus_from_paths([spanish_file])
    tokens = tmp_path / "tokens.bin"
    code, stdout, _ = run_cli(capsys, "vectors", "train", "--corpus", spanish_file, "--tokenizer", target_bpe,
                              "--out", tokens, "--threads", "1", "--no-progress")
    assert code == 0 and "tokens, dim 100" in stdout
    given = tmp_path / "given"
    init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), out=str(given),
                          options={"token_vectors": str(tokens)}))
    # The same vectors trained inside init (same corpus, seed, one thread) give the same rows.
    trained = tmp_path / "trained"
    init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), corpus=corpus,
                          threads=1, out=str(trained)))
    weights = [AutoModelForCausalLM.from_pretrained(d).get_input_embeddings().weight for d in (given, trained)]
    assert torch.equal(weights[0], weights[1])
    assert _report(given)["token_vectors"]["source"] == str(tokens)

    # Vectors of another (larger) tokenizer, and word vectors that are not token-level at all.
    n = len(AutoTokenizer.from_pretrained(target_bpe))
    other = tmp_path / "other.vec"
    save_vectors(StaticVectors([f"t{n + 5}", "t3"], np.ones((2, 4), dtype=np.float32)), other)
    words = tmp_path / "words.vec"
    save_vectors(StaticVectors(["hola", "casa"], np.ones((2, 4), dtype=np.float32)), words)
    out = tmp_path / "bad"
    with pytest.raises(VectorsError, match=f"token id {n + 5} but the target tokenizer has {n} tokens"):
        init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out),
                              options={"token_vectors": str(other)}))
    with pytest.raises(VectorsError, match="not a token-level model"):
        init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out),
                              options={"token_vectors": str(words)}))
    with pytest.raises(ConfigError, match="fasttext_model must be cbow or skipgram"):
        InitConfig(method="focus", model=str(llama_tied), out=str(out), options={"fasttext_model": "glove"})
    assert not out.exists()


@pytest.mark.parametrize("cfg, message", [
    (dict(method="wechzel"), "wechsel"),
    (dict(method="mean", options={"nope": 1}), "options.nope"),
    (dict(method="wechsel", aligned=True, alignment="x"), "not both"),
])
def test_bad_config_fails_before_any_work(cfg, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        InitConfig(model="m", out=str(tmp_path / "o"), **cfg)
    assert not (tmp_path / "o").exists()


def test_bad_inputs_write_nothing(llama_tied, target_bpe, tmp_path):
    from vocabshift.vocabulary import PruneConfig, prune

    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="needs static vectors"):
        init_model(InitConfig(method="wechsel", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out)))
    with pytest.raises(ConfigError, match="give a corpus"):
        init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out)))
    with pytest.raises(ConfigError, match="--tokenizer"):
        init_model(InitConfig(method="mean", model=str(llama_tied), out=str(out)))
    pruned = tmp_path / "pruned"
    prune(PruneConfig(model=str(llama_tied), keep_scripts=["Latin"], out=str(pruned)))
    with pytest.raises(InitError, match="nothing to initialize"):
        init_model(InitConfig(method="mean", model=str(pruned), out=str(out)))
    assert not out.exists() and not list(tmp_path.glob(".o.tmp-*"))


def test_cli_init_and_list(llama_tied, target_bpe, tmp_path, capsys):
    code, listed, _ = run_cli(capsys, "init", "--list")
    assert code == 0
    for name in ("random", "mean", "fvt", "wechsel", "focus", "ofa", "factorized"):
        assert name in listed
    out = tmp_path / "cli"
    code, stdout, _ = run_cli(capsys, "init", "--method", "fvt", "--model", llama_tied, "--tokenizer", target_bpe,
                              "--out", out, "-o", "fallback=mean")
    assert code == 0 and (out / "init_report.json").exists() and "fvt (replace)" in stdout
    code, _, err = run_cli(capsys, "init", "--method", "wechzel", "--model", llama_tied, "--out", tmp_path / "x")
    assert code == 1 and err.startswith("error:") and "wechsel" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_wechsel_aligns_vectors_with_a_dictionary_first(llama_tied, target_bpe, shared_space_vectors, tmp_path):
    en, es = shared_space_vectors
    words = [line.split()[0] for line in es.read_text(encoding="utf-8").splitlines()[1:]]
    vecs = np.array([[float(x) for x in line.split()[1:]] for line in es.read_text(encoding="utf-8").splitlines()[1:]])
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))  # the target space is a rotation away
    rotated = _write_vec(tmp_path / "es_rot.vec", words, (vecs @ q).astype(np.float32))
    en_words = [line.split()[0] for line in en.read_text(encoding="utf-8").splitlines()[1:]]
    dictionary = tmp_path / "en-es.txt"
    dictionary.write_text("\n".join(f"{a}\t{b}" for a, b in zip(en_words, words, strict=True)) + "\n")
    out = tmp_path / "w"
    init_model(InitConfig(method="wechsel", model=str(llama_tied), tokenizer=str(target_bpe), source_vectors=str(en),
                          target_vectors=str(rotated), dictionary=str(dictionary), out=str(out)))
    report = _report(out)
    assert report["vectors"]["aligned_here"] and report["matrices"]["input_embeddings"]["counts"]["computed"] > 0


def test_vector_dimension_mismatch_is_refused(llama_tied, target_bpe, shared_space_vectors, tmp_path):
    from vocabshift.errors import VectorsError

    en, _ = shared_space_vectors
    es8 = _write_vec(tmp_path / "es8.vec", ["casa", "perro"], np.ones((2, 8), dtype=np.float32))
    out = tmp_path / "o"
    with pytest.raises(VectorsError, match="16.*8|8.*16"):
        init_model(InitConfig(method="wechsel", model=str(llama_tied), tokenizer=str(target_bpe),
                              source_vectors=str(en), target_vectors=str(es8), aligned=True, out=str(out)))
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Inputs prepared on a thread while the plan is made (vocabshift/init/early.py)


def _live_workers() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("vocabshift-")]


def _child_pids() -> list[int]:
    import os

    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_focus_vectors_trained_while_planning_equal_those_trained_after(llama_tied, target_bpe, spanish_file,
                                                                         tmp_path, monkeypatch):
    import vocabshift.init.apply as apply

    cfg = dict(method="focus", model=str(llama_tied), tokenizer=str(target_bpe),
               corpus=corpus_from_paths([spanish_file]), threads=1)
    early = tmp_path / "early"
    init_model(InitConfig(**cfg, out=str(early)))
    assert _report(early)["token_vectors"]["trained_while_planning"] is True
    monkeypatch.setattr(apply, "start_focus_token_vectors", lambda *a: None)
    after = tmp_path / "after"
    init_model(InitConfig(**cfg, out=str(after)))
    assert _report(after)["token_vectors"]["trained_while_planning"] is False
    weights = [AutoModelForCausalLM.from_pretrained(d).get_input_embeddings().weight for d in (early, after)]
    assert torch.equal(weights[0], weights[1])
    assert _report(early)["token_vectors"]["target_tokens_with_vector"] == \
        _report(after)["token_vectors"]["target_tokens_with_vector"]


def test_focus_vectors_of_another_tokenizer_are_trained_again(target_bpe):
    from tokenizers import Tokenizer

    from vocabshift.init.early import take_focus_token_vectors

    loaded = AutoTokenizer.from_pretrained(target_bpe)

    class Done:
        def __init__(self, serialized: str, rows: int) -> None:
            self.value = (serialized, np.zeros((rows, 4), dtype=np.float32), np.zeros(rows, dtype=bool))

        def result(self):
            return self.value

    same = Tokenizer.from_file(str(target_bpe / "tokenizer.json")).to_str()
    assert take_focus_token_vectors(Done(same, len(loaded)), loaded, len(loaded)) is not None
    changed = json.loads(same)
    changed["added_tokens"] = changed["added_tokens"][:-1]
    assert take_focus_token_vectors(Done(json.dumps(changed), len(loaded)), loaded, len(loaded)) is None
    assert take_focus_token_vectors(Done(same, len(loaded) + 1), loaded, len(loaded)) is None
    assert take_focus_token_vectors(None, loaded, len(loaded)) is None


def test_a_failing_plan_stops_focus_training_and_leaves_nothing(llama_tied, target_bpe, spanish_file, tmp_path,
                                                                 monkeypatch):
    """init fails in the plan while FOCUS's fastText trains on its thread: the plan's error is the one raised,
    the thread and fastText's process are gone, no temporary folder and no output is left."""
    import tempfile
    import time

    import vocabshift.init.apply as apply

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    big = tmp_path / "big.txt"  # long enough that fastText is still training when the plan fails
    big.write_text(spanish_file.read_text(encoding="utf-8") * 20, encoding="utf-8")

    def failing_plan(*args, **kwargs):
        time.sleep(1.0)
        raise InitError("the plan failed")

    monkeypatch.setattr(apply, "_plan", failing_plan)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(InitError, match="the plan failed"):
        init_model(InitConfig(method="focus", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out),
                              corpus=corpus_from_paths([big]), threads=1))
    assert time.perf_counter() - t0 < 30
    assert _live_workers() == [] and _child_pids() == []
    assert list(scratch.iterdir()) == [] and not out.exists()


def test_a_cancelled_fasttext_child_is_killed():
    import sys
    import threading
    import time

    from vocabshift.vectors.train import Cancelled, _run_child

    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        _run_child([sys.executable, "-c", "import time; time.sleep(60)"], {}, cancel)
    assert time.perf_counter() - t0 < 10 and _child_pids() == []
    assert _run_child([sys.executable, "-c", "raise SystemExit(3)"], {}, None) == 3
