"""Held-out documents and per-document scoring shared by the init quality benchmarks.

Both ``init_quality.py`` (replacement) and ``init_extension.py`` (extension) score each model on the
same documents, each on its own (lm-evaluation-harness's ``loglikelihood_rolling`` through
:func:`vocabshift.eval.lm.score_documents`): the first ``n`` held-out Spanish Bible verses (in domain),
the Spanish UDHR paragraphs (out of domain) and, where the source language matters, the first ``n``
held-out English verses. None of them trained a tokenizer, a vector or an init.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _inputs

SCORE_WINDOW = 512  # tokens per forward pass (SmolLM2 reads 8k; verses and paragraphs fit in one window)


def eval_documents(n: int, english: bool = True) -> dict[str, list[str]]:
    """Held-out Spanish (and English) verses, the last 5% of each Bible, and the Spanish UDHR paragraphs."""
    from vocabshift.data import sample_path

    facts = _inputs.texts()
    spa = [v for v in Path(facts["spa_heldout_path"]).read_text(encoding="utf-8").splitlines() if v.strip()]
    udhr = [p for p in sample_path("udhr.spa.txt").read_text(encoding="utf-8").splitlines() if p.strip()]
    docs = {"bible-spa": spa[:n], "udhr-spa": udhr}
    if english:
        eng_all = _inputs._bible_lines("eng")
        docs["bible-eng"] = eng_all[len(eng_all) - int(round(_inputs.HELD_OUT * len(eng_all))):][:n]
    return docs


def score_model(model: Any, tokenizer: Any, docs: dict[str, list[str]], device: str = "cpu") -> dict[str, dict[str, float]]:
    """Per-document bits per byte, loss (nats per token), tokens and bytes of ``model`` on each document set."""
    from vocabshift.eval.lm import score_documents

    out = {}
    for name, documents in docs.items():
        r = score_documents(model, tokenizer, documents, window=SCORE_WINDOW, batch_size=8, device=device)
        out[name] = {"bpb": r.bits_per_byte, "loss": r.loss, "tokens": r.predicted_tokens, "bytes": r.bytes}
    return out


def score_dir(model_dir: Path, docs: dict[str, list[str]], device: str = "cpu") -> dict[str, dict[str, float]]:
    """:func:`score_model` on a saved model folder (model and tokenizer)."""
    import torch

    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.tokenization.source import load_hf_tokenizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(model_dir)
    if device != "cpu":
        model.to(device)
    return score_model(model, load_hf_tokenizer(model_dir), docs, device)
