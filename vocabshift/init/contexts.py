"""Model-aware init inputs: windows of target text and the source model's body (``REQUIRES_TEACHER``).

:func:`target_windows` cuts the target corpus, tokenized by the target tokenizer, into windows and keeps
those that show a new token still short of contexts, so a bounded number of windows covers as many new
tokens as the text allows. :func:`teacher_for` wraps a loaded model as a :class:`~vocabshift.init.base.Teacher`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from vocabshift.corpus import CorpusConfig, iter_corpus
from vocabshift.errors import ConfigError, InitError
from vocabshift.init.base import Teacher

log = logging.getLogger(__name__)

_ENCODE_BATCH = 256  # documents per encode_batch call


def target_windows(tokenizer: Any, corpus: CorpusConfig, computed: torch.Tensor, *, length: int, per_token: int,
                   max_windows: int | None, skip_documents: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Windows ``[N, length]`` of target ids (``-1`` padding) that show new tokens, and statistics.

    Each document is encoded without special tokens and cut into consecutive windows of ``length``
    tokens. A window is kept when it holds a new token (``computed[id]``) seen in fewer than
    ``per_token`` kept windows so far; it then counts for every new token in it. Reading stops once
    every new token has its windows, ``max_windows`` are kept, or the corpus ends. The first
    ``skip_documents`` documents are not read (``adapt``'s held-out split, which evaluation scores).
    """
    need = computed.numpy().astype(bool)
    counts = np.zeros(need.shape[0], dtype=np.int64)
    wanted = int(need.sum())
    satisfied = 0
    kept: list[np.ndarray] = []
    documents = read = 0
    backend = tokenizer.backend_tokenizer
    stream = iter_corpus(corpus)
    try:
        batch: list[str] = []
        done = False
        for i, text in enumerate(stream):
            if i < skip_documents:
                continue
            batch.append(text)
            if len(batch) < _ENCODE_BATCH:
                continue
            done, satisfied = _take(backend, batch, need, counts, kept, length, per_token, max_windows, satisfied,
                                    wanted)
            documents += len(batch)
            batch = []
            if done:
                break
        if batch and not done:
            _take(backend, batch, need, counts, kept, length, per_token, max_windows, satisfied, wanted)
            documents += len(batch)
        read = documents
    finally:
        stream.close()
    windows = torch.full((len(kept), length), -1, dtype=torch.long)
    for k, ids in enumerate(kept):
        windows[k, :ids.size] = torch.from_numpy(ids)
    seen = counts[need]
    stats = {"documents_read": read, "documents_skipped": skip_documents, "windows": len(kept), "new_tokens": wanted,
             "new_tokens_seen": int((seen > 0).sum()), "new_tokens_full": int((seen >= per_token).sum()),
             "context_length": length, "contexts_per_token": per_token}
    log.info("distill windows: %d windows of %d tokens from %d documents; %d of %d new tokens seen",
             len(kept), length, read, stats["new_tokens_seen"], wanted)
    return windows, stats


def _take(backend: Any, texts: list[str], need: np.ndarray, counts: np.ndarray, kept: list[np.ndarray], length: int,
          per_token: int, max_windows: int | None, satisfied: int, wanted: int) -> tuple[bool, int]:
    """Cut one batch of documents into windows and keep the useful ones; ``(stop, satisfied)``."""
    for enc in backend.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int64)
        for s in range(0, ids.size, length):
            window = ids[s:s + length]
            new = window[need[window]]
            if new.size == 0 or not bool((counts[new] < per_token).any()):
                continue
            before = counts[new] >= per_token
            np.add.at(counts, new, 1)
            satisfied += int(np.unique(new[(counts[new] >= per_token) & ~before]).size)
            kept.append(window)
            if (max_windows is not None and len(kept) >= max_windows) or satisfied >= wanted:
                return True, satisfied
    return False, satisfied


def teacher_for(model: Any, contexts: torch.Tensor, *, prefix: int, causal: bool,
                output_embeddings: torch.Tensor | None, device: torch.device) -> Teacher:
    """The model's body (its base model, no LM head) as a frozen :class:`Teacher` on ``device``.

    The body is called with ``inputs_embeds``, so position and token-type embeddings, embedding scales
    and the final norm are the model's own; weights are frozen and dropout is off.
    """
    prefix_name = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix_name, None) if prefix_name else None
    if base is None:
        base = model
    if not callable(base):
        raise InitError(f"cannot find the body of {type(model).__name__} to distill from")
    model.to(device)
    model.eval()
    model.requires_grad_(False)

    def body(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = base(inputs_embeds=embeds, attention_mask=mask, use_cache=False) if causal else \
            base(inputs_embeds=embeds, attention_mask=mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return Teacher(body=body, contexts=contexts, prefix=prefix, causal=causal,
                   output_embeddings=output_embeddings, dtype=dtype)


def require_corpus(method: str, corpus: CorpusConfig | None) -> CorpusConfig:
    """The target corpus a model-aware method reads its windows from; a clear error without one."""
    if corpus is None:
        raise ConfigError(f"{method} learns new rows from the source model on target-language text: give a "
                          "corpus (--corpus)", hint="e.g. --corpus spanish.txt (the text the tokenizer was "
                          "trained on is fine; hold out what you evaluate on)")
    return corpus
