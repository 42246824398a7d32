"""Data-parallel training under torchrun, on CPU (gloo): what `docs/training.md` promises for DDP.

Two processes of 2 sequences each against one process of 4 (the same global batch): the ranks read
different sequences, end with identical weights, equal the single-process run within float tolerance,
and a run stopped after 2 steps and resumed under torchrun ends exactly where the uninterrupted one did.
Each torchrun start costs a few seconds of imports per process, so the module shares its runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import udhr_lines
from tests.test_train import pico_model, train_config
from vocabshift.train.checkpoint import TRAINABLE_FILE, list_checkpoints, read_metrics
from vocabshift.train.loop import train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "ddp_driver.py"
STEPS = 4
SETTINGS = {
    "data": {"seq_len": 32, "eval_documents": 4, "eval_max_sequences": 4, "num_workers": 0},
    "lora": {"dropout": 0.0},  # dropout draws differ per rank; the comparison with one process needs none
    "train": {"max_steps": STEPS, "batch_size": 2, "embedding_lr": 1e-2, "lora_lr": 1e-2, "log_every": 1,
              "eval_every": 0, "save_every": 2, "progress": False, "warmup_steps": 1},
}


def _torchrun() -> list[str]:
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run_torchrun(tmp: Path, name: str, model: Path, corpus: Path, out: Path, env: dict[str, str] | None = None,
                  **extra: object) -> subprocess.CompletedProcess:
    settings = {**SETTINGS, "model": str(model), "corpus": str(corpus), "out": str(out), "dump": str(tmp / name),
                **extra}
    if extra.get("resume"):
        settings["train"] = {**settings["train"], "resume": True}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([*_torchrun(), str(DRIVER), str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _launch(tmp: Path, name: str, model: Path, corpus: Path, out: Path, **extra: object) -> dict[int, dict]:
    proc = _run_torchrun(tmp, name, model, corpus, out, **extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {r: {"info": json.loads((tmp / name / f"rank{r}.json").read_text()),
                "weights": load_file(str(tmp / name / f"rank{r}.safetensors"))} for r in (0, 1)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, roberta_source) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    corpus = tmp / "spa.txt"
    corpus.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return {"tmp": tmp, "corpus": corpus, "model": pico_model("llama_tied", roberta_source, tmp / "model")}


@pytest.fixture(scope="module")
def ddp_run(world) -> dict:
    out = world["tmp"] / "ddp"
    return {"out": out, "ranks": _launch(world["tmp"], "full", world["model"], world["corpus"], out)}


def test_ranks_read_different_data_and_end_identical(ddp_run):
    ranks = ddp_run["ranks"]
    assert ranks[0]["info"]["world"] == ranks[1]["info"]["world"] == 2
    seen0, seen1 = ranks[0]["info"]["batches"], ranks[1]["info"]["batches"]
    assert len(seen0) == len(seen1) == STEPS
    assert not set(seen0) & set(seen1), "both ranks trained on the same sequences"
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys() and ranks[0]["weights"]
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), f"{name} differs between ranks"
    run = json.loads((ddp_run["out"] / "run.json").read_text())
    assert run["num_processes"] == 2
    assert [p.name for p in list_checkpoints(ddp_run["out"])] == ["step-000002", "step-000004"]


def test_two_processes_equal_one_process_with_the_same_global_batch(world, ddp_run, tmp_path):
    torch.set_num_threads(1)
    overrides = {**SETTINGS["train"], "batch_size": 4}
    single = train(train_config(world["model"], world["corpus"], tmp_path / "single", data=dict(SETTINGS["data"]),
                                lora=dict(SETTINGS["lora"]), **overrides))
    assert single.step == STEPS
    losses = [m["loss"] for m in read_metrics(tmp_path / "single") if "loss" in m]
    ddp_losses = [m["loss"] for m in read_metrics(ddp_run["out"]) if "loss" in m]
    assert len(losses) == len(ddp_losses) == STEPS
    assert ddp_losses == pytest.approx(losses, rel=1e-4)
    mine = load_file(str(list_checkpoints(tmp_path / "single")[-1] / TRAINABLE_FILE))
    theirs = load_file(str(list_checkpoints(ddp_run["out"])[-1] / TRAINABLE_FILE))
    assert mine.keys() == theirs.keys()
    for name in mine:
        # The gradients agree to float rounding (the two ranks' means are averaged in another order), but
        # Adam divides by sqrt(v): on near-zero gradients that rounding moves a weight by up to ~1% of
        # one step (lr 1e-2). Ranks that read the same sequences would be off by whole steps.
        torch.testing.assert_close(theirs[name], mine[name], rtol=0, atol=2e-4, msg=name)


def test_resume_under_torchrun_continues_exactly(world, ddp_run):
    out = world["tmp"] / "resumed"
    first = _launch(world["tmp"], "first", world["model"], world["corpus"], out, stop_at=2)
    assert first[0]["info"]["status"] == "stopped" and first[0]["info"]["step"] == 2
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
    second = _launch(world["tmp"], "second", world["model"], world["corpus"], out, resume=True)
    assert second[0]["info"]["step"] == STEPS and second[0]["info"]["status"] == "completed"
    # the resumed ranks read the sequences the uninterrupted run read in steps 3 and 4
    for r in (0, 1):
        assert second[r]["info"]["batches"] == ddp_run["ranks"][r]["info"]["batches"][2:]
    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    assert losses == [m["loss"] for m in read_metrics(ddp_run["out"]) if "loss" in m]
    final = load_file(str(list_checkpoints(out)[-1] / TRAINABLE_FILE))
    reference = load_file(str(list_checkpoints(ddp_run["out"])[-1] / TRAINABLE_FILE))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name


# -- FSDP: the documented config, and CPU -----------------------------------------------------------


def _docs_fsdp_env(tmp: Path) -> dict[str, str]:
    """The environment accelerate's own launcher makes of the FSDP config in docs/training.md."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    text = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# fsdp\.yaml.*?)```", text, re.S)
    assert block, "docs/training.md lost its fsdp.yaml block"
    path = tmp / "fsdp.yaml"
    path.write_text(block.group(1), encoding="utf-8")
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}


def test_the_documented_fsdp_config_loads_as_fsdp2_wrapping_llama_layers(tmp_path, monkeypatch):
    import transformers
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = _docs_fsdp_env(tmp_path)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert hasattr(transformers.models.llama.modeling_llama, "LlamaDecoderLayer")
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT" and plugin.reshard_after_forward is True


def test_fsdp_on_cpu_is_refused_before_anything_is_written(world, tmp_path):
    out = world["tmp"] / "fsdp-cpu"
    proc = _run_torchrun(world["tmp"], "fsdp", world["model"], world["corpus"], out, env=_docs_fsdp_env(tmp_path))
    assert proc.returncode != 0
    assert "an FSDP config is set (ACCELERATE_USE_FSDP) but accelerate runs MULTI_CPU here" in proc.stderr
    assert not out.exists()
