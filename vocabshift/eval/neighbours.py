"""Nearest source tokens of new tokens: a sanity view of an embedding initialization.

For a seeded sample of the model's *new* tokens we rank the source (baseline) model's input
embedding rows by cosine similarity to the new token's input embedding row and show the top ``k``
as surface strings. A sensible init puts ``casa`` next to ``house``/``home`` (WECHSEL, FOCUS) or next
to the pieces it was averaged from (FVT); random rows show unrelated neighbours at cosines near 0.

Which tokens are new: the ``-1`` entries of ``id_map.json`` in the model directory (written by
``vocabshift prune``/``extend``/``init``); without one, the tokens whose surface form (see
:func:`~vocabshift.init.apply.surface_key`) is not in the baseline vocabulary, special tokens excluded.

Tokens are shown as their decoded surface form with ``▁`` marking a word-initial token; lone bytes
as ``<0xNN>``; control characters escaped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vocabshift.tokenization.surface import Surface
from vocabshift.vocabulary import read_id_map


@dataclass
class Neighbour:
    """One source token near a new token."""

    id: int
    token: str
    cosine: float


@dataclass
class TokenNeighbours:
    """A new token and its nearest source tokens, most similar first."""

    id: int
    token: str
    neighbours: list[Neighbour] = field(default_factory=list)


@dataclass
class NeighboursResult:
    """Nearest source tokens for a sample of the new tokens."""

    selection: str  # "id_map" (id_map.json -1 entries) or "vocabulary" (not in the baseline vocabulary)
    new_tokens: int  # how many new tokens there are in all
    sample_size: int
    seed: int
    k: int
    tokens: list[TokenNeighbours] = field(default_factory=list)


def display_token(surface: Surface) -> str:
    """A readable, one-line string for a token's surface form."""
    if surface.kind in ("byte", "partial") and surface.raw is not None:
        return "".join(f"<0x{b:02X}>" for b in surface.raw)
    text = surface.text
    if surface.kind != "special":
        text = ("▁" if surface.word_initial else "") + text
    out = []
    for ch in text:
        if ch in "\n\r\t" or ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out) or "''"


def new_token_ids(model_dir: str | Path, tokenizer: Any, baseline_tokenizer: Any) -> tuple[list[int], str]:
    """The ids of new tokens in the model, and how they were found (``"id_map"`` or ``"vocabulary"``)."""
    from vocabshift.init.apply import match_shared
    from vocabshift.tokenization.surface import surface_forms

    id_map = read_id_map(model_dir)
    if id_map is not None:
        return [i for i, src in enumerate(id_map) if src < 0], "id_map"
    target = surface_forms(tokenizer)
    shared = match_shared(surface_forms(baseline_tokenizer), target)
    new = [i for i, (s, m) in enumerate(zip(target, shared, strict=True)) if m < 0 and s.kind != "special"]
    return new, "vocabulary"


def sample_ids(ids: list[int], n: int, seed: int) -> list[int]:
    """A seeded sample of ``n`` ids (all of them when there are fewer), in increasing order."""
    if n >= len(ids):
        return sorted(ids)
    return sorted(random.Random(seed).sample(ids, n))


def cosine_top_k(queries: torch.Tensor, keys: torch.Tensor, k: int,
                 chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine similarities ``[n, k]`` and key indices ``[n, k]`` of each query row among ``keys``.

    Keys are processed in chunks of ``chunk_size`` rows, so memory stays ``O(n * chunk_size)``.
    """
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    k = min(k, keys.shape[0])
    best_val = torch.full((q.shape[0], 0), float("-inf"))
    best_idx = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, keys.shape[0], chunk_size):
        chunk = torch.nn.functional.normalize(keys[start:start + chunk_size].float(), dim=-1)
        sims = q @ chunk.T
        vals = torch.cat([best_val, sims], dim=1)
        idx = torch.cat([best_idx, torch.arange(start, start + chunk.shape[0]).expand(q.shape[0], -1)], dim=1)
        top = vals.topk(min(k, vals.shape[1]), dim=1)
        best_val, best_idx = top.values, idx.gather(1, top.indices)
    return best_val, best_idx


def nearest_source_tokens(new_embeddings: torch.Tensor, new_ids: list[int], tokenizer: Any,
                          source_embeddings: torch.Tensor, baseline_tokenizer: Any, *,
                          k: int = 5) -> list[TokenNeighbours]:
    """For each id in ``new_ids``: its ``k`` nearest source rows by cosine, as surface strings.

    ``new_embeddings`` is the model's input embedding matrix, ``source_embeddings`` the baseline's;
    rows past the baseline tokenizer's length (padding rows) are not candidates.
    """
    from vocabshift.tokenization.surface import surface_forms

    if not new_ids:
        return []
    target = surface_forms(tokenizer)
    source = surface_forms(baseline_tokenizer)
    keys = source_embeddings[:min(len(source), source_embeddings.shape[0])].detach().cpu()
    queries = new_embeddings.detach().cpu()[torch.tensor(new_ids, dtype=torch.long)]
    values, indices = cosine_top_k(queries, keys, k)
    out = []
    for row, token_id in enumerate(new_ids):
        name = display_token(target[token_id]) if token_id < len(target) else f"<row {token_id}>"
        out.append(TokenNeighbours(id=token_id, token=name, neighbours=[
            Neighbour(id=int(j), token=display_token(source[int(j)]), cosine=round(float(v), 6))
            for v, j in zip(values[row].tolist(), indices[row].tolist(), strict=True)]))
    return out
