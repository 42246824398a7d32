"""Model-aware init inputs: windows of target text and the source model's body (``REQUIRES_TEACHER``).

:func:`target_windows` cuts the target corpus, tokenized by the target tokenizer, into windows and chooses
those that add most new tokens still short of contexts, so a bounded number of windows covers as many new
tokens as the text allows. :func:`teacher_for` wraps a loaded model as a :class:`~vocabshift.init.base.Teacher`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from vocabshift.corpus import CorpusConfig, iter_corpus
from vocabshift.errors import ConfigError, InitError
from vocabshift.init.base import Teacher

if TYPE_CHECKING:  # torch is imported when a method runs (the registry and CLI load without it)
    import torch

log = logging.getLogger(__name__)

_ENCODE_BATCH = 256  # documents per encode_batch call


# Windows read before choosing, per window to keep: the pool the greedy choice covers (32 x 1,024 windows of
# 24 tokens is ~790k tokens of text), so that the chosen windows spread over the corpus, not its first pages.
POOL_PER_WINDOW = 32
MAX_POOL = 1 << 20  # when max_contexts is None


def target_windows(tokenizer: Any, corpus: CorpusConfig, computed: torch.Tensor, *, length: int, per_token: int,
                   max_windows: int | None, skip_documents: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Windows ``[N, length]`` of target ids (``-1`` padding) that show new tokens, and statistics.

    Each document is encoded without special tokens and cut into consecutive windows of ``length``
    tokens; the windows that hold a new token (``computed[id]``) form a pool (up to ``POOL_PER_WINDOW``
    x ``max_windows`` of them, read in corpus order). From the pool, windows are chosen greedily by what
    they add: each new token in a window counts ``1 / (1 + c)``, ``c`` being the chosen windows that show
    it already, and nothing once it has ``per_token`` of them. So the first windows cover as many
    distinct new tokens as they can (frequent ones first: they are in more windows), and later ones give
    them more contexts. Taking the first windows of the corpus instead covered 1,571 of SmolLM2's 13,143
    new Spanish tokens with 1,024 windows, all from Genesis. Choice stops at ``max_windows`` or when no
    window adds anything. The first ``skip_documents`` documents are not read (``adapt``'s held-out split).
    """
    import torch
    need = computed.numpy().astype(bool)
    pool_size = MAX_POOL if max_windows is None else max_windows * POOL_PER_WINDOW
    pool, read = _read_pool(tokenizer, corpus, need, length, pool_size, skip_documents)
    chosen, counts = _choose(pool, need, per_token, max_windows)
    windows = torch.full((len(chosen), length), -1, dtype=torch.long)
    for k, i in enumerate(chosen):
        windows[k, :pool[i].size] = torch.from_numpy(pool[i])
    wanted = int(need.sum())
    seen = counts[need]
    stats = {"documents_read": read, "documents_skipped": skip_documents, "windows": len(chosen),
             "pool_windows": len(pool), "new_tokens": wanted, "new_tokens_seen": int((seen > 0).sum()),
             "new_tokens_full": int((seen >= per_token).sum()), "context_length": length,
             "contexts_per_token": per_token}
    log.info("distill windows: %d windows of %d tokens chosen from %d in %d documents; %d of %d new tokens seen",
             len(chosen), length, len(pool), read, stats["new_tokens_seen"], wanted)
    return windows, stats


def _read_pool(tokenizer: Any, corpus: CorpusConfig, need: np.ndarray, length: int, pool_size: int,
               skip_documents: int) -> tuple[list[np.ndarray], int]:
    """The windows that show a new token, in corpus order, up to ``pool_size``; and the documents read."""
    pool: list[np.ndarray] = []
    read = 0
    backend = tokenizer.backend_tokenizer
    stream = iter_corpus(corpus)
    try:
        batch: list[str] = []
        for i, text in enumerate(stream):
            if i < skip_documents:
                continue
            batch.append(text)
            if len(batch) == _ENCODE_BATCH:
                read += len(batch)
                if _cut(backend, batch, need, length, pool, pool_size):
                    return pool, read
                batch = []
        if batch:
            read += len(batch)
            _cut(backend, batch, need, length, pool, pool_size)
    finally:
        stream.close()
    return pool, read


def _cut(backend: Any, texts: list[str], need: np.ndarray, length: int, pool: list[np.ndarray],
         pool_size: int) -> bool:
    """Add the windows of ``texts`` that show a new token to ``pool``; whether the pool is full."""
    for enc in backend.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int64)
        for s in range(0, ids.size, length):
            window = ids[s:s + length]
            if need[window].any():
                pool.append(window)
                if len(pool) >= pool_size:
                    return True
    return False


def _choose(pool: list[np.ndarray], need: np.ndarray, per_token: int,
            max_windows: int | None) -> tuple[list[int], np.ndarray]:
    """Greedy choice (lazy: a window's gain only falls as others are chosen) of the windows that add most;
    the chosen pool positions in corpus order, and per token id how many chosen windows show it."""
    import heapq

    counts = np.zeros(need.shape[0], dtype=np.int64)
    tokens = [np.unique(w[need[w]]) for w in pool]

    def gain(i: int) -> float:
        c = counts[tokens[i]]
        return float((1.0 / (1.0 + c[c < per_token])).sum())

    heap = [(-float(t.size), i) for i, t in enumerate(tokens)]  # every count is 0 at first
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and (max_windows is None or len(chosen) < max_windows):
        _, i = heapq.heappop(heap)
        g = gain(i)
        if g <= 0.0:
            continue
        if heap and g < -heap[0][0]:  # another window may add more now: look again later
            heapq.heappush(heap, (-g, i))
            continue
        chosen.append(i)
        np.add.at(counts, tokens[i], 1)
    return sorted(chosen), counts


PRECISIONS = ("auto", "fp32", "bf16")


def teacher_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the source model runs in for a model-aware method: ``precision`` ('auto': bf16 on CUDA)."""
    import torch
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def teacher_for(model: Any, contexts: torch.Tensor, *, prefix: int, causal: bool,
                output_embeddings: torch.Tensor | None, device: torch.device,
                dtype: torch.dtype | None = None, owns_model: bool = False) -> Teacher:
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

    weights = next(model.parameters()).dtype  # bf16 weights take bf16 inputs (a CPU layer norm refuses mixed)

    def body(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeds = embeds.to(weights)
        out = base(inputs_embeds=embeds, attention_mask=mask, use_cache=False) if causal else \
            base(inputs_embeds=embeds, attention_mask=mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    if dtype is None:  # autocast dtype of the forward passes
        dtype = teacher_dtype("auto", device)
    return Teacher(body=body, contexts=contexts, prefix=prefix, causal=causal,
                   output_embeddings=output_embeddings, dtype=dtype, owns_model=owns_model)


def require_corpus(method: str, corpus: CorpusConfig | None) -> CorpusConfig:
    """The target corpus a model-aware method reads its windows from; a clear error without one."""
    if corpus is None:
        raise ConfigError(f"{method} learns new rows from the source model on target-language text: give a "
                          "corpus (--corpus)", hint="e.g. --corpus spanish.txt (the text the tokenizer was "
                          "trained on is fine; hold out what you evaluate on)")
    return corpus
