"""What vocabshift loads from a model folder: data, never code.

A Hugging Face folder can ask for its own Python to run: ``auto_map`` (or ``custom_pipelines``) in its
``config.json`` / ``tokenizer_config.json`` names classes in the folder's ``.py`` files, and transformers
then *asks on stdin* whether to run them unless told ``trust_remote_code`` — so ``yes | vocabshift ...``
ran them. Every transformers load here passes :data:`LOAD_KWARGS`, and every folder is checked with
:func:`refuse_remote_code` first, for an error that says why. Pickles (``pytorch_model.bin``, optimizer
and RNG states) are only ever read with ``torch.load(weights_only=True)``, ``.npy`` with
``allow_pickle=False``; :func:`pickle_refused` is the error when such a file holds more than tensors.

Torch-free, so the tokenizer side can check folders without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vocabshift.errors import ModelError

# Every transformers load passes these: never run a folder's code (no prompt on stdin), never download.
LOAD_KWARGS: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
_CODE_KEYS = ("auto_map", "custom_pipelines")  # config keys through which a folder names its own classes
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
NEVER_CODE = "vocabshift never runs code from a model folder"


def refuse_remote_code(path: str | Path) -> None:
    """Raise :class:`ModelError` when the model or tokenizer folder ``path`` (or a file's folder) asks for
    its own Python code: ``auto_map`` / ``custom_pipelines`` in its configs, or a ``custom_generate`` folder.

    The loads pass ``trust_remote_code=False`` as well; this check fails first, naming the file, instead of
    deep inside transformers. Unreadable configs are left to the loader's own error.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    for name in _CODE_CONFIGS:
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keys = [k for k in _CODE_KEYS if isinstance(data, dict) and data.get(k)]
        if keys:
            raise ModelError(f"{keys[0]} names custom code ({json.dumps(data[keys[0]])[:120]}), and {NEVER_CODE}",
                             path=directory / name,
                             hint="use a model whose architecture transformers ships (or remove the entry "
                                  "if the model does not need its code)")
    if (directory / "custom_generate").is_dir():
        raise ModelError(f"it is a folder of custom generation code, and {NEVER_CODE}",
                         path=directory / "custom_generate", hint="remove that folder")


def pickle_refused(path: str | Path, err: BaseException) -> ModelError:
    """The error for a pickle that ``torch.load(weights_only=True)`` refused: it holds objects other than
    tensors (possibly code), which vocabshift never unpickles."""
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return ModelError(f"it holds pickled objects other than plain tensors, and vocabshift only loads pickles with "
                      f"torch.load(weights_only=True), never code ({first})", path=path,
                      hint="use safetensors weights, or a copy of the file from a source you trust")
