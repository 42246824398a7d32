"""Damaged safetensors (issue 12, class 2): one error naming the file, never a hang, nothing written.

A file one byte short used to make the lean path's read loop spin forever; a huge header length raised
``OverflowError`` / ``MemoryError``. Every kind of damage below is tried on the library's load paths
(lean remap, lean tensor read, in-memory load, training load) and on every CLI command that loads a
model, each under a time limit so that a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import udhr_lines
from tests.test_train import pico_model, train_config
from vocabshift.errors import ModelError

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 120  # a CLI run takes seconds; only a hang reaches this


def _header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _rewrite(path: Path, header: dict[str, Any], data: bytes) -> None:
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _last_tensor(header: dict[str, Any]) -> str:
    return max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][1])


def one_byte_short(path: Path) -> str:
    size = path.stat().st_size
    os.truncate(path, size - 1)
    return f"truncated: expected {size} bytes, found {size - 1}"


def one_byte_long(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0")
    return f"size mismatch: expected {size} bytes, found {size + 1}"


def header_length_huge(path: Path) -> str:
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", 2**64 - 1)
    path.write_bytes(bytes(raw))
    return "header length field says 18446744073709551615 bytes"


def header_length_past_end(path: Path) -> str:
    size = path.stat().st_size
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", size)
    path.write_bytes(bytes(raw))
    return f"truncated: expected at least {size + 8} bytes (the header), found {size}"


def random_bytes(path: Path) -> str:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))
    return "not a safetensors file"


def empty(path: Path) -> str:
    path.write_bytes(b"")
    return "truncated: expected at least 8 bytes (the header length), found 0"


def header_garbage(path: Path) -> str:
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    raw[8:8 + n] = b"{" + b"\xff" * (n - 1)
    path.write_bytes(bytes(raw))
    return "its header is not JSON"


def offsets_past_end(path: Path) -> str:
    """The last tensor claims twice its rows (shape and offsets agree): its data ends past the file."""
    header, data = _header(path)
    name = _last_tensor(header)
    begin, end = header[name]["data_offsets"]
    header[name]["shape"][0] *= 2
    header[name]["data_offsets"] = [begin, end + (end - begin)]
    _rewrite(path, header, data)
    return "truncated: expected"


def offsets_disagree_with_shape(path: Path) -> str:
    header, data = _header(path)
    name = _last_tensor(header)
    header[name]["shape"][0] += 1
    _rewrite(path, header, data)
    return f"tensor {name!r}"


def unknown_dtype(path: Path) -> str:
    header, data = _header(path)
    header[_last_tensor(header)]["dtype"] = "F128"
    _rewrite(path, header, data)
    return "no valid dtype, shape and data_offsets"


DAMAGE: dict[str, Callable[[Path], str]] = {f.__name__: f for f in (
    one_byte_short, one_byte_long, header_length_huge, header_length_past_end, random_bytes, empty,
    header_garbage, offsets_past_end, offsets_disagree_with_shape, unknown_dtype)}


def within(seconds: float, fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in a daemon thread; fail the test if it is still running after ``seconds`` (a hang)."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            caught.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a read loop that never ends"
    return caught[0] if caught else None


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def cli(*args: Any, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The real ``vocabshift`` in a child process, killed (and the test failed) past :data:`LIMIT_S`."""
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=LIMIT_S,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The CLI's error line; the run failed with status 1 and no traceback or 'unexpected' error."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def pico(tmp_path_factory, roberta_source) -> Path:
    """An untied pico Llama (input embeddings and head both vocabulary-sized) with a byte-level BPE."""
    return pico_model("llama_untied", roberta_source, tmp_path_factory.mktemp("pico") / "model")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, pico) -> Path:
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharded") / "model"
    AutoModelForCausalLM.from_pretrained(pico).save_pretrained(out, max_shard_size="40KB")
    for f in pico.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.json", "merges.txt"):
            shutil.copy2(f, out / f.name)
    assert len(list(out.glob("model-*.safetensors"))) > 1
    return out


@pytest.fixture(scope="module")
def spanish(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


def damaged_copy(source: Path, directory: Path, damage: str, shard: str = "model.safetensors") -> tuple[Path, str]:
    """A copy of ``source`` whose ``shard`` has ``damage``; returns it and the message expected."""
    shutil.copytree(source, directory)
    return directory, DAMAGE[damage](directory / shard)


# --------------------------------------------------------------------------------------------------
# The library


def test_intact_checkpoints_pass_the_check(pico, sharded):
    from vocabshift.surgery.lazy import check_safetensors

    assert [p.name for p in check_safetensors(pico)] == ["model.safetensors"]
    assert len(check_safetensors(sharded)) > 1


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_load_path_names_the_damaged_file(damage, pico, tmp_path):
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.surgery.lazy import read_vocab_tensors, remap_checkpoint
    from vocabshift.train.loop import load_for_training

    model, expected = damaged_copy(pico, tmp_path / "m", damage)
    n = json.loads((model / "config.json").read_text())["vocab_size"]
    (tmp_path / "out").mkdir()
    for load in (lambda: remap_checkpoint(model, tmp_path / "out", list(range(n - 1))),
                 lambda: read_vocab_tensors(model), lambda: load_model(model), lambda: load_for_training(model)):
        err = within(LIMIT_S, load)
        assert isinstance(err, ModelError), repr(err)
        assert err.path == str(model / "model.safetensors") and expected in str(err), str(err)
    assert list((tmp_path / "out").iterdir()) == []  # checked before anything is written


def test_prune_library_writes_nothing(pico, tmp_path):
    from vocabshift.vocabulary import PruneConfig, prune

    model, expected = damaged_copy(pico, tmp_path / "m", "one_byte_short")
    for in_memory in (False, True):
        config = PruneConfig(model=str(model), keep_scripts=["Latin"], out=str(tmp_path / "out"), in_memory=in_memory)
        err = within(LIMIT_S, lambda: prune(config))  # noqa: B023 - joined before the next iteration
        assert isinstance(err, ModelError) and expected in str(err), repr(err)
        assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["one_byte_short", "header_length_huge", "offsets_past_end"])
def test_a_damaged_shard_is_named(damage, sharded, tmp_path):
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.surgery.lazy import check_safetensors

    shard = sorted(p.name for p in sharded.glob("model-*.safetensors"))[-1]
    model, expected = damaged_copy(sharded, tmp_path / "m", damage, shard)
    for load in (lambda: check_safetensors(model), lambda: load_model(model)):
        err = within(LIMIT_S, load)
        assert isinstance(err, ModelError) and err.path == str(model / shard) and expected in str(err), repr(err)


def test_sharded_index_naming_a_missing_shard(sharded, tmp_path):
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.surgery.lazy import can_stream

    model = shutil.copytree(sharded, tmp_path / "m")
    shard = sorted(p.name for p in model.glob("model-*.safetensors"))[0]
    (model / shard).unlink()
    for load in (lambda: can_stream(model), lambda: load_model(model)):
        err = within(LIMIT_S, load)
        assert isinstance(err, ModelError) and err.path == str(model / "model.safetensors.index.json"), repr(err)
        assert f"missing: {shard}" in str(err)


@pytest.mark.parametrize("index", ["{not json", '{"weight_map": ["a"]}', '{"weight_map": {"w": "../x.safetensors"}}'])
def test_sharded_index_that_is_not_one(index, sharded, tmp_path):
    from vocabshift.surgery.lazy import check_safetensors

    model = shutil.copytree(sharded, tmp_path / "m")
    (model / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ModelError) as info:
        check_safetensors(model)
    assert info.value.path == str(model / "model.safetensors.index.json")


def test_a_file_that_shrinks_after_its_check_stops_the_copy_loop(pico, tmp_path, monkeypatch):
    """The header was fine when checked; the file lost a byte afterwards (another process): the copy
    loop must stop with the error, not read zero bytes forever (the original hang)."""
    from vocabshift.surgery import lazy

    weights = shutil.copytree(pico, tmp_path / "m") / "model.safetensors"
    checked = lazy._read_header(weights)
    os.truncate(weights, weights.stat().st_size - 1)
    monkeypatch.setattr(lazy, "_read_header", lambda path: checked)
    no_vocab_plan = (None, None, None, 0)  # every tensor copied as raw bytes
    err = within(LIMIT_S, lambda: lazy._rewrite_file(weights, tmp_path / "out.safetensors", set(), no_vocab_plan,
                                                     set()))
    assert isinstance(err, ModelError) and "truncated: expected at least" in str(err), repr(err)
    assert err.path == str(weights)


# --------------------------------------------------------------------------------------------------
# The command line: every command that loads a model


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, pico) -> tuple[Path, str]:
    return damaged_copy(pico, tmp_path_factory.mktemp("short") / "model", "one_byte_short")


@pytest.mark.parametrize("command", ["prune", "prune --in-memory", "extend", "init"])
def test_cli_model_commands_fail_in_one_line(command, short_model, roberta_source, tmp_path):
    model, expected = short_model
    out = tmp_path / "out"
    args = {"prune": ["--keep-scripts", "Latn"], "extend": ["--tokenizer", roberta_source],
            "init": ["--method", "mean", "--tokenizer", roberta_source]}[command.split()[0]]
    proc = cli(*command.split(), "--model", model, "--out", out, *args)
    line = one_line_error(proc)
    assert str(model / "model.safetensors") in line and expected in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_prune_random_file(pico, tmp_path):
    """Random bytes: a huge header length, which used to end in OverflowError or MemoryError."""
    model, expected = damaged_copy(pico, tmp_path / "m", "random_bytes")
    proc = cli("prune", "--model", model, "--out", tmp_path / "out", "--keep-scripts", "Latn")
    assert expected in one_line_error(proc)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_cli_train_fails_before_the_run_directory(short_model, spanish, tmp_path):
    model, expected = short_model
    run = tmp_path / "run"
    proc = cli("train", "--model", model, "--corpus", spanish, "--out", run, "--max-steps", 1, "--no-progress")
    assert expected in one_line_error(proc)
    assert not run.exists() and leftovers(tmp_path) == []


def test_cli_export_of_a_run_whose_model_was_damaged(pico, spanish, tmp_path):
    from vocabshift.train.loop import train

    model = shutil.copytree(pico, tmp_path / "model")
    train(train_config(model, spanish, tmp_path / "run", max_steps=1))
    expected = one_byte_short(model / "model.safetensors")
    out = tmp_path / "exported"
    line = one_line_error(cli("export", "--run", tmp_path / "run", "--out", out))
    assert str(model / "model.safetensors") in line and expected in line
    assert not out.exists() and leftovers(tmp_path) == []
