"""``omp`` (Orthogonal Matching Pursuit) on hand-checkable cases.

The source embeddings are mostly the identity matrix, so a computed row *is* the coefficient vector
over the source tokens: a planted sparse combination must come back exactly, atom for atom. A 4-d
case is worked by hand (ties, a dependent atom, the residual), and random cases are compared with a
one-token-at-a-time reference written from the definition with numpy's least squares.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vocabshift.errors import ConfigError, InitError
from vocabshift.init import (
    COMPUTED,
    COPIED,
    FALLBACK,
    InitInputs,
    OMPConfig,
    get_init_method,
    list_init_methods,
    run_init_method,
)

PLANT = {3: 0.7, 17: -1.2, 99: 0.4}  # x = 0.7 y_3 - 1.2 y_17 + 0.4 y_99


def _planted_inputs(**kw) -> InitInputs:
    """200 random anchors in 50-d; target 0 is the planted combination; E_s = I, so rows are coefficients."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 50, generator=g, dtype=torch.float64)
    x = sum(c * y[j] for j, c in PLANT.items())
    base = dict(source_embeddings=torch.eye(200), copy=torch.tensor([-1]),
                source_token_vectors=y.float(), target_token_vectors=x.float()[None])
    return InitInputs(**{**base, **kw})


def _support(row: torch.Tensor, eps: float = 1e-4) -> set[int]:
    return set((row.abs() > eps).nonzero().squeeze(1).tolist())


def _reference_omp(x: np.ndarray, y: np.ndarray, usable: np.ndarray, k: int, tolerance: float):
    """The definition, one token at a time: pick max |<r, y_j>| (ties: lowest id), refit all."""
    ids = np.flatnonzero(usable)
    chosen: list[int] = []
    coef = np.zeros(0)
    r = x.copy()
    for _ in range(min(k, len(ids), x.shape[0])):
        if np.linalg.norm(r) <= tolerance * np.linalg.norm(x):
            break
        corr = np.abs(y[ids] @ r)
        corr[chosen] = -1.0
        chosen.append(int(np.argmax(corr)))
        coef = np.linalg.lstsq(y[ids[chosen]].T, x, rcond=None)[0]
        r = x - y[ids[chosen]].T @ coef
    return ids[chosen], coef, np.linalg.norm(r) / np.linalg.norm(x)


# ----------------------------------------------------------------------------------------- registry


def test_omp_is_registered_with_its_paper_and_requirements():
    methods = {m.name: m for m in list_init_methods()}
    assert "omp" in methods
    m = get_init_method("omp")
    assert m.config is OMPConfig and m.copy_overlap is True
    assert m.requires == {"aligned_token_vectors"}
    assert m.reference_url == "https://arxiv.org/abs/2506.06607" and m.description
    cfg = OMPConfig()
    assert (cfg.k, cfg.tolerance, cfg.fallback) == (64, 1e-6, "mean")
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("help"), f"omp.{f.name} has no help text"
    assert OMPConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(k):
    with pytest.raises(ConfigError, match=r"\bk must be positive"):
        OMPConfig(k=k)
    with pytest.raises(ConfigError, match=r"\bk must be positive"):
        run_init_method("omp", _planted_inputs(), {"k": k})


@pytest.mark.parametrize("change, message", [
    (dict(k=2.5), r"\bk must be a whole number"),
    (dict(k=True), r"\bk must be positive"),
    (dict(tolerance=-0.1), r"tolerance must be in \[0, 1\)"),
    (dict(tolerance=1.0), r"tolerance must be in \[0, 1\)"),
    (dict(tolerance=float("nan")), r"tolerance must be in \[0, 1\)"),
    (dict(fallback="zeros"), "fallback must be one of"),
])
def test_bad_config_is_a_config_error(change, message):
    with pytest.raises(ConfigError, match=message):
        OMPConfig(**change)


def test_missing_or_unusable_vectors_are_init_errors():
    bare = InitInputs(source_embeddings=torch.eye(3), copy=torch.tensor([-1, 0]))
    with pytest.raises(InitError, match="requires source_token_vectors, target_token_vectors"):
        run_init_method("omp", bare)
    with pytest.raises(InitError, match="no source token has a usable vector"):
        run_init_method("omp", _planted_inputs(source_vector_mask=torch.zeros(200, dtype=torch.bool)))


# ------------------------------------------------------------------------------------- planted cases


def test_planted_sparse_combination_is_recovered_exactly():
    result = run_init_method("omp", _planted_inputs(), OMPConfig(k=3))
    row = result.rows[0]
    assert _support(row) == set(PLANT)
    expected = torch.zeros(200)
    expected[list(PLANT)] = torch.tensor(list(PLANT.values()))
    torch.testing.assert_close(row, expected, atol=1e-5, rtol=0)  # negative, and summing to -0.1: unconstrained
    assert result.origin.tolist() == [COMPUTED]
    assert result.info["mean_atoms"] == 3 and result.info["mean_relative_residual"] < 1e-6
    assert result.info["k"] == 3 and result.info["anchors"] == result.info["distinct_anchors"] == 200


def test_stops_at_the_requested_sparsity_or_the_tolerance():
    two = run_init_method("omp", _planted_inputs(), OMPConfig(k=2))
    assert len(_support(two.rows[0])) <= 2 and _support(two.rows[0]) <= set(PLANT)
    assert two.info["mean_atoms"] == 2 and two.info["mean_relative_residual"] > 0.1
    # k = 5: the residual is ~1e-7 of ||x|| after the 3 planted atoms, below the default tolerance.
    five = run_init_method("omp", _planted_inputs(), OMPConfig(k=5))
    assert five.info["mean_atoms"] == 3 and _support(five.rows[0]) == set(PLANT)
    # tolerance 0: always k atoms (the two extra ones with coefficients at rounding level).
    no_tol = run_init_method("omp", _planted_inputs(), OMPConfig(k=5, tolerance=0.0))
    assert no_tol.info["mean_atoms"] == 5
    torch.testing.assert_close(no_tol.rows, five.rows, atol=1e-5, rtol=0)


def test_hand_worked_ties_dependent_atom_and_residual():
    # Anchors y0 = e0, y1 = e1, y2 = e0 + e1 span only {e0, e1} of R^4; x = 2 e0 + 3 e1 + e2.
    # Step 1: |<x, y>| = 2, 3, 5 -> y2; r = (-1/2, 1/2, 1, 0).
    # Step 2: y0 and y1 tie at 1/2 -> y0, the lower id; the fit on {y2, y0} is x's projection on
    #         {e0, e1} = 3 y2 - y0, r = e2. Step 3: y1 is in span{y0, y2}: nothing left, stop at 2 atoms.
    y = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 0]])
    inputs = InitInputs(source_embeddings=torch.eye(3), copy=torch.tensor([-1]),
                        source_token_vectors=y, target_token_vectors=torch.tensor([[2.0, 3.0, 1.0, 0.0]]))
    result = run_init_method("omp", inputs)
    torch.testing.assert_close(result.rows, torch.tensor([[-1.0, 0.0, 3.0]]), atol=1e-6, rtol=0)
    assert result.info["k"] == 3  # 64 clamped to the 3 anchors
    assert result.info["mean_atoms"] == 2
    assert result.info["mean_relative_residual"] == pytest.approx(1 / 14 ** 0.5)


def test_anchors_with_one_vector_are_one_atom_with_the_lowest_id():
    # Tokens 1 and 3 share a vector (like ĠND and ND), 2 is a scaled copy: the row uses token 1.
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 1.0]])
    emb = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    inputs = InitInputs(source_embeddings=emb, copy=torch.tensor([-1, -1]),
                        source_token_vectors=y, target_token_vectors=torch.tensor([[0.0, 3.0], [0.0, 3.0]]))
    result = run_init_method("omp", inputs)
    torch.testing.assert_close(result.rows, torch.tensor([[0.0, 3.0, 0.0, 0.0]] * 2), atol=1e-6, rtol=0)
    assert result.info["anchors"] == 4 and result.info["distinct_anchors"] == 2
    assert result.info["mean_atoms"] == 1


# --------------------------------------------------------------------------------- copies, fallbacks


def _random_inputs(seed: int = 0, v_s: int = 60, v_t: int = 40, k: int = 8, d: int = 5) -> InitInputs:
    g = torch.Generator().manual_seed(seed)
    copy = torch.full((v_t,), -1, dtype=torch.long)
    copy[:6] = torch.randperm(v_s, generator=g)[:6]
    tgt = torch.randn(v_t, k, generator=g)
    tgt[7] = 0.0  # no vector: all zero
    tgt[12] = tgt[11]  # identical target vectors are computed once
    tgt_mask = torch.ones(v_t, dtype=torch.bool)
    tgt_mask[8] = False  # no vector: masked
    src_mask = torch.rand(v_s, generator=g) > 0.1
    return InitInputs(source_embeddings=torch.randn(v_s, d, generator=g), copy=copy,
                      source_token_vectors=torch.randn(v_s, k, generator=g), source_vector_mask=src_mask,
                      target_token_vectors=tgt, target_vector_mask=tgt_mask, seed=seed)


def test_copies_are_exact_and_tokens_without_a_vector_fall_back_to_the_mean_row():
    inputs = _random_inputs()
    result = run_init_method("omp", inputs, {"k": 4})
    copied = inputs.copy >= 0
    assert torch.equal(result.rows[copied], inputs.source_embeddings[inputs.copy[copied]])
    assert (result.origin[copied] == COPIED).all()
    assert torch.equal((result.origin == FALLBACK).nonzero().squeeze(1), torch.tensor([7, 8]))
    assert result.info["no_vector"] == 2 and result.info["counts"] == {"copied": 6, "computed": 32, "fallback": 2}
    mean_row = inputs.source_embeddings.double().mean(0).float()
    torch.testing.assert_close(result.rows[7], mean_row, atol=1e-6, rtol=0)
    assert torch.equal(result.rows[7], result.rows[8])
    assert torch.equal(result.rows[11], result.rows[12])
    random_fallback = run_init_method("omp", inputs, {"k": 4, "fallback": "random"})
    assert not torch.allclose(random_fallback.rows[7], mean_row)
    assert torch.equal(random_fallback.rows[:7], result.rows[:7])


def test_rows_match_the_definition_one_token_at_a_time():
    inputs = _random_inputs(seed=1)
    for k, tolerance in [(1, 1e-6), (4, 1e-6), (8, 0.0), (64, 0.5)]:
        result = run_init_method("omp", inputs, OMPConfig(k=k, tolerance=tolerance))
        y, emb = inputs.source_token_vectors.double().numpy(), inputs.source_embeddings.double().numpy()
        usable = inputs.source_vector_mask.numpy()
        atoms, residuals = [], []
        for t in range(inputs.n_target):
            if inputs.copy[t] >= 0 or t in (7, 8):
                continue
            ids, coef, residual = _reference_omp(inputs.target_token_vectors[t].double().numpy(), y, usable, k,
                                                 tolerance)
            np.testing.assert_allclose(result.rows[t].numpy(), coef @ emb[ids], atol=1e-5, rtol=0)
            atoms.append(len(ids))
            residuals.append(residual)
        assert result.info["k"] == min(k, 8)  # clamped to the vector dimension
        assert result.info["mean_atoms"] == pytest.approx(np.mean(atoms))
        assert result.info["mean_relative_residual"] == pytest.approx(np.mean(residuals), abs=1e-6)


def test_is_deterministic_and_ignores_chunk_size():
    inputs = _random_inputs(seed=2)
    first = run_init_method("omp", inputs)
    assert torch.equal(first.rows, run_init_method("omp", inputs).rows)
    for chunk_size in (1, 3):
        other = run_init_method("omp", dataclasses.replace(inputs, chunk_size=chunk_size))
        torch.testing.assert_close(other.rows, first.rows, atol=1e-5, rtol=0)
        assert torch.equal(other.origin, first.origin)
        assert other.info["mean_atoms"] == first.info["mean_atoms"]


def test_nothing_to_compute():
    inputs = _random_inputs()
    all_copied = dataclasses.replace(inputs, copy=torch.arange(inputs.n_target))
    result = run_init_method("omp", all_copied)
    assert torch.equal(result.rows, inputs.source_embeddings[: inputs.n_target])
    assert result.info["mean_atoms"] == 0.0 and result.info["counts"]["computed"] == 0
    no_vectors = dataclasses.replace(inputs, target_vector_mask=torch.zeros(inputs.n_target, dtype=torch.bool))
    result = run_init_method("omp", no_vectors)
    assert result.info["counts"] == {"copied": 6, "computed": 0, "fallback": inputs.n_target - 6}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    inputs = _random_inputs()
    cpu = run_init_method("omp", inputs)
    gpu = run_init_method("omp", dataclasses.replace(inputs, device="cuda"))
    assert gpu.rows.device.type == "cpu"
    torch.testing.assert_close(gpu.rows, cpu.rows, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu.origin, cpu.origin)


def test_rows_that_blow_up_are_reported_and_warned_about(caplog):
    """Nearly collinear anchors: x = 1000 (y_1 - y_0) fits exactly in the vector space, but the same
    coefficients on unrelated model rows give a row ~1000x their norm; the report says so, loudly."""
    y = torch.tensor([[1.0, 0, 0, 0], [1.0, 1e-3, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    e = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    inputs = InitInputs(source_embeddings=e, copy=torch.tensor([-1]), source_token_vectors=y,
                        target_token_vectors=torch.tensor([[0, 1.0, 0, 0]]))
    with caplog.at_level("WARNING", logger="vocabshift.init.omp"):
        result = run_init_method("omp", inputs, {"k": 2})
    torch.testing.assert_close(result.rows[0], torch.tensor([-1000.0, 1000.0, 0]), rtol=1e-3, atol=0.5)
    assert result.info["row_norm_ratio"] > 1000 and result.info["mean_coefficient_l1"] == pytest.approx(2000, rel=1e-3)
    assert any("coefficients cancel in the vector space" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="vocabshift.init.omp"):
        planted = run_init_method("omp", _planted_inputs(), {"k": 3})
    assert planted.info["row_norm_ratio"] < 10 and not caplog.records


def test_near_zero_anchor_vectors_are_left_out():
    """An anchor vector 1e-4 long pointing exactly at x would be picked first (normalized correlation 1)
    and get coefficient 1e4 on its model row; it is noise (fastText composing unseen n-grams): left out."""
    planted = _planted_inputs()
    y = planted.source_token_vectors.clone()
    x = planted.target_token_vectors[0]
    y[150] = 1e-4 * x / x.norm()
    result = run_init_method("omp", dataclasses.replace(planted, source_token_vectors=y), {"k": 3})
    assert result.info["short_anchors"] == 1 and result.info["anchors"] == 199
    assert _support(result.rows[0]) == set(PLANT)  # the planted combination, not the short anchor
    torch.testing.assert_close(result.rows[0][list(PLANT)], torch.tensor(list(PLANT.values())), atol=1e-4, rtol=0)
