"""Sparse text explanations (SpLiCE): the solver against scikit-learn's non-negative lasso on the same objective,
the SpLiCE centring, the target number of texts, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import normalize

import cliplens
from cliplens.analyses.sparse import nonneg_lasso, sparse_texts, splice_center, splice_concepts
from cliplens.errors import InvalidInputError


def _problem(seed: int = 0, N: int = 5, M: int = 150, E: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(M, E, generator=g, dtype=torch.float64) + 0.3  # texts share a mean, as CLIP's do
    X = torch.randn(N, E, generator=g, dtype=torch.float64) + T[:4].sum(0)
    return X, T


def _sklearn(D: torch.Tensor, Y: torch.Tensor, l1: float) -> torch.Tensor:
    """scikit-learn's objective is (1/(2n))‖y − Xw‖² + α‖w‖₁ with n = E samples: α = λ/(2E) is ours × 1/(2E)."""
    Lasso = pytest.importorskip("sklearn.linear_model").Lasso
    E = D.shape[1]
    out = [Lasso(alpha=l1 / (2 * E), positive=True, fit_intercept=False, tol=1e-14, max_iter=1_000_000)
           .fit(D.T.numpy(), y.numpy()).coef_ for y in Y]
    return torch.from_numpy(np.array(out))


@pytest.mark.parametrize("l1", [0.02, 0.25, 0.6])
def test_weights_equal_sklearn_positive_lasso(l1):
    X, T = _problem()
    res = sparse_texts(X, T, l1=l1, tol=1e-11)
    # SpLiCE's sides, written out here: unit texts, pool mean removed, renormalised; unit vector minus the
    # pool's mean unit text, renormalised
    Tn = T / T.norm(dim=1, keepdim=True)
    D = (Tn - Tn.mean(0)) / (Tn - Tn.mean(0)).norm(dim=1, keepdim=True)
    Xn = X / X.norm(dim=1, keepdim=True)
    Y = (Xn - Tn.mean(0)) / (Xn - Tn.mean(0)).norm(dim=1, keepdim=True)
    ref = _sklearn(D, Y, l1)
    W = res.dense()
    assert (ref > 0).sum() > 0
    assert torch.allclose(W, ref, atol=1e-8, rtol=0), float((W - ref).abs().max())
    assert res.count.tolist() == (ref > 1e-10).sum(1).tolist()
    # the reconstruction's cosine, SpLiCE's recompose: n(n(Dᵀw) + μ) against n(x)
    rec = normalize(normalize(ref @ D, dim=-1) + Tn.mean(0), dim=-1)
    assert torch.allclose(res.cosine, (rec * Xn).sum(1), atol=1e-8)
    # largest weight first, and the format names them so
    i = int(res.count.argmax())
    assert res.values[i, : res.count[i]].diff().le(0).all()
    top_text, top_w = res.terms(i)[0]
    assert top_text == f"text {int(ref[i].argmax())}" and abs(top_w - float(ref[i].max())) < 1e-8


def test_given_mean_and_no_mean_are_splice_centring():
    X, T = _problem(seed=1)
    mu = normalize(torch.randn(T.shape[1], dtype=torch.float64), dim=0) * 0.3
    D = splice_concepts(T)
    for mean, expected_y in ((mu, normalize(normalize(X, dim=-1) - mu, dim=-1)), (None, normalize(X, dim=-1))):
        res = sparse_texts(X, T, l1=0.2, mean=mean, tol=1e-11)
        assert torch.allclose(splice_center(X, mean), expected_y)
        assert torch.allclose(res.dense(), _sklearn(D, expected_y, 0.2), atol=1e-8, rtol=0)


def test_solver_is_exact_past_the_first_working_set():
    """Few starting texts, many active ones: the KKT check over the whole pool must bring the rest in."""
    g = torch.Generator().manual_seed(3)
    D = normalize(torch.randn(300, 20, generator=g, dtype=torch.float64), dim=-1)
    Y = normalize(torch.randn(4, 20, generator=g, dtype=torch.float64), dim=-1)
    S, w = nonneg_lasso(D, Y, 0.01, tol=1e-12, start=2, grow=3)
    dense = torch.zeros(4, 300, dtype=torch.float64)
    for r in range(4):
        keep = S[r] >= 0
        dense[r, S[r][keep]] = w[r][keep]
    ref = _sklearn(D, Y, 0.01)
    assert (ref > 0).sum(1).min() > 5  # more active texts than the first working set holds
    assert torch.allclose(dense, ref, atol=1e-8, rtol=0)


def test_float32_agrees_with_float64():
    X, T = _problem(seed=2, N=20, M=400, E=64)
    a = sparse_texts(X.float(), T.float(), l1=0.25).dense().double()
    b = sparse_texts(X, T, l1=0.25, tol=1e-11).dense()
    assert (a - b).abs().max() < 1e-4


def test_target_number_of_texts():
    X, T = _problem(seed=4, N=6)
    res = sparse_texts(X, T, texts_used=3, tol=1e-10)
    assert (res.count <= 3).all() and (res.count >= 2).all()
    # each row's answer is the lasso solution at the penalty reported for it
    D = splice_concepts(T)
    Y = splice_center(X, normalize(T, dim=-1).mean(0))
    for r in range(len(res)):
        ref = _sklearn(D, Y[r:r + 1], float(res.l1[r]))
        assert torch.allclose(res.dense()[r], ref[0], atol=1e-7, rtol=0)


def test_format_and_dicts():
    X, T = _problem(seed=5, N=2, M=30)
    texts = [f"t{j}" for j in range(30)]
    res = sparse_texts(X, T, texts, l1=0.1)
    line = res.format(0, top=2)
    (a, wa), (b, wb) = res.terms(0, 2)
    assert line.startswith(f"{wa:.2f} {a!r} + {wb:.2f} {b!r}") and line.endswith("…") == (int(res.count[0]) > 2)
    d = res.to_dicts()[1]
    assert d["count"] == len(d["terms"]) == int(res.count[1]) and d["cosine"] == pytest.approx(float(res.cosine[1]))
    empty = sparse_texts(X, T, texts, l1=100.0)
    assert empty.count.tolist() == [0, 0] and "no text" in empty.format(0)


def test_bad_inputs_are_one_readable_error():
    X, T = _problem()
    with pytest.raises(InvalidInputError, match="share their dimension"):
        sparse_texts(X[:, :5], T)
    with pytest.raises(InvalidInputError, match="3 texts but 150"):
        sparse_texts(X, T, ["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="NaN"):
        sparse_texts(X * float("nan"), T)
    with pytest.raises(InvalidInputError, match="l1 must be >= 0"):
        sparse_texts(X, T, l1=-1)
    with pytest.raises(InvalidInputError, match="mean"):
        sparse_texts(X, T, mean="images")


def test_docs_page_code_runs(tmp_path):
    """docs/analyses/sparse.md: its Python blocks run (on a rendered toy scene) and do what they say."""
    import re
    from pathlib import Path

    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    page = Path(__file__).resolve().parents[2] / "docs" / "analyses" / "sparse.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    Image.fromarray(render_scene(sample_scene(0, 0))[0]).save(tmp_path / "scene.png")
    scope: dict = {}
    for block in blocks:
        exec(compile(block.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"'), str(page), "exec"), scope)
    st, described = scope["st"], scope["described"]
    assert 1 <= int(st.count[0]) <= 3 and scope["weights"].shape == (1, len(scope["texts"]))
    assert (scope["weights"] > 0).sum() == st.count[0] and 0 < float(st.cosine[0]) <= 1
    assert len(described.heads[0]) == 2 and described.images.format(0).count("'") >= 2


def test_exported_at_the_top_level():
    from cliplens.analyses import head_descriptions, sparse

    assert cliplens.sparse_texts is sparse.sparse_texts and cliplens.describe_images is sparse.describe_images
    assert cliplens.describe_heads is head_descriptions.describe_heads


def test_a_solve_cut_short_says_so():
    X, T = _problem(seed=6)
    with pytest.warns(UserWarning, match="not exact"):
        nonneg_lasso(splice_concepts(T), splice_center(X, None), 0.01, tol=1e-14, max_iter=20)
