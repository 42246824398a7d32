"""Carry a sentence-transformers model's own files over to a model vocabshift wrote.

A sentence-transformers folder is a transformers model at its root plus the files that turn it into a
sentence encoder: ``modules.json`` (the module list), ``sentence_bert_config.json`` (the root
Transformer module's settings, such as ``max_seq_length``), ``config_sentence_transformers.json``
(prompts, similarity function) and one folder per further module (``1_Pooling/``, ``2_Dense/``,
``3_Normalize/``). Without them ``SentenceTransformer(out)`` falls back to mean pooling with no
Normalize and the model's full length, so every stage that writes a model calls
:func:`copy_sentence_transformer_files` next to copying the tokenizer files.

What is carried over, and what is updated:

* only data: JSON, text and safetensors files, never code. A module whose type is not one of
  sentence-transformers' own vocabulary-independent modules (custom code, a module with its own
  vocabulary such as ``StaticEmbedding``, a ``Router``) leaves the output a plain transformers model,
  with a warning; ``.py`` files and anything else in a module folder are skipped. A module's
  ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` and written as safetensors.
* vocabshift changes only the vocabulary, so Pooling, Dense and Normalize keep their files as they
  are. What names the vocabulary size is updated: ``SpladePooling``'s ``embedding_dimension`` (the
  width of a sparse encoder's output). The sequence length stays the source's: when the output's
  tokenizer (a replaced vocabulary's) says another ``model_max_length``, the source's is written into
  ``sentence_bert_config.json`` as ``max_seq_length``, which sentence-transformers applies on load.
* only the layout sentence-transformers has saved since v2: the Transformer module at the folder's root
  (``"path": ""`` in ``modules.json``), which is the model vocabshift rewrites.

The files go into the stage's temporary output directory (see :func:`vocabshift.outputs.atomic_output_dir`),
so they appear together with the model or not at all.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from vocabshift.errors import ModelError
from vocabshift.outputs import write_text_atomic
from vocabshift.safe_loading import NEVER_CODE

log = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
# The root Transformer module's settings, under the names sentence-transformers has read them by.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json",
                       "sentence_distilbert_config.json", "sentence_camembert_config.json",
                       "sentence_albert_config.json", "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
# Module classes (the last part of the ``type`` in modules.json) and what they are.
ROOT_MODULES = frozenset({"Transformer", "MLMTransformer"})  # the model vocabshift writes
PLAIN_MODULES = frozenset({"Pooling", "Normalize", "Dense", "LayerNorm", "Dropout", "WeightedLayerPooling",
                           "CNN", "LSTM", "SpladePooling"})  # vocabulary-independent: files copied as they are
# Config keys that hold the vocabulary size, per module class.
VOCAB_SIZE_KEYS = {"SpladePooling": ("embedding_dimension", "word_embedding_dimension")}
MODULE_FILE_SUFFIXES = (".json", ".txt", ".safetensors")
PICKLED_WEIGHTS = "pytorch_model.bin"
NO_LIMIT = 10**18


class _NotCarried(Exception):
    """The source's sentence-transformers files cannot be carried over (the message says why)."""


def is_sentence_transformer(directory: str | Path) -> bool:
    """Whether ``directory`` is a sentence-transformers model folder (it has a ``modules.json``)."""
    return (Path(directory) / MODULES_FILE).is_file()


def copy_sentence_transformer_files(src: str | Path, dst: str | Path) -> dict[str, Any] | None:
    """Copy the sentence-transformers files of the model folder ``src`` into ``dst``, where a stage has
    just written the model (``config.json``) and its tokenizer; returns what was done, for the report.

    None when ``src`` is not a sentence-transformers folder or ``dst`` holds no model. A source whose
    modules cannot be carried over safely writes nothing and returns ``{"carried": False, "reason": ...}``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir() or not is_sentence_transformer(src) or not (dst / "config.json").is_file():
        return None
    try:
        modules = _read_modules(src)
    except _NotCarried as why:
        log.warning("%s: the sentence-transformers files are not carried over: %s; the output loads with "
                    "transformers, and SentenceTransformer() would pool it with defaults", src, why)
        return {"carried": False, "reason": str(why)}
    files: list[str] = [MODULES_FILE]
    shutil.copy2(src / MODULES_FILE, dst / MODULES_FILE)
    for name in (ST_CONFIG_FILE, *TRANSFORMER_CONFIGS):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            files.append(name)
    skipped: list[str] = []
    updated: dict[str, Any] = {}
    vocab_size = (_json_or_none(dst / "config.json") or {}).get("vocab_size")
    for kind, path in modules:
        if path:
            _copy_module(src / path, dst / path, path, files, skipped)
            if kind in VOCAB_SIZE_KEYS and isinstance(vocab_size, int):
                updated.update(_set_keys(dst / path / "config.json", VOCAB_SIZE_KEYS[kind], vocab_size, path))
    updated.update(_keep_max_length(src, dst))
    log.info("carried the sentence-transformers modules over (%s)%s", ", ".join(k for k, _ in modules),
             f"; updated {updated}" if updated else "")
    return {"carried": True, "modules": [k for k, _ in modules], "files": files, "updated": updated,
            "skipped": skipped}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _NotCarried(f"{path.name} cannot be read ({err})") from err


def _json_or_none(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_modules(src: Path) -> list[tuple[str, str]]:
    """``(class name, folder)`` per module of ``src``'s ``modules.json``; raises _NotCarried for a module
    list this module cannot carry over as plain files."""
    data = _read_json(src / MODULES_FILE)
    if not isinstance(data, list) or not data:
        raise _NotCarried(f"{MODULES_FILE} is not a list of modules")
    modules = []
    for entry in data:
        kind, path = (entry.get("type"), entry.get("path")) if isinstance(entry, dict) else (None, None)
        if not isinstance(kind, str) or not isinstance(path, str):
            raise _NotCarried(f"{MODULES_FILE} has an entry without a type and a path ({json.dumps(entry)[:120]})")
        name = kind.rsplit(".", 1)[-1]
        if not kind.startswith("sentence_transformers."):
            raise _NotCarried(f"the module {kind!r} is custom code, and {NEVER_CODE}")
        pure = PurePosixPath(path)
        if "\\" in path or pure.is_absolute() or ".." in pure.parts or len(pure.parts) > 1:
            raise _NotCarried(f"the module {name} has the path {path!r}, which is not a folder of the model")
        if path == "":
            if name not in ROOT_MODULES:
                raise _NotCarried(f"the module at the root is a {name}, not the transformer vocabshift rewrote")
        elif name in ROOT_MODULES:
            raise _NotCarried(f"the {name} module lies in {path}/, not at the root where vocabshift wrote the model")
        elif name not in PLAIN_MODULES:
            raise _NotCarried(f"the module {name} ({path}/) is not one vocabshift knows to be independent of "
                              "the vocabulary")
        modules.append((name, path))
    if not any(path == "" for _, path in modules):
        raise _NotCarried("no module lies at the root, where vocabshift wrote the model")
    return modules


def _copy_module(src: Path, dst: Path, path: str, files: list[str], skipped: list[str]) -> None:
    """Copy a module folder's plain files (JSON, text, safetensors); pickled weights become safetensors.

    Symlinked files are copied as files: a folder in the Hugging Face cache links every file to a blob."""
    if not src.is_dir():
        return  # a module with nothing to save (Normalize in older versions)
    dst.mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        rel = f"{path}/{f.name}"
        if not f.is_file():
            skipped.append(rel)
        elif f.suffix in MODULE_FILE_SUFFIXES:
            shutil.copy2(f, dst / f.name)
            files.append(rel)
        elif f.name == PICKLED_WEIGHTS and not (src / "model.safetensors").is_file():
            _pickle_to_safetensors(f, dst / "model.safetensors")
            files.append(f"{path}/model.safetensors")
        else:
            skipped.append(rel)
    code = [s for s in skipped if s.endswith(".py")]
    if code:
        log.warning("not copied: %s (%s)", ", ".join(code), NEVER_CODE)
    if skipped:
        log.info("sentence-transformers files not copied (only JSON, text and safetensors are): %s", ", ".join(skipped))


def _pickle_to_safetensors(src: Path, dst: Path) -> None:
    """A module's ``pytorch_model.bin`` read as plain tensors only, written as safetensors."""
    import pickle

    import torch
    from safetensors.torch import save_file

    from vocabshift.safe_loading import pickle_refused

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle_refused(src, err) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("a module's weights file is not a mapping of names to tensors", path=src)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst), metadata={"format": "pt"})


def _set_keys(config_file: Path, keys: tuple[str, ...], value: int, path: str) -> dict[str, Any]:
    """Set those of ``keys`` that ``config_file`` holds as a number to ``value``; returns the changes."""
    data = _json_or_none(config_file) or {}
    changed = {f"{path}/config.json:{k}": value for k in keys if isinstance(data.get(k), int) and data[k] != value}
    if changed:
        data.update({k.rsplit(":", 1)[1]: value for k in changed})
        write_text_atomic(config_file, json.dumps(data, indent=2))
    return changed


def _max_length(directory: Path) -> int | None:
    """The sequence length sentence-transformers uses for ``directory``: ``max_seq_length`` in
    ``sentence_bert_config.json``, else the tokenizer's ``model_max_length``."""
    for name in (*TRANSFORMER_CONFIGS, "tokenizer_config.json"):
        data = _json_or_none(directory / name) or {}
        value = data.get("max_seq_length" if name != "tokenizer_config.json" else "model_max_length")
        if isinstance(value, int):
            # transformers' "no limit" (int(1e30)) is not a length to keep
            return value if value < NO_LIMIT else None
    return None


def _keep_max_length(src: Path, dst: Path) -> dict[str, Any]:
    """Write the source's sequence length into ``dst``'s ``sentence_bert_config.json`` when ``dst``'s
    tokenizer would give another one (a replaced vocabulary's tokenizer)."""
    before, after = _max_length(src), _max_length(dst)
    if before is None or before == after:
        return {}
    config_file = next((dst / n for n in TRANSFORMER_CONFIGS if (dst / n).is_file()), dst / TRANSFORMER_CONFIGS[0])
    data = _json_or_none(config_file) or {}
    data["max_seq_length"] = before
    write_text_atomic(config_file, json.dumps(data, indent=2))
    return {f"{config_file.name}:max_seq_length": before}
