"""Static vectors: fastText train/load, .vec files, dictionaries, Procrustes + CSLS alignment, token vectors."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_cli import run_cli
from vocabshift.config import to_dict
from vocabshift.corpus import corpus_from_paths
from vocabshift.data import sample_path
from vocabshift.errors import ConfigError, OutputExistsError, VectorsError
from vocabshift.tokenization.surface import Surface, surface_forms
from vocabshift.vectors import (
    StaticVectors,
    VectorsAlignConfig,
    VectorsTrainConfig,
    align_vectors,
    load_aligned,
    load_dictionary,
    load_pair,
    load_vectors,
    precision_at_1,
    procrustes,
    refine_alignment,
    save_vectors,
    token_id_vectors,
    token_vectors,
    train_token_vectors,
    train_vectors,
    vector_file_info,
)
from vocabshift.vectors.align import case_variants
from vocabshift.vectors.dictionary import find_freedict

FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")


def unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True)


def shifted_spaces(n: int = 2000, d: int = 32, noise: float = 0.1, seed: int = 0):
    """Target vectors with a decaying spectrum (as real embeddings have) and a noisy rotated copy as source.

    Source row i is the translation of target row i; ``source @ Q`` recovers the target up to noise.
    """
    rng = np.random.default_rng(seed)
    scale = np.exp(-np.arange(d) / 10)
    target = rng.standard_normal((n, d)) * scale
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    source = target @ Q.T + noise * scale.mean() * rng.standard_normal((n, d))
    return source.astype(np.float32), target.astype(np.float32), Q


def write_vec(path: Path, words: list[str], matrix: np.ndarray) -> Path:
    save_vectors(StaticVectors(words, matrix), path)
    return path


# --------------------------------------------------------------------------------------------------
# Alignment math


def test_procrustes_recovers_a_rotation_from_noisy_pairs():
    rng = np.random.default_rng(1)
    d = 50
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = rng.standard_normal((500, d)).astype(np.float32)
    y = x @ Q + 0.01 * rng.standard_normal((500, d))
    W = procrustes(x, y)
    assert W.dtype == np.float32 and W.shape == (d, d)
    assert np.abs(W.T @ W - np.eye(d)).max() < 1e-5  # orthogonal
    assert np.abs(W - Q).max() < 0.01


def test_csls_refinement_raises_precision_from_a_small_seed():
    source, target, Q = shifted_spaces()
    X, Y = unit(source), unit(target)
    seed = np.arange(10)  # 10 pairs cannot pin down a 32-dimensional rotation
    W0 = procrustes(X[seed], Y[seed])
    queries = list(range(100, 2000))
    gold = [[i] for i in queries]
    before = precision_at_1(X @ torch.as_tensor(W0), Y, queries, gold)
    W, history = refine_alignment(X[:1000], Y[:1000], W0, 5)
    after = precision_at_1(X @ torch.as_tensor(W), Y, queries, gold)
    assert before < 0.8 and after > 0.98, (before, after)
    assert len(history) == 5 and history[-1]["pairs"] > history[0]["pairs"]
    assert np.abs(W - Q).max() < 0.05  # the true rotation, found from 10 pairs


# --------------------------------------------------------------------------------------------------
# .vec files


@pytest.mark.parametrize("name", ["v.vec", "v.vec.gz"])
@pytest.mark.parametrize("header", [True, False])
def test_vec_round_trip(tmp_path, name, header):
    rng = np.random.default_rng(0)
    words = ["de", "la", "Dios", "niño", "ñandú", "."]
    matrix = rng.standard_normal((6, 7)).astype(np.float32)
    path = write_vec(tmp_path / name, words, matrix)
    if not header:  # the same file without its "count dim" line
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            lines = fh.read().split(b"\n", 1)[1]
        with opener(path, "wb") as fh:
            fh.write(lines)
    loaded = load_vectors(path)
    assert loaded.words == words and loaded.dim == 7 and not loaded.has_subwords and loaded.counts is None
    assert np.array_equal(loaded.matrix, matrix)  # 9 significant digits: float32 exactly
    info = vector_file_info(path)
    assert info["dim"] == 7 and info["words"] == (6 if header else None)
    vecs, found = loaded.lookup(["Dios", "missing", "niño"])
    assert found.tolist() == [True, False, True]
    assert np.array_equal(vecs[0], matrix[2]) and not vecs[1].any()


def test_words_and_max_words_read_only_what_is_asked(tmp_path):
    words = [f"w{i}" for i in range(100)]
    matrix = np.arange(300, dtype=np.float32).reshape(100, 3)
    path = write_vec(tmp_path / "v.vec", words, matrix)
    assert load_vectors(path, words=["w50", "w3", "nope"]).words == ["w3", "w50"]  # file order
    head = load_vectors(path, max_words=5)
    assert head.words == words[:5] and np.array_equal(head.matrix, matrix[:5])
    both = load_vectors(path, words=["w70"], max_words=2)  # either condition keeps a word
    assert both.words == ["w0", "w1", "w70"] and np.array_equal(both.matrix[2], matrix[70])
    # Reading stops once the head and the wanted words are in: a broken line further down is never read.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("broken 1 2\n")
    assert load_vectors(path, max_words=10, words=["w20"]).words[-1] == "w20"
    with pytest.raises(VectorsError, match="line 102: 2 values, expected 3"):
        load_vectors(path)


def test_save_vectors_applies_transform_and_refuses_existing(tmp_path):
    vec = StaticVectors(["a", "b"], np.eye(2, dtype=np.float32))
    rot = np.array([[0, 1], [-1, 0]], dtype=np.float32)
    path = tmp_path / "r.vec"
    save_vectors(vec.with_transform(rot), path)
    assert np.array_equal(load_vectors(path).matrix, rot)
    with pytest.raises(OutputExistsError):
        save_vectors(vec, path)
    with pytest.raises(VectorsError, match="holds whitespace"):
        save_vectors(StaticVectors(["a b"], np.ones((1, 2))), tmp_path / "s.vec")
    assert not (tmp_path / "s.vec").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r.vec"]


def test_with_transform_and_head():
    vec = StaticVectors(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2), counts=np.array([5, 3, 1]))
    W = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.float32)
    mapped = vec.with_transform(W)
    assert mapped.dim == 3 and np.array_equal(mapped.matrix, vec.matrix @ W)
    assert np.array_equal(mapped.lookup(["c"])[0], vec.matrix[2:] @ W)
    assert mapped.head(2).words == ["a", "b"] and mapped.head(2).counts.tolist() == [5, 3]
    assert np.array_equal(mapped.head(2).matrix, (vec.matrix @ W)[:2])
    with pytest.raises(VectorsError, match="does not apply"):
        mapped.with_transform(np.eye(2))


@pytest.mark.parametrize("content, message", [
    (b"", "empty vector file"),
    (b"3 4\n", "has a header but no vectors"),
    (b"a 1 2 3\nb 1 2\n", "line 2: 2 values, expected 3 (the dimension given by line 1)"),
    (b"2 3\na 1 2 3\nb 1 x 3\n", "line 3: 'x' is not a number"),
    (b"2 3\na 1 2 3\nlonely\n", "line 3: a word with no vector"),
])
def test_malformed_vector_files(tmp_path, content, message):
    path = tmp_path / "bad.vec"
    path.write_bytes(content)
    with pytest.raises(VectorsError, match=re.escape(message)) as err:
        load_vectors(path)
    assert str(path) in str(err.value)


def test_missing_vector_file(tmp_path):
    with pytest.raises(VectorsError, match="no such vector file"):
        load_vectors(tmp_path / "nope.vec")


# --------------------------------------------------------------------------------------------------
# fastText


@pytest.fixture(scope="module")
def spanish_bin(tmp_path_factory) -> Path:
    """fastText skipgram on 3,000 verses of the Spanish Bible: dim 24, 2 epochs, 100k buckets (~2 s)."""
    out = tmp_path_factory.mktemp("ft") / "es.bin"
    corpus = corpus_from_paths(sample_path("bible.spa.txt.gz"), max_documents=3000)
    cfg = VectorsTrainConfig(corpus=corpus, out=str(out), dim=24, epochs=2, min_count=3, bucket=100_000,
                             threads=2, show_progress=False)
    assert train_vectors(cfg) == out
    return out


def test_bin_vectors_match_fasttext(spanish_bin):
    import fasttext

    ref = fasttext.load_model(str(spanish_bin))
    vec = load_vectors(spanish_bin)
    assert vec.has_subwords and vec.dim == 24 and vec.words == ref.words
    assert vec.counts.tolist() == ref.get_words(include_freq=True)[1].tolist()
    assert np.allclose(vec.matrix, np.stack([ref.get_word_vector(w) for w in ref.words]), atol=1e-6)
    # Out-of-vocabulary words, non-ASCII bytes (fastText hashes signed chars), and strings with no n-gram.
    queries = ["Dios", "Diosito", "corazoncito", "ñandúes", "Ωμέγα", "😀x", "", "a"]
    vecs, found = vec.lookup(queries)
    assert np.allclose(vecs, np.stack([ref.get_word_vector(w) for w in queries]), atol=1e-6)
    assert found.tolist() == [True] * 6 + [False, True]
    assert "Diosito" not in ref.words and np.abs(vecs[1]).sum() > 0


def test_bin_filters_choose_words_but_lookup_knows_all(spanish_bin):
    full = load_vectors(spanish_bin)
    small = load_vectors(spanish_bin, words=["tierra"], max_words=3)
    assert small.words == full.words[:3] + ["tierra"]
    assert np.array_equal(small.matrix[3], full.matrix[full.index("tierra")])
    assert np.allclose(small.lookup(["cielos"])[0], full.lookup(["cielos"])[0])


def test_train_refuses_existing_output_and_bad_options(tmp_path, spanish_bin):
    out = tmp_path / "exists.bin"
    out.write_bytes(b"user data")
    corpus = corpus_from_paths(sample_path("udhr.spa.txt"))
    with pytest.raises(OutputExistsError):
        train_vectors(VectorsTrainConfig(corpus=corpus, out=str(out)))
    assert out.read_bytes() == b"user data"
    with pytest.raises(VectorsError, match="fastText training failed") as err:
        train_vectors(VectorsTrainConfig(corpus=corpus, out=str(tmp_path / "x.bin"), min_count=10_000,
                                         bucket=1000, dim=8, show_progress=False))
    assert "min-count" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.bin"]  # nothing left behind
    with pytest.raises(ConfigError, match="dim must be positive"):
        VectorsTrainConfig(corpus=corpus, out="x.bin", dim=0)
    with pytest.raises(ConfigError, match="minn <= maxn"):
        VectorsTrainConfig(corpus=corpus, out="x.bin", minn=5, maxn=3)


def test_training_is_reproducible_with_one_thread(tmp_path):
    """Two trainings in one process give the same model (fasttext-numpy2 leaves most of its input matrix
    uninitialized; trained in-process, a second small model started from heap garbage and hit NaN)."""
    corpus = corpus_from_paths([sample_path("udhr.spa.txt"), sample_path("udhr.fra.txt")])
    cfg = dict(corpus=corpus, dim=8, epochs=1, min_count=2, bucket=10_000, threads=1, show_progress=False)
    a = train_vectors(VectorsTrainConfig(out=str(tmp_path / "a.bin"), **cfg))
    b = train_vectors(VectorsTrainConfig(out=str(tmp_path / "b.bin"), **cfg))
    assert a.read_bytes() == b.read_bytes()
    assert np.isfinite(load_vectors(a).matrix).all()


# --------------------------------------------------------------------------------------------------
# Dictionaries


def test_pairs_dictionary(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("# comment\ncasa\thouse\nperro dog\n\nnueva york\tnew york\ncasa\thouse\n", encoding="utf-8")
    assert load_dictionary(path) == [("casa", "house"), ("perro", "dog"), ("nueva york", "new york")]
    assert load_dictionary(path, max_pairs=1) == [("casa", "house")]
    path.write_text("casa house\nperro dog cat\n", encoding="utf-8")
    with pytest.raises(VectorsError, match="line 2: expected two words"):
        load_dictionary(path)
    path.write_text("\n# nothing\n", encoding="utf-8")
    with pytest.raises(VectorsError, match="no word pairs"):
        load_dictionary(path)
    with pytest.raises(VectorsError, match="no such dictionary file"):
        load_dictionary(tmp_path / "nope.txt")


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


def test_freedict_format_constructed(tmp_path):
    entries = [("00databaseshort", "00-database-short\nTest dictionary\n"),
               ("house", "house /haʊs/\n1. casa, hogar\n2. vivienda\n"),
               ("abc", "ABC /eibiːsiː/\nabecé; alfabeto <m>\n")]
    blob, index = b"", []
    for head, text in entries:
        data = text.encode("utf-8")
        index.append(f"{head}\t{_b64(len(blob))}\t{_b64(len(data))}")
        blob += data
    base = tmp_path / "freedict-eng-spa"
    (tmp_path / "freedict-eng-spa.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "freedict-eng-spa.dict.dz", "wb") as fh:
        fh.write(blob)
    expected = [("house", "casa"), ("house", "hogar"), ("house", "vivienda"), ("ABC", "abecé"), ("ABC", "alfabeto")]
    for path in (base, base.with_name(base.name + ".index"), base.with_name(base.name + ".dict.dz")):
        assert load_dictionary(path) == expected
    assert _b64(4096) == "BAA"


@pytest.mark.skipif(not FREEDICT.exists(), reason="FreeDict eng-spa is not installed (Debian dict-freedict-eng-spa)")
def test_real_freedict_eng_spa():
    pairs = load_dictionary(FREEDICT)
    assert len(pairs) > 8000
    assert ("abandon", "abandonar") in pairs and ("ABC", "abecé") in pairs and ("kingdom", "reino") in pairs
    assert not any(s.startswith("00") for s, _ in pairs)
    assert find_freedict(FREEDICT.with_suffix("")) == (FREEDICT, FREEDICT.with_name("freedict-eng-spa.dict.dz"))


# --------------------------------------------------------------------------------------------------
# align_vectors / load_aligned


@pytest.fixture(scope="module")
def shifted_files(tmp_path_factory) -> dict[str, Path]:
    """Source s<i> / target t<i> vector files of two shifted spaces; 30 words are spelled alike (n<i>)."""
    d = tmp_path_factory.mktemp("shifted")
    source, target, Q = shifted_spaces()
    names_s = [f"n{i}" if i % 50 == 7 and i < 1500 else f"s{i}" for i in range(len(source))]
    names_t = [f"n{i}" if i % 50 == 7 and i < 1500 else f"t{i}" for i in range(len(target))]
    np.save(d / "Q.npy", Q)
    lines = [f"{'S' if i % 3 == 0 else 's'}{i}\t{'T' if i % 5 == 0 else 't'}{i}"  # case variants to try
             for i in range(1000) if i % 50 != 7]
    (d / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"source": write_vec(d / "src.vec", names_s, source), "target": write_vec(d / "tgt.vec.gz", names_t, target),
            "dictionary": d / "dict.txt", "Q": d / "Q.npy"}


def _all_pairs_accuracy(src: StaticVectors, tgt: StaticVectors) -> float:
    """Share of all 2,000 source words whose nearest target (cosine, in the mapped space) is their translation."""
    sims = unit(src.matrix) @ unit(tgt.matrix).T
    return float((sims.argmax(dim=1) == torch.arange(len(src))).float().mean())


def test_align_with_identical_strings_seed(tmp_path, shifted_files):
    out = tmp_path / "al"
    result = align_vectors(VectorsAlignConfig(source=str(shifted_files["source"]), target=str(shifted_files["target"]),
                                              out=str(out), refine_vocab=1000))
    r = result.report
    assert r["seed_kind"] == "identical_strings" and r["refine_iterations"] == 5
    assert r["pairs_used"] + r["pairs_held_out"] == 30 and r["pairs_held_out"] == 6
    assert "weak proxy" in r["precision_at_1"]["evaluated_on"]
    assert result.precision_after == 1.0
    saved = json.loads((out / "alignment.json").read_text())
    assert saved["precision_at_1"] == r["precision_at_1"] and saved["source"]["dim"] == 32
    assert len(saved["source"]["fingerprint"]) == 64
    assert saved["target"]["bytes"] == shifted_files["target"].stat().st_size
    assert np.array_equal(np.load(out / "W.npy"), result.W)
    assert np.abs(result.W - np.load(shifted_files["Q"])).max() < 0.05
    src, tgt = load_aligned(out)
    assert src.transform is not None and tgt.transform is None
    assert np.allclose(src.matrix, load_vectors(shifted_files["source"]).matrix @ result.W, atol=1e-6)
    assert _all_pairs_accuracy(src, tgt) > 0.99
    json.dumps(to_dict(result))  # the init stage puts this in its report


def test_align_with_dictionary_refinement_and_case_variants(tmp_path, shifted_files):
    common = dict(source=str(shifted_files["source"]), target=str(shifted_files["target"]),
                  dictionary=str(shifted_files["dictionary"]), held_out=0.99)  # train on 10 pairs
    plain = align_vectors(VectorsAlignConfig(**common, out=str(tmp_path / "a")))
    r = plain.report
    assert r["dictionary"]["pairs"] == 980 and r["dictionary"]["pairs_found"] == 980  # S12 -> s12, T10 -> t10
    assert r["pairs_used"] == 10 and r["refine_iterations"] == 0
    assert plain.precision_before == plain.precision_after < 0.8
    refined = align_vectors(VectorsAlignConfig(**common, out=str(tmp_path / "b"), refine=5, refine_vocab=1000))
    assert refined.precision_before == plain.precision_before
    assert refined.precision_after > 0.98
    assert refined.report["precision_at_1"]["test_source_words"] == 970
    assert case_variants("ABC") == ["ABC", "abc", "Abc"]


def test_pre_aligned_and_load_pair(tmp_path, shifted_files):
    src, tgt = load_pair(shifted_files["source"], shifted_files["target"], max_words=10)
    assert len(src) == len(tgt) == 10 and src.transform is None
    result = align_vectors(VectorsAlignConfig(source=str(shifted_files["target"]), target=str(shifted_files["target"]),
                                              out=str(tmp_path / "id"), pre_aligned=True))
    assert np.array_equal(result.W, np.eye(32, dtype=np.float32))
    assert result.report["seed_kind"] == "pre_aligned+identical_strings" and result.precision_after == 1.0


def test_align_errors_write_nothing(tmp_path, shifted_files):
    small = write_vec(tmp_path / "small.vec", ["casa", "perro"], np.ones((2, 5), dtype=np.float32))
    out = tmp_path / "out"
    with pytest.raises(VectorsError) as err:
        align_vectors(VectorsAlignConfig(source=str(shifted_files["source"]), target=str(small), out=str(out)))
    message = str(err.value)
    assert "vector dimensions differ" in message and f"{shifted_files['source']} has 32" in message
    assert f"{small} has 5" in message
    with pytest.raises(VectorsError, match="dimensions differ"):
        load_pair(shifted_files["source"], small)

    reversed_dict = tmp_path / "rev.txt"
    reversed_dict.write_text("t1\ts1\nt2\ts2\n", encoding="utf-8")
    with pytest.raises(VectorsError) as err:
        align_vectors(VectorsAlignConfig(source=str(shifted_files["source"]), target=str(shifted_files["target"]),
                                         dictionary=str(reversed_dict), out=str(out)))
    message = str(err.value)
    assert "none of the 2 dictionary pairs" in message and "'t1'->'s1'" in message
    assert "source words: 's0', 's1'" in message and "target words: 't0', 't1'" in message
    assert "swap its columns" in message

    other = write_vec(tmp_path / "other.vec", ["uno", "dos"], np.ones((2, 32), dtype=np.float32))
    with pytest.raises(VectorsError, match="share no word"):
        align_vectors(VectorsAlignConfig(source=str(shifted_files["source"]), target=str(other), out=str(out)))
    with pytest.raises(VectorsError, match="no such vector file"):
        align_vectors(VectorsAlignConfig(source=str(tmp_path / "nope.vec"), target=str(other), out=str(out)))
    assert not out.exists()
    with pytest.raises(ConfigError, match="held_out"):
        VectorsAlignConfig(source="a", target="b", out="c", held_out=1.0)
    with pytest.raises(VectorsError, match="not an alignment directory"):
        load_aligned(tmp_path)


def test_load_aligned_notices_a_changed_file(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    src = write_vec(tmp_path / "s.vec", words, rng.standard_normal((50, 4)).astype(np.float32))
    tgt = write_vec(tmp_path / "t.vec", words, rng.standard_normal((50, 4)).astype(np.float32))
    align_vectors(VectorsAlignConfig(source=str(src), target=str(tgt), out=str(tmp_path / "al"), refine=1))
    original = tgt.read_bytes()
    with open(src, "a", encoding="utf-8") as fh:
        fh.write("w99 1 2 3 4\n")
    with pytest.raises(VectorsError, match="changed since the alignment"):
        load_aligned(tmp_path / "al")
    align_vectors(VectorsAlignConfig(source=str(src), target=str(tgt), out=str(tmp_path / "al2"), refine=1))
    # Same size, other content (another training run writes the same header and shape): noticed too.
    changed = bytearray(original)
    changed[-3] = ord("9") if changed[-3] != ord("9") else ord("8")
    tgt.write_bytes(bytes(changed))
    assert len(changed) == len(original)
    with pytest.raises(VectorsError, match="same size, different content"):
        load_aligned(tmp_path / "al2")


# --------------------------------------------------------------------------------------------------
# Token vectors


def _wordpiece():
    """A hand-made WordPiece tokenizer: abc -> ab ##c, ab -> ab, bb -> b ##b, zz -> [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "ab": 1, "##c": 2, "b": 3, "##b": 4, "a": 5, "c": 6}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_token_vectors_word_only_weighted_mean_by_hand():
    hf = _wordpiece()
    surfaces = surface_forms(hf)
    assert [s.kind for s in surfaces] == ["special"] + ["normal"] * 6
    matrix = np.array([[1, 0], [0, 1], [2, 2], [5, 5]], dtype=np.float32)
    words = ["abc", "ab", "bb", "zz"]
    vecs, found = token_vectors(StaticVectors(words, matrix, counts=np.array([3, 1, 2, 1])), surfaces, tokenizer=hf)
    # ab: in "abc" (count 3) and "ab" (count 1): (3 [1,0] + 1 [0,1]) / 4. [UNK] ("zz") is special: no vector.
    assert found.tolist() == [False, True, True, True, True, False, False]
    assert np.allclose(vecs[1], [0.75, 0.25]) and np.allclose(vecs[2], [1, 0])
    assert np.allclose(vecs[3], [2, 2]) and np.allclose(vecs[4], [2, 2]) and not vecs[[0, 5, 6]].any()
    # Without counts (a .vec), Zipf weights 1/rank: abc rank 1, ab rank 2 -> (1 [1,0] + 1/2 [0,1]) / 1.5
    vecs, _ = token_vectors(StaticVectors(words, matrix), surfaces, tokenizer=hf)
    assert np.allclose(vecs[1], [2 / 3, 1 / 3])
    # The transform applies to the result.
    W = np.array([[0, 1], [1, 0]], dtype=np.float32)
    mapped, _ = token_vectors(StaticVectors(words, matrix).with_transform(W), surfaces, tokenizer=hf)
    assert np.allclose(mapped, vecs @ W)
    with pytest.raises(VectorsError, match="need the tokenizer"):
        token_vectors(StaticVectors(words, matrix), surfaces)


def test_token_vectors_subword_composition(spanish_bin):
    vec = load_vectors(spanish_bin, max_words=100)
    surfaces = [Surface("Dios", True, "normal"), Surface("ciel", False, "normal"), Surface("<s>", False, "special"),
                Surface("", False, "byte", b"\xc3"), Surface("\ufffd", False, "partial", b"\xc3"),
                Surface("", True, "normal"), Surface(" tierra ", True, "normal")]
    vecs, found = token_vectors(vec, surfaces)
    assert found.tolist() == [True, True, False, False, False, False, True]
    expected, _ = vec.lookup(["Dios", "ciel", "tierra"])
    assert np.allclose(vecs[[0, 1, 6]], expected) and not vecs[[2, 3, 4, 5]].any()


def test_train_token_vectors_and_token_id_vectors(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = sample_path("udhr.spa.txt")
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(text)], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    out = tmp_path / "tokens.bin"
    vecs = train_token_vectors(hf, corpus_from_paths(text), out, dim=16, epochs=2, min_count=2, threads=2)
    assert out.is_file() and not vecs.has_subwords and vecs.dim == 16
    assert all(w == "</s>" or (w[0] == "t" and w[1:].isdigit()) for w in vecs.words)
    matrix, found = token_id_vectors(vecs, len(hf))
    assert matrix.shape == (len(hf), 16) and found.dtype == bool
    frequent = hf.convert_tokens_to_ids(["de", "la"])
    assert found[frequent].all() and not found[0]  # [UNK] never occurs in the text
    assert np.array_equal(matrix[frequent[0]], vecs.matrix[vecs.index(f"t{frequent[0]}")])
    again, found_again = token_id_vectors(out, len(hf))
    assert np.array_equal(again, matrix) and np.array_equal(found_again, found)
    small, small_found = token_id_vectors(vecs, 10)  # ids past vocab_size are ignored
    assert small.shape == (10, 16) and np.array_equal(small_found, found[:10])


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_train_and_align(capsys, tmp_path, shifted_files):
    out = tmp_path / "cli.bin"
    args = ["vectors", "train", "--corpus", sample_path("udhr.spa.txt"), sample_path("udhr.fra.txt"),
            "--out", out, "--dim", 8, "--epochs", 1, "--min-count", 2, "--bucket", 10_000, "--threads", 2,
            "--no-progress"]
    code, stdout, stderr = run_cli(capsys, *args)
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and "dim 8" in stdout and "3-6-grams" in stdout
    assert "Déclaration" in load_vectors(out).words  # the second path after one --corpus was read
    code, _, stderr = run_cli(capsys, *args)
    assert code == 1 and "already exists" in stderr and len(stderr.strip().splitlines()) == 1

    al = tmp_path / "al"
    code, stdout, stderr = run_cli(capsys, "vectors", "align", "--source", shifted_files["source"], "--target",
                                   shifted_files["target"], "--dictionary", shifted_files["dictionary"],
                                   "--out", al, "--held-out", 0.99, "--refine", 3, "--refine-vocab", 1000)
    assert code == 0, stderr
    assert "10 dictionary pairs, 3 refinement iteration(s); precision@1" in stdout and "-> 100.0%" in stdout
    assert (al / "W.npy").is_file()

    code, _, stderr = run_cli(capsys, "vectors", "align", "--source", shifted_files["source"], "--target", out,
                              "--out", tmp_path / "bad")
    assert code == 1 and stderr.startswith("error: vector dimensions differ") and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_fasttext_nan_from_the_thread_race_retries_with_one_thread(tmp_path, monkeypatch):
    """fastText reports "Encountered NaN." when a worker thread saw no example on a tiny corpus: retry with 1."""
    from vocabshift.vectors import train as vtrain

    calls: list[int] = []
    real_run = vtrain._run_child

    def fake_run(cmd, env, cancel):
        job = json.loads(cmd[-1])
        calls.append(job["params"]["thread"])
        if len(calls) == 1:  # the first attempt "races"
            Path(job["result"]).write_text(json.dumps({"error": "Encountered NaN."}))
            return 0
        return real_run(cmd, env, cancel)

    monkeypatch.setattr(vtrain, "_run_child", fake_run)
    out = tmp_path / "v.bin"
    train_vectors(VectorsTrainConfig(corpus=corpus_from_paths(sample_path("udhr.spa.txt")), out=str(out), dim=8,
                                     epochs=1, min_count=1, threads=2, show_progress=False))
    assert calls == [2, 1] and out.is_file()


def test_character_ngrams_follow_fasttext_order(spanish_bin):
    """fastText's computeSubwords order (start position, then length), which the composed vector's sum
    follows; a lone "<" or ">" is never an n-gram when minn is 1."""
    model = load_vectors(spanish_bin)._model
    for minn, maxn in ((3, 6), (1, 3), (2, 2), (1, 1)):
        model.minn, model.maxn = minn, maxn
        for word in ("sí", "cielos", "a"):
            chars = "<" + word + ">"
            expected = [chars[i:i + n] for i in range(len(chars)) for n in range(minn, maxn + 1)
                        if i + n <= len(chars) and not (n == 1 and chars[i] in "<>")]
            assert model._ngrams(word) == expected, (minn, maxn, word)
