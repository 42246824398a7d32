"""Embedding initialization methods on hand-worked 5-token examples, plus the registry's contract.

The golden cases choose vectors whose cosines are 0, 0.6, 0.8, 1/sqrt(2) or 1 and a temperature of
1/ln(3), so softmax weights come out as 3/4 and 1/4 and sparsemax weights as 0.6/0.4 or 1/2/1/2:
the expected rows are written out literally. The invariants: copied rows are bit-identical,
masked tokens get the fallback, results depend on the seed only, and the chunk size changes nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from vocabshift.errors import ConfigError, InitError, ModelError, OutputExistsError
from vocabshift.init import (
    COMPUTED,
    COPIED,
    FALLBACK,
    FactorizedConfig,
    FocusConfig,
    InitInputs,
    OFAConfig,
    WechselConfig,
    get_init_method,
    list_init_methods,
    register_init_method,
    run_init_method,
    sparsemax,
)
from vocabshift.init._common import column_stats, truncated_svd
from vocabshift.init.focus import sparsemax_topk
from vocabshift.surgery.factorized import FactorizedEmbedding

ALL = ["factorized", "focus", "fvt", "mean", "ofa", "omp", "random", "wechsel"]  # pure functions of arrays
MODEL_AWARE = ["distill"]  # need the source model (tests/test_init_distill.py)
T_3_1 = 1 / math.log(3)  # softmax([1, 0] / T) = [3/4, 1/4]

# Source vocabulary: 5 tokens, d = 2. Column means 0.8, population std sqrt(0.56).
E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
MEAN_ROW = [0.8, 0.8]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _close(actual: torch.Tensor, expected: list[list[float]] | list[float], atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


def _assert_copied(result, inputs: InitInputs) -> None:
    """Rows with copy >= 0 are the source rows bit for bit, with origin COPIED."""
    copied = inputs.copy >= 0
    assert torch.equal(result.rows[copied], inputs.source_embeddings[inputs.copy[copied]])
    assert (result.origin[copied] == COPIED).all()


def _random_inputs(seed: int = 0, v_s: int = 40, v_t: int = 30, d: int = 6, k: int = 5) -> InitInputs:
    """Inputs with every optional field set, for the invariants every method shares."""
    g = torch.Generator().manual_seed(seed)
    copy = torch.full((v_t,), -1, dtype=torch.long)
    copy[:8] = torch.randperm(v_s, generator=g)[:8]
    shared = torch.full((v_t,), -1, dtype=torch.long)
    shared[8:12] = torch.arange(4)
    target_mask = torch.rand(v_t, generator=g) > 0.2
    decompositions = [torch.randint(0, v_s, (int(n),), generator=g).tolist()
                      for n in torch.randint(0, 4, (v_t,), generator=g)]
    return InitInputs(
        source_embeddings=torch.randn(v_s, d, generator=g),
        copy=copy,
        shared=shared,
        source_token_vectors=torch.randn(v_s, k, generator=g),
        source_vector_mask=torch.rand(v_s, generator=g) > 0.1,
        target_token_vectors=torch.randn(v_t, k, generator=g),
        target_vector_mask=target_mask,
        decompositions=decompositions,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------- registry


def test_registry_lists_every_method_with_its_paper_and_copy_policy():
    methods = {m.name: m for m in list_init_methods()}
    assert sorted(methods) == sorted(ALL + MODEL_AWARE)
    assert {n: m.copy_overlap for n, m in methods.items()} == {
        "distill": True, "factorized": True, "focus": True, "fvt": True, "mean": False, "ofa": True, "omp": True,
        "random": False, "wechsel": False,
    }
    assert methods["omp"].requires == {"aligned_token_vectors"}
    assert methods["distill"].requires == {"decompositions", "teacher"}
    assert methods["wechsel"].requires == {"aligned_token_vectors"}
    assert methods["ofa"].requires == {"aligned_token_vectors"}
    assert methods["focus"].requires == {"target_token_vectors"}
    assert methods["fvt"].requires == {"decompositions"}
    assert methods["factorized"].requires == {"shared"}
    assert methods["mean"].requires == methods["random"].requires == frozenset()
    for m in methods.values():
        assert m.reference_url.startswith("https://") and m.description


def test_every_config_field_has_help_and_defaults_round_trip():
    for m in list_init_methods():
        cfg = m.config()
        for f in dataclasses.fields(cfg):
            assert f.metadata.get("help"), f"{m.name}.{f.name} has no help text"
        assert m.config.from_dict(cfg.to_dict()) == cfg


def test_unknown_method_lists_valid_names_and_the_closest():
    with pytest.raises(ConfigError) as err:
        get_init_method("wechsl")
    msg = str(err.value)
    assert "did you mean 'wechsel'" in msg
    for name in ALL:
        assert name in msg


def test_registration_refuses_duplicates_and_non_lowercase_names():
    with pytest.raises(ValueError, match="already registered"):
        register_init_method("mean", config=WechselConfig, reference_url="https://x", copy_overlap=False,
                             description="dup")
    with pytest.raises(ValueError, match="lowercase"):
        register_init_method("Mean2", config=WechselConfig, reference_url="https://x", copy_overlap=False,
                             description="upper")
    with pytest.raises(ValueError, match="ConfigMixin dataclass"):
        register_init_method("new_method", config=dict, reference_url="https://x", copy_overlap=False,
                             description="bad config")
    with pytest.raises(ValueError, match="unknown input"):
        register_init_method("new_method", config=WechselConfig, reference_url="https://x",
                             requires=("vectors",), copy_overlap=False, description="bad requires")
    assert "new_method" not in {m.name for m in list_init_methods()}


def test_config_is_taken_as_object_dict_or_default_and_validated():
    inputs = InitInputs(source_embeddings=E, copy=torch.tensor([-1]), decompositions=[[]])
    assert run_init_method("fvt", inputs, {"fallback": "random"}).info["config"] == {"fallback": "random"}
    with pytest.raises(ConfigError, match="takes a FVTConfig"):
        run_init_method("fvt", inputs, WechselConfig())
    with pytest.raises(ConfigError, match="fallback must be one of"):
        WechselConfig(fallback="zeros")
    with pytest.raises(ConfigError, match="temperature must be positive"):
        WechselConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="unknown key 'neighbors'"):
        run_init_method("wechsel", inputs, {"neighbors": 5})


def test_missing_required_inputs_are_named():
    inputs = InitInputs(source_embeddings=E, copy=torch.tensor([-1, 0]))
    with pytest.raises(InitError, match="requires source_token_vectors, target_token_vectors"):
        run_init_method("wechsel", inputs)
    with pytest.raises(InitError, match="requires target_token_vectors"):
        run_init_method("focus", inputs)
    with pytest.raises(InitError, match="requires decompositions"):
        run_init_method("fvt", inputs)
    with pytest.raises(InitError, match="requires shared"):
        run_init_method("factorized", inputs)


@pytest.mark.parametrize("change, message", [
    (dict(copy=torch.tensor([[0, 1]])), "copy must be 1-D"),
    (dict(copy=torch.tensor([0.0, 1.0])), "integer source ids"),
    (dict(copy=torch.tensor([0, 5])), r"ids outside \[-1, 4\]"),
    (dict(copy=torch.tensor([0, -2])), r"ids outside \[-1, 4\]"),
    (dict(copy=torch.tensor([], dtype=torch.long)), "copy is empty"),
    (dict(source_embeddings=torch.zeros(5)), r"non-empty \[V_s, d\]"),
    (dict(source_embeddings=torch.zeros(5, 2, dtype=torch.long)), "floating point"),
    (dict(shared=torch.tensor([0, 1, 2])), "shared has 3 entries, copy has 2"),
    (dict(source_token_vectors=torch.zeros(4, 3), target_token_vectors=torch.zeros(2, 3)),
     r"source_token_vectors must have shape \[5, k\]"),
    (dict(source_token_vectors=torch.zeros(5, 3), target_token_vectors=torch.zeros(2, 4)),
     "one aligned space"),
    (dict(target_token_vectors=torch.zeros(2, 3), target_vector_mask=torch.ones(2)), "bool tensor"),
    (dict(target_vector_mask=torch.ones(2, dtype=torch.bool)), "without the vectors"),
    (dict(decompositions=[[0]]), "decompositions has 1 entries"),
    (dict(decompositions=[[0], [7]]), r"ids outside \[0, 4\]"),
    (dict(chunk_size=0), "chunk_size must be a positive integer"),
])
def test_wrong_inputs_are_one_line_errors(change, message):
    inputs = dataclasses.replace(InitInputs(source_embeddings=E, copy=torch.tensor([0, -1])), **change)
    with pytest.raises(InitError, match=message):
        run_init_method("mean", inputs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_is_an_init_error():
    with pytest.raises(InitError, match="CUDA is not available"):
        run_init_method("mean", InitInputs(source_embeddings=E, copy=torch.tensor([-1]), device="cuda"))


def test_run_fills_counts_method_and_config():
    inputs = InitInputs(source_embeddings=E, copy=torch.tensor([2, -1, -1]), decompositions=[[0], [1, 3], []])
    result = run_init_method("fvt", inputs)
    assert result.info["counts"] == {"copied": 1, "computed": 1, "fallback": 1} == result.counts()
    assert result.info["method"] == "fvt" and result.info["config"] == {"fallback": "mean"}


def test_non_finite_source_rows_are_an_init_error():
    bad = E.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(InitError, match="non-finite"):
        run_init_method("mean", InitInputs(source_embeddings=bad, copy=torch.tensor([-1])))


# ------------------------------------------------------------------------------------ random and mean


def test_column_stats_are_the_population_mean_and_std():
    mean, std = column_stats(E, chunk_size=2, device=torch.device("cpu"))
    _close(mean, MEAN_ROW)
    _close(std, [math.sqrt(0.56)] * 2)


def test_mean_rows_are_the_source_mean_and_copies_are_exact():
    inputs = InitInputs(source_embeddings=E, copy=torch.tensor([-1, 3, -1]))
    result = run_init_method("mean", inputs)
    _close(result.rows, [MEAN_ROW, [2.0, 0.0], MEAN_ROW])
    assert result.origin.tolist() == [COMPUTED, COPIED, COMPUTED]
    _assert_copied(result, inputs)


def test_random_rows_follow_the_per_dimension_normal():
    inputs = InitInputs(source_embeddings=E, copy=torch.full((20000,), -1), seed=3)
    rows = run_init_method("random", inputs).rows
    torch.testing.assert_close(rows.mean(0), torch.tensor(MEAN_ROW), atol=0.02, rtol=0)
    torch.testing.assert_close(rows.std(0), torch.full((2,), math.sqrt(0.56)), atol=0.02, rtol=0)
    assert (run_init_method("random", inputs).origin == COMPUTED).all()


def test_random_is_deterministic_under_the_seed():
    inputs = InitInputs(source_embeddings=E, copy=torch.tensor([-1, 0, -1, -1]), seed=7)
    a = run_init_method("random", inputs).rows
    b = run_init_method("random", inputs).rows
    c = run_init_method("random", dataclasses.replace(inputs, seed=8)).rows
    assert torch.equal(a, b)
    assert not torch.equal(a[[0, 2, 3]], c[[0, 2, 3]])
    assert torch.equal(a[1], c[1]) and torch.equal(a[1], E[0])


# ------------------------------------------------------------------------------------------------ fvt


def test_fvt_is_the_mean_of_the_source_split():
    inputs = InitInputs(
        source_embeddings=E, copy=torch.tensor([-1, -1, -1, -1, 1]),
        decompositions=[[0, 1], [3], [], [2, 2, 4], [0]],  # last one is copied: its split is ignored
    )
    result = run_init_method("fvt", inputs)
    # mean(E0, E1); E3; fallback (mean row); mean(E2, E2, E4) counts the repeated piece twice; copy of E1.
    _close(result.rows, [[0.5, 0.5], [2.0, 0.0], MEAN_ROW, [2 / 3, 4 / 3], [0.0, 1.0]])
    assert result.origin.tolist() == [COMPUTED, COMPUTED, FALLBACK, COMPUTED, COPIED]
    _assert_copied(result, inputs)
    assert result.info["max_pieces"] == 3 and result.info["single_piece"] == 1


# -------------------------------------------------------------------------------------------- wechsel


def _aligned_inputs(**kw) -> InitInputs:
    # Source vectors: y0 = e1, y1 = e2, y2 = (1, 1) but masked, y3 = (-1, -1), y4 = zero ("no vector").
    src_vec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    src_mask = torch.tensor([True, True, False, True, True])
    # Target vectors: t0 = e1 (neighbours y0, y1 with cos 1, 0), t1 = (0, 2) (cos 1 to y1, 0 to y0),
    # t2 masked, t3 copied.
    tgt_vec = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [1.0, 0.0]])
    tgt_mask = torch.tensor([True, True, False, True])
    base = dict(source_embeddings=E, copy=torch.tensor([-1, -1, -1, 4]), shared=torch.tensor([-1, -1, -1, 4]),
                source_token_vectors=src_vec, source_vector_mask=src_mask,
                target_token_vectors=tgt_vec, target_vector_mask=tgt_mask)
    return InitInputs(**{**base, **kw})


def test_wechsel_softmax_weights_by_hand():
    inputs = _aligned_inputs()
    cfg = WechselConfig(neighbours=2, temperature=T_3_1, fallback="mean")
    result = run_init_method("wechsel", inputs, cfg)
    # t0: 3/4 E0 + 1/4 E1 (y2 has cos 0.71 but is masked; y4 is a zero vector). t1: 3/4 E1 + 1/4 E0.
    _close(result.rows, [[0.75, 0.25], [0.25, 0.75], MEAN_ROW, [0.0, 2.0]])
    assert result.origin.tolist() == [COMPUTED, COMPUTED, FALLBACK, COPIED]
    _assert_copied(result, inputs)
    assert result.info["mean_top1_similarity"] == pytest.approx(1.0)
    assert result.info["mean_top1_weight"] == pytest.approx(0.75)
    assert result.info["source_tokens_with_vector"] == 3


def test_wechsel_default_temperature_and_random_fallback():
    inputs = _aligned_inputs()
    assert WechselConfig().fallback == "mean"  # the default since init_quality measured it (docs/init.md)
    assert torch.equal(run_init_method("wechsel", inputs).rows[2], torch.tensor(MEAN_ROW, dtype=torch.float32))
    random_fallback = WechselConfig(fallback="random")
    result = run_init_method("wechsel", inputs, random_fallback)  # k = 10 -> the 3 usable sources, T = 0.1
    # t0: sims (1, 0, -1/sqrt 2) -> weights exp(10 s) / Z.
    z = [math.exp(10), 1.0, math.exp(-10 / math.sqrt(2))]
    w = [v / sum(z) for v in z]
    expected = [w[0] * 1 + w[2] * 2, w[1] * 1 + w[2] * 0]  # E0, E1, E3
    _close(result.rows[0], expected)
    # The masked target draws from N(0.8, 0.56) with the seed: not the mean row, same under the seed.
    assert result.origin[2] == FALLBACK and not torch.allclose(result.rows[2], torch.tensor(MEAN_ROW))
    assert torch.equal(result.rows, run_init_method("wechsel", inputs, random_fallback).rows)
    assert not torch.equal(result.rows[2], run_init_method("wechsel", dataclasses.replace(inputs, seed=1),
                                                             random_fallback).rows[2])


def test_wechsel_refuses_sources_without_any_vector():
    inputs = _aligned_inputs(source_vector_mask=torch.zeros(5, dtype=torch.bool))
    with pytest.raises(InitError, match="no source token has a usable vector"):
        run_init_method("wechsel", inputs)


# ---------------------------------------------------------------------------------------------- focus


def _brute_force_simplex_projection(z: list[float]) -> list[float]:
    """argmin_{p in simplex} ||p - z||^2 by trying every support (KKT: p_S = z_S - tau, rest 0)."""
    best, best_dist = None, math.inf
    n = len(z)
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            tau = (sum(z[i] for i in support) - 1) / size
            p = [z[i] - tau if i in support else 0.0 for i in range(n)]
            if min(p) < 0:
                continue
            dist = sum((p[i] - z[i]) ** 2 for i in range(n))
            if dist < best_dist:
                best, best_dist = p, dist
    assert best is not None
    return best


def test_sparsemax_is_the_projection_onto_the_simplex():
    g = torch.Generator().manual_seed(0)
    # Rows at three spreads: near-uniform scores (wide supports) up to well-separated ones (one winner).
    scale = torch.cat([torch.full((70,), 0.1), torch.full((70,), 1.0), torch.full((60,), 3.0)])
    z = torch.randn(200, 6, generator=g, dtype=torch.float64) * scale.double()[:, None]
    p = sparsemax(z)
    assert torch.allclose(p.sum(1), torch.ones(200, dtype=torch.float64))
    assert (p >= 0).all()
    assert (p == 0).any(1).float().mean() > 0.5  # sparse for most rows
    expected = torch.tensor([_brute_force_simplex_projection(row) for row in z.tolist()], dtype=torch.float64)
    torch.testing.assert_close(p, expected)
    _close(sparsemax(torch.tensor([0.8, 0.6, 0.0])), [0.6, 0.4, 0.0])
    _close(sparsemax(torch.tensor([1.0, 0.0, 0.0])), [1.0, 0.0, 0.0])


@pytest.mark.parametrize("candidates", [1, 2, 3, 64])
def test_sparsemax_over_candidates_is_exact(candidates):
    g = torch.Generator().manual_seed(1)
    # Small spread: wide supports, so few candidates must be doubled until they cover the support.
    z = torch.randn(50, 40, generator=g) * torch.linspace(0.01, 2.0, 50)[:, None]
    weights, idx = sparsemax_topk(z, candidates)
    dense = torch.zeros_like(z).scatter_(1, idx, weights)
    torch.testing.assert_close(dense, sparsemax(z), atol=1e-6, rtol=0)


def _focus_inputs() -> InitInputs:
    # Target space, d = 3. Copied tokens t0..t2 (source ids 0, 1, 3) with vectors e1, e2, e3 form the basis;
    # t3 is copied (source 2) but its vector is masked, so it is not in the basis.
    tgt_vec = torch.tensor([
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0],
        [0.8, 0.6, 0.0],   # t4: cos (0.8, 0.6, 0) -> sparsemax (0.6, 0.4, 0)
        [0.6, 0.0, 0.8],   # t5: cos (0.6, 0, 0.8) -> (0.4, 0, 0.6)
        [1.0, 1.0, 0.0],   # t6: cos (0.71, 0.71, 0) -> (1/2, 1/2, 0)
        [2.0, 0.0, 0.0],   # t7: cos (1, 0, 0) -> (1, 0, 0); would split with t3 if t3 counted
        [1.0, 1.0, 1.0],   # t8: cos all 0.58 -> (1/3, 1/3, 1/3)
        [0.0, 0.0, 0.0],   # t9: no vector -> fallback
    ])
    mask = torch.ones(10, dtype=torch.bool)
    mask[3] = False
    return InitInputs(source_embeddings=E, copy=torch.tensor([0, 1, 3, 2, -1, -1, -1, -1, -1, -1]),
                      target_token_vectors=tgt_vec, target_vector_mask=mask)


@pytest.mark.parametrize("candidates", [1, 64])
def test_focus_sparsemax_weights_by_hand(candidates):
    inputs = _focus_inputs()
    result = run_init_method("focus", inputs, FocusConfig(fallback="mean", candidates=candidates))
    e0, e1, e3 = E[0].tolist(), E[1].tolist(), E[3].tolist()  # (1, 0), (0, 1), (2, 0)
    expected = [
        [0.6 * e0[0] + 0.4 * e1[0], 0.6 * e0[1] + 0.4 * e1[1]],    # (0.6, 0.4)
        [0.4 * e0[0] + 0.6 * e3[0], 0.0],                          # (1.6, 0)
        [0.5, 0.5],
        [1.0, 0.0],
        [(1 + 0 + 2) / 3, 1 / 3],
        MEAN_ROW,
    ]
    _close(result.rows[4:], expected, atol=1e-5)
    assert result.origin.tolist() == [COPIED] * 4 + [COMPUTED] * 5 + [FALLBACK]
    _assert_copied(result, inputs)
    assert result.info["basis_size"] == 3 and result.info["max_support_size"] == 3


def test_focus_center_is_focus_on_mean_centred_vectors():
    # The same space shifted by a large common vector: every cosine is then near 1 and sparsemax spreads
    # each row over the whole basis; centring removes the shift and gives back the hand-computed rows.
    inputs = _focus_inputs()
    shift = torch.tensor([5.0, 5.0, 5.0])
    vec = inputs.target_token_vectors.clone()
    usable = inputs.target_vector_mask & (vec.norm(dim=1) > 0)
    centred = vec.clone()
    centred[usable] -= vec[usable].mean(0)
    shifted = vec.clone()
    shifted[usable] += shift
    flat = run_init_method("focus", dataclasses.replace(inputs, target_token_vectors=shifted), FocusConfig())
    assert flat.info["mean_support_size"] == 3  # near-equal cosines: every basis token in every row
    got = run_init_method("focus", dataclasses.replace(inputs, target_token_vectors=shifted), FocusConfig(center=True))
    want = run_init_method("focus", dataclasses.replace(inputs, target_token_vectors=centred), FocusConfig())
    _close(got.rows, want.rows.tolist(), atol=1e-5)
    assert got.info["mean_support_size"] < flat.info["mean_support_size"]


def test_focus_with_empty_basis_falls_back_everywhere():
    inputs = dataclasses.replace(_focus_inputs(), copy=torch.full((10,), -1))
    result = run_init_method("focus", inputs, FocusConfig(fallback="mean"))
    assert (result.origin == FALLBACK).all()
    _close(result.rows, [MEAN_ROW] * 10)


# ------------------------------------------------------------------------------------ factorizations

# Orthogonal columns: E^T E = diag(8, 2, 0.25), so the SVD is read off: V = I, sigma^2 = (8, 2, 0.25).
E3 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5], [-2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_truncated_svd_by_hand_and_rank_clamp():
    fac = truncated_svd(E3, 2, chunk_size=2, device=torch.device("cpu"))
    _close(fac.primitives, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    _close(fac.coordinates, E3[:, :2].tolist())
    assert fac.reconstruction_error == pytest.approx(math.sqrt(0.25 / 10.25))
    torch.testing.assert_close(fac.singular_values, torch.tensor([8.0, 2.0]).sqrt().double())
    full = truncated_svd(E3, 400, chunk_size=2, device=torch.device("cpu"))
    assert full.rank == 3 and full.requested_rank == 400 and full.reconstruction_error == pytest.approx(0.0)


def test_truncated_svd_recovers_the_matrix_at_full_rank_and_is_optimal_below():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(50, 8, generator=g)
    full = truncated_svd(m, 8, chunk_size=7, device=torch.device("cpu"))
    torch.testing.assert_close(full.coordinates @ full.primitives, m, atol=1e-5, rtol=0)
    torch.testing.assert_close(full.primitives @ full.primitives.T, torch.eye(8), atol=1e-6, rtol=0)
    # Below full rank: the Eckart-Young error of torch's own SVD.
    low = truncated_svd(m, 3, chunk_size=7, device=torch.device("cpu"))
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    best = u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
    torch.testing.assert_close((low.coordinates @ low.primitives).double(), best, atol=1e-5, rtol=0)
    assert low.reconstruction_error == pytest.approx(float(s[3:].square().sum().sqrt() / s.square().sum().sqrt()))


def _ofa_inputs(**kw) -> InitInputs:
    src_vec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [-1.0, -1.0], [0.0, 0.0]])
    # t2: cos 1 to y0, 0 to y1, -0.71 to y2, y3; t3 has an all-zero vector, i.e. none.
    tgt_vec = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    base = dict(source_embeddings=E3, copy=torch.tensor([0, 2, -1, -1]), shared=torch.tensor([0, 2, -1, -1]),
                source_token_vectors=src_vec, target_token_vectors=tgt_vec)
    return InitInputs(**{**base, **kw})


def test_ofa_coordinates_rows_and_factorized_module_by_hand():
    inputs = _ofa_inputs()
    result = run_init_method("ofa", inputs, OFAConfig(rank=2, neighbours=2, temperature=T_3_1))
    # C = E3[:, :2], P = [e1; e2]. t2: 3/4 C0 + 1/4 C1 = (1.5, 0.25); t3 (no vector): mean of C = (0, 0.4).
    _close(result.rows, [[2.0, 0.0, 0.0], [0.0, 0.0, 0.5], [1.5, 0.25, 0.0], [0.0, 0.4, 0.0]])
    assert result.origin.tolist() == [COPIED, COPIED, COMPUTED, FALLBACK]
    _assert_copied(result, inputs)
    fe = result.factorized
    assert isinstance(fe, FactorizedEmbedding) and (fe.num_embeddings, fe.embedding_dim, fe.rank) == (4, 3, 2)
    # The factorized form holds the rank-2 approximation of the copied rows: t1's 0.5 is lost.
    _close(fe.coordinates.detach(), [[2.0, 0.0], [0.0, 0.0], [1.5, 0.25], [0.0, 0.4]])
    _close(fe.weight.detach(), [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.25, 0.0], [0.0, 0.4, 0.0]])
    assert torch.allclose(fe.weight[2:], result.rows[2:])
    assert result.info["rank"] == 2
    assert result.info["reconstruction_error"] == pytest.approx(math.sqrt(0.25 / 10.25))
    assert result.info["copied_reconstruction_error"] == pytest.approx(math.sqrt(0.25 / 4.25))


def test_ofa_rank_clamps_to_the_embedding_size_and_random_fallback_is_seeded():
    inputs = _ofa_inputs()
    result = run_init_method("ofa", inputs, OFAConfig(fallback="random", freeze_primitives=True))
    assert result.info["rank"] == 3 and result.info["requested_rank"] == 400
    assert result.info["copied_reconstruction_error"] == pytest.approx(0.0, abs=1e-6)
    assert not result.factorized.primitives.requires_grad and result.factorized.coordinates.requires_grad
    again = run_init_method("ofa", inputs, OFAConfig(fallback="random"))
    assert torch.equal(result.rows, again.rows)
    other = run_init_method("ofa", dataclasses.replace(inputs, seed=5), OFAConfig(fallback="random"))
    assert not torch.equal(result.rows[3], other.rows[3]) and torch.equal(result.rows[2], other.rows[2])


def test_factorized_overlap_fallback_and_vector_neighbours_by_hand():
    inputs = _ofa_inputs(copy=torch.tensor([0, -1, -1, -1]), shared=torch.tensor([0, 1, -1, -1]))
    result = run_init_method("factorized", inputs, FactorizedConfig(rank=2, use_vectors=False))
    # t1 overlaps source 1: F[1] G = (0, 1, 0); t2, t3 take the mean F row (0, 0.4) -> (0, 0.4, 0).
    _close(result.rows, [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.0], [0.0, 0.4, 0.0]])
    assert result.origin.tolist() == [COPIED, COMPUTED, FALLBACK, FALLBACK]
    assert result.info["lexical_overlap"] == 1 and not result.info["vector_neighbours_used"]
    _close(result.factorized.weight.detach(), result.rows.tolist())

    with_vectors = run_init_method("factorized", inputs,
                                   FactorizedConfig(rank=2, neighbours=2, temperature=T_3_1))
    # t2 has a vector: 3/4 F0 + 1/4 F1 = (1.5, 0.25); t3 still has none.
    _close(with_vectors.rows[2:], [[1.5, 0.25, 0.0], [0.0, 0.4, 0.0]])
    assert with_vectors.origin.tolist() == [COPIED, COMPUTED, COMPUTED, FALLBACK]


# ------------------------------------------------------------------------------- FactorizedEmbedding


def test_factorized_embedding_forward_equals_its_materialized_matrix():
    g = torch.Generator().manual_seed(0)
    fe = FactorizedEmbedding(torch.randn(11, 3, generator=g), torch.randn(3, 5, generator=g))
    ids = torch.tensor([[0, 3, 10], [4, 4, 1]])
    dense = fe.materialize()
    assert isinstance(dense, nn.Embedding) and dense.weight.dtype == torch.float32
    torch.testing.assert_close(dense.weight, (fe.coordinates @ fe.primitives).detach())
    torch.testing.assert_close(fe(ids), dense(ids))
    assert fe.materialize(torch.bfloat16).weight.dtype == torch.bfloat16
    # Gradients through forward and through .weight reach both factors.
    (fe(ids).sum() + fe.weight.sum()).backward()
    assert fe.coordinates.grad is not None and fe.primitives.grad is not None


def test_factorized_embedding_save_load_round_trip(tmp_path):
    fe = FactorizedEmbedding(torch.randn(6, 2), torch.randn(2, 4), freeze_primitives=True)
    path = fe.save(tmp_path / "emb.safetensors")
    loaded = FactorizedEmbedding.load(path)
    assert torch.equal(loaded.coordinates, fe.coordinates) and torch.equal(loaded.primitives, fe.primitives)
    assert loaded.freeze_primitives
    with pytest.raises(OutputExistsError):
        fe.save(path)
    fe.save(path, force=True)
    with pytest.raises(ModelError, match="does not exist"):
        FactorizedEmbedding.load(tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match=r"coordinates \[V, r\] and primitives \[r, d\]"):
        FactorizedEmbedding(torch.randn(6, 2), torch.randn(3, 4))


# --------------------------------------------------------------------------------- shared invariants


@pytest.mark.parametrize("name", ALL)
def test_every_method_copies_exactly_is_seeded_and_ignores_chunk_size(name):
    inputs = _random_inputs()
    small = run_init_method(name, dataclasses.replace(inputs, chunk_size=1))
    large = run_init_method(name, dataclasses.replace(inputs, chunk_size=4096))
    _assert_copied(small, inputs)
    torch.testing.assert_close(small.rows, large.rows, atol=1e-5, rtol=0)
    assert torch.equal(small.origin, large.origin)
    assert torch.equal(large.rows, run_init_method(name, inputs).rows)
    assert small.rows.dtype == torch.float32 and small.rows.device.type == "cpu"
    assert sum(small.info["counts"].values()) == inputs.n_target


@pytest.mark.parametrize("name", ["wechsel", "focus", "ofa", "omp"])
def test_vector_methods_fall_back_exactly_where_the_mask_is_false(name):
    inputs = _random_inputs()
    result = run_init_method(name, inputs)
    expected = (inputs.copy < 0) & ~inputs.target_vector_mask
    assert torch.equal(result.origin == FALLBACK, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    inputs = _random_inputs()
    cpu = run_init_method(name, inputs)
    gpu = run_init_method(name, dataclasses.replace(inputs, device="cuda"))
    assert gpu.rows.device.type == "cpu"
    torch.testing.assert_close(gpu.rows, cpu.rows, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu.origin, cpu.origin)
    _assert_copied(gpu, inputs)


# ------------------------------------------------------------------- neighbours: ties and duplicates


def _brute_force_neighbours(query, keys, usable, table, k, temperature):
    """The definition, one query at a time: the k keys of highest cosine, ties to the lower index."""
    out = torch.zeros(query.shape[0], table.shape[1], dtype=torch.float64)
    cand = [j for j in range(keys.shape[0]) if usable[j]]
    # Rounded float64 scores: two dot products with equal vectors can differ in the last float32 bit
    # (memory alignment picks the SIMD path), which is exactly why the implementation groups equal keys.
    scores = (query.double() @ keys.double().T).mul(1e9).round().div(1e9)
    for i in range(query.shape[0]):
        scored = sorted(cand, key=lambda j: (-float(scores[i, j]), j))[:k]
        sims = scores[i, scored]
        w = torch.softmax(sims / temperature, 0)
        out[i] = (w[:, None] * table[scored].double()).sum(0)
    return out


@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
def test_neighbour_rows_break_ties_by_lower_index_with_duplicate_keys_and_queries(chunk_size):
    from vocabshift.init._common import neighbour_rows

    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
    # Keys repeat base vectors (like ĠND and ND sharing one word vector); 9 is unusable.
    pattern = [0, 1, 0, 2, 1, 3, 0, 4, 5, 1, 2, 0]
    keys = base[pattern]
    usable = torch.ones(len(pattern), dtype=torch.bool)
    usable[9] = False
    table = torch.randn(len(pattern), 4, generator=g)
    queries = torch.cat([base[[0, 1, 2]], torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=1),
                         base[[0]]])  # the last query repeats the first
    for k in (1, 2, 3, 4, 5, 11):
        got, stats = neighbour_rows(queries, keys, usable, table, neighbours=k, temperature=0.1,
                                    chunk_size=chunk_size)
        want = _brute_force_neighbours(queries, keys, usable, table, k, 0.1)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        assert torch.equal(got[0], got[-1]) and stats["neighbours"] == k
    # Query 0 equals key 0's vector, shared by keys 0, 2, 6, 11: with k=2 the two lowest, 0 and 2, are taken.
    got, stats = neighbour_rows(queries[:1], keys, usable, table, neighbours=2, temperature=0.1, chunk_size=4)
    torch.testing.assert_close(got[0], (table[0] + table[2]) / 2)
    assert stats["distinct_neighbours"] == 2 and stats["mean_top1_similarity"] == pytest.approx(1.0)


def test_neighbour_rows_tie_reaching_past_the_window_is_resolved_exactly():
    from vocabshift.init._common import neighbour_rows

    # 30 distinct keys with the same cosine 0.6 to the query (so the tie outlasts the k + 8 window),
    # and one closer key: the k-1 others must be the lowest-indexed of the tied ones.
    n = 31
    keys = torch.zeros(n, n + 1)
    keys[:, 0] = 0.6
    keys[torch.arange(n), torch.arange(1, n + 1)] = 0.8
    keys[n - 1] = torch.nn.functional.normalize(torch.ones(n + 1), dim=0)
    keys[n - 1, 0] = 0.99
    keys = torch.nn.functional.normalize(keys, dim=1)
    query = torch.zeros(1, n + 1)
    query[0, 0] = 1.0
    table = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    usable = torch.ones(n, dtype=torch.bool)
    got, _ = neighbour_rows(query, keys, usable, table, neighbours=4, temperature=0.5, chunk_size=8)
    want = _brute_force_neighbours(query, keys, usable, table, 4, 0.5)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n_table, m", [(500, 4), (40, 30)])  # gather + bmm, and the dense product
def test_weighted_rows_matches_the_definition_on_both_paths(n_table, m):
    from vocabshift.init._common import weighted_rows

    g = torch.Generator().manual_seed(2)
    table = torch.randn(n_table, 7, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(n_table, generator=g)[:m] for _ in range(50)])
    weights = torch.rand(50, m, generator=g, dtype=torch.float64)
    weights[:, -1] = 0.0  # padded entries weigh nothing
    want = torch.stack([(weights[i, :, None] * table[idx[i]]).sum(0) for i in range(50)])
    torch.testing.assert_close(weighted_rows(idx, weights, table), want)


def test_take_rows_is_a_view_for_a_run_of_ids_and_a_copy_otherwise():
    from vocabshift.init._common import take_rows

    table = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    run = take_rows(table, torch.tensor([3, 4, 5]))
    assert torch.equal(run, table[3:6]) and run.data_ptr() == table[3].data_ptr()  # a view, no copy
    scattered = take_rows(table, torch.tensor([5, 3, 4]))
    assert torch.equal(scattered, table[[5, 3, 4]]) and scattered.data_ptr() != table[5].data_ptr()
    assert torch.equal(take_rows(table, torch.tensor([7])), table[7:8])
    assert take_rows(table, torch.tensor([], dtype=torch.long)).shape == (0, 4)


def test_the_registry_and_the_methods_load_without_torch():
    """Every method module, the registry and init's glue import without torch: `vocabshift init --list`
    stays light, and init starts FOCUS's token-vector training before importing torch (1+ s)."""
    script = ("import sys\n"
              "import vocabshift.init.apply\n"
              "from vocabshift.init.registry import get_init_method, list_init_methods\n"
              "names = [m.name for m in list_init_methods()]\n"
              "configs = [get_init_method(n).config() for n in names]\n"
              "print(len(names), 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    count, torch_loaded = done.stdout.split()[-2:]
    assert int(count) >= 9 and torch_loaded == "False"
