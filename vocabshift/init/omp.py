r"""``omp``: Orthogonal Matching Pursuit (Goddard & Neto, 2025, arXiv 2506.06607; mergekit's tokensurgeon).

Source and target tokens have vectors in one shared space: ``x_t`` for a target token,
``y_j`` for the *anchors*, the source tokens with a usable vector (``inputs.source_token_vectors`` /
``target_token_vectors``). OMP writes ``x_t`` as a sparse linear combination of at most ``k`` anchors,

    min_c || x_t - sum_{j in S} c_j y_j ||^2   over supports |S| <= k   (greedily, see below)
    E_t[t] = sum_{j in S} c_j E_s[j]

and applies the same coefficients to the anchors' rows of the source embedding matrix. The coefficients
are unconstrained, as in the paper: they can be negative and need not sum to 1.

The greedy pursuit, per target token, starting from ``S = {}`` and ``r = x_t``:

1. pick the anchor not yet in ``S`` with the largest ``|<r, y_j>|`` (raw vectors, as tokensurgeon);
2. refit *all* coefficients by least squares on ``S``: ``c = argmin ||x_t - Y_S c||``, ``r = x_t - Y_S c``;
3. stop after ``k`` atoms, or once ``||r|| <= tolerance * ||x_t||``.

Design choices:

* **The space.** The dictionary is whatever aligned space the glue provides (today static fastText
  vectors aligned by the vectors stage). The paper uses a donor model's embeddings (one that already
  has the target tokenizer). A space other than the source model's own is essential: there, a new
  token's vector could only be something like the FVT mean of its pieces, the dictionary would be
  ``E_s`` itself, and the row ``sum_j c_j E_s[j] = x_t - r`` would just return that mean.
* **Raw dot products in step 1, near-zero anchors left out.** The pick ranks ``|<r, y_j>|`` on the raw
  vectors, as tokensurgeon does, and the fit uses the same raw ``y_j``, so ``c`` applies to ``E_s[j]``
  unchanged. Ranking by ``|<r, y_j>| / ||y_j||`` (textbook OMP's unit atoms; this module's first version)
  let short vectors in as full directions, and the fit then gave them coefficients ~``1/||y_j||`` on real
  model rows: on SmolLM2 -> 32k Spanish with 300-d fastText vectors (3,591 of 48,656 source tokens have a
  composed vector below 1% of the median norm, many exactly 0) that gave 18,586 bits per byte at ``k: 8``;
  leaving out anchors shorter than ``SHORT_ANCHOR`` (5%) of the median norm, 64.5; ranking raw dot products
  as well, 3.94 (``benchmarks/init_quality.py``).
* **Least squares by an incremental QR.** Each new atom is orthogonalized against the chosen ones by
  Gram-Schmidt applied twice ("twice is enough") in float64, giving ``Y_S = Q R``; the residual is
  ``x_t`` minus its projection on ``Q`` and, at the end, ``R c = Q^T x_t`` is solved by back
  substitution. This is the least-squares refit of every step, without forming the Gram matrix (whose
  condition number is the square of ``Y_S``'s). An atom that adds no direction (``< 1e-6`` of its
  length outside ``span(S)``; only picked once ``r`` is orthogonal to every anchor) ends the pursuit.
* **Cost and batching.** Step 1 is the whole cost: a ``[batch, dim] x [dim, anchors]`` float32 product
  per step, ``k · n · A · dim`` multiply-adds in all (30k targets, 50k anchors, dim 300, k = 64: about
  3·10^13, about 12 minutes on 2 CPU cores, measured; a GPU is the place for that size). Target tokens
  are processed ``inputs.chunk_size`` at a time, fewer when the ``[batch, anchors]`` correlations would
  exceed 64 MiB. Tokens that stopped drop out of the product.
* **Duplicates.** Anchors with the same unit vector (byte-level BPE gives ``ĠND`` and ``ND`` the vector of
  ``ND``) are one atom, represented by the lowest source id: which row is used does not depend on the
  last bit of a float product. Target tokens with identical vectors are computed once.
* ``k`` is clamped to the number of distinct anchors and to the vector dimension (after ``dim``
  independent atoms the residual is zero).

Target tokens without a usable vector get the fallback row (the mean source row, or a per-dimension
normal draw), origin FALLBACK. Rows with ``copy >= 0`` are copied bit-exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError
from vocabshift.init._common import (
    aligned_unit_vectors,
    check_fallback,
    check_positive,
    chunks,
    set_fallback,
    start_rows,
    weighted_rows,
)
from vocabshift.init.base import REQUIRES_ALIGNED, InitInputs, InitResult
from vocabshift.init.registry import register_init_method

if TYPE_CHECKING:  # torch is imported when a method runs (the registry and CLI load without it)
    import torch

log = logging.getLogger(__name__)

# Anchors whose vector is shorter than this share of the median anchor norm are left out (see omp_init).
SHORT_ANCHOR = 0.05
# Computed rows whose median norm is this many times the source rows' are a broken init (see omp_init).
BLOWUP_RATIO = 10.0
# Elements of the [batch, anchors] float32 correlations (64 MiB) and of the [batch, k, dim] float64
# orthonormal bases (64 MiB) held at once.
_CORR_BUDGET = 1 << 24
_BASIS_BUDGET = 1 << 23
# A new atom whose component outside span(S) is below this share of its length adds no direction: the
# inputs are float32 (relative rounding ~6e-8, times sqrt(dim) over a dot product).
_DEPENDENT = 1e-6


@dataclass
class OMPConfig(ConfigMixin):
    """Options of ``omp`` (defaults from mergekit's tokensurgeon)."""

    k: int = field(default=64, metadata={
        "help": "Sparsity: at most k anchors (source tokens with a vector) combined per target token "
                "(tokensurgeon's default 64); clamped to the number of anchors and the vector dimension."})
    tolerance: float = field(default=1e-6, metadata={
        "help": "Stop adding anchors once the residual norm is at most tolerance times the target "
                "vector's norm; in [0, 1) (0: always use k anchors)."})
    fallback: str = field(default="mean", metadata={
        "help": "Row for a target token without a vector: 'mean' (the mean source row) or 'random' "
                "(per-dimension normal of the source rows)."})

    def __post_init__(self) -> None:
        check_positive(self.k, "k")
        if not isinstance(self.k, int):
            raise ConfigError(f"k must be a whole number of anchors, got {self.k!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) \
                or not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance must be in [0, 1) (0: always use k anchors), got {self.tolerance!r}")
        check_fallback(self.fallback)


@register_init_method(
    "omp",
    config=OMPConfig,
    reference_url="https://arxiv.org/abs/2506.06607",
    requires=(REQUIRES_ALIGNED,),
    copy_overlap=True,
    description="OMP: sparse least-squares combination of <= k source rows, atoms picked by orthogonal "
                "matching pursuit in an aligned vector space.",
)
def omp_init(inputs: InitInputs, config: OMPConfig) -> InitResult:
    """Each row not copied = the OMP coefficients of its vector over the anchors, applied to their rows."""
    import torch
    assert inputs.source_token_vectors is not None and inputs.target_token_vectors is not None
    rows, origin, todo = start_rows(inputs)
    dev = inputs.device
    src_unit, src_ok, _, tgt_ok = aligned_unit_vectors(inputs, "omp")
    # Near-zero anchor vectors (fastText composing a string of unseen n-grams) are noise: the normalized
    # selection would treat them as full directions and the raw fit would give them ~1/||y|| coefficients.
    raw_norm = torch.linalg.vector_norm(inputs.source_token_vectors.to(dev).float(), dim=1)
    short = src_ok & (raw_norm < SHORT_ANCHOR * raw_norm[src_ok].median()) if bool(src_ok.any()) else src_ok
    src_ok = src_ok & ~short

    atoms_unit, rep = _distinct_anchors(src_unit, src_ok)
    atoms_raw = inputs.source_token_vectors.to(dev)[rep]  # the representatives' raw vectors, for the fit
    k = min(config.k, int(rep.numel()), int(atoms_unit.shape[1]))

    query = (todo & tgt_ok).nonzero().squeeze(1)
    stats: dict[str, Any] = {"k": k, "anchors": int(src_ok.sum()), "short_anchors": int(short.sum()),
                             "distinct_anchors": int(rep.numel()),
                             "mean_atoms": 0.0, "mean_relative_residual": 0.0}
    if query.numel():
        x = inputs.target_token_vectors.to(dev)[query.to(dev)]
        uq, inverse = torch.unique(x, dim=0, return_inverse=True)
        idx, coef, n_atoms, rel = _pursuit(uq.to(torch.float64), atoms_raw, k=k,
                                           tolerance=config.tolerance, chunk_size=inputs.chunk_size)
        table = inputs.source_embeddings.to(dev)
        rows[query] = weighted_rows(rep[idx][inverse], coef[inverse].to(torch.float32), table).cpu()
        stats["mean_atoms"] = float(n_atoms[inverse].double().mean())
        stats["mean_relative_residual"] = float(rel[inverse].mean())
        stats["mean_coefficient_l1"] = float(coef[inverse].abs().sum(1).mean())
        stats["row_norm_ratio"] = _norm_ratio(rows[query], inputs.source_embeddings)
        if stats["row_norm_ratio"] > BLOWUP_RATIO:
            log.warning(
                "omp: the computed rows' median norm is %.0fx the source rows' (mean |coefficients| sum %.1f): the "
                "coefficients cancel in the vector space but not in the model's, and such rows make a broken model "
                "(measured with near-zero anchors admitted: SmolLM2 -> 32k Spanish, 300-d fastText vectors). Check "
                "the vectors (short_anchors, row_norm_ratio in the report), or use fvt or distill.",
                stats["row_norm_ratio"], stats["mean_coefficient_l1"])

    missing = todo & ~tgt_ok
    set_fallback(rows, origin, missing, config.fallback, inputs.source_embeddings, inputs)
    stats["no_vector"] = int(missing.sum())
    return InitResult(rows=rows, origin=origin, info=stats)


def _norm_ratio(rows: torch.Tensor, source: torch.Tensor) -> float:
    """Median L2 norm of ``rows`` over the median norm of the source rows (1 for rows like the source's)."""
    import torch
    base = float(torch.linalg.vector_norm(source.float(), dim=1).median())
    return float(torch.linalg.vector_norm(rows.float(), dim=1).median()) / max(base, 1e-12)


def _distinct_anchors(unit: torch.Tensor, usable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct unit vectors of the usable anchors, ordered by their lowest source id, and that id.

    Ordering by source id makes ``argmax`` break exact ties between different atoms by the lower id.
    """
    import torch
    ids = usable.nonzero().squeeze(1)
    distinct, group = torch.unique(unit[ids], dim=0, return_inverse=True)
    first = torch.full((distinct.shape[0],), unit.shape[0], dtype=torch.long, device=unit.device)
    first = first.scatter_reduce(0, group, ids, "amin")
    order = torch.argsort(first)
    return distinct[order].contiguous(), first[order]


def _pursuit(x: torch.Tensor, atoms_raw: torch.Tensor, *, k: int,
             tolerance: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OMP of every row of ``x`` [n, dim] (float64) over the atoms; see the module docstring.

    Returns ``(idx, coef, n_atoms, relative_residual)``: atom indices [n, k] and float64 coefficients
    [n, k] (unused slots: atom 0 with coefficient 0), atoms used [n], and ``||r|| / ||x||`` [n].
    """
    import torch
    n, dim = x.shape
    step = max(1, min(chunk_size, _CORR_BUDGET // atoms_raw.shape[0], _BASIS_BUDGET // (dim * k)))
    idx = torch.zeros(n, k, dtype=torch.long, device=x.device)
    coef = torch.zeros(n, k, dtype=torch.float64, device=x.device)
    n_atoms = torch.zeros(n, dtype=torch.long, device=x.device)
    rel = torch.zeros(n, dtype=torch.float64, device=x.device)
    for s, e in chunks(n, step):
        idx[s:e], coef[s:e], n_atoms[s:e], rel[s:e] = _pursuit_batch(x[s:e], atoms_raw, k, tolerance)
    return idx, coef, n_atoms, rel


def _pursuit_batch(x: torch.Tensor, atoms_raw: torch.Tensor, k: int,
                   tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OMP for one batch: ``k`` greedy steps, each one float32 product with the atoms for the tokens still going.

    The residuals and orthonormal bases are kept for the tokens still going only (``live``), so the
    product and the Gram-Schmidt work on contiguous tensors; the triangular factors, ``Q^T x`` and the
    chosen atoms are kept for the whole batch, unused slots of the factor staying the identity.
    """
    import torch
    atoms_sel = atoms_raw.to(torch.float32)
    b, dim = x.shape
    dev = x.device
    x_norm = torch.linalg.vector_norm(x, dim=1)
    res_norm = x_norm.clone()
    tri = torch.eye(k, dtype=torch.float64, device=dev).repeat(b, 1, 1)  # R of Y_S = Q R
    proj = torch.zeros(b, k, dtype=torch.float64, device=dev)  # Q^T x
    idx = torch.zeros(b, k, dtype=torch.long, device=dev)
    n_atoms = torch.zeros(b, dtype=torch.long, device=dev)
    live = torch.arange(b, device=dev)  # batch rows still going
    resid = x.clone()  # [live, dim]
    basis = torch.zeros(b, k, dim, dtype=torch.float64, device=dev)  # [live, k, dim]: rows of Q^T
    for t in range(k):
        keep = res_norm[live] > tolerance * x_norm[live]
        if not bool(keep.all()):
            live, resid, basis = live[keep], resid[keep], basis[keep]
        if live.numel() == 0:
            break
        corr = (resid.to(torch.float32) @ atoms_sel.T).abs_()  # [live, atoms]: the whole cost
        if t:
            corr.scatter_(1, idx[live, :t], -1.0)  # an atom already chosen is never chosen again
        best = corr.argmax(1)
        del corr
        atom = atoms_raw[best].to(torch.float64)
        q_prev = basis[:, :t]
        # Gram-Schmidt twice: the new direction is orthogonal to the earlier ones to float64 precision.
        h = torch.bmm(q_prev, atom.unsqueeze(2))
        w = atom - torch.bmm(q_prev.transpose(1, 2), h).squeeze(2)
        h2 = torch.bmm(q_prev, w.unsqueeze(2))
        w = w - torch.bmm(q_prev.transpose(1, 2), h2).squeeze(2)
        w_norm = torch.linalg.vector_norm(w, dim=1)
        adds = w_norm > _DEPENDENT * torch.linalg.vector_norm(atom, dim=1)
        if not bool(adds.all()):  # r is orthogonal to every anchor: nothing left to explain, stop
            live, resid, basis, best = live[adds], resid[adds], basis[adds], best[adds]
            w, w_norm, h, h2 = w[adds], w_norm[adds], h[adds], h2[adds]
        q = w / w_norm[:, None]
        z = (resid * q).sum(1)  # <r, q> = <x, q>: r is x minus its projection on the earlier directions
        basis[:, t] = q
        tri[live, :t, t] = (h + h2).squeeze(2)
        tri[live, t, t] = w_norm
        proj[live, t] = z
        idx[live, t] = best
        n_atoms[live] += 1
        resid -= z[:, None] * q
        res_norm[live] = torch.linalg.vector_norm(resid, dim=1)
    coef = torch.linalg.solve_triangular(tri, proj.unsqueeze(2), upper=True).squeeze(2)  # R c = Q^T x
    return idx, coef, n_atoms, res_norm / x_norm
