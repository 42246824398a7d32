"""Stage ``source``: a GGUF file (or a folder without ``config.json``) becomes an HF model folder, once.

Later stages then load the source fast; a source that is already an HF folder has no source stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabshift.stages.base import PlanContext, Stage


def applies(ctx: PlanContext) -> bool:
    """Only a source that is not an HF folder yet is converted."""
    path = Path(ctx.config.source)
    return path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").exists())


def run(ctx: PlanContext, out: Path) -> dict[str, Any]:
    """Load the source with transformers and save it (model and tokenizer) into ``out``."""
    from vocabshift.surgery.checkpoint import load_model, save_model
    from vocabshift.tokenization.source import load_hf_tokenizer

    source = ctx.config.source
    model = load_model(source)
    out.mkdir(parents=True)
    save_model(model, out)
    load_hf_tokenizer(source).save_pretrained(str(out))
    return {"converted": source, "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters())}


STAGE = Stage(
    name="source",
    applies=applies,
    options=lambda ctx: {"source": ctx.config.source},
    inputs=lambda ctx: [ctx.config.source],
    upstream=lambda ctx: [],
    run=run,
    makes_model=True,
)
