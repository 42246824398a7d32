"""Load and save whole models for vocabulary surgery, offline.

A source is a Hugging Face model directory (``config.json`` + weights) or a GGUF file (or a directory
holding one). The transformers class is the one ``config.architectures`` names, so a
``BertForMaskedLM`` stays a masked LM with its MLM head and bias, and a ``LlamaForCausalLM`` keeps its
(tied or untied) LM head. A tokenizer-only directory has no model: the vocabulary stages then write
the tokenizer and the ``id_map`` alone.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

from vocabshift.errors import ModelError
from vocabshift.safe_loading import LOAD_KWARGS, pickle_refused, refuse_remote_code

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_files(path: str | Path) -> None:
    """What every model load checks first: no code to run (:func:`refuse_remote_code`), and safetensors
    weights that are complete (header, sizes, shards), so a damaged file fails with one error naming it."""
    from vocabshift.surgery.lazy import check_safetensors

    refuse_remote_code(path)
    if Path(path).is_dir():
        check_safetensors(path)


def _gguf(path: Path) -> tuple[Path, str] | None:
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name
    return None


def has_model(path: str | Path) -> bool:
    """Whether ``path`` holds model weights (HF layout or GGUF), not just a tokenizer."""
    path = Path(path)
    if _gguf(path) is not None:
        return True
    return path.is_dir() and (path / "config.json").exists() and any((path / f).exists() for f in WEIGHT_FILES)


def model_class_for(config: Any) -> Any:
    """The transformers class named by ``config.architectures`` (falls back to the Auto classes)."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if getattr(config, "is_decoder", False) or type(config).__name__ in transformers.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def load_model(path: str | Path, dtype: Any = None) -> Any:
    """Load a model from a local directory or GGUF file in its own architecture's class (fp32 by default)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    dtype = dtype or torch.float32
    gguf = _gguf(path)
    check_model_files(path)
    try:
        if gguf is not None:
            model = AutoModelForCausalLM.from_pretrained(str(gguf[0]), gguf_file=gguf[1], dtype=dtype,
                                                         **LOAD_KWARGS)
            _forget_gguf_quantization(model)
            return model
        config = AutoConfig.from_pretrained(str(path), **LOAD_KWARGS)
        cls = model_class_for(config)
        return cls.from_pretrained(str(path), config=config, dtype=dtype, **LOAD_KWARGS)
    except pickle.UnpicklingError as err:  # a .bin whose pickle is more than tensors
        raise pickle_refused(path, err) from err
    except Exception as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load a model from it ({first})", path=path) from err


def _forget_gguf_quantization(model: Any) -> None:
    """A GGUF load dequantizes every tensor to ``dtype``, but leaves the model marked quantized, which
    makes ``save_pretrained`` refuse it. The weights are plain tensors: drop the marks."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def parameter_count(model: Any) -> int:
    """Unique parameters (a tied head counted once)."""
    return sum(p.numel() for p in model.parameters())


def directory_size(path: str | Path) -> int:
    """Bytes of the weight files in a model directory (or of a GGUF file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir()
               if f.is_file() and f.suffix in (".safetensors", ".bin", ".gguf"))


def save_model(model: Any, out_dir: str | Path) -> None:
    """Save weights (safetensors), config and generation config."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    config = json.loads((Path(out_dir) / "config.json").read_text())
    log.debug("saved %s with vocab_size %s to %s", type(model).__name__, config.get("vocab_size"), out_dir)
