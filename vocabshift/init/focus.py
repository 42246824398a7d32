"""``focus``: FOCUS (Dobler & de Melo, 2023, EMNLP).

The *basis* is the set of target tokens whose rows are copied from the source (``inputs.copy >= 0``:
the tokens both vocabularies share) and that have a target vector. Every other target token ``t``
with a vector is a sparse convex combination of basis rows, weighted by similarity in the
target-language token-level fastText space (``inputs.target_token_vectors``; no alignment needed):

    c_j = cos(x_t, x_j)  for basis tokens j
    w   = sparsemax(c)                            (Martins & Astudillo, 2016)
    E_t[t] = sum_j w_j * E_s[copy[j]]

Sparsemax is the Euclidean projection of ``c`` onto the probability simplex,
``argmin_{p in simplex} ||p - c||^2``, which has the closed form ``p_j = max(c_j - tau, 0)`` with
``tau = (sum_{j <= k(c)} c_(j) - 1) / k(c)`` over the sorted scores ``c_(1) >= c_(2) >= ...`` and
``k(c) = max{k : 1 + k c_(k) > sum_{j <= k} c_(j)}``. FOCUS applies it over the whole basis; we do
the same exactly, but only look at the ``candidates`` largest scores first: if fewer than that are
in the support, the scores left out are below ``tau`` and get weight 0, so the result is the full
sparsemax; otherwise the candidate count doubles until it is (see :func:`sparsemax_topk`).

Tokens without a vector, or all new tokens when the basis is empty, get the fallback row: a draw from
the per-dimension normal of the source rows (FOCUS's behaviour) or the mean row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError
from vocabshift.init._common import (
    check_fallback,
    check_positive,
    chunks,
    set_fallback,
    start_rows,
    unit_vectors,
    weighted_rows,
)
from vocabshift.init.base import REQUIRES_TARGET_TOKEN, InitInputs, InitResult
from vocabshift.init.registry import register_init_method
from vocabshift.vectors.config import FOCUS_FASTTEXT

if TYPE_CHECKING:  # torch is imported when a method runs (the registry and CLI load without it)
    import torch

log = logging.getLogger(__name__)


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax of ``z`` along ``dim`` (Martins & Astudillo, 2016): the projection onto the simplex."""
    import torch
    z_sorted = torch.sort(z, dim=dim, descending=True).values
    shape = [1] * z.dim()
    shape[dim] = z.shape[dim]
    k = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype, device=z.device).view(shape)
    cumsum = z_sorted.cumsum(dim)
    # The k satisfying the condition form a prefix 1..k(z), so counting them gives k(z).
    k_z = (1 + k * z_sorted > cumsum).sum(dim=dim, keepdim=True)
    tau = (cumsum.gather(dim, k_z - 1) - 1) / k_z.to(z.dtype)
    return (z - tau).clamp_min(0)


def sparsemax_topk(z: torch.Tensor, candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact row-wise sparsemax of ``z`` [c, n] as ``(weights, idx)`` [c, s], s = largest support size.

    Starts from the ``candidates`` largest scores per row. If a row's support is smaller than the
    candidate count, the scores not looked at are <= that row's ``tau`` and would get weight 0 (the
    condition that ends the support, ``z_(k+1) <= tau_k``, holds for every later score), so the row
    is final; rows whose candidates are all in the support are redone with twice as many. Entries
    of ``weights`` beyond a row's own support are 0.
    """
    import torch
    c, n = z.shape
    m = min(max(1, candidates), n)
    support = torch.zeros(c, dtype=torch.long, device=z.device)
    tau = torch.zeros(c, dtype=z.dtype, device=z.device)
    pending = torch.arange(c, device=z.device)
    while pending.numel():
        vals = torch.topk(z[pending], m, dim=1, sorted=True).values
        k = torch.arange(1, m + 1, dtype=z.dtype, device=z.device)
        cumsum = vals.cumsum(1)
        size = (1 + k * vals > cumsum).sum(1)
        done = (size < m) | (m == n)
        finished = pending[done]
        support[finished] = size[done]
        tau[finished] = (cumsum[done].gather(1, (size[done] - 1)[:, None]).squeeze(1) - 1) / size[done].to(z.dtype)
        pending = pending[~done]
        m = min(2 * m, n)
    s = int(support.max()) if c else 0
    vals, idx = torch.topk(z, s, dim=1, sorted=True)
    return (vals - tau[:, None]).clamp_min(0), idx


@dataclass
class FocusConfig(ConfigMixin):
    """Options of ``focus``."""

    fallback: str = field(default="mean", metadata={
        "help": "Row for a new token without a vector (or when no shared token has one): 'mean' (the mean "
                "source row; default, see docs/init.md) or 'random' (per-dimension normal of the source rows, as FOCUS)."})
    candidates: int = field(default=64, metadata={
        "help": "Scores looked at first per token before sparsemax; only speed depends on it (the result "
                "is the exact sparsemax over all shared tokens, the count doubles where needed)."})
    center: bool = field(default=False, metadata={
        "help": "Subtract the mean token vector before the cosine (not in the paper). Small-corpus token-level "
                "fastText spaces are anisotropic (every pair scores near 1), which makes sparsemax spread each "
                "row over hundreds of shared tokens; see docs/init.md."})
    token_vectors: str | None = field(default=None, metadata={
        "help": "A token-level fastText model of the target tokenizer to use instead of training one "
                "(`vocabshift vectors train --tokenizer TARGET`; words are t<id>)."})
    fasttext_model: str = field(default=FOCUS_FASTTEXT["model"], metadata={
        "help": "Token-level fastText: cbow (FOCUS's choice, closer to masked LM) or skipgram."})
    fasttext_dim: int = field(default=FOCUS_FASTTEXT["dim"], metadata={"help": "Token-level fastText dimension."})
    fasttext_epochs: int = field(default=FOCUS_FASTTEXT["epochs"], metadata={
        "help": "Token-level fastText epochs."})
    fasttext_min_count: int = field(default=FOCUS_FASTTEXT["min_count"], metadata={
        "help": "Tokens seen fewer times in the corpus get no vector (hence the fallback row)."})

    def __post_init__(self) -> None:
        check_fallback(self.fallback)
        check_positive(self.candidates, "candidates")
        for name in ("fasttext_dim", "fasttext_epochs", "fasttext_min_count"):
            check_positive(getattr(self, name), name)
        if self.fasttext_model not in ("cbow", "skipgram"):
            raise ConfigError(f"fasttext_model must be cbow or skipgram, got {self.fasttext_model!r}")


@register_init_method(
    "focus",
    config=FocusConfig,
    reference_url="https://arxiv.org/abs/2305.14481",
    requires=(REQUIRES_TARGET_TOKEN,),
    copy_overlap=True,
    description="FOCUS: sparsemax-weighted combination of shared tokens' rows, similarity in target fastText space.",
)
def focus_init(inputs: InitInputs, config: FocusConfig) -> InitResult:
    """Each new row = sparsemax(cosine to the shared tokens)-weighted sum of the shared tokens' rows."""
    import torch
    assert inputs.target_token_vectors is not None
    rows, origin, todo = start_rows(inputs)
    dev = inputs.device
    vectors = inputs.target_token_vectors
    if config.center:
        _, usable = unit_vectors(vectors, inputs.target_vector_mask, torch.device("cpu"))
        if bool(usable.any()):
            vectors = vectors.float().clone()
            vectors[usable] -= vectors[usable].mean(0)
    unit, ok = unit_vectors(vectors, inputs.target_vector_mask, dev)
    ok = ok.cpu()
    basis = (~todo & ok).nonzero().squeeze(1)
    query = (todo & ok).nonzero().squeeze(1) if basis.numel() else torch.empty(0, dtype=torch.long)
    if not basis.numel() and bool(todo.any()):
        log.warning("focus: no copied token has a target vector, so every new token gets the %s fallback",
                    config.fallback)

    basis_unit = unit[basis.to(dev)]
    basis_rows = rows[basis].to(dev)  # the copied rows, E_s[copy[j]]
    sizes = torch.zeros(query.numel(), dtype=torch.long)
    top1 = 0.0
    for s, e in chunks(query.numel(), inputs.chunk_size):
        sims = unit[query[s:e].to(dev)] @ basis_unit.T  # [c, n_basis] cosine similarities
        weights, idx = sparsemax_topk(sims, config.candidates)
        rows[query[s:e]] = weighted_rows(idx, weights, basis_rows).cpu()
        sizes[s:e] = (weights > 0).sum(1).cpu()
        top1 += float(sims.max(1).values.double().sum())

    missing = todo.clone()
    missing[query] = False
    set_fallback(rows, origin, missing, config.fallback, inputs.source_embeddings, inputs)
    n = max(1, query.numel())
    info = {
        "basis_size": int(basis.numel()),
        "mean_support_size": float(sizes.double().sum()) / n,
        "max_support_size": int(sizes.max()) if sizes.numel() else 0,
        "mean_top1_similarity": top1 / n,
    }
    return InitResult(rows=rows, origin=origin, info=info)
