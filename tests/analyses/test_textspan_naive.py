"""Self-checks of the naive TEXTSPAN oracle (tests/analyses/textspan_naive.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.analyses.textspan_naive import textspan_naive, textspan_naive_heads


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted(seed: int = 0, K: int = 600, d: int = 32, M: int = 200, stds=(5.0, 4.0, 3.0, 2.0), noise=0.01):
    """Head outputs built from a few known text directions (given stds) plus small noise and an
    offset; the true texts sit at known rows among random unit distractors."""
    rng = np.random.default_rng(seed)
    k = len(stds)
    Q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    U = Q.T  # [k, d] orthonormal true directions
    C = (rng.standard_normal((K, k)) * np.array(stds)) @ U + noise * rng.standard_normal((K, d))
    C += 3.0 * _unit(rng.standard_normal(d))  # a mean offset, as real head outputs have
    R = _unit(rng.standard_normal((M, d)))
    rows = rng.choice(M, size=k, replace=False)
    R[rows] = U
    return C, R, rows


def test_planted_directions_are_found_in_order_of_variance():
    C, R, rows = _planted()
    res = textspan_naive(C, R, r=8, m=6)
    assert list(res.indices[:4]) == list(rows)  # stds 5, 4, 3, 2
    assert np.allclose(res.variances[:4], [25, 16, 9, 4], rtol=0.15)
    assert np.all(np.diff(res.variances[:4]) < 0)
    assert res.score_fractions[:4].sum() > 0.99


def test_variances_sum_to_at_most_the_total():
    rng = np.random.default_rng(1)
    for _ in range(5):
        C = rng.standard_normal((50, 16)) @ rng.standard_normal((16, 16)) + rng.standard_normal(16)
        R = _unit(rng.standard_normal((40, 16)))
        res = textspan_naive(C, R, r=6, m=10)
        assert res.variances.sum() <= res.total_variance * (1 + 1e-12)
        assert np.all(res.variances >= -1e-12)
        assert np.allclose(res.score_fractions, res.variances / res.total_variance)
        Cc = C - C.mean(0)
        assert np.isclose(res.total_variance, np.trace(np.cov(Cc, rowvar=False)))


def test_directions_are_orthonormal_and_reconstruction_is_their_projection():
    rng = np.random.default_rng(2)
    C = rng.standard_normal((80, 12)) @ rng.standard_normal((12, 12)) + 2.0
    R = _unit(rng.standard_normal((30, 12)))
    res = textspan_naive(C, R, r=5, m=5)
    T = res.directions
    assert np.allclose(T @ T.T, np.eye(5), atol=1e-10)
    Cc = C - C.mean(0)
    assert np.allclose(res.mean, C.mean(0))
    assert np.allclose(res.reconstruction, Cc @ T.T @ T, atol=1e-10)
    # each direction lies in the span of the top-5 right singular vectors of the uncentred C
    Vt = np.linalg.svd(C, full_matrices=False)[2][:5]
    assert np.allclose(T @ Vt.T @ Vt, T, atol=1e-10)
    # a score is the variance along the direction (of the centred C: earlier directions are orthogonal)
    # times the squared norm the text had left, at most 1
    along = np.var(Cc @ T.T, axis=0, ddof=1)
    assert np.all(res.variances <= along * (1 + 1e-12))


def test_all_r_directions_reconstruct_a_rank_r_head_exactly():
    """After r steps the chosen span is the whole top-r span: a rank-r head is rebuilt exactly
    (centring keeps it inside its row space)."""
    rng = np.random.default_rng(3)
    r, d = 4, 10
    W = rng.standard_normal((r, d))
    C = rng.standard_normal((60, r)) @ W + rng.standard_normal(r) @ W  # rank r, offset inside the span
    R = _unit(rng.standard_normal((25, d)))
    res = textspan_naive(C, R, r=r, m=r)
    Cc = C - C.mean(0)
    assert np.allclose(res.reconstruction, Cc, atol=1e-9)
    assert np.isclose(res.score_fractions.sum(), res.variances.sum() / res.total_variance)
    # texts are not renormalised: the explained variance is below the total unless each text
    # lay inside the span already
    assert res.variances.sum() < res.total_variance


def test_hand_computed_3x2():
    # centred rows (2,1), (-2,1), (0,-2) plus an offset (5,-1): covariance diag(4, 3), total 7
    C = np.array([[7.0, 0.0], [3.0, 0.0], [5.0, -3.0]])
    R = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    res = textspan_naive(C, R, r=2, m=2)
    # step 1 scores: 4, 3, 0.36*4 + 0.64*3 = 3.36 -> text 0; texts become (0,0), (0,1), (0,0.8)
    # step 2 scores: 0, 3, 0.64*3 = 1.92 -> text 1
    assert list(res.indices) == [0, 1]
    assert np.allclose(res.variances, [4.0, 3.0])
    assert np.isclose(res.total_variance, 7.0)
    assert np.allclose(res.score_fractions, [4 / 7, 3 / 7])
    assert np.allclose(res.mean, [5.0, -1.0])
    assert np.allclose(res.reconstruction, [[2.0, 1.0], [-2.0, 1.0], [0.0, -2.0]])
    assert np.allclose(res.directions, [[1.0, 0.0], [0.0, 1.0]])


def test_hand_computed_rank_one_texts_not_renormalised():
    # C has rank 1 along v = (2,1)/sqrt(5); r = 1 projects the texts e1, e2 to (4/5, 2/5), (2/5, 1/5)
    C = np.array([[2.0, 1.0], [4.0, 2.0], [0.0, 0.0]])
    R = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = textspan_naive(C, R, r=1, m=1)
    # centred C = [[0,0],[2,1],[-2,-1]]: variance along v = (0 + 5 + 5)/2 = 5 = the total;
    # text 0 keeps |R0|^2 = 4/5 of it (4), text 1 1/5 (1)
    assert list(res.indices) == [0]
    assert np.allclose(res.variances, [4.0])
    assert np.isclose(res.total_variance, 5.0)
    assert np.allclose(res.score_fractions, [0.8])
    assert np.allclose(res.reconstruction, [[0.0, 0.0], [2.0, 1.0], [-2.0, -1.0]])


def test_svd_is_taken_before_centring():
    # every row is (3, x): the uncentred top direction is e1, while all the centred variance is along e2
    C = np.array([[3.0, 1.0], [3.0, -1.0], [3.0, 0.0]])
    R = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = textspan_naive(C, R, r=1, m=1)
    assert np.isclose(res.total_variance, 1.0)
    assert np.allclose(res.variances, [0.0])  # e2 was projected away; e1 carries no variance
    assert np.allclose(res.reconstruction, 0.0)
    full = textspan_naive(C, R, r=2, m=1)
    assert list(full.indices) == [1] and np.allclose(full.variances, [1.0])


def test_exhausted_texts_record_zero_and_change_nothing():
    C = np.array([[7.0, 0.0], [3.0, 0.0], [5.0, -3.0]])
    R = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = textspan_naive(C, R, r=2, m=4)
    assert list(res.indices) == [0, 1, 0, 0]
    assert np.allclose(res.variances[2:], 0.0)
    assert np.all(np.isfinite(res.reconstruction))
    assert np.allclose(res.reconstruction, C - C.mean(0))


def test_ties_take_the_first_text_and_duplicates_are_chosen_once():
    C, R, rows = _planted(seed=4, M=50)
    R2 = np.concatenate([R, R[rows[:1]]])  # the strongest text twice: the second copy is emptied by the first
    res = textspan_naive(C, R2, r=8, m=3)
    assert res.indices[0] == rows[0] and len(R) not in res.indices


def test_inputs_are_not_modified_and_float32_agrees():
    C, R, rows = _planted(seed=5)
    C0, R0 = C.copy(), R.copy()
    res64 = textspan_naive(C, R, r=8, m=5)
    res32 = textspan_naive(C.astype(np.float32), R.astype(np.float32), r=8, m=5, dtype=np.float32)
    assert np.array_equal(C, C0) and np.array_equal(R, R0)
    assert np.array_equal(res64.indices, res32.indices)
    assert np.allclose(res64.variances, res32.variances, rtol=1e-3)


def test_heads_loop_and_shared_texts():
    C, R, rows = _planted(seed=6)
    other, _, _ = _planted(seed=7, M=200)
    heads = textspan_naive_heads(np.stack([C, C * 2.0, other]), R, r=8, m=3)
    assert len(heads) == 3
    # several heads may pick the same texts; scaling a head scales its variances by 4
    assert np.array_equal(heads[0].indices, heads[1].indices)
    assert np.allclose(heads[1].variances, 4 * heads[0].variances)
    assert np.allclose(heads[1].score_fractions, heads[0].score_fractions)
    single = textspan_naive(other, R, r=8, m=3)
    assert np.array_equal(heads[2].indices, single.indices)


def test_bad_shapes():
    with pytest.raises(ValueError):
        textspan_naive(np.zeros((5, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        textspan_naive(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        textspan_naive_heads(np.zeros((5, 3)), np.zeros((4, 3)))


def test_the_share_removed_is_measured_on_c_and_adds_up():
    # every removal's variance, measured on C before and after it, adds up to what the reconstruction explains;
    # a projected text is shorter than 1, so the score it was picked by is below what its removal removes
    rng = np.random.default_rng(3)
    C = rng.normal(size=(30, 12)) @ np.diag(np.linspace(3, 0.2, 12))
    R = rng.normal(size=(40, 12))
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    res = textspan_naive(C, R, r=5, m=4)
    Cc = C - C.mean(0)
    left = np.sum((Cc - res.reconstruction) ** 2) / (len(C) - 1)
    assert np.isclose(res.shares.sum(), 1 - left / res.total_variance)
    assert np.allclose(res.removed, [np.var(Cc @ t, ddof=1) for t in res.directions])  # orthonormal directions
    assert np.all(res.removed >= res.variances - 1e-12) and np.any(res.removed > 1.5 * res.variances)
