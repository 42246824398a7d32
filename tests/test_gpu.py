"""The GPU path: tests marked ``gpu``, skipped without CUDA; ``benchmarks/gpu_suite.sh`` runs them.

On pico models (hidden 32, 2 layers) with real tokenizers, seconds each on one GPU (the compile test
compiles the model once, well under a minute):

- the training loop in bf16 autocast with fused AdamW (master weights fp32), and with ``compile: true``:
  loss finite and going down;
- 2 steps + resume + 2 steps equals 4 steps bit for bit on CUDA (deterministic kernels, as the suite sets);
- every init method gives on CUDA the rows it gives on the CPU, on the hand-made inputs of the CPU tests,
  and ``init_model`` with ``device: cuda`` (fvt) writes the CPU's model; distill's teacher runs on CUDA;
- a model exported from a bf16 CUDA run reloads with the trained model's logits (fp32 and bf16 exports);
- ``vocabshift eval`` on CUDA gives the CPU's bits per byte (fp32 closely, bf16 within 2%).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_init_distill import CONTEXTS
from tests.test_init_distill import _inputs as distill_inputs
from tests.test_init_methods import ALL, _assert_copied, _random_inputs
from tests.test_train import RESUME, _assert_same_run, pico_model, train_config
from tests.test_train import spanish as spanish  # noqa: F401  (the fixture)
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths
from vocabshift.init import list_init_methods, run_init_method
from vocabshift.train.checkpoint import read_metrics
from vocabshift.train.loop import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# Deterministic cuBLAS for the exact-resume test; read when CUDA starts, which no test has done at import.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: the first Accelerator's mixed precision and compile setting
    would hold for every later ``train()`` in this process (a later ``compile: true`` would be ignored)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def llama(tmp_path_factory, roberta_source) -> Path:
    """A pico Llama with a tied head and the RoBERTa-style byte-level BPE of the CPU tests."""
    return pico_model("llama_tied", roberta_source, tmp_path_factory.mktemp("gpu") / "llama")


def _losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run) if "loss" in m]


def _assert_learns(run: Path, steps: int) -> None:
    losses = _losses(run)
    assert len(losses) == steps and all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses


# ------------------------------------------------------------------------------------------- training


def test_bf16_with_fused_adamw_learns_with_fp32_master_weights(llama, spanish, tmp_path, monkeypatch):  # noqa: F811
    import vocabshift.train.loop as loop

    optimizers: list[torch.optim.Optimizer] = []
    dtypes: set[torch.dtype] = set()

    class RecordedAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    real_build = loop.build_setup

    def build(config, model):
        setup = real_build(config, model)
        for module in setup.base.modules():
            if type(module) is torch.nn.Linear:  # the projections, LoRA's A/B and the head
                module.register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
        return setup

    monkeypatch.setattr(torch.optim, "AdamW", RecordedAdamW)
    monkeypatch.setattr(loop, "build_setup", build)
    result = train(train_config(llama, spanish, tmp_path / "run", max_steps=8, warmup_steps=1,
                                mixed_precision="bf16"))
    assert result.status == "completed" and result.step == 8
    _assert_learns(tmp_path / "run", 8)
    assert len(optimizers) == 1 and optimizers[0].defaults["fused"] is True
    assert torch.bfloat16 in dtypes, dtypes  # autocast ran the matmuls in bf16
    trainable = [p for p in result.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 and p.device.type == "cuda" for p in trainable)
    assert math.isfinite(result.metrics["eval_bits_per_byte"])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["mixed_precision"] == "bf16"


def test_compile_learns_and_compiles(llama, spanish, tmp_path):  # noqa: F811
    # No held-out evaluation: eval mode would compile the graph a second time.
    result = train(train_config(llama, spanish, tmp_path / "run", max_steps=8, warmup_steps=1, compile=True,
                                mixed_precision="bf16", data={"eval_documents": 0}))
    assert result.status == "completed" and result.step == 8
    _assert_learns(tmp_path / "run", 8)
    assert hasattr(result.model, "_orig_mod"), type(result.model)  # torch.compile's OptimizedModule


@pytest.fixture
def deterministic():
    previous, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def test_resume_on_cuda_continues_exactly(llama, spanish, tmp_path, deterministic):  # noqa: F811
    settings = {**RESUME, "mixed_precision": "bf16"}
    reference = tmp_path / "reference"
    train(train_config(llama, spanish, reference, **settings))
    out = tmp_path / "run"
    first = train(train_config(llama, spanish, out, **settings), callbacks=[lambda info: info.step == 2])
    assert first.status == "stopped" and first.step == 2
    second = train(train_config(llama, spanish, out, resume=True, **settings))
    assert second.step == 4 and second.status == "completed"
    _assert_same_run(out, reference)  # same losses and same trained tensors, bit for bit


# ------------------------------------------------------------------------------------------- init


def test_every_init_method_is_tested_here():
    assert {m.name for m in list_init_methods()} == set(ALL) | {"distill"}


@pytest.mark.parametrize("name", ALL)
def test_init_method_cuda_equals_cpu(name):
    inputs = _random_inputs()
    cpu = run_init_method(name, inputs)
    gpu = run_init_method(name, dataclasses.replace(inputs, device="cuda"))
    assert gpu.rows.device.type == "cpu"
    torch.testing.assert_close(gpu.rows, cpu.rows, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu.origin, cpu.origin)
    _assert_copied(gpu, inputs)


def test_distill_cuda_equals_cpu():
    cpu = run_init_method("distill", distill_inputs(CONTEXTS), {"lr": 0.01, "epochs": 3})
    gpu = run_init_method("distill", dataclasses.replace(distill_inputs(CONTEXTS), device="cuda"),
                          {"lr": 0.01, "epochs": 3})
    assert gpu.rows.device.type == "cpu"
    torch.testing.assert_close(gpu.rows, cpu.rows, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu.origin, cpu.origin)


@pytest.fixture(scope="module")
def target_tokenizer(tmp_path_factory, roberta_source, spanish) -> Path:  # noqa: F811
    from vocabshift.tokenization.train import train_tokenizer

    out = tmp_path_factory.mktemp("gpu-tok") / "tok"
    train_tokenizer(TokenizerTrainConfig(source=str(roberta_source), corpus=corpus_from_paths([spanish]),
                                         vocab_size=600, out=str(out), show_progress=False))
    return out


def test_init_model_on_cuda_writes_the_cpu_model(llama, target_tokenizer, spanish, tmp_path):  # noqa: F811
    from vocabshift.init.apply import InitConfig, init_model

    weights = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        init_model(InitConfig(method="fvt", model=str(llama), tokenizer=str(target_tokenizer), out=str(out),
                              device=device))
        weights[device] = load_file(str(out / "model.safetensors"))
    assert weights["cpu"].keys() == weights["cuda"].keys()
    for name, tensor in weights["cpu"].items():
        torch.testing.assert_close(weights["cuda"][name], tensor, atol=1e-5, rtol=1e-5, msg=name)

    # distill: the source model runs as the teacher on CUDA
    out = tmp_path / "distill"
    init_model(InitConfig(method="distill", model=str(llama), tokenizer=str(target_tokenizer), out=str(out),
                          corpus=corpus_from_paths([spanish]), device="cuda",
                          options={"max_contexts": 64, "context_length": 24, "lr": 1e-2, "epochs": 2}))
    report = json.loads((out / "init_report.json").read_text())
    assert report["teacher"]["device"].startswith("cuda")
    info = report["matrices"]["input_embeddings"]["info"]
    assert info["loss_last"] < info["loss_first"] and math.isfinite(info["loss_last"])
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())


# ------------------------------------------------------------------------------------------- export


def test_export_of_a_bf16_run_reloads_with_the_trained_logits(llama, spanish, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    from vocabshift.export import ExportConfig, export

    result = train(train_config(llama, spanish, tmp_path / "run", max_steps=3, warmup_steps=0,
                                mixed_precision="bf16"))
    from accelerate.utils import extract_model_from_parallel

    # The trained model in fp32 on the CPU, without the bf16 autocast accelerate wrapped its forward in.
    model = extract_model_from_parallel(result.model, keep_fp32_wrapper=False).to("cpu").eval()
    ids = torch.randint(0, model.get_base_model().config.vocab_size, (2, 16),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()

    report = export(ExportConfig(run=str(result.run_dir), out=str(tmp_path / "fp32"))).report
    assert report["verify"]["max_abs_logit_difference"] <= report["verify"]["tolerance"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32").eval()
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight  # still tied
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)

    export(ExportConfig(run=str(result.run_dir), out=str(tmp_path / "bf16"), dtype="bfloat16"))
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16).eval()
    assert half.get_input_embeddings().weight.dtype == torch.bfloat16
    with torch.no_grad():
        got = half(input_ids=ids).logits.float()
    assert float((got - expected).abs().max()) <= 0.02 * max(1.0, float(expected.abs().max()))


# ------------------------------------------------------------------------------------------- eval


def test_eval_on_cuda_gives_the_cpu_bits_per_byte(llama, spanish, monkeypatch):  # noqa: F811
    from vocabshift.eval import EvalConfig, evaluate_model

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # fp32 means fp32 on both sides

    common = {"model": str(llama), "baseline": str(llama), "corpus": corpus_from_paths([spanish]),
              "max_documents": 20, "bootstrap": 0, "neighbours": 0, "speed_words": 50, "speed_warmup": 0,
              "speed_repeats": 1, "speed_max_repeats": 1, "speed_max_seconds": 1.0, "speed_new_tokens": 2}
    cpu = evaluate_model(EvalConfig(device="cpu", **common))
    cuda = evaluate_model(EvalConfig(device="cuda", **common))
    bf16 = evaluate_model(EvalConfig(device="cuda", dtype="bfloat16", **common))
    for key in ("old", "new"):
        ref = cpu.lm[key]
        assert ref is not None and ref.protocol == "document" and math.isfinite(ref.bits_per_byte)
        for other, rel in ((cuda, 1e-4), (bf16, 2e-2)):
            got = other.lm[key]
            assert got.bytes == ref.bytes and got.predicted_tokens == ref.predicted_tokens
            assert got.bits_per_byte == pytest.approx(ref.bits_per_byte, rel=rel), (key, rel)
    assert cuda.speed["new"] is not None
