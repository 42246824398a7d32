"""``vocabshift adapt --dry-run``: vocabulary sizes and parameter counts a recipe will produce, before running.

Computed from configs alone: the source model is built on the meta device (no weights are read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocabshift.pipeline import AdaptConfig


def _vocab_size_of(tokenizer_dir: Path) -> int | None:
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    ids = [int(i) for i in spec["model"].get("vocab", {}).values()] if isinstance(spec["model"].get("vocab"), dict) \
        else list(range(len(spec["model"].get("vocab") or [])))
    ids += [t["id"] for t in spec.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def estimate(config: AdaptConfig) -> dict[str, Any]:
    """Vocabulary sizes and parameter counts a run will produce, from configs alone (a meta-device model).

    The target vocabulary is the trained tokenizer's ``vocab_size`` (exact for replacement; for extension
    an upper bound, since only missing tokens are added; pruning's size is known only after it runs).
    """
    import torch
    from transformers import AutoConfig

    from vocabshift.surgery.checkpoint import model_class_for
    from vocabshift.surgery.layout import locate

    source = Path(config.source)
    out: dict[str, Any] = {}
    if source.suffix == ".gguf" or not (source / "config.json").exists():
        out["note"] = "the source is a GGUF file: sizes are known after the source stage converts it"
        return out
    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

    refuse_remote_code(source)
    model_config = AutoConfig.from_pretrained(str(source), **LOAD_KWARGS)
    cls = model_class_for(model_config)
    with torch.device("meta"):
        model = cls.from_config(model_config) if hasattr(cls, "from_config") else cls(model_config)
    layout = locate(model, allow_meta=True)
    d = model.get_input_embeddings().weight.shape[1]
    rows_per_token = d * (1 if layout.tied or layout.output_weight is None else 2) + (1 if layout.output_bias else 0)
    before = sum(p.numel() for p in model.parameters())
    source_vocab = layout.vocab_size
    if config.tokenizer.path:
        target_vocab = _vocab_size_of(Path(config.tokenizer.path))
    else:
        target_vocab = config.tokenizer.vocab_size
    mode = config.vocabulary.mode
    new_vocab = {"replace": target_vocab, "extend": None if target_vocab is None else source_vocab + target_vocab,
                 "prune": None}[mode]
    out.update({"model_class": type(model).__name__, "tied": layout.tied, "hidden_size": d,
                "source_vocab_size": source_vocab, "target_tokenizer_size": target_vocab,
                "vocab_size_after": new_vocab if mode == "replace" else None,
                "vocab_size_after_at_most": new_vocab if mode == "extend" else None,
                "parameters_before": before})
    if new_vocab is not None:
        out["parameters_after" if mode == "replace" else "parameters_after_at_most"] = (
            before + (new_vocab - source_vocab) * rows_per_token)
    if config.training is not None:
        out.update(_trainable(config.training, model, new_vocab or source_vocab, rows_per_token))
    return out


def _trainable(training: Any, model: Any, vocab: int, rows_per_token: int) -> dict[str, Any]:
    """LoRA modules and trainable parameters (LoRA + embedding rows) that the recipe's training section
    would have."""
    from vocabshift.train.peft_setup import find_target_modules

    out: dict[str, Any] = {}
    lora = training.lora
    trainable = 0
    if lora.enabled:
        paths, _ = find_target_modules(model, lora.target_modules)
        for path in paths:
            w = model.get_submodule(path).weight
            trainable += lora.r * (w.shape[0] + w.shape[1])
        out["lora_modules"] = len(paths)
    if training.embeddings != "frozen":
        trainable += vocab * rows_per_token
    out["trainable_parameters_estimate"] = trainable
    return out
