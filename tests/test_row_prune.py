"""Pruning a decoder from its safetensors headers (vocabshift.surgery.row_prune) equals the general path.

For every supported family, tied and untied, sharded or not: the same tensor bytes (whole files
compared), configs and generation configs that load to the same values, special ids of dropped tokens
set to None; and what falls outside the envelope is sent to the general path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from tests.test_vocabulary import _pico_llama, multilingual_bpe  # noqa: F401  (a fixture, used by name)
from vocabshift.surgery import row_prune
from vocabshift.surgery.lazy import remap_checkpoint
from vocabshift.surgery.row_prune import SUPPORTED, plan, prune_rows

VOCAB = 96
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}
FAMILIES = {
    "LlamaForCausalLM": ("LlamaConfig", {}),
    "MistralForCausalLM": ("MistralConfig", {}),
    "Qwen2ForCausalLM": ("Qwen2Config", {"bos_token_id": 5, "eos_token_id": 6}),
    "Qwen3ForCausalLM": ("Qwen3Config", {"head_dim": 16}),
    "GemmaForCausalLM": ("GemmaConfig", {"head_dim": 16}),
    "Gemma2ForCausalLM": ("Gemma2Config", {"head_dim": 16, "sliding_window": 16}),
    "Gemma3ForCausalLM": ("Gemma3TextConfig", {"head_dim": 16, "sliding_window": 16}),
}
# kept ids: every id below 10 but 4, then every third one (an id_map with gaps and dense runs)
KEEP = [i for i in range(10) if i != 4] + list(range(10, VOCAB, 3))


def _model(arch: str, directory: Path, tied: bool, shards: bool = False, **ids: int | None) -> Path:
    config_name, extra = FAMILIES[arch]
    config = getattr(transformers, config_name)(**COMMON, **{**extra, **ids}, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).to(torch.bfloat16)  # a 16-bit dtype numpy has no type for
    model.generation_config.eos_token_id = [config.eos_token_id, 4] if config.eos_token_id is not None else [4]
    model.save_pretrained(directory, max_shard_size="20KB" if shards else "5GB")
    return directory


def _both(source: Path, tmp_path: Path, id_map: list[int]) -> tuple[Path, Path]:
    fast, general = tmp_path / "fast", tmp_path / "general"
    fast.mkdir()
    general.mkdir()
    row_plan = plan(source, id_map)
    assert row_plan is not None
    report = prune_rows(source, fast, row_plan)
    reference = remap_checkpoint(source, general, id_map)
    for key in ("class", "tied", "vocab_size", "parameters_after", "tensors_rewritten"):
        assert report[key] == reference[key], key
    return fast, general


def _loaded(cls: type, directory: Path) -> dict:
    data = cls.from_pretrained(directory).to_dict()
    for key in ("transformers_version", "_name_or_path"):
        data.pop(key, None)
    return data


@pytest.mark.parametrize("arch", sorted(FAMILIES))
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("chunk", ["5 rows", "default"])
def test_header_path_equals_general_path(tmp_path, arch, tied, chunk, monkeypatch):
    if chunk == "5 rows":  # of 32 bf16 values: blocks end inside runs of kept rows, many times
        monkeypatch.setattr(row_prune, "CHUNK_BYTES", 5 * 32 * 2)
    source = _model(arch, tmp_path / "src", tied, shards=arch == "LlamaForCausalLM")
    fast, general = _both(source, tmp_path, KEEP)
    names = sorted(p.name for p in general.glob("*.safetensors"))
    assert names == sorted(p.name for p in fast.glob("*.safetensors")) and names
    for name in names:  # whole files: header and every tensor's bytes
        assert (fast / name).read_bytes() == (general / name).read_bytes(), name
    if (general / "model.safetensors.index.json").exists():
        assert json.loads((fast / "model.safetensors.index.json").read_text()) == \
            json.loads((general / "model.safetensors.index.json").read_text())
    assert _loaded(transformers.AutoConfig, fast) == _loaded(transformers.AutoConfig, general)
    assert _loaded(transformers.GenerationConfig, fast) == _loaded(transformers.GenerationConfig, general)
    config = json.loads((fast / "config.json").read_text())
    assert config["vocab_size"] == len(KEEP)
    # token 4 is dropped: the generation config's eos list loses it (None once empty), the others renumbered
    eos = json.loads((fast / "generation_config.json").read_text())["eos_token_id"]
    assert eos is None or (4 not in KEEP and all(0 <= i < len(KEEP) for i in eos))
    model = transformers.AutoModelForCausalLM.from_pretrained(fast)
    reference = transformers.AutoModelForCausalLM.from_pretrained(general)
    ids = torch.tensor([[0, 1, 2, 5, 9, 20]])
    assert torch.equal(model(ids).logits, reference(ids).logits)


def test_dropped_special_ids_become_none_as_in_the_general_path(tmp_path, caplog):
    source = _model("LlamaForCausalLM", tmp_path / "src", tied=False, bos_token_id=1, eos_token_id=4,
                    pad_token_id=7)
    fast, general = _both(source, tmp_path, KEEP)
    config = json.loads((fast / "config.json").read_text())
    assert config["eos_token_id"] is None and config["bos_token_id"] == 1 and config["pad_token_id"] == 6
    assert _loaded(transformers.AutoConfig, fast) == _loaded(transformers.AutoConfig, general)
    assert "config.eos_token_id: token 4 is dropped by id_map; setting it to None" in caplog.text


def test_config_defaults_are_transformers_own():
    """SUPPORTED's default ids are the config classes' (a change in transformers fails here)."""
    for arch, defaults in SUPPORTED.items():
        config = getattr(transformers, arch).config_class()
        ids = {k: v for k, v in config.to_dict().items() if row_prune.is_id_field(k)}
        assert ids == defaults, arch


def test_tie_defaults_are_transformers_own():
    """TIED_BY_DEFAULT is each class's tie_word_embeddings default (read when config.json has none)."""
    assert set(row_prune.TIED_BY_DEFAULT) == set(SUPPORTED)
    for arch, tied in row_prune.TIED_BY_DEFAULT.items():
        assert getattr(transformers, arch).config_class().tie_word_embeddings is tied, arch
    generation = transformers.GenerationConfig()
    assert all(hasattr(generation, name) for name in row_prune.GENERATION_ID_FIELDS)


def test_config_without_ids_takes_the_class_defaults(tmp_path):
    source = _model("GemmaForCausalLM", tmp_path / "src", tied=True)
    config = json.loads((source / "config.json").read_text())
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        config.pop(key)
    (source / "config.json").write_text(json.dumps(config))
    keep = [1, 2, 3] + list(range(5, VOCAB))  # drops the pad (0): the class default must be renumbered
    fast, general = _both(source, tmp_path, keep)
    written = json.loads((fast / "config.json").read_text())
    assert written["pad_token_id"] is None and written["bos_token_id"] == 1 and written["eos_token_id"] == 0
    assert _loaded(transformers.AutoConfig, fast) == _loaded(transformers.AutoConfig, general)


def test_outside_the_envelope_takes_the_general_path(tmp_path):
    source = _model("LlamaForCausalLM", tmp_path / "src", tied=True)
    assert plan(source, KEEP) is not None
    assert plan(source, KEEP, pad_to_multiple_of=8) is None  # padding rows are computed
    assert plan(source, [*KEEP, -1]) is None  # a new row (extension)
    assert plan(source, [3, 1, 2]) is None  # not increasing
    assert plan(source, [0, VOCAB]) is None  # outside the vocabulary
    other = tmp_path / "other"
    other.mkdir()
    for f in source.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    assert plan(other, KEEP) is None
    (other / "config.json").write_text(json.dumps({**config, "text_config": {"vocab_size": VOCAB}}))
    assert plan(other, KEEP) is None


def test_another_vocabulary_sized_tensor_takes_the_general_path(tmp_path):
    from safetensors.torch import load_file, save_file

    source = _model("LlamaForCausalLM", tmp_path / "src", tied=True)
    tensors = load_file(source / "model.safetensors")
    tensors["model.extra_bias"] = torch.zeros(VOCAB)
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    assert plan(source, KEEP) is None


def test_prune_of_a_supported_decoder_imports_no_torch(tmp_path, multilingual_bpe):  # noqa: F811
    """`vocabshift prune` on a Llama-family checkpoint: header path, and torch is never imported."""
    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied=False)
    script = (
        "import sys, json\n"
        "from vocabshift.vocabulary import PruneConfig, prune\n"
        f"r = prune(PruneConfig(model={str(source)!r}, out={str(tmp_path / 'out')!r}, keep_scripts=['Latin']))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'path': r.report['model']['path']}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "path": "lean (safetensors rows, no model)"}
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    full = tmp_path / "full"
    from vocabshift.vocabulary import PruneConfig, prune

    prune(PruneConfig(model=str(source), out=str(full), keep_scripts=["Latin"], in_memory=True))
    reference = transformers.AutoModelForCausalLM.from_pretrained(full)
    ids = torch.arange(0, 12).unsqueeze(0)
    assert torch.equal(model(ids).logits, reference(ids).logits)


@pytest.mark.parametrize("arch", sorted(FAMILIES))
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_init_remap_from_headers_equals_the_meta_model_path(tmp_path, arch, tied):
    """init's writer without a model: kept rows copied, new rows filled, explicit and renumbered special
    ids, the same files as remap_checkpoint on the meta model."""
    from vocabshift.surgery.row_prune import header_layout, remap_from_headers

    source = _model(arch, tmp_path / "src", tied)
    # a replacement-like id_map: some source rows in a new order, new tokens in between and at the end
    id_map = [0, 1, 2, -1, 7, 5, -1, 30, 31, 32, -1, -1, 95, 3]
    n_new = id_map.count(-1)
    g = torch.Generator().manual_seed(0)
    new_rows = torch.randn(n_new, 32, generator=g).to(torch.bfloat16)
    new_out = None if tied else torch.randn(n_new, 32, generator=g).to(torch.bfloat16)
    special = {"pad_token_id": 3, "eos_token_id": [1, 6], "unk": 2}  # unk: a field the config lacks
    layout = header_layout(source)
    assert layout is not None and layout.tied == tied
    fast, general = tmp_path / "fast", tmp_path / "general"
    fast.mkdir()
    general.mkdir()
    report = remap_from_headers(source, fast, layout, id_map, new_rows=new_rows,
                                new_output_rows=new_out, special_token_ids=special)
    reference = remap_checkpoint(source, general, id_map, new_rows=new_rows, new_output_rows=new_out,
                                 special_token_ids=special)
    for key in ("class", "tied", "vocab_size", "parameters_before", "parameters_after", "tensors_rewritten"):
        assert report[key] == reference[key], key
    for path in general.glob("*.safetensors"):
        assert (fast / path.name).read_bytes() == path.read_bytes(), path.name
    assert sorted(p.name for p in fast.iterdir()) == sorted(p.name for p in general.iterdir())
    assert _loaded(transformers.AutoConfig, fast) == _loaded(transformers.AutoConfig, general)
    assert _loaded(transformers.GenerationConfig, fast) == _loaded(transformers.GenerationConfig, general)
    written = json.loads((fast / "config.json").read_text())
    assert written["pad_token_id"] == 3 and written["eos_token_id"] == [1, 6] and written["vocab_size"] == len(id_map)
    assert written["unk_token_id"] == 2
    generation = json.loads((fast / "generation_config.json").read_text())
    assert generation["pad_token_id"] == 3 and "unk_token_id" not in generation


def test_init_of_a_supported_decoder_reads_no_model(tmp_path, multilingual_bpe):  # noqa: F811
    """`vocabshift init` on a Llama: the header path runs, the modeling code is never imported, and the
    output equals the in-memory path's."""
    source = _pico_llama(multilingual_bpe, tmp_path / "src", tied=True)
    script = (
        "import sys, json\n"
        "from vocabshift.init.apply import InitConfig, init_model\n"
        f"r = init_model(InitConfig(method='fvt', model={str(source)!r}, tokenizer={str(multilingual_bpe)!r}, "
        f"out={str(tmp_path / 'out')!r}))\n"
        "print(json.dumps({'modeling': 'transformers.models.llama.modeling_llama' in sys.modules, "
        "'path': r.report['path']}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"modeling": False, "path": "lean (vocabulary tensors read from the headers, no model)"}


def test_an_explicit_special_id_outside_the_new_vocabulary_is_refused_before_writing(tmp_path):
    """Both writers check special_token_ids against the new vocabulary, naming the field; the header
    writer refuses before writing anything."""
    from vocabshift.surgery import IdMapError
    from vocabshift.surgery.row_prune import header_layout, remap_from_headers

    source = _model("LlamaForCausalLM", tmp_path / "src", tied=True)
    id_map = [0, 1, 2, -1, 5]
    fast, general = tmp_path / "fast", tmp_path / "general"
    fast.mkdir()
    general.mkdir()
    new_rows = torch.zeros(1, 32, dtype=torch.bfloat16)
    for bad in ({"pad": 5}, {"eos_token_id": [1, -1]}):
        name = next(iter(bad))
        field = name if name.endswith("_id") else f"{name}_token_id"
        with pytest.raises(IdMapError, match=rf"special_token_ids\['{field}'\] = .* is not an id of the new "
                                             r"vocabulary \(0\.\.4\)"):
            remap_from_headers(source, fast, header_layout(source), id_map, new_rows=new_rows,
                               special_token_ids=bad)
        assert list(fast.iterdir()) == []
        with pytest.raises(IdMapError, match=rf"special_token_ids\['{field}'\]"):
            remap_checkpoint(source, general, id_map, new_rows=new_rows, special_token_ids=bad)
