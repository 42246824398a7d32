"""The bf16 prefilter of WECHSEL/OFA's neighbour search (vocabshift.init._common) finds the exact neighbours.

Candidates come from a bf16 product; every row the error bound cannot certify is recomputed in fp32.
So the rows and statistics equal the fp32 search's, on easy inputs (most rows certified) and on
adversarial ones (near-ties everywhere, identical keys, zero queries: most rows recomputed).
"""

from __future__ import annotations

import pytest
import torch

from vocabshift.init import _common
from vocabshift.init._common import BF16_COSINE_ERROR, neighbour_rows


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _inputs(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, v, d = 300, 900, 48
    keys = _unit(torch.randn(v, d, generator=g))
    if kind == "near-ties":
        # keys in a tight cone around one direction: similarities within ~1e-3 of each other, far below
        # the bf16 error bound, so the prefilter cannot certify most rows
        base = _unit(torch.randn(1, d, generator=g))
        keys = _unit(base + 0.02 * torch.randn(v, d, generator=g))
        queries = _unit(base + 0.02 * torch.randn(n, d, generator=g))
    else:
        queries = _unit(keys[torch.randint(0, v, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g))
    keys[10:20] = keys[5]  # a group of identical keys (ĠND and ND)
    queries[:3] = 0.0  # tokens without a vector
    queries[3:6] = queries[6]  # identical queries
    usable = torch.ones(v, dtype=torch.bool)
    usable[::7] = False
    table = torch.randn(v, 16, generator=g)
    return queries, keys, usable, table


@pytest.mark.parametrize("kind", ["spread", "near-ties"])
@pytest.mark.parametrize("chunk", [64, 4096])
def test_prefilter_gives_the_exact_neighbours(kind, chunk, monkeypatch):
    queries, keys, usable, table = _inputs(kind)
    calls = {"exact rows": 0}
    exact_top = _common._exact_top_groups

    def counting(q, *args):
        calls["exact rows"] += q.shape[0]
        return exact_top(q, *args)

    want, want_stats = neighbour_rows(queries, keys, usable, table, neighbours=10, temperature=0.1,
                                      chunk_size=chunk, prefilter=False)
    monkeypatch.setattr(_common, "_exact_top_groups", counting)
    got, got_stats = neighbour_rows(queries, keys, usable, table, neighbours=10, temperature=0.1,
                                    chunk_size=chunk, prefilter=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got_stats["distinct_neighbours"] == want_stats["distinct_neighbours"]
    for key in ("mean_top1_similarity", "mean_topk_similarity", "mean_top1_weight"):
        assert got_stats[key] == pytest.approx(want_stats[key], abs=1e-6)
    unique_queries = torch.unique(queries, dim=0).shape[0]
    if kind == "spread":  # most rows certified by the bound: few recomputed
        assert calls["exact rows"] < unique_queries / 2
    else:  # near-ties everywhere: the bound certifies almost nothing, and the result is still exact
        assert calls["exact rows"] > unique_queries / 2


def test_bound_holds_for_bf16_products():
    """The error bound the certification relies on, checked on the worst directions we can build."""
    g = torch.Generator().manual_seed(1)
    for d in (4, 64, 300, 1024):
        q = _unit(torch.randn(512, d, generator=g))
        k = torch.cat([_unit(torch.randn(512, d, generator=g)), q[:64]])  # includes cosines of 1
        exact = (q.double() @ k.double().T)
        approx = (q.to(torch.bfloat16) @ k.to(torch.bfloat16).T).double()
        assert (approx - exact).abs().max() <= BF16_COSINE_ERROR
