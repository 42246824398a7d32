"""``fvt``: Fast Vocabulary Transfer (Gee et al., 2022, EMNLP Industry Track).

A new token's row is the mean of the source rows of the pieces the *source* tokenizer splits its
surface form into: for target token ``t`` with source split ``T_s(t) = (s_1, ..., s_n)``,

    E_t[t] = (1/n) * sum_k E_s[s_k]

(a piece that occurs twice counts twice, as in the reference code). Tokens the source vocabulary
also has are copied (the glue passes them in ``inputs.copy``). A token whose split is empty (e.g. a
surface form that normalizes to nothing) gets the fallback row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

from vocabshift.config import ConfigMixin
from vocabshift.init._common import (
    check_fallback,
    chunks,
    set_fallback,
    start_rows,
    weighted_rows,
)
from vocabshift.init.base import REQUIRES_DECOMPOSITIONS, InitInputs, InitResult
from vocabshift.init.registry import register_init_method


@dataclass
class FVTConfig(ConfigMixin):
    """Options of ``fvt``."""

    fallback: str = field(default="mean", metadata={
        "help": "Row for a token whose source split is empty: 'mean' (mean source row) or 'random' "
                "(per-dimension normal of the source rows)."})

    def __post_init__(self) -> None:
        check_fallback(self.fallback)


@register_init_method(
    "fvt",
    config=FVTConfig,
    reference_url="https://aclanthology.org/2022.emnlp-industry.41/",
    requires=(REQUIRES_DECOMPOSITIONS,),
    copy_overlap=True,
    description="Fast Vocabulary Transfer: mean of the source rows of the source tokenizer's split.",
)
def fvt_init(inputs: InitInputs, config: FVTConfig) -> InitResult:
    """Mean of ``source_embeddings[decompositions[i]]`` for each token not copied."""
    import torch
    rows, origin, todo = start_rows(inputs)
    decompositions = inputs.decompositions or []
    # One flat pass over the ragged lists; everything after this is tensor code.
    lengths = torch.tensor([len(pieces) for pieces in decompositions], dtype=torch.long)
    flat = torch.tensor(list(chain.from_iterable(decompositions)), dtype=torch.long)
    offsets = torch.cumsum(lengths, 0) - lengths

    emb = inputs.source_embeddings.to(inputs.device)
    ids = (todo & (lengths > 0)).nonzero().squeeze(1)
    for s, e in chunks(ids.numel(), inputs.chunk_size):
        chunk = ids[s:e]
        n = lengths[chunk]
        # Pad this chunk's splits to its longest one; padding positions get weight 0.
        pos = torch.arange(int(n.max()))
        valid = pos[None, :] < n[:, None]
        piece_ids = flat[torch.where(valid, offsets[chunk, None] + pos[None, :], 0)]
        weights = valid.to(torch.float32) / n[:, None].to(torch.float32)
        rows[chunk] = weighted_rows(piece_ids.to(inputs.device), weights.to(inputs.device), emb).cpu()

    empty = todo & (lengths == 0)
    set_fallback(rows, origin, empty, config.fallback, inputs.source_embeddings, inputs)
    used = lengths[ids].to(torch.float64)
    info = {
        "mean_pieces": float(used.mean()) if used.numel() else 0.0,
        "max_pieces": int(used.max()) if used.numel() else 0,
        "single_piece": int((used == 1).sum()),
    }
    return InitResult(rows=rows, origin=origin, info=info)
