"""SC-CLIP's self-adjusting attention (Bai et al. 2025): k-k attention averaged with attention from a similarity.

``½ · [softmax(a · (S − mean S), masked where S < mean S) + softmax(s · k kᵀ)]`` among the patch tokens, with
``S`` ``[B, P, P]`` the cosine similarity of the patch tokens of an intermediate layer (the same for every head),
``mean S`` its mean over all ``P × P`` entries of each image, ``a = 3`` (``scale``) and ``s = d_head^-½``. Entries
of ``S`` below their mean are left out of the first softmax (the diagonal, ``S = 1``, never is); the second is
plain k-k attention over the patches.

SC-CLIP drops the CLS token before its last block, so its patches never attend to CLS. Here the prefix tokens
(CLS) stay in the sequence but are kept apart: a patch gives them no weight, and each prefix token attends only
to itself, so the patch rows are exactly SC-CLIP's whatever the prefix holds.

``S`` is not a parameter: the map method computes it from the same forward and hands it over with
:meth:`SelfAdjusting.use` (as ResCLIP's reference pattern is).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.attention.base import (
    AttentionContext,
    AttentionStrategy,
    register_attention,
    scaled_scores,
)
from cliplens.errors import InvalidInputError


@register_attention("self-adjusting")
class SelfAdjusting(AttentionStrategy):
    """SC-CLIP's attention (see the module docs)."""

    def __init__(self, scale: float = 3.0) -> None:
        if not float(scale) > 0:
            raise InvalidInputError(f"self-adjusting attention: scale must be positive, got {scale}")
        super().__init__(scale=float(scale))
        self.similarity: Tensor | None = None

    def use(self, similarity: Tensor | None) -> SelfAdjusting:
        """Set ``S`` ``[B, P, P]`` (the patch tokens' cosine similarity) for the next forward."""
        self.similarity = similarity
        return self

    def _parts(self, k: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor, int]:
        """The similarity's softmax ``[B, P, P]``, the k-k softmax ``[B, H, P, P]`` (float32 for half inputs) and the
        number of prefix tokens."""
        S = self.similarity
        if S is None:
            raise InvalidInputError("self-adjusting attention needs the patch tokens' similarity: use the 'sc-clip' "
                                    "map method, or call .use(S) before the forward")
        B, _, N, _ = k.shape
        P = ctx.grid[0] * ctx.grid[1]
        if tuple(S.shape) != (B, P, P):
            raise InvalidInputError(f"self-adjusting attention: the similarity has shape {tuple(S.shape)}, expected "
                                    f"{(B, P, P)}")
        c = N - P  # prefix tokens (CLS) first
        work = torch.float32 if k.dtype in (torch.float16, torch.bfloat16) else k.dtype
        S = S.to(device=k.device, dtype=work)
        centred = self.params["scale"] * (S - S.mean(dim=(1, 2), keepdim=True))
        guided = centred.masked_fill(centred < 0, float("-inf")).softmax(-1)
        kp = k[:, :, c:]
        own = scaled_scores(kp, kp, None).to(work).softmax(-1)
        return guided, own, c

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        guided, own, c = self._parts(k, ctx)
        B, H, N, _ = k.shape
        full = own.new_zeros(B, H, N, N)
        full[:, :, c:, c:] = 0.5 * (guided[:, None] + own)
        if c:
            idx = torch.arange(c, device=k.device)
            full[:, :, idx, idx] = 1.0
        full = full.to(q.dtype)
        return full if ctx.rows is None else full[:, :, ctx.rows]

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        guided, own, c = self._parts(k, ctx)
        vp = v[:, :, c:].to(own.dtype)
        z = 0.5 * (torch.matmul(guided[:, None], vp) + torch.matmul(own, vp))
        return torch.cat([v[:, :, :c], z.to(v.dtype)], dim=2)
