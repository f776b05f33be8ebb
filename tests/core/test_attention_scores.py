"""The two steps every explicit attention pattern shares (core/attention/base.py): ``scaled_scores`` against the
written-out product, and ``softmax_rows``, which outside autograd writes its softmax over the scores it is given,
against ``torch.softmax`` bit for bit; under autograd it leaves its input alone and carries the gradient."""

from __future__ import annotations

import pytest
import torch

from cliplens.core.attention.base import scaled_scores, softmax_rows


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_scaled_scores_are_the_product(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 3, 7, 8, generator=g).to(dtype) for _ in range(2))
    want = (a.double() @ b.double().transpose(-1, -2)) * 8 ** -0.5
    for rows in (None, slice(0, 1), slice(2, 5)):
        got = scaled_scores(a, b, rows)
        ref = want if rows is None else want[:, :, rows]
        assert got.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5 if dtype != torch.float64 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 12, 197, 197), (2, 3, 1, 11)])
def test_softmax_rows_is_torch_softmax_bit_for_bit_and_reuses_its_input(shape):
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3
    want = torch.softmax(logits, -1)
    scratch = logits.clone()
    got = softmax_rows(scratch, torch.float32)
    assert torch.equal(got, want)
    assert got.data_ptr() == scratch.data_ptr()  # written over the scores: no second [.., N, N] tensor


def test_softmax_rows_under_autograd_keeps_its_input_and_the_gradient():
    logits = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    kept = logits.detach().clone()
    p = softmax_rows(logits * 1.0, torch.float32)
    (p * torch.arange(5.0)).sum().backward()
    assert torch.equal(logits.detach(), kept)
    ref = kept.clone().requires_grad_(True)
    (torch.softmax(ref, -1) * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad, rtol=0, atol=0)
