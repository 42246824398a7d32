"""Continued pretraining on pico models (hidden 32, 2 layers) with real tokenizers, on CPU.

Loss goes down for MLM and CLM (GPT-2, Llama tied and untied); only the intended parameters change;
2 steps + resume + 2 steps equals 4 steps exactly (also after a Ctrl-C in the middle of a step); a
NaN stops the run and keeps the last good checkpoint; bad input fails before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import udhr_lines
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, CorpusError, OutputExistsError
from vocabshift.train.checkpoint import TRAINABLE_FILE, list_checkpoints, read_metrics
from vocabshift.train.config import LoraSettings, TrainConfig
from vocabshift.train.data import DataConfig
from vocabshift.train.loop import StepInfo, TrainingDiverged, schedule_factor, train
from vocabshift.train.peft_setup import find_target_modules

KINDS = ("llama_tied", "llama_untied", "gpt2", "bert")


def pico_model(kind: str, tokenizer_dir: Path, directory: Path) -> Path:
    """A pico model of ``kind`` with the tokenizer of ``tokenizer_dir``, saved with it to ``directory``."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if kind.startswith("llama"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256, tie_word_embeddings=kind == "llama_tied",
                                             **ids))
    elif kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                           **ids))
    elif kind == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=256,
                                           pad_token_id=tok.pad_token_id))
        with torch.no_grad():
            model.cls.predictions.bias.normal_()
    else:
        raise ValueError(kind)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tokenizer_for(kind: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("minilm_source" if kind == "bert" else "roberta_source")


def train_config(model: Path, corpus: Path, out: Path, **overrides) -> TrainConfig:
    """Small, fast settings: 4 x 32 tokens per step, no worker processes, high learning rates."""
    data = {"seq_len": 32, "eval_documents": 4, "eval_max_sequences": 4, "num_workers": 0,
            **overrides.pop("data", {})}
    lora = overrides.pop("lora", {})
    settings = {"max_steps": 4, "batch_size": 4, "embedding_lr": 1e-2, "lora_lr": 1e-2, "log_every": 1,
                "eval_every": 0, "save_every": 100, "progress": False, **overrides}
    return TrainConfig(model=str(model), corpus=corpus_from_paths([corpus]), out=str(out),
                       data=DataConfig(**data), lora=LoraSettings(**lora), **settings)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Pico models gain nothing from intra-op threads, and on a busy machine threads cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def spanish(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, request) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: pico_model(kind, tokenizer_for(kind, request), root / kind) for kind in KINDS}


def _base_parameters(model) -> dict[str, torch.Tensor]:
    """Parameters of the transformers model inside a PeftModel, under their original names."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in base.named_parameters() if "lora_" not in n}


def _original_parameters(model_dir: Path) -> dict[str, torch.Tensor]:
    from vocabshift.train.loop import load_for_training

    return {n: p.detach().clone() for n, p in load_for_training(model_dir).named_parameters()}


@pytest.mark.parametrize("kind", KINDS)
def test_loss_goes_down_and_only_intended_parameters_change(kind, models, spanish, tmp_path):
    result = train(train_config(models[kind], spanish, tmp_path / "run", max_steps=8, warmup_steps=1))
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert len(losses) == 8 and result.status == "completed" and result.step == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses
    assert "eval_loss" in result.metrics and result.metrics["eval_bits_per_byte"] > 0

    before = _original_parameters(models[kind])
    after = _base_parameters(result.model)
    assert set(before) == set(after)
    base = result.model.get_base_model()
    vocab = {"llama_tied": {"model.embed_tokens.weight"},
             "llama_untied": {"model.embed_tokens.weight", "lm_head.weight"},
             "gpt2": {"transformer.wte.weight"},
             "bert": {"bert.embeddings.word_embeddings.weight", "cls.predictions.bias",
                     "cls.predictions.decoder.bias"}}[kind]
    for name, tensor in before.items():
        if name in vocab:
            assert not torch.equal(tensor, after[name]), f"{name} did not train"
        else:
            assert torch.equal(tensor, after[name]), f"{name} changed but is frozen"
    if kind in ("llama_tied", "gpt2", "bert"):  # tied heads stay one Parameter
        assert base.get_output_embeddings().weight is base.get_input_embeddings().weight
    lora = [n for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora and all(p.abs().sum() > 0 for n, p in result.model.named_parameters() if "lora_B" in n)


def test_target_modules_per_architecture(models):
    from vocabshift.train.loop import load_for_training

    leaves = {}
    for kind in ("llama_tied", "gpt2", "bert"):
        found, conv1d = find_target_modules(load_for_training(models[kind]))
        leaves[kind] = ({p.rsplit(".", 1)[-1] for p in found}, conv1d, len(found))
    assert leaves["llama_tied"] == ({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
                                    False, 14)
    assert leaves["gpt2"] == ({"c_attn", "c_proj", "c_fc"}, True, 8)
    # BERT: the six projections of each layer, not the pooler or the MLM head's transform
    assert leaves["bert"] == ({"query", "key", "value", "dense"}, False, 12)


def test_new_rows_only_leaves_kept_rows_bit_identical(models, spanish, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(models["llama_untied"], model_dir)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    id_map = [i if i % 3 else -1 for i in range(vocab)]  # every third row is "new"
    (model_dir / "id_map.json").write_text(json.dumps({"id_map": id_map}))
    result = train(train_config(model_dir, spanish, tmp_path / "run", embeddings="new", max_steps=3))
    new = torch.tensor([i < 0 for i in id_map])
    before, after = _original_parameters(model_dir), _base_parameters(result.model)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(before[name][~new], after[name][~new]), name
        assert not torch.equal(before[name][new], after[name][new]), name


def test_schedule_warmup_decay_and_two_phases():
    kw = {"total": 10, "warmup": 2, "min_ratio": 0.1}
    cosine = [schedule_factor(s, start=0, kind="cosine", **kw) for s in range(10)]
    # warm-up 1/2, 1; then decay over the remaining 8 steps: step 9 is 7/8 of the way
    assert cosine[:3] == [0.5, 1.0, 1.0] and cosine[-1] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 7 / 8)) / 2)
    assert all(a >= b for a, b in zip(cosine[1:], cosine[2:], strict=False))
    linear = [schedule_factor(s, start=0, kind="linear", **kw) for s in range(10)]
    assert linear[2] == 1.0 and linear[-1] == pytest.approx(0.1 + 0.9 / 8)
    second_phase = [schedule_factor(s, start=4, kind="constant", **kw) for s in range(10)]
    assert second_phase[:4] == [0.0] * 4 and second_phase[4:6] == [0.5, 1.0]


def test_two_phases_keep_lora_still_during_the_first(models, spanish, tmp_path):
    seen: list[dict[str, float]] = []
    train(train_config(models["llama_tied"], spanish, tmp_path / "run", max_steps=4, embeddings_only_steps=2,
                       warmup_steps=0), callbacks=[lambda info: seen.append(info.lr)])
    assert [lr["lora"] for lr in seen[:2]] == [0.0, 0.0] and all(lr["lora"] > 0 for lr in seen[2:])
    assert all(lr["embeddings"] > 0 for lr in seen)


# -- resume, interrupt, NaN -------------------------------------------------------------------------

RESUME = {"max_steps": 4, "gradient_accumulation_steps": 2, "warmup_steps": 1, "lora": {"dropout": 0.1}}


@pytest.fixture(scope="module")
def reference_run(models, spanish, tmp_path_factory) -> Path:
    """Four uninterrupted steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(train_config(models["llama_tied"], spanish, out, **RESUME))
    return out


def _assert_same_run(run: Path, reference: Path) -> None:
    losses = [m["loss"] for m in read_metrics(run) if "loss" in m]
    ref_losses = [m["loss"] for m in read_metrics(reference) if "loss" in m]
    assert losses == ref_losses and len(losses) == 4
    final, ref = (load_file(str(list_checkpoints(r)[-1] / TRAINABLE_FILE)) for r in (run, reference))
    assert list_checkpoints(run)[-1].name == "step-000004"
    assert final.keys() == ref.keys()
    for name in ref:
        assert torch.equal(final[name], ref[name]), name


def test_resume_continues_exactly(models, spanish, reference_run, tmp_path):
    out = tmp_path / "run"
    first = train(train_config(models["llama_tied"], spanish, out, **RESUME),
                  callbacks=[lambda info: info.step == 2])  # asks to stop after step 2
    assert first.status == "stopped" and first.step == 2
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
    second = train(train_config(models["llama_tied"], spanish, out, resume=True, **RESUME))
    assert second.step == 4 and second.status == "completed"
    _assert_same_run(out, reference_run)
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["path"] == str(models["llama_tied"].resolve()) and len(run["model"]["config_sha256"]) == 64
    assert run["config"]["max_steps"] == 4 and run["objective"] == "clm"
    assert run["resumed_from"][-1].endswith("step-000002")


def test_keyboard_interrupt_mid_step_checkpoints_the_last_step(models, spanish, reference_run, tmp_path,
                                                               monkeypatch):
    import vocabshift.train.loop as loop

    calls = {"n": 0}
    real_build = loop.build_setup

    def build_with_hook(config, model):
        setup = real_build(config, model)

        def interrupt(module, args):
            calls["n"] += 1
            if calls["n"] == 6:  # first micro-batch of step 3 (two micro-batches per step)
                raise KeyboardInterrupt

        setup.base.register_forward_pre_hook(interrupt)
        return setup

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "build_setup", build_with_hook)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(models["llama_tied"], spanish, out, **RESUME))
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
    monkeypatch.setattr(loop, "build_setup", real_build)
    train(train_config(models["llama_tied"], spanish, out, resume=True, **RESUME))
    _assert_same_run(out, reference_run)


def test_ctrl_c_signal_stops_at_the_next_step_with_a_checkpoint(models, spanish, tmp_path):
    def press_ctrl_c(info: StepInfo) -> None:
        if info.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # As in a shell running the tests in the background (or nohup): SIGINT ignored on entry.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(train_config(models["gpt2"], spanish, out, max_steps=5), callbacks=[press_ctrl_c])
        assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
        # the handlers are put back to what they were, not to Python's default
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == before[1]
    finally:
        signal.signal(signal.SIGINT, before[0])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(models, spanish, tmp_path):
    out = tmp_path / "run"
    config = train_config(models["llama_untied"], spanish, out, max_steps=6, save_every=1, embedding_lr=1e30,
                          lora_lr=1e30, max_grad_norm=None, warmup_steps=0, schedule="constant")
    with pytest.raises(TrainingDiverged, match=r"(nan|inf) at step \d.*last good checkpoint is step \d") as err:
        train(config)
    kept = list_checkpoints(out)
    assert kept and kept[-1].name == f"step-{int(str(err.value).split('checkpoint is step ')[1][0]):06d}"
    assert not list((out / "checkpoints").glob(".tmp-*"))


# -- bad input --------------------------------------------------------------------------------------


def test_corpus_shorter_than_one_sequence_fails_before_writing(models, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Hola mundo.\nBuenos días.\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(CorpusError, match=r"corpus has \d+ tokens.*one sequence needs 32"):
        train(train_config(models["llama_tied"], short, out, data={"eval_documents": 0}))
    assert not out.exists()


def test_new_rows_without_an_id_map_fails_before_writing(models, spanish, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="id_map.json"):
        train(train_config(models["gpt2"], spanish, out, embeddings="new"))
    assert not out.exists()


def test_objective_the_model_cannot_do(models, spanish, tmp_path):
    with pytest.raises(ConfigError, match="objective 'clm' needs a causal-LM head"):
        train(train_config(models["bert"], spanish, tmp_path / "run", data={"objective": "clm"}))


def test_resume_errors_and_refusing_a_non_empty_run_dir(models, spanish, tmp_path):
    with pytest.raises(ConfigError, match="run directory does not exist"):
        train(train_config(models["llama_tied"], spanish, tmp_path / "missing", resume=True))
    out = tmp_path / "run"
    train(train_config(models["llama_tied"], spanish, out, max_steps=1))
    with pytest.raises(ConfigError, match="trained from .*llama_tied.* not from .*llama_untied"):
        train(train_config(models["llama_untied"], spanish, out, resume=True, max_steps=2))
    with pytest.raises(OutputExistsError, match="not empty.*--resume.*--force"):
        train(train_config(models["llama_tied"], spanish, out, max_steps=1))
    train(train_config(models["llama_tied"], spanish, out, max_steps=1, force=True))
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="no run.json"):
        train(train_config(models["llama_tied"], spanish, other, max_steps=1, force=True))
    assert (other / "notes.txt").exists()


def test_config_validation():
    corpus = corpus_from_paths(["x.txt"])
    with pytest.raises(ConfigError, match="exactly one of max_steps and max_tokens"):
        TrainConfig(model="m", corpus=corpus, out="o")
    with pytest.raises(ConfigError, match="embeddings must be one of"):
        TrainConfig(model="m", corpus=corpus, out="o", max_steps=1, embeddings="some")
    with pytest.raises(ConfigError, match="did you mean 'lora_lr'"):
        TrainConfig.from_dict({"model": "m", "corpus": {"sources": [{"paths": ["x"]}]}, "out": "o",
                               "max_steps": 1, "lora_rl": 1e-4})
    cfg = TrainConfig.from_dict({"model": "m", "corpus": {"sources": [{"paths": ["x"]}]}, "out": "o",
                                 "max_tokens": 1000, "lora": {"r": 4}, "data": {"seq_len": 64}})
    assert cfg.lora.r == 4 and cfg.data.seq_len == 64 and TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_a_second_run_in_the_same_process_gets_its_own_settings(models, spanish, tmp_path):
    """accelerate's process-wide state must not carry the first run's settings into the next (it
    refused a different mixed precision, and silently dropped compile)."""
    first = train(train_config(models["llama_tied"], spanish, tmp_path / "a", max_steps=1, mixed_precision="no"))
    assert first.status == "completed"
    second = train(train_config(models["llama_tied"], spanish, tmp_path / "b", max_steps=1, mixed_precision="bf16"))
    assert second.status == "completed" and math.isfinite(second.metrics["loss"])


def test_resume_with_more_steps_follows_the_new_schedule_from_its_first_step(models, spanish, tmp_path):
    """A run stopped at step 2 of 4 and resumed with max_steps 8: the next update uses the learning rate
    of step 2 in an 8-step schedule, not the one the 4-step schedule gave (the checkpoint's)."""
    out = tmp_path / "run"
    settings = {**RESUME, "schedule": "linear", "warmup_steps": 1, "min_lr_ratio": 0.0}
    train(train_config(models["llama_tied"], spanish, out, **settings), callbacks=[lambda info: info.step == 2])
    train(train_config(models["llama_tied"], spanish, out, resume=True, **{**settings, "max_steps": 8}))
    logged = {m["step"]: m["lr"] for m in read_metrics(out) if "lr" in m}
    for step in (3, 4, 8):  # the update of step s runs at scheduler position s - 1
        want = 1e-2 * schedule_factor(step - 1, start=0, total=8, warmup=1, kind="linear", min_ratio=0.0)
        assert logged[step]["embeddings"] == pytest.approx(want, rel=1e-6), step
