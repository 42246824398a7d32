"""The run directory of ``vocabshift train``: its record, its metrics and its atomic checkpoints.

Layout::

    RUN_DIR/
      run.json                  the model (path, config hash, vocabulary size, embedding checksum) and the
                                training config; --resume refuses a run made from another model
      metrics.jsonl             one JSON object per logged step / evaluation
      checkpoints/step-000200/  one per save, the last ``keep_checkpoints`` kept
        trainable.safetensors   the trainable tensors only (LoRA adapters, embeddings, head, bias)
        trainer_state.json      step, tokens, phase, last loss
        data_state.json         the data stream's position (PackedStream.state_dict())
        optimizer.bin, scheduler.bin, random_states_<rank>.pkl   from accelerate's save_state

Checkpoints go through :meth:`accelerate.Accelerator.save_state`, which handles the optimizer, the
scheduler and every process's RNG states (python, numpy, torch, cuda) under DDP and FSDP alike; a
save hook replaces its full-model weights file by ``trainable.safetensors`` (under FSDP accelerate also
writes its sharded model state). A checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed into
place when complete, so a crash or Ctrl-C during a save never leaves a half checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vocabshift.errors import ConfigError, ModelError, OutputExistsError
from vocabshift.outputs import write_text_atomic

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
DATA_STATE_FILE = "data_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def model_fingerprint(model_dir: str | Path, input_embeddings: torch.Tensor) -> dict[str, Any]:
    """What identifies the model a run trains: its path, config hash, vocabulary size and embedding checksum."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    weights = input_embeddings.detach().to("cpu", torch.float32).contiguous()
    return {
        "path": str(model_dir.resolve()),
        "architecture": (config.get("architectures") or [None])[0],
        "config_sha256": hashlib.sha256(canonical).hexdigest(),
        "vocab_size": int(weights.shape[0]),
        "embedding_sha256": hashlib.sha256(memoryview(weights.numpy())).hexdigest(),  # no copy of the matrix
    }


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run directory, with errors that say what is wrong."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise ConfigError("run directory does not exist", path=run_dir,
                          hint="start a run without --resume, or check the path")
    if not path.is_file():
        raise ConfigError(f"not a vocabshift training run (no {RUN_FILE})", path=run_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ConfigError(f"cannot read {RUN_FILE} ({err})", path=path) from err


def open_run(run_dir: str | Path, record: dict[str, Any], *, resume: bool, force: bool,
             write: bool = True) -> Path | None:
    """Check or create ``run_dir`` for a run of ``record["model"]``; returns the checkpoint to resume from.

    A new run needs a missing or empty directory (``force`` clears an earlier run). ``resume`` needs a
    run of the same model (same config hash, vocabulary size and embeddings); with no checkpoint yet the
    run starts from step 0. ``write=False`` only checks (every process of a distributed run checks; the
    main process then writes).
    """
    run_dir = Path(run_dir)
    if resume:
        previous = read_run(run_dir)
        _check_same_model(run_dir, previous.get("model", {}), record["model"])
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None and write:
            log.warning("%s has no checkpoint yet: starting from step 0", run_dir)
        if write:
            record = {**record, "resumed_from": [*previous.get("resumed_from", []),
                                                 str(ckpt) if ckpt else None]}
            _write_json(run_dir / RUN_FILE, record)
        return ckpt
    if run_dir.exists():
        if not run_dir.is_dir():
            raise OutputExistsError("run directory exists and is not a directory", path=run_dir)
        if any(run_dir.iterdir()):
            if not force:
                raise OutputExistsError("run directory is not empty", path=run_dir,
                                        hint="pass --resume to continue its run, or --force to start over")
            if not (run_dir / RUN_FILE).is_file():
                raise OutputExistsError(f"--force only replaces a training run, and this directory has no "
                                        f"{RUN_FILE}", path=run_dir, hint="choose another --out")
            if write:
                for child in run_dir.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / RUN_FILE, record)
    return None


def _check_same_model(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    for key, what in (("config_sha256", "config"), ("vocab_size", "vocabulary size"),
                      ("embedding_sha256", "input embeddings")):
        if old.get(key) != new.get(key):
            raise ConfigError(
                f"this run was trained from {old.get('path')} ({old.get('architecture')}, vocabulary "
                f"{old.get('vocab_size')}), not from {new.get('path')} (vocabulary {new.get('vocab_size')}): the "
                f"{what} differ", path=run_dir, hint="resume with the run's own model, or start a new run")


def _write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Drop metrics lines past ``step`` (logged after the checkpoint a resumed run continues from)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_trainable(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write trainable tensors as safetensors (names as in ``named_parameters``: a tied head appears once)."""
    out = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    save_file(out, str(path), metadata=metadata or {"format": "pt"})


def load_trainable(model: torch.nn.Module, path: str | Path, names: list[str]) -> None:
    """Copy the tensors of ``path`` into ``model``'s parameters of the same names (all of ``names`` needed)."""
    from vocabshift.surgery.lazy import check_safetensors_file

    check_safetensors_file(Path(path))  # a damaged file: one error naming it (truncated: expected N bytes...)
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise ConfigError(f"checkpoint does not fit the model: missing {missing[:3]}, unknown {unknown[:3]}",
                          path=path, hint="was the run's training setup (LoRA targets, embeddings) changed?")
    with torch.no_grad():
        for name, tensor in tensors.items():
            param = params[name]
            if param.shape != tensor.shape:
                raise ConfigError(f"{name} has shape {tuple(tensor.shape)} in the checkpoint but "
                                  f"{tuple(param.shape)} in the model", path=path)
            param.copy_(tensor.to(param.device, param.dtype))


@dataclass
class RNGSnapshot:
    """Every global RNG state (python, numpy, torch, CUDA), to put back what a partial step consumed."""

    python: Any
    numpy: Any
    torch: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> RNGSnapshot:
        return cls(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                   cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class CheckpointWriter:
    """Atomic ``step-N`` checkpoints through accelerate's ``save_state``, keeping the last ``keep``."""

    def __init__(self, run_dir: str | Path, accelerator: Any, trainable: dict[str, list[str]], keep: int) -> None:
        self.root = Path(run_dir) / CHECKPOINT_DIR
        self.accelerator = accelerator
        self.names = [n for group in trainable.values() for n in group]
        self.keep = keep
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    def _fsdp(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def _save_hook(self, models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        # Replace accelerate's full-model weights by the trainable tensors.
        if self._fsdp():
            state = self.accelerator.get_state_dict(models[0])  # a collective: every process calls it
        else:
            state = dict(self.accelerator.unwrap_model(models[0]).named_parameters())
            weights.clear()
        if self.accelerator.is_main_process:
            save_trainable({n: state[n] for n in self.names}, Path(output_dir) / TRAINABLE_FILE)

    def _load_hook(self, models: list[Any], input_dir: str) -> None:
        if self._fsdp():
            return  # accelerate has loaded its own sharded copy of every weight
        model = models.pop(0)
        load_trainable(self.accelerator.unwrap_model(model), Path(input_dir) / TRAINABLE_FILE, self.names)

    def save(self, step: int, state: dict[str, Any], data_state: Any) -> Path:
        """Write ``checkpoints/step-N`` (all processes call this) and drop the oldest beyond ``keep``."""
        acc = self.accelerator
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp), safe_serialization=True)
            if acc.is_main_process:
                _write_json(tmp / DATA_STATE_FILE, data_state, indent=None)
                _write_json(tmp / STATE_FILE, state)
            acc.wait_for_everyone()
            if acc.is_main_process:
                if final.exists():  # the same step saved again (e.g. a resumed run that stops at once)
                    shutil.rmtree(final)
                os.rename(tmp, final)
                for old in list_checkpoints(self.root.parent)[:-self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        log.info("checkpoint %s", final)
        return final

    def load(self, checkpoint: Path) -> tuple[dict[str, Any], Any]:
        """Restore model, optimizer, scheduler and RNG states; returns the trainer and data states.

        accelerate unpickles the optimizer, scheduler and RNG files with ``torch.load(weights_only=True)``,
        so a file holding code is refused, never run; the refusal becomes an error naming the checkpoint.
        """
        from accelerate.utils.other import load as load_pickle  # torch.load(weights_only=True) + RNG types

        from vocabshift.safe_loading import pickle_refused

        rng_file = checkpoint / f"random_states_{self.accelerator.process_index}.pkl"
        try:
            if rng_file.is_file():
                load_pickle(rng_file)  # accelerate logs and ignores a bad RNG file: check it first
        except pickle.UnpicklingError as err:
            raise pickle_refused(rng_file, err) from err
        try:
            self.accelerator.load_state(str(checkpoint))
        except pickle.UnpicklingError as err:  # the optimizer's or scheduler's file
            raise pickle_refused(checkpoint, err) from err
        except (RuntimeError, OSError, EOFError, ValueError, KeyError) as err:  # a damaged or cut-short file
            raise ModelError(f"cannot restore this checkpoint ({type(err).__name__}: {str(err)[:200]})",
                             path=checkpoint, hint="resume from an earlier checkpoint (delete this one), "
                             "or start over with --force") from err
        state = _read_json(checkpoint / STATE_FILE)
        return state, read_data_state(checkpoint)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read this checkpoint file ({err})", path=path,
                          hint="resume from an earlier checkpoint (delete this one), or start over with --force") \
            from err


def read_data_state(checkpoint: Path) -> Any:
    """The data-stream state saved in ``checkpoint`` (JSON, never a pickle)."""
    return _read_json(Path(checkpoint) / DATA_STATE_FILE)
