"""Chefer's relevance (maps/chefer.py) computed as the CLS row propagated block by block, a few heads at a time,
against the full relevance matrix ``R = (I + Ē_last)…(I + Ē_first)`` formed naively from the same q, k, v and
``∂y/∂z`` (the method's own end-to-end check against the oracle is in test_methods_vs_reference.py)."""

from __future__ import annotations

import pytest
import torch

import cliplens.maps.chefer as chefer


def _full_matrix_row(qkv, dz):
    """R[CLS, 1:] with Ē_l = mean_h ReLU((∂y/∂z_l v_lᵀ) ⊙ softmax(q_l k_lᵀ / √dh)), float64, first block first."""
    R = None
    for (q, k, v), g in zip(reversed(qkv), reversed(dz), strict=True):
        q, k, v, g = (t.double() for t in (q, k, v, g))
        A = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
        E = torch.relu((g @ v.transpose(-1, -2)) * A).mean(1)
        R = torch.eye(E.shape[-1], dtype=E.dtype) + E if R is None else R + E @ R
    return R[:, 0, 1:]


@pytest.mark.parametrize("chunk", [None, 1, 7 * 7 * 5])  # whole batch; one (image, head) pair; 5 pairs (uneven)
@pytest.mark.parametrize("blocks", [1, 4])
def test_cls_row_equals_the_full_product(monkeypatch, chunk, blocks):
    if chunk is not None:
        monkeypatch.setattr(chefer, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(blocks)
    B, H, N, dh = 2, 3, 7, 4
    qkv = [tuple(torch.randn(B, H, N, dh, generator=g) for _ in range(3)) for _ in range(blocks)]  # last block first
    dz = [torch.randn(B, H, N, dh, generator=g) for _ in range(blocks)]
    want = _full_matrix_row(qkv, dz)
    got = chefer._cls_relevance(qkv, dz)
    assert got.dtype == torch.float32 and got.shape == (B, N - 1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    got64 = chefer._cls_relevance([tuple(t.double() for t in x) for x in qkv], [t.double() for t in dz])
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=1e-12)
