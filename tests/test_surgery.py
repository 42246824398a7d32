"""Model surgery on pico models of every architecture vocabshift targets.

The invariants users rely on: rows of kept tokens are bit-identical, new rows are the mean (or what
the caller gave), tied heads stay tied and untied ones untied, ``config.vocab_size`` and special-token
ids follow the id_map, the logits of kept tokens do not change, and all of it survives
``save_pretrained`` + ``AutoModel*.from_pretrained``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from vocabshift.errors import ConfigError, VocabshiftError
from vocabshift.surgery import IdMapError, ModelError, locate, remap_vocab

V = 100
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=V)
LLAMA = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             intermediate_size=64, vocab_size=V, bos_token_id=1, eos_token_id=2)


@dataclass
class Case:
    name: str
    build: Any
    auto: Any
    input_path: str
    output_path: str | None
    tied: bool
    bias_path: str | None
    other: tuple[str, ...] = ()


CASES = [
    Case("bert", lambda: BertForMaskedLM(BertConfig(**ENCODER)), AutoModelForMaskedLM,
         "bert.embeddings.word_embeddings", "cls.predictions.decoder", True, "cls.predictions.decoder.bias",
         ("cls.predictions.bias",)),
    Case("bert-untied", lambda: BertForMaskedLM(BertConfig(**ENCODER, tie_word_embeddings=False)),
         AutoModelForMaskedLM, "bert.embeddings.word_embeddings", "cls.predictions.decoder", False,
         "cls.predictions.decoder.bias", ("cls.predictions.bias",)),
    Case("xlmr", lambda: XLMRobertaForMaskedLM(XLMRobertaConfig(**ENCODER, pad_token_id=1, bos_token_id=0,
                                                                eos_token_id=2)),
         AutoModelForMaskedLM, "roberta.embeddings.word_embeddings", "lm_head.decoder", True,
         "lm_head.decoder.bias", ("lm_head.bias",)),
    Case("gpt2", lambda: GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=V,
                                                    bos_token_id=98, eos_token_id=99)),
         AutoModelForCausalLM, "transformer.wte", "lm_head", True, None),
    Case("llama-tied", lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, tie_word_embeddings=True)),
         AutoModelForCausalLM, "model.embed_tokens", "lm_head", True, None),
    Case("llama-untied", lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, tie_word_embeddings=False)),
         AutoModelForCausalLM, "model.embed_tokens", "lm_head", False, None),
    Case("bert-base", lambda: BertModel(BertConfig(**ENCODER)), AutoModel,
         "embeddings.word_embeddings", None, False, None),
]
IDS = [c.name for c in CASES]


def build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    model = case.build()
    with torch.no_grad():  # the MLM biases start at zero: make them tell tokens apart
        for path in (case.bias_path, *case.other):
            if path is not None:
                model.get_parameter(path).normal_()
    return model.eval()


def make_id_map(seed: int = 0) -> list[int]:
    """Specials 0..3 kept in place, 70 of the other 96 tokens permuted (26 dropped), 6 new, 1 copied twice."""
    g = torch.Generator().manual_seed(seed)
    body = (torch.randperm(V - 4, generator=g)[:70] + 4).tolist()
    return [0, 1, 2, 3, *body, -1, -1, -1, -1, -1, -1, body[0]]


def first_new_id(id_map: list[int], old: int) -> int | None:
    return id_map.index(old) if old in id_map else None


def outputs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def kept_source_inputs(id_map: list[int]) -> torch.Tensor:
    """A batch of source ids that the id_map keeps (not the specials, which change positions in XLM-R)."""
    kept = sorted({i for i in id_map if i >= 4})
    g = torch.Generator().manual_seed(1)
    return torch.tensor(kept)[torch.randint(len(kept), (2, 12), generator=g)]


def vocab_tensors(model: nn.Module, case: Case) -> dict[str, torch.Tensor]:
    names = {"input": f"{case.input_path}.weight"}
    if case.output_path is not None:
        names["output"] = f"{case.output_path}.weight"
    if case.bias_path is not None:
        names["bias"] = case.bias_path
    names.update({p: p for p in case.other})
    return {k: model.get_parameter(p).detach().clone() for k, p in names.items()}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_locate_finds_paths_and_tie_status(case):
    model = build(case)
    layout = locate(model)
    assert layout.input_embeddings == case.input_path
    assert layout.output_embeddings == case.output_path
    assert layout.tied is case.tied
    assert layout.output_bias == case.bias_path
    assert layout.other_vocab_params == case.other
    assert layout.vocab_size == V


def test_mlm_biases_are_one_parameter_only_when_tied():
    """transformers 5 ties decoder.bias to the head's bias through _tied_weights_keys, i.e. only when tied."""
    tied, untied = (build(c) for c in CASES[:2])
    assert tied.cls.predictions.decoder.bias is tied.cls.predictions.bias
    assert untied.cls.predictions.decoder.bias is not untied.cls.predictions.bias


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_remap_keeps_rows_ties_and_logits(case):
    model = build(case)
    id_map = make_id_map()
    src_inputs = kept_source_inputs(id_map)
    before = vocab_tensors(model, case)
    reference = outputs(model, src_inputs)

    layout = remap_vocab(model, id_map)

    assert layout.vocab_size == len(id_map) == model.config.vocab_size
    assert layout.tied is case.tied
    after = vocab_tensors(model, case)
    src = torch.tensor(id_map)
    keep = torch.nonzero(src >= 0).flatten()
    new = torch.nonzero(src < 0).flatten()
    for key, old in before.items():
        assert after[key].shape == (len(id_map), *old.shape[1:]), key
        assert after[key].dtype == old.dtype
        assert torch.equal(after[key][keep], old[src[keep]]), f"{key}: kept rows are not bit-identical"
        mean = old.mean(dim=0).expand(len(new), *old.shape[1:])
        torch.testing.assert_close(after[key][new], mean, rtol=0, atol=1e-7)
    if case.output_path is not None:
        inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert (inp is out) is case.tied
        assert (inp.data_ptr() == out.data_ptr()) is case.tied
        assert model.get_output_embeddings().out_features == len(id_map)
    assert model.get_input_embeddings().num_embeddings == len(id_map)

    new_inputs = torch.tensor([first_new_id(id_map, i) for i in src_inputs.flatten().tolist()]).view_as(src_inputs)
    remapped = outputs(model, new_inputs)
    if case.output_path is None:  # a base model: hidden states do not depend on the vocabulary at all
        torch.testing.assert_close(remapped, reference, rtol=0, atol=0)
    else:
        torch.testing.assert_close(remapped[..., keep], reference[..., src[keep]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if c.output_path is not None], ids=lambda c: c.name)
def test_given_rows_are_used(case):
    model = build(case)
    id_map = make_id_map()
    n_new = id_map.count(-1)
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(n_new, 32, generator=g)
    out_rows = None if case.tied else torch.randn(n_new, 32, generator=g)
    bias = None if case.bias_path is None else torch.randn(n_new, generator=g)
    remap_vocab(model, id_map, new_rows=rows, new_output_rows=out_rows, new_bias=bias)
    new = torch.nonzero(torch.tensor(id_map) < 0).flatten()
    assert torch.equal(model.get_input_embeddings().weight[new], rows)
    head = model.get_output_embeddings()
    assert torch.equal(head.weight[new], rows if case.tied else out_rows)
    if bias is not None:
        assert torch.equal(model.get_parameter(case.bias_path)[new], bias)
        for other in case.other:
            assert torch.equal(model.get_parameter(other)[new], bias)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_special_token_ids_follow_the_id_map(case):
    model = build(case)
    id_map = make_id_map(seed=3)
    configs = [model.config] + ([model.generation_config] if getattr(model, "generation_config", None) else [])
    old = [{k: getattr(c, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id") if hasattr(c, k)}
           for c in configs]
    remap_vocab(model, id_map)
    for config, ids in zip(configs, old, strict=True):
        for key, value in ids.items():
            expected = None if value is None else first_new_id(id_map, value)
            assert getattr(config, key) == expected, key


def test_llama_moved_and_dropped_special_ids(caplog):
    model = build(CASES[4])
    model.generation_config.eos_token_id = [2, 3]
    model.config.pad_token_id = 3
    id_map = [5, 6, 1, 7, 3, -1, 8, 9, 3]  # bos 1 -> 2, eos 2 dropped, pad 3 -> 4 (its first copy)
    with caplog.at_level(logging.WARNING, logger="vocabshift"):
        remap_vocab(model, id_map)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (2, None, 4)
    assert model.generation_config.bos_token_id == 2
    assert model.generation_config.eos_token_id == [4]  # the list loses only the dropped id
    assert "config.eos_token_id: token 2 is dropped by id_map" in caplog.text
    assert model.get_input_embeddings().padding_idx is None  # Llama builds no padding_idx from pad_token_id=None


def test_explicit_special_token_ids_win():
    model = build(CASES[4])
    remap_vocab(model, [5, 6, 1, 7], special_token_ids={"eos": 3, "pad_token_id": 0})
    assert (model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id) == (3, 0, 2)
    assert model.generation_config.eos_token_id == 3


def test_out_of_source_range_ids_become_none(caplog):
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=V))  # eos 50256 as in GPT-2
    with caplog.at_level(logging.WARNING, logger="vocabshift"):
        remap_vocab(model, list(range(50)))
    assert model.config.eos_token_id is None and model.generation_config.eos_token_id is None
    assert "already outside the source vocabulary" in caplog.text


def test_bert_padding_idx_follows_the_pad_token():
    model = build(CASES[0])  # pad_token_id = 0
    remap_vocab(model, [5, 6, 0, 7])
    assert model.config.pad_token_id == 2 and model.get_input_embeddings().padding_idx == 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("pad", [None, 8])
def test_save_and_reload(case, pad, tmp_path):
    model = build(case)
    id_map = make_id_map()
    remap_vocab(model, id_map, pad_to_multiple_of=pad)
    size = len(id_map) if pad is None else 88
    inputs = torch.randint(4, len(id_map), (2, 10), generator=torch.Generator().manual_seed(4))
    expected = outputs(model, inputs)
    model.save_pretrained(tmp_path)

    reloaded = case.auto.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert reloaded.config.vocab_size == size
    torch.testing.assert_close(outputs(reloaded, inputs), expected, rtol=0, atol=0)
    layout = locate(reloaded)
    assert layout.tied is case.tied and layout.vocab_size == size
    if case.output_path is not None:
        inp, out = reloaded.get_input_embeddings().weight, reloaded.get_output_embeddings().weight
        assert (inp.data_ptr() == out.data_ptr()) is case.tied
        if not case.tied:
            assert torch.equal(out, model.get_output_embeddings().weight)
    for path in case.other:
        assert torch.equal(reloaded.get_parameter(path), model.get_parameter(path))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pad_to_multiple_of(case):
    model = build(case)
    id_map = make_id_map()  # 81 tokens
    before = vocab_tensors(model, case)
    layout = remap_vocab(model, id_map, pad_to_multiple_of=8)
    assert layout.vocab_size == model.config.vocab_size == 88
    after = vocab_tensors(model, case)
    for key, old in before.items():
        assert after[key].shape[0] == 88
        torch.testing.assert_close(after[key][81:], old.mean(dim=0).expand(7, *old.shape[1:]), rtol=0, atol=1e-7)
    if case.tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_exact_multiple_adds_no_padding():
    model = build(CASES[4])
    assert remap_vocab(model, list(range(64)), pad_to_multiple_of=64).vocab_size == 64


def test_identity_map_changes_nothing():
    model = build(CASES[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    remap_vocab(model, list(range(V)))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_duplicate_source_ids_copy_the_row():
    model = build(CASES[5])
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    remap_vocab(model, [1, 7, 7, -1, 7])
    for i in (1, 2, 4):
        assert torch.equal(model.get_input_embeddings().weight[i], old_in[7])
        assert torch.equal(model.get_output_embeddings().weight[i], old_out[7])
    assert model.config.bos_token_id == 0


@pytest.mark.parametrize("as_type", [np.array, torch.tensor, tuple], ids=["numpy", "torch", "tuple"])
def test_id_map_types(as_type):
    model = build(CASES[5])
    old = model.get_input_embeddings().weight.detach().clone()
    remap_vocab(model, as_type([9, -1, 4]))
    assert torch.equal(model.get_input_embeddings().weight[[0, 2]], old[[9, 4]])


def test_dtype_and_requires_grad_are_kept():
    model = build(CASES[5]).to(torch.bfloat16)
    model.get_input_embeddings().weight.requires_grad_(False)
    old = model.get_input_embeddings().weight.detach().clone()
    id_map = make_id_map()
    remap_vocab(model, id_map)
    weight = model.get_input_embeddings().weight
    assert weight.dtype == torch.bfloat16 and not weight.requires_grad
    assert model.get_output_embeddings().weight.requires_grad
    keep = [i for i, s in enumerate(id_map) if s >= 0]
    assert torch.equal(weight[keep], old[[id_map[i] for i in keep]])


class TinyLM(nn.Module):
    """No config, no transformers: just an embedding and a head with a bias, as a custom model might have."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 2)
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.embed.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
            self.head.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]))
            self.head.bias.copy_(torch.tensor([1.0, 2.0, 6.0]))

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_hand_worked_example():
    model = TinyLM()
    layout = remap_vocab(model, [2, -1, 0, 2], pad_to_multiple_of=5)
    assert (layout.input_embeddings, layout.output_embeddings, layout.output_bias) == ("embed", "head", "head.bias")
    assert not layout.tied and layout.config_tied is None
    # new token and padding row: the mean source row, (3, 4) / (2, 4) / 3
    assert model.embed.weight.tolist() == [[5, 6], [3, 4], [1, 2], [5, 6], [3, 4]]
    assert model.head.weight.tolist() == [[4, 8], [2, 4], [0, 1], [4, 8], [2, 4]]
    assert model.head.bias.tolist() == [6, 3, 1, 6, 3]
    assert (model.embed.num_embeddings, model.head.out_features) == (5, 5)


def test_two_remaps_compose():
    a = make_id_map(seed=5)  # 100 -> 81 tokens
    b = [j for j in make_id_map(seed=6) if j < len(a)][:40]  # 81 -> 40 tokens
    composed = [-1 if j < 0 or a[j] < 0 else a[j] for j in b]
    twice, once = build(CASES[5]), build(CASES[5])
    remap_vocab(twice, a)
    remap_vocab(twice, b)
    remap_vocab(once, composed)
    kept = [i for i, j in enumerate(b) if j >= 0 and a[j] >= 0]
    for get in (lambda m: m.get_input_embeddings().weight, lambda m: m.get_output_embeddings().weight):
        assert torch.equal(get(twice)[kept], get(once)[kept])


@pytest.mark.parametrize("case", [c for c in CASES if c.tied], ids=lambda c: c.name)
def test_transformers_tie_weights_afterwards_is_harmless(case):
    model = build(case)
    remap_vocab(model, make_id_map())
    inputs = torch.randint(4, 80, (2, 8), generator=torch.Generator().manual_seed(7))
    expected = outputs(model, inputs)
    model.tie_weights()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.testing.assert_close(outputs(model, inputs), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- errors


class RaisingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def get_input_embeddings(self) -> nn.Module:
        raise NotImplementedError


class NoneModel(nn.Module):
    def get_input_embeddings(self) -> None:
        return None


@pytest.mark.parametrize("model", [RaisingModel(), NoneModel(), nn.Linear(2, 2)], ids=["raises", "none", "linear"])
def test_model_without_input_embeddings(model):
    with pytest.raises(ModelError, match=rf"^{type(model).__name__} has no input embeddings") as err:
        locate(model)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError):
        remap_vocab(model, [0])


def _unchanged(model: nn.Module, weight: torch.Tensor) -> bool:
    return model.get_input_embeddings().weight is weight and model.config.vocab_size == V


@pytest.mark.parametrize(
    ("id_map", "kwargs", "error", "message"),
    [
        ([0, 1, V], {}, IdMapError, rf"id_map\[2\] = {V} is not a source id \(1 such entries\).*0\.\.{V - 1} or -1"),
        ([0, -2, 5, -7], {}, IdMapError, r"id_map\[1\] = -2 is not a source id \(2 such entries\)"),
        ([], {}, IdMapError, "id_map is empty"),
        ([0.0, 1.5], {}, IdMapError, "must hold integer ids, got dtype torch.float"),
        ([[0, 1]], {}, IdMapError, "must be one-dimensional"),
        (["0", "1"], {}, IdMapError, "must be a sequence of integer ids"),
        ([0, -1, -1], {"new_rows": torch.zeros(3, 32)}, IdMapError,
         r"new_rows has shape \(3, 32\), expected \(2, 32\) \(2 new tokens"),
        ([0, -1], {"new_rows": torch.zeros(1, 16)}, IdMapError, r"new_rows has shape \(1, 16\), expected \(1, 32\)"),
        ([0, -1], {"new_rows": torch.full((1, 32), float("nan"))}, IdMapError, "NaN"),
        ([0, -1], {"new_bias": torch.zeros(2)}, IdMapError, r"new_bias has shape \(2,\), expected \(1,\)"),
        ([0, -1], {"new_output_rows": torch.zeros(1, 32)}, IdMapError, "tied embeddings.*new_output_rows must be None"),
        ([0, 1], {"pad_to_multiple_of": 0}, ConfigError, "pad_to_multiple_of must be a positive integer"),
        ([0, 1], {"special_token_ids": {"pad": 5}}, IdMapError, r"special_token_ids\['pad_token_id'\] = 5"),
    ],
)
def test_bad_inputs(id_map, kwargs, error, message):
    model = build(CASES[0])
    weight = model.get_input_embeddings().weight
    with pytest.raises(error, match=message) as err:
        remap_vocab(model, id_map, **kwargs)
    assert isinstance(err.value, VocabshiftError) and "\n" not in str(err.value)
    assert _unchanged(model, weight), "a failed remap must leave the model as it was"


def test_no_head_and_no_bias_errors():
    with pytest.raises(IdMapError, match="BertModel has no LM head"):
        remap_vocab(build(CASES[6]), [0, -1], new_output_rows=torch.zeros(1, 32))
    with pytest.raises(IdMapError, match="LlamaForCausalLM has no vocabulary-sized output bias"):
        remap_vocab(build(CASES[5]), [0, -1], new_bias=torch.zeros(1))


@pytest.mark.parametrize("id_map", [[1, 0, 2, 5], [0, 2, 5]], ids=["moved", "dropped"])
def test_xlmr_pad_must_stay(id_map):
    """XLM-R numbers positions from pad_token_id + 1; moving the pad would shift every position embedding."""
    model = build(CASES[2])
    weight = model.get_input_embeddings().weight
    with pytest.raises(ModelError, match="numbers positions from pad_token_id .* keep the pad token at new id 1"):
        remap_vocab(model, id_map)
    assert _unchanged(model, weight)


def test_untied_head_with_tied_config_is_refused(caplog):
    """PEFT modules_to_save leaves exactly this: separate tensors, tie_word_embeddings still true."""
    model = build(CASES[4])
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    with caplog.at_level(logging.WARNING, logger="vocabshift"):
        layout = locate(model)
    assert not layout.tied and layout.config_tied and not layout.shares_weight
    assert "tie_word_embeddings is true" in caplog.text
    with pytest.raises(ModelError, match="tie_word_embeddings is true but lm_head.weight and model.embed_tokens.weight"):
        remap_vocab(model, [0, 1])


def test_save_configs_writes_what_save_pretrained_writes_and_leaves_nothing_else(tmp_path):
    """The configs are written in a hidden folder and renamed into place (prune's tokenizer thread may read
    config.json meanwhile): the same files as save_pretrained, whole, and no scratch folder left."""
    from transformers import GenerationConfig, LlamaConfig

    from vocabshift.surgery.lazy import save_configs

    config = LlamaConfig(vocab_size=77, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, bos_token_id=1, eos_token_id=2)
    generation = GenerationConfig(bos_token_id=1, eos_token_id=2, max_new_tokens=5)
    direct, atomic = tmp_path / "direct", tmp_path / "atomic"
    direct.mkdir()
    atomic.mkdir()
    (atomic / "config.json").write_text("{stale")  # replaced, not appended to
    config.save_pretrained(str(direct))
    generation.save_pretrained(str(direct))
    save_configs(atomic, config, generation)
    assert sorted(p.name for p in atomic.iterdir()) == sorted(p.name for p in direct.iterdir()) \
        == ["config.json", "generation_config.json"]
    for name in ("config.json", "generation_config.json"):
        assert (atomic / name).read_text() == (direct / name).read_text()
    save_configs(atomic, config)  # without a generation config: the one there stays
    assert sorted(p.name for p in atomic.iterdir()) == ["config.json", "generation_config.json"]


@pytest.mark.parametrize("id_map", [
    [0, 1, 2, -1, 3, -1, -1, 4],  # kept rows a prefix per block only in places, new rows between
    [5, 3, -1, 0, 7, -1, 2],  # kept rows reordered (replacement)
    [0, 1, 2, 3, 4, 5, 6, 7],  # nothing new
], ids=["extend-like", "reordered", "identity"])
@pytest.mark.parametrize("with_fill", [True, False], ids=["fill", "mean"])
@pytest.mark.parametrize("block_rows", [1, 2, 3, 64])
def test_remapped_row_blocks_are_the_in_memory_rows(id_map, with_fill, block_rows):
    """The writers' blocks (any block size, across kept, new and padding rows) join to the rows remap_vocab
    builds in memory, bit for bit."""
    from vocabshift.surgery.resize import _remap_rows, plan_rows, remap_row_blocks

    old = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    plan = plan_rows(id_map, 8, pad_to_multiple_of=4)  # padding rows after the ids: the mean row
    n_new = id_map.count(-1)
    fill = torch.randn(n_new, 3, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16) if with_fill else None
    whole = _remap_rows(old, *plan[:3], fill, plan[3]).data
    mean = old.float().mean(0).to(old.dtype)  # 8 rows: one chunk of mean_row
    new_rows = iter(fill) if fill is not None else None
    expected = [old[s] if s >= 0 else (next(new_rows) if new_rows is not None else mean) for s in id_map]
    expected += [mean] * (plan[3] - len(id_map))
    assert torch.equal(whole, torch.stack(expected))
    row_bytes = 3 * old.element_size()
    blocks = [b.clone() for b in remap_row_blocks(old, plan, fill, block_bytes=block_rows * row_bytes)]
    assert all(b.shape[0] <= block_rows for b in blocks)
    assert torch.equal(torch.cat(blocks), whole)
