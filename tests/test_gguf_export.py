"""GGUF export: pico Llamas (tied and untied, byte-level BPE and sentencepiece BPE) written with the ``gguf``
package and loaded back with transformers (``gguf_file=``): same logits, same token ids, the source's
pre-tokenizer name and chat template carried; quantized types load; bad inputs refused, nothing left behind.
A slow test exports a vocabshift-pruned SmolLM2-135M (from its shipped GGUF) with pre-tokenizer ``smollm``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from tests.test_train import one_thread as one_thread  # noqa: F401  (the fixture, autouse here too)
from tests.test_train import pico_model, train_config
from vocabshift.errors import ConfigError, ModelError, OutputExistsError, TokenizerError, VocabshiftError
from vocabshift.gguf_export import GGUFConfig, export_gguf, pre_from_tokenizer_json, write_gguf

CHAT_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
SAMPLES = ["The quick brown fox jumps over the lazy dog.", "¿Dónde está el niño? Mañana comeremos piñones en Logroño.",
           "Toda persona tiene derecho a la educación. 1948", udhr_lines("spa")[0]]


@pytest.fixture(scope="module")
def picos(tmp_path_factory, roberta_source) -> dict[str, Path]:
    """Pico Llamas with a real byte-level BPE (and a chat template): tied and untied."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("gguf-picos")
    models = {}
    for kind in ("llama_tied", "llama_untied"):
        directory = pico_model(kind, roberta_source, root / kind)
        tok = AutoTokenizer.from_pretrained(directory)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(directory)
        models[kind] = directory
    return models


def _reload(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _fields(path: Path) -> tuple[dict, dict]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def _probe(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["llama_tied", "llama_untied"])
def test_f32_round_trip_gives_the_same_logits_and_token_ids(kind, picos, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = picos[kind]
    out = tmp_path / "sub" / "pico.gguf"  # a missing folder is created
    result = export_gguf(GGUFConfig(model=str(model_dir), out=str(out), type="f32"))
    assert result.out == out and out.is_file() and [p.name for p in out.parent.iterdir()] == ["pico.gguf"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not private
    report = result.report
    assert report["verify"]["max_abs_logit_difference"] <= 1e-4 and report["verify"]["tokenizer_agrees"]

    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    model, tok = _reload(out)
    ids = _probe(hf.config.vocab_size)
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - hf(input_ids=ids).logits).abs().max().item()
    assert diff <= 1e-4
    tied = kind == "llama_tied"
    assert model.config.tie_word_embeddings is tied
    for text in SAMPLES:  # non-ASCII Spanish included
        assert tok(text, add_special_tokens=False)["input_ids"] == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert tok("hola")["input_ids"] == hf_tok("hola")["input_ids"]  # BOS/EOS added alike (RobertaProcessing)
    assert tok.chat_template == CHAT_TEMPLATE

    fields, tensors = _fields(out)
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and report["tokenizer"]["pre_from"] == "tokenizer.json pre-tokenizer"
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert fields["tokenizer.ggml.bos_token_id"] == hf_tok.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == hf_tok.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.add_eos_token"] is True
    assert len(fields["tokenizer.ggml.tokens"]) == hf.config.vocab_size == fields["llama.vocab_size"]
    assert (fields["llama.block_count"], fields["llama.embedding_length"], fields["llama.attention.head_count_kv"],
            fields["llama.rope.dimension_count"]) == (2, 32, 2, 8)
    assert ("output.weight" in tensors) is not tied
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.1.ffn_gate.weight"} <= set(tensors)
    # Q rows are stored permuted as llama.cpp's graph reads them (transformers permutes them back)
    q = hf.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(q.shape)
    assert not np.array_equal(stored, q)
    assert np.array_equal(stored, q.reshape(4, 2, 4, 32).swapaxes(1, 2).reshape(q.shape))


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_qwen2_and_mistral_round_trip(arch, roberta_source, tmp_path):
    """Qwen2 (its own GGUF architecture: Q/K/V biases, no permutation) and Mistral (written as a Llama,
    here with heads narrower than hidden / heads, as Mistral-Nemo has)."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(roberta_source)
    shape = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
             "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_()
                layer.self_attn.k_proj.bias.normal_()
    else:
        model = MistralForCausalLM(MistralConfig(**shape, head_dim=16, tie_word_embeddings=False))
    folder = tmp_path / arch
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / f"{arch}.gguf"
    report = export_gguf(GGUFConfig(model=str(folder), out=str(out), type="f32")).report
    assert report["architecture"] == {"qwen2": "qwen2", "mistral": "llama"}[arch]
    assert report["verify"]["max_abs_logit_difference"] <= 1e-4
    fields, tensors = _fields(out)
    assert ("blk.0.attn_q.bias" in tensors) is (arch == "qwen2")
    if arch == "mistral":
        assert fields["llama.attention.key_length"] == fields["llama.rope.dimension_count"] == 16
    reloaded, _ = _reload(out)
    ids = _probe(len(tok))
    with torch.no_grad():
        assert (reloaded(input_ids=ids).logits - model.eval()(input_ids=ids).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("gguf_type", ["f16", "bf16", "q8_0"])
def test_smaller_types_write_and_load(gguf_type, picos, tmp_path):
    out = tmp_path / f"pico-{gguf_type}.gguf"
    report = export_gguf(GGUFConfig(model=str(picos["llama_untied"]), out=str(out), type=gguf_type)).report
    check = report["verify"]
    print(f"{gguf_type}: max |logit diff| {check['max_abs_logit_difference']:.2e}, "
          f"argmax agreement {check['argmax_agreement']:.3f}")
    assert check["argmax_agreement"] >= 0.9 and check["max_abs_logit_difference"] < 0.05
    fields, tensors = _fields(out)
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == gguf_type.upper()
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # 1-D tensors stay f32
    assert fields["general.file_type"] == {"f16": 1, "bf16": 32, "q8_0": 7}[gguf_type]
    model, _ = _reload(out)
    assert model.config.vocab_size == len(fields["tokenizer.ggml.tokens"])


def test_sentencepiece_llama_tokenizer_round_trips(llama_other, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "spm.gguf"
    report = export_gguf(GGUFConfig(model=str(llama_other), out=str(out), type="f32")).report
    assert report["tokenizer"]["model"] == "llama" and report["verify"]["max_abs_logit_difference"] <= 1e-4
    fields, _ = _fields(out)
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is True
    types = dict(zip(fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"], strict=True))
    assert types["<0x41>"] == 6 and types["<unk>"] == 2 and types["<s>"] == 3  # BYTE, UNKNOWN, CONTROL
    hf_tok = AutoTokenizer.from_pretrained(llama_other)
    model, tok = _reload(out)
    for text in SAMPLES:
        assert tok(text)["input_ids"] == hf_tok(text)["input_ids"]
    hf = AutoModelForCausalLM.from_pretrained(llama_other).eval()
    ids = _probe(hf.config.vocab_size)
    with torch.no_grad():
        assert (model(input_ids=ids).logits - hf(input_ids=ids).logits).abs().max().item() <= 1e-4


def _with_pre_tokenizer(src: Path, dst: Path, pre_tokenizer: dict) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "tokenizer.json").read_text())
    data["pre_tokenizer"] = pre_tokenizer
    (dst / "tokenizer.json").write_text(json.dumps(data))
    return dst


def test_pre_tokenizer_name_comes_from_the_source_gguf_then_the_tokenizer(picos, tmp_path):
    # A GGUF source says its own name: a folder whose stage report names it takes that name.
    source = tmp_path / "source.gguf"
    write_gguf(picos["llama_tied"], source, gguf_type="f16", pre="smollm")
    adapted = tmp_path / "adapted"
    shutil.copytree(picos["llama_tied"], adapted)
    (adapted / "prune_report.json").write_text(json.dumps({"stage": "prune", "source": str(source)}))
    report = export_gguf(GGUFConfig(model=str(adapted), out=str(tmp_path / "a.gguf"), verify=False)).report
    assert report["tokenizer"]["pre"] == "smollm" and report["tokenizer"]["pre_from"] == f"source GGUF {source}"
    # ... and followed through earlier stages (an init folder whose id_map names the pruned one)
    later = tmp_path / "later"
    shutil.copytree(picos["llama_tied"], later)
    (later / "id_map.json").write_text(json.dumps({"source": str(adapted), "id_map": []}))
    assert write_gguf(later, tmp_path / "b.gguf")["tokenizer"]["pre"] == "smollm"
    # --gguf-pre wins
    assert write_gguf(later, tmp_path / "c.gguf", pre="gpt-2")["tokenizer"]["pre_from"] == "given"

    # An unknown pre-tokenizer is refused, asking for --gguf-pre; given, it is written.
    odd = _with_pre_tokenizer(picos["llama_tied"], tmp_path / "odd", {"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]})
    with pytest.raises(TokenizerError, match="--gguf-pre"):
        export_gguf(GGUFConfig(model=str(odd), out=str(tmp_path / "odd.gguf")))
    assert not (tmp_path / "odd.gguf").exists()
    report = export_gguf(GGUFConfig(model=str(odd), out=str(tmp_path / "odd.gguf"), pre="gpt-2", verify=False)).report
    assert report["tokenizer"]["pre"] == "gpt-2"


def test_known_pre_tokenizers_are_recognized():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from vocabshift.gguf_export import KNOWN_SPLITS

    for regex, name in KNOWN_SPLITS.items():  # the same regexes transformers rebuilds from these names
        assert GGUF_PRE_TOKENIZER_SPLITS[name] == regex
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    assert pre_from_tokenizer_json({"pre_tokenizer": byte_level}) == "gpt-2"
    assert pre_from_tokenizer_json({"pre_tokenizer": smollm}) == "smollm"
    llama3 = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GGUF_PRE_TOKENIZER_SPLITS["llama-bpe"]}, "behavior": "Isolated",
         "invert": False}, {**byte_level, "use_regex": False}]}
    assert pre_from_tokenizer_json({"pre_tokenizer": llama3}) == "llama-bpe"
    assert pre_from_tokenizer_json({"pre_tokenizer": {**byte_level, "add_prefix_space": True}}) is None
    assert pre_from_tokenizer_json({"pre_tokenizer": None}) is None


def test_bad_inputs_are_refused_and_nothing_is_written(picos, roberta_source, tmp_path):
    for kind in ("bert", "gpt2"):
        other = pico_model(kind, roberta_source, tmp_path / kind)
        out = tmp_path / f"{kind}.gguf"
        with pytest.raises(ModelError, match="does not support model_type .*supported: Llama, Mistral, Qwen2"):
            export_gguf(GGUFConfig(model=str(other), out=str(out)))
        assert not out.exists()
    with pytest.raises(ConfigError, match="GGUF type must be one of auto, f32, f16, bf16, q8_0, got 'q4_0'"):
        GGUFConfig(model=str(picos["llama_tied"]), out=str(tmp_path / "x.gguf"), type="q4_0")
    with pytest.raises(ConfigError, match="not a llama.cpp pre-tokenizer name"):
        GGUFConfig(model=str(picos["llama_tied"]), out=str(tmp_path / "x.gguf"), pre="Smol LM")

    # an existing file is kept unless --force
    existing = tmp_path / "existing.gguf"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        export_gguf(GGUFConfig(model=str(picos["llama_tied"]), out=str(existing)))
    assert existing.read_bytes() == b"keep me"
    # a parent that is a file, not a folder
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(VocabshiftError, match="blocker"):
        export_gguf(GGUFConfig(model=str(picos["llama_tied"]), out=str(blocker / "m.gguf")))
    # the output inside the model folder (an input) is refused
    with pytest.raises(VocabshiftError, match="inside the input"):
        export_gguf(GGUFConfig(model=str(picos["llama_tied"]), out=str(picos["llama_tied"] / "m.gguf")))
    assert not list(picos["llama_tied"].glob("*.gguf"))


def test_a_failure_mid_write_leaves_nothing(picos, tmp_path, monkeypatch):
    import vocabshift.gguf_export as module

    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args)

    real = module._tensor_data
    monkeypatch.setattr(module, "_tensor_data", failing)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with pytest.raises(VocabshiftError, match="no space left"):
        export_gguf(GGUFConfig(model=str(picos["llama_tied"]), out=str(out), force=True))
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]

    # a writer killed outright (SIGKILL) leaves its temporary file: the next one cleans it up
    monkeypatch.setattr(module, "_tensor_data", real)
    (tmp_path / ".m.gguf.tmp-abcd1234.gguf").write_bytes(b"half")
    export_gguf(GGUFConfig(model=str(picos["llama_tied"]), out=str(out), force=True, verify=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"] and out.stat().st_size > 1000


def test_cli_export_writes_the_gguf_beside_the_checkpoint(picos, spanish_text, tmp_path, capsys):
    from vocabshift.train.loop import train

    run = train(train_config(picos["llama_tied"], spanish_text, tmp_path / "run", max_steps=2, warmup_steps=0)).run_dir
    code, out, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "model", "--gguf",
                             tmp_path / "gguf" / "model-q8.gguf", "--gguf-type", "q8_0")
    assert code == 0, err
    assert "GGUF q8_0 (pre-tokenizer gpt-2)" in out and "argmax agreement" in out
    report = json.loads((tmp_path / "model" / "export_report.json").read_text())
    assert report["gguf"]["verify"]["argmax_agreement"] >= 0.9 and report["gguf"]["file"].endswith("model-q8.gguf")
    assert "## GGUF" in (tmp_path / "model" / "README.md").read_text()
    assert (tmp_path / "gguf" / "model-q8.gguf").is_file()
    # inside the output directory: written as part of it; f32 is exact against the exported model
    code, out, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "m2", "--gguf",
                             tmp_path / "m2" / "m2.gguf", "--gguf-type", "f32")
    assert code == 0, err
    report = json.loads((tmp_path / "m2" / "export_report.json").read_text())
    assert report["gguf"]["verify"]["max_abs_logit_difference"] <= 1e-4 and (tmp_path / "m2" / "m2.gguf").is_file()
    # bad type: one line, exit 1, nothing written
    code, out, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "m3", "--gguf", tmp_path / "m3.gguf",
                             "--gguf-type", "q4_k")
    assert code == 1 and "GGUF type must be one of" in err
    assert not (tmp_path / "m3").exists() and not (tmp_path / "m3.gguf").exists()


def test_export_refuses_a_gguf_of_another_architecture_before_merging(roberta_source, spanish_text, tmp_path):
    from vocabshift.export import ExportConfig, export
    from vocabshift.train.loop import train

    model = pico_model("gpt2", roberta_source, tmp_path / "gpt2")
    run = train(train_config(model, spanish_text, tmp_path / "run", max_steps=1, warmup_steps=0)).run_dir
    with pytest.raises(ModelError, match="model_type 'gpt2'"):
        export(ExportConfig(run=str(run), out=str(tmp_path / "out"), gguf=str(tmp_path / "m.gguf")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.gguf").exists()
    with pytest.raises(ConfigError, match="cannot be the output directory"):
        export(ExportConfig(run=str(run), out=str(tmp_path / "out"), gguf=str(tmp_path / "out")))


@pytest.fixture(scope="module")
def spanish_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_pruned_smollm2_exports_with_the_smollm_pre_tokenizer(tmp_path):
    from vocabshift.resources import smollm2_gguf
    from vocabshift.vocabulary import PruneConfig, prune

    try:
        source = smollm2_gguf()
    except Exception as err:  # not installed locally
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
    pruned = prune(PruneConfig(model=str(source), out=str(tmp_path / "pruned"), keep_scripts=["Latin"])).out
    out = tmp_path / "smol-es.gguf"
    report = export_gguf(GGUFConfig(model=str(pruned), out=str(out), type="f32")).report
    print(f"SmolLM2 pruned to Latin, f32 GGUF: max |logit diff| {report['verify']['max_abs_logit_difference']:.2e}")
    assert report["tokenizer"]["pre"] == "smollm" and report["tokenizer"]["pre_from"].startswith("source GGUF")
    assert report["tied"] and report["verify"]["max_abs_logit_difference"] <= 1e-4
    assert report["verify"]["tokenizer_agrees"]
    fields, tensors = _fields(out)
    assert fields["tokenizer.ggml.pre"] == "smollm" and "output.weight" not in tensors
    assert "im_start" in fields["tokenizer.chat_template"]
    assert fields["llama.vocab_size"] == len(fields["tokenizer.ggml.tokens"]) < 49152
