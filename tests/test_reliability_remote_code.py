"""Foreign code (issue 12, class 3): vocabshift never runs code that comes with a model or a checkpoint.

A model folder whose ``config.json`` or ``tokenizer_config.json`` names its own classes (``auto_map``)
makes transformers ask on stdin whether to run that code, and ``yes | vocabshift prune ...`` answered
yes. Every command is run here with stdin full of "y": each refuses the folder in one line and the
folder's ``.py`` (which writes a marker file when imported) never runs. Pickles are the other door:
a ``pytorch_model.bin``, an ``optimizer.bin``, an RNG ``.pkl`` and an object ``.npy`` whose unpickling
would write the marker are refused with an error, and the marker never appears.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import udhr_lines
from tests.test_train import pico_model, train_config
from vocabshift.errors import ModelError, VectorsError

REPO = Path(__file__).resolve().parent.parent
YES = "y\n" * 200

_BATCH = """
import contextlib, io, json, sys, threading
from cli.main import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    for thread in threading.enumerate():  # a failed command's import warm-up must not race the next one
        if thread.name.startswith("vocabshift-"):
            thread.join()
    results.append({"args": args, "code": code, "stderr": err.getvalue()})
print("RESULTS " + json.dumps(results))
"""


def cli_batch(commands: list[list[object]], stdin: str = YES) -> list[dict]:
    """Run several ``vocabshift`` commands in one child process (one start-up), stdin answering "y" to any
    prompt; each command's exit code and stderr."""
    proc = subprocess.run([sys.executable, "-c", _BATCH, json.dumps([[str(a) for a in c] for c in commands])],
                          cwd=REPO, input=stdin, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, (proc.returncode, proc.stderr[-3000:])
    return json.loads(line[len("RESULTS "):])


def error_line(result: dict) -> str:
    """The command's one error line; it failed with status 1, not with an 'unexpected' error."""
    assert result["code"] == 1, result
    lines = [x for x in result["stderr"].splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "unexpected" not in lines[0], result
    return lines[0]


def evil_code(marker: Path) -> str:
    """A module that, on import, writes ``marker`` and then defines a working pico-Llama 'custom' class."""
    return (f"open({str(marker)!r}, 'w').write('ran')\n"
            "from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast\n"
            "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n"
            "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
            "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")


def with_custom_code(source: Path, directory: Path, marker: Path, where: str) -> Path:
    """A copy of ``source`` whose ``where`` (config.json or tokenizer_config.json) names classes in its ``evil.py``."""
    shutil.copytree(source, directory)
    (directory / "evil.py").write_text(evil_code(marker))
    path = directory / where
    data = json.loads(path.read_text())
    if where == "config.json":  # a model type transformers does not know: only the folder's code can load it
        data.update(model_type="evil_llama", architectures=["EvilModel"],
                    auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    else:
        data.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil.EvilTokenizer"]})
    path.write_text(json.dumps(data))
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory, roberta_source) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("world")
    text = root / "spa.txt"
    text.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return {"root": root, "model": pico_model("llama_tied", roberta_source, root / "model"), "text": text,
            "tokenizer": roberta_source}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


# --------------------------------------------------------------------------------------------------
# auto_map: refused before anything is loaded


def test_refuse_remote_code_names_the_file(world, tmp_path):
    from vocabshift.safe_loading import refuse_remote_code

    refuse_remote_code(world["model"])  # a plain model passes
    marker = tmp_path / "MARKER"
    for where in ("config.json", "tokenizer_config.json"):
        folder = with_custom_code(world["model"], tmp_path / where, marker, where)
        with pytest.raises(ModelError, match="never runs code from a model folder") as info:
            refuse_remote_code(folder)
        assert info.value.path == str(folder / where) and "auto_map" in str(info.value)
    (folder / "custom_generate").mkdir()
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match="custom_generate"):
        refuse_remote_code(folder)
    assert not marker.exists()


def test_every_load_passes_trust_remote_code_false():
    """The loads themselves say no too: transformers never gets to ask."""
    import re

    loads = []
    for path in sorted((REPO / "vocabshift").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if re.search(r"\.from_pretrained\(", line) and not line.lstrip().startswith(("#", '"', "``")):
                loads.append((f"{path.relative_to(REPO)}:{n + 1}", " ".join(lines[n:n + 3])))  # the whole call
    assert len(loads) >= 10
    bad = [where for where, call in loads if "LOAD_KWARGS" not in call and "trust_remote_code=False" not in call
           and "**kwargs" not in call]
    assert bad == []


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_no_command_runs_a_model_folders_code(where, world, tmp_path):
    from vocabshift.train.loop import train

    marker = tmp_path / "MARKER"
    evil = with_custom_code(world["model"], tmp_path / "evil", marker, where)
    # A finished training run of the evil folder's model, for export (made before the folder turned evil).
    run_model = shutil.copytree(world["model"], tmp_path / "run-model")
    train(train_config(run_model, world["text"], tmp_path / "run", max_steps=1))
    with_custom_code(world["model"], tmp_path / "tmp-evil", marker, where)
    for name in ("evil.py", where):
        shutil.copy2(tmp_path / "tmp-evil" / name, run_model / name)
    out = tmp_path / "out"
    commands = {
        "prune": ["prune", "--model", evil, "--out", out, "--keep-scripts", "Latn"],
        "prune --in-memory": ["prune", "--model", evil, "--out", out, "--keep-scripts", "Latn", "--in-memory"],
        "extend": ["extend", "--model", evil, "--tokenizer", world["tokenizer"], "--out", out],
        "extend --tokenizer": ["extend", "--model", world["model"], "--tokenizer", evil, "--out", out],
        "init": ["init", "--method", "mean", "--model", evil, "--tokenizer", world["tokenizer"], "--out", out],
        "train": ["train", "--model", evil, "--corpus", world["text"], "--out", out, "--max-steps", 1, "--no-progress"],
        "export": ["export", "--run", tmp_path / "run", "--out", out],
        "eval": ["eval", "--model", evil, "--corpus", world["text"], "--out", out],
        "tokenizer train": ["tokenizer", "train", "--source", evil, "--corpus", world["text"], "--vocab-size", 600,
                            "--out", out, "--no-progress"],
        "tokenizer stats": ["tokenizer", "stats", "--tokenizer", evil, "--corpus", world["text"]],
    }
    results = dict(zip(commands, cli_batch(list(commands.values())), strict=True))
    assert not marker.exists(), "a model folder's code ran"
    for name, result in results.items():
        line = error_line(result)
        assert "never runs code from a model folder" in line and f"{where}" in line, (name, line)
        assert not out.exists() and leftovers(tmp_path) == [], name


def test_library_loads_refuse_too(world, tmp_path):
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.surgery.lazy import meta_model
    from vocabshift.tokenization.source import load_hf_tokenizer, load_source_tokenizer
    from vocabshift.train.loop import load_for_training

    marker = tmp_path / "MARKER"
    evil = with_custom_code(world["model"], tmp_path / "evil", marker, "config.json")
    for load in (load_model, meta_model, load_for_training, load_hf_tokenizer, load_source_tokenizer):
        with pytest.raises(ModelError, match="never runs code from a model folder"):
            load(evil)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Pickles: loaded with weights_only=True / allow_pickle=False, so code in them never runs


class Payload:
    """Unpickling this writes the marker file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_malicious_pytorch_model_bin(world, tmp_path):
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.train.loop import load_for_training

    marker = tmp_path / "MARKER"
    model = shutil.copytree(world["model"], tmp_path / "bin-model")
    (model / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Payload(marker)}, model / "pytorch_model.bin")
    for load in (load_model, load_for_training):
        with pytest.raises(ModelError, match=r"weights_only=True\), never code"):
            load(model)
    out = tmp_path / "out"
    results = cli_batch([["prune", "--model", model, "--out", out, "--keep-scripts", "Latn"],
                         ["train", "--model", model, "--corpus", world["text"], "--out", out, "--max-steps", 1]])
    for result in results:
        assert "never code" in error_line(result)
    assert not marker.exists() and not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("victim", ["optimizer.bin", "random_states_0.pkl"])
def test_malicious_training_state_on_resume(victim, world, tmp_path):
    from vocabshift.train.checkpoint import list_checkpoints
    from vocabshift.train.loop import train

    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    train(train_config(world["model"], world["text"], run, max_steps=1))
    checkpoint = list_checkpoints(run)[-1]
    assert (checkpoint / victim).is_file()
    torch.save({"state": Payload(marker)}, checkpoint / victim)
    with pytest.raises(ModelError, match="never code") as info:
        train(train_config(world["model"], world["text"], run, max_steps=2, resume=True))
    assert info.value.path == str(checkpoint / victim if victim.endswith(".pkl") else checkpoint)
    assert not marker.exists()
    assert [p.name for p in list_checkpoints(run)] == [checkpoint.name]  # nothing trained past it


def test_object_npy_in_an_alignment(tmp_path):
    from vocabshift.vectors.align import W_FILE, load_aligned

    marker = tmp_path / "MARKER"
    (tmp_path / "alignment.json").write_text(json.dumps({"source": {}, "target": {}}))
    np.save(tmp_path / W_FILE, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(VectorsError, match="allow_pickle=False"):
        load_aligned(tmp_path)
    assert not marker.exists()
