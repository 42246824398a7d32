"""Tensor helpers the init methods share.

Input validation (:func:`validate_inputs`), the copied rows every method starts from
(:func:`start_rows`), per-dimension statistics and the two fallbacks (``"mean"``, ``"random"``),
chunked cosine nearest neighbours, weighted sums of table rows with bounded memory, and a truncated
SVD computed through the ``d × d`` Gram matrix (OFA and the UNKs-style factorization), plus the steps
several methods take alike (:func:`aligned_unit_vectors`, :func:`neighbour_transfer`,
:func:`set_fallback`, :func:`copied_coordinates`, :func:`factor_rows`).

Everything works on ``inputs.device`` in chunks of ``inputs.chunk_size`` rows; the results the
methods return are float32 CPU tensors. Randomness only comes from a ``torch.Generator`` seeded
with ``inputs.seed`` that lives on the CPU, so a CUDA run draws the same numbers as a CPU run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vocabshift.errors import ConfigError, InitError
from vocabshift.init.base import (
    COMPUTED,
    COPIED,
    FALLBACK,
    REQUIRES_ALIGNED,
    REQUIRES_DECOMPOSITIONS,
    REQUIRES_SHARED,
    REQUIRES_TARGET_TOKEN,
    REQUIRES_TEACHER,
    InitInputs,
)

if TYPE_CHECKING:  # torch is imported when a method runs (the registry and CLI load without it)
    import torch

log = logging.getLogger(__name__)

FALLBACKS = ("random", "mean")

# Elements of the [rows, neighbours, d] gather in weighted_rows: 2**24 float32 = 64 MiB at most.
_GATHER_BUDGET = 1 << 24


# ---------------------------------------------------------------------------------------------- config


def check_fallback(value: str, field: str = "fallback") -> None:
    """Refuse a fallback name other than ``"random"`` or ``"mean"``."""
    if value not in FALLBACKS:
        raise ConfigError(f"{field} must be one of {', '.join(FALLBACKS)}, got {value!r}")


def check_positive(value: float, field: str) -> None:
    """Refuse a value that is not > 0 (ranks, neighbour counts, temperatures)."""
    if isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{field} must be positive, got {value!r}")


# ------------------------------------------------------------------------------------------ validation

_REQUIRED_FIELDS = {
    REQUIRES_ALIGNED: ("source_token_vectors", "target_token_vectors"),
    REQUIRES_TARGET_TOKEN: ("target_token_vectors",),
    REQUIRES_DECOMPOSITIONS: ("decompositions",),
    REQUIRES_SHARED: ("shared",),
    REQUIRES_TEACHER: ("teacher",),
}


def _id_vector(t: object, name: str, length: int | None, n_source: int) -> torch.Tensor:
    """A 1-D integer tensor of source ids or -1, as a CPU long tensor."""
    import torch
    if not isinstance(t, torch.Tensor):
        raise InitError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise InitError(f"{name} must be 1-D [V_t], got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise InitError(f"{name} must hold integer source ids, got dtype {t.dtype}")
    if length is not None and t.numel() != length:
        raise InitError(f"{name} has {t.numel()} entries, copy has {length}: one per target token")
    t = t.detach().to("cpu", torch.long)
    if t.numel() and (int(t.min()) < -1 or int(t.max()) >= n_source):
        raise InitError(
            f"{name} holds ids outside [-1, {n_source - 1}] (min {int(t.min())}, max {int(t.max())})",
            hint=f"source ids must index the {n_source} source embedding rows; -1 means none",
        )
    return t


def _vectors(t: object, name: str, rows: int) -> torch.Tensor:
    import torch
    if not isinstance(t, torch.Tensor):
        raise InitError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2 or t.shape[0] != rows:
        raise InitError(f"{name} must have shape [{rows}, k], got {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise InitError(f"{name} must be floating point, got dtype {t.dtype}")
    return t.detach()


def _mask(t: object, name: str, rows: int, vectors: torch.Tensor | None) -> torch.Tensor | None:
    import torch
    if t is None:
        return None
    if vectors is None:
        raise InitError(f"{name} was given without the vectors it masks")
    if not isinstance(t, torch.Tensor) or t.dtype != torch.bool or t.dim() != 1 or t.numel() != rows:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InitError(f"{name} must be a bool tensor of shape [{rows}], got {shape}")
    return t.detach()


def validate_inputs(inputs: InitInputs, *, method: str, requires: frozenset[str]) -> InitInputs:
    """Check shapes, dtypes, id ranges and the fields ``requires`` names; return normalized inputs.

    The returned copy has float32 ``source_embeddings``, CPU long ``copy``/``shared`` and a
    ``torch.device``. Raises :class:`InitError` naming the field and the problem.
    """
    import torch
    emb = inputs.source_embeddings
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise InitError(f"source_embeddings must be a non-empty [V_s, d] tensor, got {shape}")
    if not emb.dtype.is_floating_point:
        raise InitError(f"source_embeddings must be floating point, got dtype {emb.dtype}")
    n_source = int(emb.shape[0])

    missing = [f for name in sorted(requires) for f in _REQUIRED_FIELDS[name] if getattr(inputs, f) is None]
    if missing:
        raise InitError(
            f"init method '{method}' requires {', '.join(dict.fromkeys(missing))}, which the inputs lack",
            hint=f"it declares requires={sorted(requires)}; compute them (vocabshift vectors / the glue) "
            "or choose a method that does not need them (random, mean)",
        )

    copy = _id_vector(inputs.copy, "copy", None, n_source)
    n_target = int(copy.numel())
    if n_target == 0:
        raise InitError("copy is empty: the target vocabulary has no tokens")
    shared = None if inputs.shared is None else _id_vector(inputs.shared, "shared", n_target, n_source)

    src_vec = None if inputs.source_token_vectors is None else _vectors(
        inputs.source_token_vectors, "source_token_vectors", n_source)
    tgt_vec = None if inputs.target_token_vectors is None else _vectors(
        inputs.target_token_vectors, "target_token_vectors", n_target)
    if src_vec is not None and tgt_vec is not None and src_vec.shape[1] != tgt_vec.shape[1]:
        raise InitError(
            f"source_token_vectors have {src_vec.shape[1]} dimensions but target_token_vectors "
            f"{tgt_vec.shape[1]}: they must live in one aligned space",
            hint="align the two vector sets (vocabshift vectors align) before init",
        )
    src_mask = _mask(inputs.source_vector_mask, "source_vector_mask", n_source, src_vec)
    tgt_mask = _mask(inputs.target_vector_mask, "target_vector_mask", n_target, tgt_vec)

    decompositions = inputs.decompositions
    if decompositions is not None:
        if len(decompositions) != n_target:
            raise InitError(f"decompositions has {len(decompositions)} entries, copy has {n_target}")
        flat = [i for pieces in decompositions for i in pieces]  # one flat pass
        if flat:
            ids = torch.tensor(flat, dtype=torch.long)
            if int(ids.min()) < 0 or int(ids.max()) >= n_source:
                raise InitError(
                    f"decompositions hold ids outside [0, {n_source - 1}] "
                    f"(min {int(ids.min())}, max {int(ids.max())})"
                )

    if isinstance(inputs.chunk_size, bool) or not isinstance(inputs.chunk_size, int) or inputs.chunk_size < 1:
        raise InitError(f"chunk_size must be a positive integer, got {inputs.chunk_size!r}")
    if isinstance(inputs.seed, bool) or not isinstance(inputs.seed, int):
        raise InitError(f"seed must be an integer, got {inputs.seed!r}")
    try:
        device = torch.device(inputs.device)
    except (RuntimeError, TypeError) as err:
        raise InitError(f"device {inputs.device!r} is not a torch device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InitError(f"device {inputs.device!r} was asked for but CUDA is not available", hint="use device='cpu'")

    return dataclasses.replace(
        inputs, source_embeddings=emb.detach().to(torch.float32), copy=copy, shared=shared,
        source_token_vectors=src_vec, source_vector_mask=src_mask,
        target_token_vectors=tgt_vec, target_vector_mask=tgt_mask, device=device,
    )


# ------------------------------------------------------------------------------------------ row basics


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of consecutive chunks of ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def generator(inputs: InitInputs) -> torch.Generator:
    """The CPU generator all of a method's random draws come from (same numbers on CPU and CUDA)."""
    import torch
    return torch.Generator(device="cpu").manual_seed(inputs.seed)


def take_rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]``: a view when ``ids`` is a run of consecutive ids (after ``extend`` the source rows
    are the first ``n``), else a copy. The view saves a copy of the embedding matrix (113 MB for SmolLM2)."""
    n = int(ids.numel())
    if n and int(ids[-1]) - int(ids[0]) == n - 1 and (n == 1 or bool((ids[1:] - ids[:-1] == 1).all())):
        first = int(ids[0])
        return table[first:first + n]
    return table.index_select(0, ids.to(table.device))


def start_rows(inputs: InitInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, origin, computed)``: copied rows filled in bit-exactly, the rest for the method to fill.

    ``rows`` is a float32 CPU ``[V_t, d]`` tensor whose non-copied rows are uninitialized,
    ``origin`` says COPIED / COMPUTED (methods overwrite FALLBACK where they fall back), and
    ``computed`` is the bool mask ``copy < 0`` of rows the method must write.
    """
    import torch
    emb = inputs.source_embeddings
    rows = torch.empty(inputs.n_target, emb.shape[1], dtype=torch.float32)
    origin = torch.full((inputs.n_target,), COMPUTED, dtype=torch.int8)
    copied = inputs.copy >= 0
    targets = copied.nonzero().squeeze(1)
    sources = inputs.copy[targets]
    # The copied rows are the very same float32 bits; copied in slices, so that no second matrix-sized
    # temporary is made.
    step = 8192
    for a in range(0, int(targets.numel()), step):
        rows[targets[a:a + step]] = take_rows(emb, sources[a:a + step]).cpu()
    origin[copied] = COPIED
    return rows, origin, ~copied


def column_stats(table: torch.Tensor, chunk_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and population std (``ddof=0``, as numpy's) of ``table``, float32 on CPU.

    One chunked pass accumulating ``sum x`` and ``sum x^2`` in float64: for float32 data the
    cancellation in ``E[x^2] - E[x]^2`` stays far below float32 resolution.
    """
    import torch
    n, d = table.shape
    s1 = torch.zeros(d, dtype=torch.float64, device=device)
    s2 = torch.zeros(d, dtype=torch.float64, device=device)
    # Blocks of at least ~4M entries (32 MiB in float64): fewer, larger reductions than chunk_size rows.
    for s, e in chunks(n, max(chunk_size, (1 << 22) // d)):
        block = table[s:e].to(device, torch.float64)
        s1 += block.sum(0)
        s2 += block.square().sum(0)
    mean = s1 / n
    std = (s2 / n - mean.square()).clamp_min(0.0).sqrt()
    return mean.float().cpu(), std.float().cpu()


def fallback_rows(kind: str, n: int, table: torch.Tensor, inputs: InitInputs,
                  gen: torch.Generator | None = None) -> torch.Tensor:
    """``n`` fallback rows for ``table``'s space, float32 on CPU.

    ``"mean"``: the mean row. ``"random"``: independent draws from ``N(mean_j, std_j)`` per
    dimension ``j`` (the per-dimension normal WECHSEL and FOCUS use for tokens without a vector),
    drawn from ``gen``.
    """
    import torch
    if n == 0:
        return torch.empty(0, table.shape[1], dtype=torch.float32)
    mean, std = column_stats(table, inputs.chunk_size, inputs.device)
    if kind == "mean":
        return mean.expand(n, -1).clone()
    if gen is None:
        raise ValueError("random fallback rows need a generator")
    return mean + std * torch.randn(n, mean.numel(), generator=gen, dtype=torch.float32)



def set_fallback(out: torch.Tensor, origin: torch.Tensor, missing: torch.Tensor, kind: str, table: torch.Tensor,
                 inputs: InitInputs) -> None:
    """Give the ``missing`` rows of ``out`` the ``kind`` fallback row of ``table``'s space; mark them FALLBACK."""
    out[missing] = fallback_rows(kind, int(missing.sum()), table, inputs, generator(inputs))
    origin[missing] = FALLBACK


# ---------------------------------------------------------------------------------------- neighbours


def unit_vectors(vectors: torch.Tensor, mask: torch.Tensor | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalized float32 vectors on ``device`` and the mask of rows that are usable.

    A row is usable when its mask entry is True (or no mask was given) and it has a finite, non-zero
    norm: an all-zero vector means "no vector" (the convention of the WECHSEL/OFA/FOCUS code bases).
    Unusable rows are zeroed.
    """
    import torch
    v = vectors.to(device, torch.float32)
    norms = torch.linalg.vector_norm(v, dim=1)
    usable = torch.isfinite(norms) & (norms > 0)
    if mask is not None:
        usable &= mask.to(device)
    unit = torch.where(usable[:, None], v / norms.clamp_min(torch.finfo(torch.float32).tiny)[:, None], 0.0)
    return unit, usable


def weighted_rows(idx: torch.Tensor, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    r"""``out[i] = \sum_j weights[i, j] * table[idx[i, j]]`` with temporaries held under 64 MiB.

    Few terms from a big table (WECHSEL's 10 of 49k): gather the rows and ``bmm``. Many terms from a small
    table (FOCUS's sparsemax over a few hundred shared tokens, supports of hundreds): scatter the weights
    into a dense ``[rows, table]`` matrix and multiply, which is a BLAS product instead of a memory-bound
    gather (measured: 2.7 s -> 0.1 s for 7,921 rows with supports of ~250 over 812 shared tokens).
    """
    import torch
    n, m = idx.shape
    out = torch.empty(n, table.shape[1], dtype=table.dtype, device=table.device)
    if table.shape[0] <= 8 * m:
        step = max(1, _GATHER_BUDGET // max(1, table.shape[0]))
        for s, e in chunks(n, step):
            dense = torch.zeros(e - s, table.shape[0], dtype=table.dtype, device=table.device)
            dense.scatter_add_(1, idx[s:e], weights[s:e].to(table.dtype))
            out[s:e] = dense @ table
        return out
    step = max(1, _GATHER_BUDGET // max(1, m * table.shape[1]))
    for s, e in chunks(n, step):
        out[s:e] = torch.bmm(weights[s:e].unsqueeze(1).to(table.dtype), table[idx[s:e]]).squeeze(1)
    return out


# |bf16 product - exact cosine| for unit rows: each factor rounded to bf16 (relative error <= 2^-8), so each
# term q_i k_i is off by at most (2^-7 + 2^-16) |q_i k_i| and sum |q_i k_i| <= 1 (Cauchy-Schwarz); the fp32
# accumulation adds < 2^-17 over 1,000 dimensions, and rounding the result to bf16 another 2^-8 |value|
# (|value| <= 1 + 2^-6). 2^-6 covers the sum with room.
BF16_COSINE_ERROR = 2.0 ** -6
PREFILTER_MARGIN = 32  # candidates kept beyond the window by the bf16 prefilter


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products are much faster than fp32 here: CUDA with bf16, or a CPU with AMX or
    AVX512-BF16 (4-5x measured on a 2-core Xeon with AMX); elsewhere bf16 can be slower than fp32."""
    import torch
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:
        return any(check() for check in checks if callable(check))
    except Exception:  # a private torch helper that changed: take the exact path
        return False


def _ranked(sims: torch.Tensor, groups: torch.Tensor | None, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``window`` best of each row of ``sims`` in exact order: similarity down, then group up.

    ``groups``: the group of each column (None: the column index); topk's order among equal values is
    unspecified, so the result is sorted by group first and then stably by value.
    """
    import torch
    vals, at = torch.topk(sims, window, dim=1, sorted=True)
    gi = at if groups is None else groups.gather(1, at)
    order = torch.argsort(gi, dim=1, stable=True)
    vals, gi = vals.gather(1, order), gi.gather(1, order)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    return vals.gather(1, order), gi.gather(1, order)


def _exact_top_groups(q: torch.Tensor, ukeys: torch.Tensor, window: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities and groups of the ``window`` most similar key groups of each query, from the full product."""
    import torch
    sims = q @ ukeys.T  # [rows, groups]: the rows x V_s product
    vals, gi = _ranked(sims, None, window)
    if window < ukeys.shape[0]:
        # A tie at the k-th place that reaches the window's edge may continue outside it: full sort.
        redo = (vals[:, -1] >= vals[:, min(k, window) - 1]).nonzero().squeeze(1)
        if redo.numel():
            v, g = torch.sort(sims[redo], dim=1, descending=True, stable=True)
            vals[redo], gi[redo] = v[:, :window], g[:, :window]
    return vals, gi


def _top_groups(q: torch.Tensor, ukeys: torch.Tensor, ukeys_bf16: torch.Tensor | None, window: int,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_exact_top_groups`, faster where bf16 products are: candidates from a bf16 product, their
    similarities recomputed exactly in fp32, and every row whose result the bf16 error bound cannot
    certify computed exactly. The neighbours are therefore those of the exact product, always.

    Certified: the k-th best candidate's exact similarity exceeds the smallest candidate's bf16 score by
    more than :data:`BF16_COSINE_ERROR`, so no key outside the candidates can reach it; and no tie at the
    k-th place reaches the window's edge.
    """
    import torch
    n_groups = ukeys.shape[0]
    width = window + PREFILTER_MARGIN
    if ukeys_bf16 is None or width >= n_groups:
        return _exact_top_groups(q, ukeys, window, k)
    approx = q.to(torch.bfloat16) @ ukeys_bf16.T
    floor, cand = torch.topk(approx, width, dim=1, sorted=False)
    exact = torch.bmm(ukeys[cand], q.unsqueeze(2)).squeeze(2)  # [rows, width], fp32
    vals, gi = _ranked(exact, cand, window)
    kth = vals[:, min(k, window) - 1]
    bad = (kth <= floor.float().min(1).values + BF16_COSINE_ERROR) | (vals[:, -1] >= kth)
    redo = bad.nonzero().squeeze(1)
    if redo.numel():
        vals[redo], gi[redo] = _exact_top_groups(q[redo], ukeys, window, k)
    return vals, gi


def neighbour_rows(
    query_vectors: torch.Tensor, keys: torch.Tensor, key_usable: torch.Tensor, table: torch.Tensor,
    *, neighbours: int, temperature: float, chunk_size: int, prefilter: bool | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""WECHSEL/OFA combination: ``\sum_{j \in N_k} softmax(cos/T)_j \cdot table[j]`` for each query.

    ``query_vectors`` [n, k] and ``keys`` [V_s, k] are unit rows (:func:`unit_vectors`), so the cosine
    is a dot product; only keys with ``key_usable`` are candidates. ``table`` [V_s, ·] lives on the
    same device. Returns the rows (on that device) and similarity statistics for ``info``.

    ``N_k`` is the ``k`` keys of highest cosine, ties broken by the lower key index: the result does not
    depend on the top-k routine or the device. Ties are common, not a corner case: byte-level BPE has
    ``ĠND`` and ``ND``, which get the same word vector. Identical key vectors are therefore scored once
    (a group of ``c`` keys contributes up to ``c`` neighbours, lowest indices first), and identical query
    vectors are computed once; this also shrinks the dominant ``n x V_s`` product (by about a third for
    SmolLM2 -> a Spanish BPE).

    ``prefilter`` (default: where :func:`fast_bf16`) finds candidates with a bf16 product and certifies
    them (:func:`_top_groups`): the same neighbours as the fp32 product, 3-4x faster on CPUs with AMX.
    """
    import torch
    n, dev = query_vectors.shape[0], table.device
    usable = key_usable.nonzero().squeeze(1)
    k = min(neighbours, int(usable.numel()))
    out = torch.zeros(n, table.shape[1], dtype=table.dtype, device=dev)
    stats: dict[str, float] = {"neighbours": k, "mean_top1_similarity": 0.0, "mean_topk_similarity": 0.0,
                               "mean_top1_weight": 0.0, "distinct_neighbours": 0}
    if n == 0 or k == 0:
        return out, stats

    # Key groups (identical vectors), numbered in the order of their smallest key index, members ascending.
    ukeys, group, counts = torch.unique(keys[usable], dim=0, return_inverse=True, return_counts=True)
    first = torch.full((ukeys.shape[0],), usable.numel(), dtype=torch.long, device=group.device)
    first = first.scatter_reduce(0, group, torch.arange(usable.numel(), device=group.device), "amin")
    by_first = torch.argsort(first)
    relabel = torch.empty_like(first)
    relabel[by_first] = torch.arange(first.numel(), device=first.device)
    group = relabel[group]
    ukeys, counts = ukeys[by_first], counts[by_first]
    members = usable[torch.argsort(group, stable=True)]  # key indices, grouped, ascending within a group
    offsets = counts.cumsum(0) - counts
    n_groups = int(counts.numel())
    group_sums = torch.zeros(n_groups, table.shape[1], dtype=table.dtype, device=dev)
    group_sums.index_add_(0, group.to(dev), table[usable.to(dev)])

    uq, q_inverse, q_counts = torch.unique(query_vectors, dim=0, return_inverse=True, return_counts=True)
    u_out = torch.empty(uq.shape[0], table.shape[1], dtype=table.dtype, device=dev)
    window = min(n_groups, k + 8)  # groups looked at per query: the k-th neighbour's group is among the first k
    used_groups = torch.zeros(n_groups, dtype=torch.bool, device=dev)
    used_keys = torch.zeros(keys.shape[0], dtype=torch.bool, device=dev)
    top1 = topk_sum = top1_weight = 0.0
    steps = torch.arange(k, device=dev)
    if prefilter is None:
        prefilter = fast_bf16(ukeys.device) and ukeys.dtype == torch.float32
    ukeys_bf16 = ukeys.to(torch.bfloat16) if prefilter else None
    for s, e in chunks(uq.shape[0], chunk_size):
        vals, gi = _top_groups(uq[s:e], ukeys, ukeys_bf16, window, k)
        cnt = counts.to(dev)[gi]
        take = torch.minimum((k - (cnt.cumsum(1) - cnt)).clamp_min(0), cnt)  # neighbours from each group
        expo = torch.exp((vals - vals[:, :1]) / temperature)
        weight = expo / (take * expo).sum(1, keepdim=True)  # softmax weight of each neighbour in a group
        full = take == cnt
        rows = weighted_rows(gi, weight * full, group_sums)
        # At most one group per query is cut: the first `take` of its members (lowest key indices).
        cut = (take > 0) & ~full
        has_cut = cut.any(1)
        cut_at = cut.float().argmax(1)
        cut_group = gi.gather(1, cut_at[:, None]).squeeze(1)
        cut_take = torch.where(has_cut, take.gather(1, cut_at[:, None]).squeeze(1), 0)
        cut_mask = steps[None, :] < cut_take[:, None]
        cut_idx = members.to(dev)[(offsets.to(dev)[cut_group][:, None] + steps[None, :]).clamp_max(members.numel() - 1)]
        cut_w = torch.where(cut_mask, weight.gather(1, cut_at[:, None]), 0.0)
        rows += weighted_rows(cut_idx, cut_w, table)
        u_out[s:e] = rows

        mult = q_counts[s:e].to(dev, torch.float64)
        top1 += float((vals[:, 0].double() * mult).sum())
        topk_sum += float(((take * vals).double().sum(1) / k * mult).sum())
        top1_weight += float((weight[:, 0].double() * mult).sum())
        used_groups[gi[full & (take > 0)]] = True
        used_keys[cut_idx[cut_mask]] = True
    used_keys[members.to(dev)[used_groups[torch.repeat_interleave(torch.arange(n_groups, device=dev),
                                                                   counts.to(dev))]]] = True
    out = u_out[q_inverse.to(dev)]
    stats.update(mean_top1_similarity=top1 / n, mean_topk_similarity=topk_sum / n,
                 mean_top1_weight=top1_weight / n, distinct_neighbours=int(used_keys.sum()))
    return out, stats



def aligned_unit_vectors(inputs: InitInputs,
                         method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(src_unit, src_ok, tgt_unit, tgt_ok)``: the aligned token vectors as :func:`unit_vectors` gives them,
    ``tgt_ok`` on the CPU. Refuses, naming ``method``, source vectors of which none is usable."""
    assert inputs.source_token_vectors is not None and inputs.target_token_vectors is not None
    dev = inputs.device
    src_unit, src_ok = unit_vectors(inputs.source_token_vectors, inputs.source_vector_mask, dev)
    if not bool(src_ok.any()):
        raise InitError(f"{method}: no source token has a usable vector (all masked or zero)",
                        hint="check the source vectors, or use an init method without vectors (mean, random)")
    tgt_unit, tgt_ok = unit_vectors(inputs.target_token_vectors, inputs.target_vector_mask, dev)
    return src_unit, src_ok, tgt_unit, tgt_ok.cpu()


def neighbour_transfer(inputs: InitInputs, table: torch.Tensor, out: torch.Tensor, origin: torch.Tensor,
                       todo: torch.Tensor, *, method: str, neighbours: int, temperature: float,
                       fallback: str) -> dict[str, Any]:
    """WECHSEL's rule over the rows of ``table`` (source embeddings for wechsel, SVD coordinates for ofa).

    Each ``todo`` target token with an aligned vector gets, in ``out``, the softmax(cos/T)-weighted sum of
    its top-``neighbours`` source tokens' ``table`` rows (:func:`neighbour_rows`); one without a vector the
    ``fallback`` row of ``table``'s space. Returns the neighbour statistics and ``source_tokens_with_vector``.
    """
    src_unit, src_ok, tgt_unit, tgt_ok = aligned_unit_vectors(inputs, method)
    dev = inputs.device
    query = (todo & tgt_ok).nonzero().squeeze(1)
    rows, stats = neighbour_rows(
        tgt_unit[query.to(dev)], src_unit, src_ok, table.to(dev),
        neighbours=neighbours, temperature=temperature, chunk_size=inputs.chunk_size,
    )
    out[query] = rows.cpu()
    set_fallback(out, origin, todo & ~tgt_ok, fallback, table, inputs)
    return {**stats, "source_tokens_with_vector": int(src_ok.sum())}


# -------------------------------------------------------------------------------------- factorization


@dataclass
class Factorization:
    r"""Truncated SVD ``E \approx C P`` with ``C = U_r \Sigma_r`` and ``P = V_r^\top``.

    The singular values go into the coordinates; the primitives are orthonormal rows
    (``P P^\top = I_r``), so ``C = E P^\top`` is the projection of each row onto the top-r subspace.
    """

    coordinates: torch.Tensor  # [V, r] float32 CPU
    primitives: torch.Tensor  # [r, d] float32 CPU, orthonormal rows
    singular_values: torch.Tensor  # [r] float64 CPU, descending
    requested_rank: int
    reconstruction_error: float  # ||E - C P||_F / ||E||_F

    @property
    def rank(self) -> int:
        return int(self.primitives.shape[0])

    def summary(self) -> dict[str, Any]:
        """``rank``, ``requested_rank`` and ``reconstruction_error``, the first entries of a method's info."""
        return {"rank": self.rank, "requested_rank": self.requested_rank,
                "reconstruction_error": self.reconstruction_error}


def copied_coordinates(fac: Factorization, inputs: InitInputs, todo: torch.Tensor) -> torch.Tensor:
    """``[V_t, r]`` float32 coordinates: copied tokens take their source coordinates, ``todo`` rows are left
    uninitialized for the method to fill."""
    import torch
    coords = torch.empty(inputs.n_target, fac.rank, dtype=torch.float32)
    copied = ~todo
    coords[copied] = fac.coordinates[inputs.copy[copied]]
    return coords


def factor_rows(rows: torch.Tensor, coords: torch.Tensor, primitives: torch.Tensor, todo: torch.Tensor,
                inputs: InitInputs) -> None:
    """``rows[todo] = coords[todo] @ primitives``, a chunk at a time; copied rows stay the exact source rows."""
    prims = primitives.to(inputs.device)
    ids = todo.nonzero().squeeze(1)
    for s, e in chunks(ids.numel(), inputs.chunk_size):
        rows[ids[s:e]] = (coords[ids[s:e]].to(inputs.device) @ prims).cpu()


def truncated_svd(table: torch.Tensor, rank: int, *, chunk_size: int, device: torch.device,
                  what: str = "source embeddings") -> Factorization:
    r"""Rank-``rank`` truncated SVD of ``table`` [V, d], clamped to ``min(V, d)``.

    Computed via the Gram matrix ``G = E^\top E = V \Sigma^2 V^\top`` accumulated over row chunks in
    float64 (memory ``O(chunk·d + d^2)``, never the ``V × d`` matrix ``U``), its eigenvectors ``V_r``
    for the ``r`` largest eigenvalues, and ``C = E V_r`` (= ``U_r \Sigma_r``). At full rank
    ``C P = E V V^\top = E`` up to float rounding. Signs are fixed (the largest-magnitude entry of
    each primitive is positive) so the result is deterministic.
    """
    import torch
    n, d = table.shape
    r = min(rank, n, d)
    if r < rank:
        log.info("rank %d clamped to %d = min(rows, dim) of the %s [%d, %d]", rank, r, what, n, d)
    if r >= d:
        log.info("rank %d >= embedding dim %d: the factorization of the %s does not compress", r, d, what)
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)
    for s, e in chunks(n, chunk_size):
        block = table[s:e].to(device, torch.float64)
        gram += block.T @ block
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals = evals.flip(0).clamp_min(0.0)
    basis = evecs.flip(1)[:, :r]  # [d, r]
    # eigh's signs are arbitrary: make the largest-|.| entry of each column positive.
    pivot = basis.abs().argmax(0)
    signs = torch.sign(basis[pivot, torch.arange(r, device=device)])
    basis = basis * torch.where(signs == 0, 1.0, signs)
    coords = torch.empty(n, r, dtype=torch.float32)
    for s, e in chunks(n, chunk_size):
        coords[s:e] = (table[s:e].to(device, torch.float64) @ basis).float().cpu()
    total = float(evals.sum())
    # ||E - C P||_F^2 = sum of the discarded eigenvalues of E^T E.
    error = (max(total - float(evals[:r].sum()), 0.0) / total) ** 0.5 if total > 0 else 0.0
    return Factorization(
        coordinates=coords,
        primitives=basis.T.float().cpu().contiguous(),
        singular_values=evals[:r].sqrt().cpu(),
        requested_rank=rank,
        reconstruction_error=error,
    )
