"""``--log-with tensorboard`` and ``--log-with wandb`` with the real packages, on a pico Llama.

One 4-step run logs to both; the TensorBoard event files (read back with TensorBoard's own
``EventAccumulator``) and the offline W&B transaction log (records parsed with wandb's protobuf schema)
hold the numbers of ``metrics.jsonl``: loss, learning rate per parameter group, tokens/s, gradient
norm and the evaluation's bits per byte. A resumed run shows the resumed numbers, not those an earlier
start logged after its checkpoint. wandb runs with ``WANDB_MODE`` unset, to check that vocabshift keeps
it offline (``WANDB_BASE_URL`` points at a closed local port in case it did not).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_cli import run_cli
from tests.test_train import one_thread as one_thread  # noqa: F401  (the fixture, autouse here too)
from tests.test_train import spanish as spanish  # noqa: F401
from tests.test_train import train_config
from vocabshift.errors import ConfigError
from vocabshift.train.checkpoint import CHECKPOINT_DIR, read_metrics, step_dir_name
from vocabshift.train.loop import train
from vocabshift.train.trackers import LOG_DIR, WANDB_ID_FILE, wandb_mode

TRAIN_TAGS = {"loss", "lr/embeddings", "lr/lora", "tokens", "tokens_per_second", "grad_norm"}
EVAL_TAGS = {"eval_loss", "eval_bits_per_byte", "eval_tokens"}


def _wandb_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """WANDB_MODE unset (vocabshift must choose offline); wandb's own files under ``home``."""
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_API_KEY"):
        mp.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(name, str(home / name.lower()))
    mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were it online, it would fail here, locally
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_CONSOLE", "off")  # leave pytest's capture of stdout/stderr alone


@pytest.fixture(autouse=True)
def wandb_offline_and_local(tmp_path_factory, monkeypatch) -> None:
    _wandb_env(monkeypatch, tmp_path_factory.mktemp("wandb-home"))


@pytest.fixture(scope="module")
def logged_run(llama, spanish, tmp_path_factory) -> Path:  # noqa: F811
    """4 steps logged to TensorBoard and W&B, evaluated at steps 2 and 4."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    run = tmp_path_factory.mktemp("logged") / "run"
    with pytest.MonkeyPatch.context() as mp:  # (the autouse fixture is function-scoped)
        _wandb_env(mp, tmp_path_factory.mktemp("wandb-home"))
        train(train_config(llama, spanish, run, max_steps=4, eval_every=2, log_with=["tensorboard", "wandb"]))
    return run


def _expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as tracker series: tag -> [(step, value)]."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run):
        values = {k: v for k, v in record.items() if k not in ("step", "lr")}
        values.update({f"lr/{group}": lr for group, lr in record.get("lr", {}).items()})
        for tag, value in values.items():
            series.setdefault(tag, []).append((record["step"], value))
    return series


def _tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_the_metrics_files_numbers(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    directory = logged_run / LOG_DIR / "tensorboard"
    assert all(p.name.startswith("events.out.tfevents.") for p in directory.iterdir())  # one run, no stray dirs
    scalars, expected = _tensorboard_scalars(directory), _expected(logged_run)
    assert set(scalars) == TRAIN_TAGS | EVAL_TAGS == set(expected)
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in scalars["eval_bits_per_byte"]] == [2, 4]
    for tag, series in expected.items():  # TensorBoard keeps float32
        assert scalars[tag] == [(step, float(np.float32(value))) for step, value in series], tag
    # the flattened config, as hyperparameters of the same run
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(directory))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["max_steps"].number_value == 4 and hparams["data.seq_len"].number_value == 32
    assert hparams["out"].string_value == str(logged_run) and hparams["primitives_lr"].string_value == "None"


def _wandb_records(path: Path) -> list[Any]:
    """The records of a ``.wandb`` transaction log (a LevelDB-style log of ``wandb_internal_pb2.Record``s)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_history(folder: Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any], Any]:
    """step -> logged values, the config, the run record of one offline run folder."""
    (log_file,) = folder.glob("run-*.wandb")
    history: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    run = None
    for record in _wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[int(row["_step"])] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            run = record.run
    return history, config, run


def test_wandb_runs_offline_inside_the_run_directory(logged_run):
    logs = logged_run / LOG_DIR
    run_id = (logs / WANDB_ID_FILE).read_text().strip()
    folders = [p for p in (logs / "wandb").glob("*-run-*") if not p.is_symlink()]
    assert [p.name.split("-")[0] for p in folders] == ["offline"]
    history, config, run = _wandb_history(folders[0])
    assert run.project == "vocabshift" and run.display_name == "run" and run.run_id == run_id
    assert config["max_steps"] == 4 and config["lora.r"] == 16 and config["data.seq_len"] == 32
    logged = {tag: [(step, row[tag]) for step, row in sorted(history.items()) if tag in row]
              for tag in {t for row in history.values() for t in row}}
    assert logged == _expected(logged_run)  # float64 in JSON: the same numbers exactly
    assert set(logged) == TRAIN_TAGS | EVAL_TAGS


def test_resumed_run_logs_the_resumed_numbers(llama, spanish, tmp_path):  # noqa: F811
    """3 steps (checkpoints 2, 3); drop checkpoint 3, resume to 4 steps: steps 3-4 are the resumed ones."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    trackers = ["tensorboard", "wandb"]
    train(train_config(llama, spanish, run, max_steps=3, save_every=2, log_with=trackers))
    first = _tensorboard_scalars(run / LOG_DIR / "tensorboard")
    shutil.rmtree(run / CHECKPOINT_DIR / step_dir_name(3))
    train(train_config(llama, spanish, run, max_steps=4, save_every=2, log_with=trackers, resume=True))
    scalars, expected = _tensorboard_scalars(run / LOG_DIR / "tensorboard"), _expected(run)
    assert [step for step, _ in expected["loss"]] == [1, 2, 3, 4]
    for tag, series in expected.items():
        assert scalars[tag] == [(step, float(np.float32(value))) for step, value in series], tag
    # The resume is exact, so only the timing tells the starts apart: step 3 shows the second start's.
    assert [step for step, _ in first["loss"]] == [1, 2, 3]
    assert first["tokens_per_second"][2] != scalars["tokens_per_second"][2]
    run_id = (run / LOG_DIR / WANDB_ID_FILE).read_text().strip()
    folders = [p for p in (run / LOG_DIR / "wandb").glob("offline-run-*") if not p.is_symlink()]
    assert len(folders) == 2  # one W&B run, two starts
    assert [_wandb_history(folder)[2].run_id for folder in folders] == [run_id, run_id]


def test_wandb_mode_is_offline_unless_the_user_chooses(monkeypatch):
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode() is None  # wandb reads WANDB_MODE itself


def test_unknown_tracker_or_missing_package_is_a_clear_error(llama, spanish, tmp_path, monkeypatch, capsys):  # noqa: F811
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord' \\(choose from tensorboard, wandb\\)"):
        train_config(llama, spanish, tmp_path / "run", log_with=["tensorbord"])
    code, _, err = run_cli(capsys, "train", "--model", llama, "--corpus", spanish, "--out", tmp_path / "run",
                           "--max-steps", "2", "--log-with", "mlflow")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: log_with: unknown tracker 'mlflow'")

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(ConfigError, match="wandb: the package is not installed") as err_info:
        train(train_config(llama, spanish, tmp_path / "run", log_with=["tensorboard", "wandb"]))
    assert "pip install wandb" in str(err_info.value)
    assert not (tmp_path / "run").exists()  # refused before anything is written
