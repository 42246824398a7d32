"""Export round trips: train a pico model, export it, reload it with plain transformers, same logits.

Covers a tied and an untied Llama-style model, GPT-2 and a BERT MLM; a factorized (OFA-style)
embedding materialized at export; the PEFT adapter written with --save-adapter; and the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_cli import run_cli
from tests.test_train import KINDS, pico_model, tokenizer_for, train_config
from tests.test_train import one_thread as one_thread  # noqa: F401  (the fixture, autouse here too)
from tests.test_train import spanish as spanish  # noqa: F401
from vocabshift.errors import ConfigError, OutputExistsError
from vocabshift.export import ExportConfig, export
from vocabshift.surgery.factorized import FactorizedEmbedding
from vocabshift.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request, spanish) -> dict[str, tuple[Path, Path, torch.nn.Module]]:  # noqa: F811
    """Per kind: (model dir, run dir, trained in-memory model), three steps each."""
    root = tmp_path_factory.mktemp("export")
    runs = {}
    for kind in KINDS:
        model_dir = pico_model(kind, tokenizer_for(kind, request), root / f"{kind}-model")
        result = train(train_config(model_dir, spanish, root / f"{kind}-run", max_steps=3, warmup_steps=0))
        runs[kind] = (model_dir, result.run_dir, result.model)
    return runs


def _auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if kind == "bert" else AutoModelForCausalLM


def _probe(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", KINDS)
def test_export_round_trip_gives_the_trained_models_logits(kind, trained, tmp_path):
    from transformers import AutoTokenizer

    model_dir, run_dir, model = trained[kind]
    out = tmp_path / "exported"
    result = export(ExportConfig(run=str(run_dir), out=str(out)))
    reloaded = _auto_class(kind).from_pretrained(out).eval()
    assert type(reloaded).__name__ == json.loads((model_dir / "config.json").read_text())["architectures"][0]
    ids = _probe(reloaded.config.vocab_size)
    model.eval()
    with torch.no_grad():
        expected, got = model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    tied = kind != "llama_untied"
    assert result.report["tied"] is tied and reloaded.config.tie_word_embeddings is tied
    assert (reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight) is tied
    assert len(AutoTokenizer.from_pretrained(out)) == reloaded.get_input_embeddings().weight.shape[0]
    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter*"))
    assert (out / "generation_config.json").is_file() or kind == "bert"
    card = (out / "README.md").read_text()
    for section in ("## Provenance", "## Vocabulary and parameters", "## Training recipe", "## Metrics",
                    str(model_dir.resolve()), "eval_bits_per_byte"):
        assert section in card
    assert result.report["verify"]["max_abs_logit_difference"] < 1e-5


def test_factorized_embedding_trains_and_is_materialized(request, spanish, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    model_dir = pico_model("llama_tied", tokenizer_for("llama_tied", request), tmp_path / "model")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    g = torch.Generator().manual_seed(1)
    FactorizedEmbedding(torch.randn(vocab, 8, generator=g) * 0.1, torch.randn(8, 32, generator=g)).save(
        model_dir / "factorized_embedding.safetensors")
    start = FactorizedEmbedding.load(model_dir / "factorized_embedding.safetensors")
    result = train(train_config(model_dir, spanish, tmp_path / "run", max_steps=3, train_primitives=False))
    base = result.model.get_base_model()
    emb = base.get_input_embeddings()
    assert isinstance(emb, FactorizedEmbedding)
    assert not torch.equal(emb.coordinates, start.coordinates) and torch.equal(emb.primitives, start.primitives)
    assert result.parameters["trainable"]["embeddings"] == vocab * 8

    out = tmp_path / "exported"
    export(ExportConfig(run=str(result.run_dir), out=str(out)))
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(reloaded.get_input_embeddings().weight, (emb.coordinates @ emb.primitives).detach(),
                               atol=1e-6, rtol=1e-6)
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    ids = _probe(vocab)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("primitives_lr", [None, 3e-3])
def test_factorized_primitives_train_in_their_own_group_and_resume_exactly(request, spanish, tmp_path,  # noqa: F811
                                                                        primitives_lr):
    from safetensors.torch import load_file

    from vocabshift.train.checkpoint import TRAINABLE_FILE, list_checkpoints, read_metrics

    model_dir = pico_model("llama_tied", tokenizer_for("llama_tied", request), tmp_path / "model")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    g = torch.Generator().manual_seed(1)
    FactorizedEmbedding(torch.randn(vocab, 8, generator=g) * 0.1, torch.randn(8, 32, generator=g)).save(
        model_dir / "factorized_embedding.safetensors")
    start = FactorizedEmbedding.load(model_dir / "factorized_embedding.safetensors")
    settings = {"max_steps": 4, "train_primitives": True, "primitives_lr": primitives_lr, "lora_lr": 2e-3,
                "schedule": "constant", "warmup_steps": 0, "save_every": 2}
    ref = train(train_config(model_dir, spanish, tmp_path / "ref", **settings))
    assert ref.parameters["trainable"]["primitives"] == 8 * 32
    assert ref.parameters["trainable"]["embeddings"] == vocab * 8
    emb = ref.model.get_base_model().get_input_embeddings()
    assert not torch.equal(emb.primitives, start.primitives)
    # The primitives are shared by every row: their learning rate is the LoRA one unless given.
    lrs = [m["lr"] for m in read_metrics(ref.run_dir) if "lr" in m]
    expected = 2e-3 if primitives_lr is None else primitives_lr
    assert all(lr["primitives"] == pytest.approx(expected) and lr["embeddings"] == pytest.approx(1e-2) for lr in lrs)

    out = tmp_path / "run"
    first = train(train_config(model_dir, spanish, out, **settings), callbacks=[lambda info: info.step == 2])
    assert first.step == 2
    train(train_config(model_dir, spanish, out, resume=True, **settings))
    final, want = (load_file(str(list_checkpoints(r)[-1] / TRAINABLE_FILE)) for r in (out, ref.run_dir))
    assert final.keys() == want.keys() and any("primitives" in k for k in want)
    for name in want:
        assert torch.equal(final[name], want[name]), name


def test_saved_adapter_loads_with_peft_on_the_runs_model(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, run_dir, _ = trained["llama_untied"]
    out = tmp_path / "exported"
    export(ExportConfig(run=str(run_dir), out=str(out), save_adapter=True))
    assert (out / "adapter" / "adapter_config.json").is_file()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = _probe(merged.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_export_errors(trained, tmp_path):
    _, run_dir, _ = trained["gpt2"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputExistsError):
        export(ExportConfig(run=str(run_dir), out=str(out)))
    with pytest.raises(ConfigError, match="no checkpoint for step 7"):
        export(ExportConfig(run=str(run_dir), out=str(tmp_path / "o2"), checkpoint="7"))
    empty_run = tmp_path / "empty-run"
    shutil.copytree(run_dir, empty_run)
    shutil.rmtree(empty_run / "checkpoints")
    with pytest.raises(ConfigError, match="no checkpoint to export"):
        export(ExportConfig(run=str(empty_run), out=str(tmp_path / "o3")))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError, match="not a vocabshift training run"):
        export(ExportConfig(run=str(plain), out=str(tmp_path / "o4")))


def test_cli_train_then_export(trained, spanish, tmp_path, capsys):  # noqa: F811
    model_dir = trained["gpt2"][0]
    run = tmp_path / "run"
    recipe = tmp_path / "train.yaml"
    recipe.write_text("batch_size: 4\nlora: {r: 4}\ndata: {seq_len: 32, eval_documents: 4, num_workers: 0}\n")
    code, out, err = run_cli(capsys, "train", "--config", recipe, "--model", model_dir, "--corpus", spanish,
                             "--out", run, "--max-steps", "2", "--lora-alpha", "8", "--no-progress")
    assert code == 0, err
    assert "trained 2 steps" in out and "eval loss" in out
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["lora"] == {**config["lora"], "r": 4, "alpha": 8.0} and config["data"]["seq_len"] == 32
    code, out, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "model")
    assert code == 0, err
    assert "exported step-000002" in out and "tied head" in out

    code, out, err = run_cli(capsys, "train", "--model", model_dir, "--corpus", spanish, "--out", tmp_path / "nope",
                             "--max-steps", "2", "--resume")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: ") and "run directory does not exist" in last
