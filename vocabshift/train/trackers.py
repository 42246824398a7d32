"""Experiment trackers of ``vocabshift train`` (``--log-with tensorboard``, ``--log-with wandb``).

accelerate's own trackers, set up so that everything a run logs lies inside its run directory:

* ``RUN/logs/tensorboard/``: TensorBoard event files, one per start of the run, with the flattened
  config as hyperparameters in the same run (accelerate's default puts them in a second run named by
  a timestamp). A resumed run hides the steps after its checkpoint (``purge_step``), as
  ``metrics.jsonl`` drops them. View: ``tensorboard --logdir RUN/logs/tensorboard``.
* ``RUN/logs/wandb/``: Weights & Biases run folders, project ``vocabshift`` (``$WANDB_PROJECT``
  overrides it), run name = the run directory's name, one W&B run id per training run (kept in
  ``RUN/logs/wandb_run_id``, so ``--resume`` continues the same W&B run).

wandb runs **offline** unless ``WANDB_MODE`` is set: nothing leaves the machine, and
``wandb sync RUN/logs/wandb/offline-run-*`` uploads the run later. Being logged in (``wandb login``)
does not switch uploading on, for the same reason vocabshift downloads nothing unasked; set
``WANDB_MODE=online`` to log live (``disabled`` turns wandb off).

The trackers get the numbers of ``metrics.jsonl`` under the same names, at the optimizer step:
``loss``, ``lr/<group>`` (``embeddings``, ``lora``, ``primitives``), ``tokens``,
``tokens_per_second``, ``grad_norm`` and, at each evaluation, ``eval_loss``, ``eval_bits_per_byte``,
``eval_tokens``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vocabshift.errors import ConfigError

LOG_DIR = "logs"
"""Folder of the run directory that the trackers write in."""
PROJECT = "vocabshift"
"""W&B project name when ``WANDB_PROJECT`` is not set."""
WANDB_ID_FILE = "wandb_run_id"
"""File in ``RUN/logs/`` holding the W&B run id, so that a resumed run logs to the same W&B run."""
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_trackers(names: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` naming the trackers whose package is not installed."""
    missing = [name for name in names if _find_spec(_PACKAGES[name]) is None]
    if missing:
        raise ConfigError(f"log_with {', '.join(missing)}: the package is not installed",
                          hint=f"pip install {' '.join(_PACKAGES[m] for m in missing)} (or vocabshift[tracking]), "
                               f"or drop --log-with {' '.join(missing)}")


def _find_spec(package: str) -> Any:
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken install, or a module set to None (how tests hide one)
        return None


def wandb_mode() -> str | None:
    """The ``mode`` vocabshift passes to ``wandb.init``: ``offline`` unless ``WANDB_MODE`` chooses one."""
    return None if os.environ.get("WANDB_MODE") else "offline"


def make_trackers(names: Sequence[str], run_dir: str | Path) -> list[Any]:
    """accelerate tracker objects for ``names`` that write under ``run_dir/logs`` (none started yet)."""
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    # Subclasses made here, so that importing this module (TrainConfig's neighbours) needs no accelerate.
    # accelerate starts and calls trackers on the main process only (Accelerator.init_trackers, .log).
    class TensorBoard(TensorBoardTracker):  # type: ignore[misc]
        """TensorBoard in ``logs/tensorboard``, hyperparameters in the same event file."""

        def store_init_configuration(self, values: dict[str, Any]) -> None:
            from torch.utils.tensorboard.summary import hparams

            for summary in hparams(_hparam_values(values), metric_dict={}):
                self.writer.file_writer.add_summary(summary)
            self.writer.flush()

    class WandB(WandBTracker):  # type: ignore[misc]
        """W&B in ``logs/wandb``, offline unless ``WANDB_MODE`` is set, one run id per training run."""

        def start(self) -> None:
            self.init_kwargs["id"] = _wandb_run_id(logs)
            super().start()

    logs = Path(run_dir) / LOG_DIR
    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoard("tensorboard", logs))
        elif name == "wandb":
            kwargs: dict[str, Any] = {"dir": str(logs), "name": Path(run_dir).resolve().name, "resume": "allow"}
            if (mode := wandb_mode()) is not None:
                kwargs["mode"] = mode
            trackers.append(WandB(os.environ.get("WANDB_PROJECT") or PROJECT, **kwargs))
        else:  # TrainConfig checks the names; this guards library callers that build trackers themselves
            raise ConfigError(f"log_with: unknown tracker {name!r} (choose from {', '.join(_PACKAGES)})")
    return trackers


def start_trackers(accelerator: Any, config: dict[str, Any], step: int) -> None:
    """Start the accelerator's trackers with ``config`` as hyperparameters; ``step``: the step resumed from."""
    from accelerate.tracking import TensorBoardTracker

    for tracker in accelerator.log_with:
        if isinstance(tracker, TensorBoardTracker) and step:
            # Hide what an earlier start logged after the checkpoint this one continues from.
            tracker.init_kwargs["purge_step"] = step + 1
    accelerator.init_trackers(PROJECT, config=flat_config(config))


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` record as tracker scalars: same names, learning rates as ``lr/<group>``."""
    values: dict[str, float] = {k: v for k, v in record.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    for group, value in (record.get("lr") or {}).items():
        values[f"lr/{group}"] = value
    return values


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat scalars, as trackers take hyperparameters (lists as JSON text)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _hparam_values(values: dict[str, Any]) -> dict[str, Any]:
    """TensorBoard's hparams take no None: unset settings are shown as the text ``None``."""
    return {k: "None" if v is None else v for k, v in values.items()}


def _wandb_run_id(logs: Path) -> str:
    """The run's W&B id: read from ``logs/wandb_run_id``, or made and written there by a new run."""
    path = logs / WANDB_ID_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    run_id = uuid.uuid4().hex[:12]
    logs.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


__all__ = ["LOG_DIR", "PROJECT", "check_trackers", "flat_config", "make_trackers", "start_trackers",
           "tracker_values", "wandb_mode"]
