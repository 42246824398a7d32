"""``ofa``: OFA (Liu, Lin, Wang & Schütze, 2024, Findings of NAACL).

OFA factorizes the source embeddings by truncated SVD, ``E_s ≈ C P`` with rank ``r``:

    E_s = U S V^T,   C = U_r S_r  [V_s, r] (coordinates),   P = V_r^T  [r, d] (primitives)

Here the singular values go into the coordinates and the primitives are orthonormal rows. (The OFA
code puts them into the primitives, ``P = S_r V_r^T`` and ``C = U_r``; every row ``C P`` is the same,
only the scale each factor trains at differs.) New tokens get coordinates from their aligned
multilingual vectors as in WECHSEL, but combining source *coordinates*:

    w_j = softmax_{j in N_k(t)}(cos(x_t, y_j) / T),   c_t = sum_{j in N_k(t)} w_j C[j]

Tokens the vocabularies share (``copy >= 0``) take their source coordinates ``C[copy]``; tokens
without a vector take the fallback coordinates: the mean of ``C`` (default) or a draw from the
per-dimension normal of ``C``.

The result has two forms:

* ``result.factorized``: a :class:`~vocabshift.surgery.factorized.FactorizedEmbedding` holding
  ``(coords, P)`` for *every* target token. Its ``materialize()``/``weight`` is ``coords @ P``, so its
  copied rows are the rank-``r`` approximations ``C[copy] P`` (exact only at full rank). This is what
  continued pretraining trains when it keeps the embeddings factorized (OFA's setting).
* ``result.rows``: the dense initialization, ``coords @ P`` for computed and fallback rows and the
  *exact* source rows for copied tokens, as every method's ``rows``. Plain (dense) init writes these.

``info["reconstruction_error"]`` is ``||E_s - C P||_F / ||E_s||_F`` and
``info["copied_reconstruction_error"]`` the same ratio over the copied rows only: how far the factorized
form's copied rows are from the exact ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vocabshift.config import ConfigMixin
from vocabshift.init._common import (
    check_fallback,
    check_positive,
    chunks,
    copied_coordinates,
    factor_rows,
    neighbour_transfer,
    start_rows,
    truncated_svd,
)
from vocabshift.init.base import REQUIRES_ALIGNED, InitInputs, InitResult
from vocabshift.init.registry import register_init_method

if TYPE_CHECKING:  # torch is imported when a method runs (the registry and CLI load without it)
    import torch


@dataclass
class OFAConfig(ConfigMixin):
    """Options of ``ofa`` (defaults from the paper's largest setting)."""

    rank: int = field(default=400, metadata={
        "help": "Rank r of the factorization (number of primitives); clamped to min(V_s, d), and r >= d "
                "means no compression."})
    neighbours: int = field(default=10, metadata={
        "help": "Number k of most similar source tokens whose coordinates are combined."})
    temperature: float = field(default=0.1, metadata={
        "help": "Softmax temperature T over the neighbours' cosine similarities."})
    fallback: str = field(default="mean", metadata={
        "help": "Coordinates for a new token without a vector: 'mean' (mean source coordinates) or "
                "'random' (per-dimension normal of the source coordinates, as the OFA code)."})
    freeze_primitives: bool = field(default=False, metadata={
        "help": "Mark the primitives of result.factorized as not trainable (train only the coordinates)."})

    def __post_init__(self) -> None:
        check_positive(self.rank, "rank")
        check_positive(self.neighbours, "neighbours")
        check_positive(self.temperature, "temperature")
        check_fallback(self.fallback)


@register_init_method(
    "ofa",
    config=OFAConfig,
    reference_url="https://arxiv.org/abs/2311.08849",
    requires=(REQUIRES_ALIGNED,),
    copy_overlap=True,
    description="OFA: SVD coordinates x primitives; new coordinates from top-k aligned neighbours (factorized).",
)
def ofa_init(inputs: InitInputs, config: OFAConfig) -> InitResult:
    """Rank-r factorized initialization; see the module docstring for ``rows`` vs ``factorized``."""
    rows, origin, todo = start_rows(inputs)
    fac = truncated_svd(inputs.source_embeddings, config.rank, chunk_size=inputs.chunk_size, device=inputs.device)
    coords = copied_coordinates(fac, inputs, todo)
    stats = neighbour_transfer(inputs, fac.coordinates, coords, origin, todo, method="ofa",
                               neighbours=config.neighbours, temperature=config.temperature, fallback=config.fallback)
    factor_rows(rows, coords, fac.primitives, todo, inputs)  # copied rows stay exact
    info = {
        **fac.summary(),
        "copied_reconstruction_error": _copied_error(rows, coords, fac.primitives, ~todo, inputs),
        **stats,
    }
    from vocabshift.surgery.factorized import FactorizedEmbedding  # an nn.Module: torch

    factorized = FactorizedEmbedding(coords, fac.primitives, freeze_primitives=config.freeze_primitives)
    return InitResult(rows=rows, origin=origin, info=info, factorized=factorized)


def _copied_error(rows: torch.Tensor, coords: torch.Tensor, prims: torch.Tensor, copied: torch.Tensor,
                  inputs: InitInputs) -> float:
    """``||rows[copied] - coords[copied] P||_F / ||rows[copied]||_F`` (0 when nothing is copied)."""
    import torch
    ids = copied.nonzero().squeeze(1)
    num = den = 0.0
    p = prims.to(inputs.device)
    for s, e in chunks(ids.numel(), inputs.chunk_size):
        exact = rows[ids[s:e]].to(inputs.device, torch.float64)
        approx = (coords[ids[s:e]].to(inputs.device) @ p).double()
        num += float((exact - approx).square().sum())
        den += float(exact.square().sum())
    return (num / den) ** 0.5 if den > 0 else 0.0
