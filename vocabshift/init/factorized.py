"""``factorized``: the embedding-matrix factorization of UNKs Everywhere (Pfeiffer et al., 2021, EMNLP).

Meant for scripts the source model has (almost) never seen, where no aligned vectors exist. The
source embeddings are factorized, ``E_s ≈ F G`` with ``F`` [V_s, r] token-specific and ``G`` [r, d]
shared "up-projection" (here by truncated SVD: ``F = U_r S_r``, ``G = V_r^T``). A new matrix ``F'``
gets one row per target token and the new embeddings are ``F' G``:

* lexically overlapping tokens take the source row: ``F'[t] = F[copy[t]]`` for copied tokens, or
  ``F[shared[t]]`` where the glue does not copy the token but ``inputs.shared`` names its source twin;
* other tokens, when aligned ``source_token_vectors``/``target_token_vectors`` are given and
  ``use_vectors`` is on, take a WECHSEL-style combination of ``F`` rows,
  ``F'[t] = sum_{j in N_k(t)} softmax(cos(x_t, y_j)/T)_j F[j]`` (an extension; the paper has no vectors);
* the rest take the fallback: the mean row of ``F`` (default) or a draw from its per-dimension normal.

``result.factorized`` is ``FactorizedEmbedding(F', G)`` (what training keeps factorized);
``result.rows`` is ``F' G`` except for copied tokens, whose rows are the exact source rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vocabshift.config import ConfigMixin
from vocabshift.init._common import (
    check_fallback,
    check_positive,
    copied_coordinates,
    factor_rows,
    neighbour_rows,
    set_fallback,
    start_rows,
    truncated_svd,
    unit_vectors,
)
from vocabshift.init.base import REQUIRES_SHARED, InitInputs, InitResult
from vocabshift.init.registry import register_init_method


@dataclass
class FactorizedConfig(ConfigMixin):
    """Options of ``factorized``."""

    rank: int = field(default=100, metadata={
        "help": "Rank r of E_s ≈ F G (the paper's D' = 100); clamped to min(V_s, d)."})
    fallback: str = field(default="mean", metadata={
        "help": "F' row for a token with no lexical overlap (and no vector): 'mean' (mean row of F) or "
                "'random' (per-dimension normal of F)."})
    use_vectors: bool = field(default=True, metadata={
        "help": "When source and target token vectors are given, build F' rows of non-overlapping tokens "
                "from their top-k aligned source neighbours' F rows instead of the fallback."})
    neighbours: int = field(default=10, metadata={
        "help": "Number k of source neighbours combined when use_vectors applies."})
    temperature: float = field(default=0.1, metadata={
        "help": "Softmax temperature over the neighbours' cosine similarities when use_vectors applies."})
    freeze_primitives: bool = field(default=False, metadata={
        "help": "Mark G in result.factorized as not trainable (train only the token rows F')."})

    def __post_init__(self) -> None:
        check_positive(self.rank, "rank")
        check_fallback(self.fallback)
        check_positive(self.neighbours, "neighbours")
        check_positive(self.temperature, "temperature")


@register_init_method(
    "factorized",
    config=FactorizedConfig,
    reference_url="https://aclanthology.org/2021.emnlp-main.800/",
    requires=(REQUIRES_SHARED,),
    copy_overlap=True,
    description="UNKs Everywhere: E ≈ F G; overlapping tokens keep their F rows, others the mean F row (factorized).",
)
def factorized_init(inputs: InitInputs, config: FactorizedConfig) -> InitResult:
    """Rank-r factorization with lexical-overlap rows; see the module docstring."""
    import torch
    assert inputs.shared is not None
    rows, origin, todo = start_rows(inputs)
    dev = inputs.device
    fac = truncated_svd(inputs.source_embeddings, config.rank, chunk_size=inputs.chunk_size, device=dev)
    f_new = copied_coordinates(fac, inputs, todo)
    overlap = todo & (inputs.shared >= 0)
    f_new[overlap] = fac.coordinates[inputs.shared[overlap]]
    rest = todo & ~overlap

    stats: dict[str, float] = {}
    vectors = inputs.source_token_vectors is not None and inputs.target_token_vectors is not None
    if config.use_vectors and vectors and bool(rest.any()):
        assert inputs.source_token_vectors is not None and inputs.target_token_vectors is not None
        src_unit, src_ok = unit_vectors(inputs.source_token_vectors, inputs.source_vector_mask, dev)
        tgt_unit, tgt_ok = unit_vectors(inputs.target_token_vectors, inputs.target_vector_mask, dev)
        query = (rest & tgt_ok.cpu()).nonzero().squeeze(1) if bool(src_ok.any()) else torch.empty(0, dtype=torch.long)
        if query.numel():
            out, stats = neighbour_rows(
                tgt_unit[query.to(dev)], src_unit, src_ok, fac.coordinates.to(dev),
                neighbours=config.neighbours, temperature=config.temperature, chunk_size=inputs.chunk_size,
            )
            f_new[query] = out.cpu()
            rest[query] = False
    set_fallback(f_new, origin, rest, config.fallback, fac.coordinates, inputs)
    factor_rows(rows, f_new, fac.primitives, todo, inputs)  # copied rows stay exact

    info = {
        **fac.summary(),
        "lexical_overlap": int(overlap.sum()),
        "vector_neighbours_used": bool(stats),
        **stats,
    }
    from vocabshift.surgery.factorized import FactorizedEmbedding  # an nn.Module: torch

    factorized = FactorizedEmbedding(f_new, fac.primitives, freeze_primitives=config.freeze_primitives)
    return InitResult(rows=rows, origin=origin, info=info, factorized=factorized)
