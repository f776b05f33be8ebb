"""Mean pooling (open_clip ``pool_type="avg"``): the mean of the patch tokens, through a LayerNorm applied to
every token before the mean or once after it (``final_ln_after_pool``), then the projection.

Decomposition rule: one readout, ``a = 1/P`` on each of the ``P`` patch tokens (the CLS token, when there is
one, is not pooled). LayerNorm before the mean: per-token statistics frozen (``ω = 1/(P σ_n)``, ``s = 1``); after
it: the pooled vector's (``ω = 1/P``, ``s = 1/σ``). Dense output: every token through the LayerNorm (its own
statistics) and the projection.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from cliplens.core.heads.base import PoolHead, Readout, ln_stats
from cliplens.core.layers import LayerNormView

__all__ = ["MeanHead"]


class MeanHead(PoolHead):
    """``z = LN(mean_n x_n) · proj`` or ``mean_n LN(x_n) · proj`` over the tokens from ``skip`` on."""

    kind: ClassVar[str] = "mean"

    def __init__(self, ln: LayerNormView, proj: Tensor | None, *, skip: int = 1, norm_after_pool: bool = False) -> None:
        self.ln = ln
        self.proj = proj
        self.skip = int(skip)
        self.norm_after_pool = bool(norm_after_pool)

    @property
    def norm(self) -> LayerNormView:
        return self.ln

    def readout_out(self) -> Tensor:
        if self.proj is not None:
            return self.proj[None]
        w = self.ln.weight
        return torch.eye(int(w.shape[0]), device=w.device, dtype=w.dtype)[None]  # type: ignore[union-attr]

    def _project(self, x: Tensor) -> Tensor:
        return x if self.proj is None else x @ self.proj.to(x.dtype)

    def __call__(self, x: Tensor, rec: Any = None) -> Tensor:
        tokens = x[:, self.skip:]
        if self.norm_after_pool:
            pooled = tokens.mean(1)
            if rec is not None and rec.wants("pooled"):
                pooled = rec("pooled", pooled)
            return self._project(self.ln(pooled))
        return self._project(self.ln(tokens).mean(1))

    def dense(self, x: Tensor) -> Tensor:
        return self._project(self.ln(x))

    def readout(self, x: Tensor) -> Readout:
        B, N = x.shape[:2]
        P = N - self.skip
        a = torch.zeros(B, 1, N, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
        a[:, :, self.skip:] = 1.0 / P
        if self.norm_after_pool:
            mean, std = ln_stats(self.ln, x[:, self.skip:].mean(1))
            a = a.to(mean.dtype)
            return Readout(pooling=a, token_scale=torch.ones_like(a[:, 0]), token_mean=mean[:, None].expand(B, N),
                           scale=(1 / std)[:, None])
        mean, std = ln_stats(self.ln, x)
        a = a.to(mean.dtype)
        return Readout(pooling=a, token_scale=1 / std, token_mean=mean, scale=torch.ones(B, 1, dtype=mean.dtype,
                                                                                          device=mean.device))

    def parameters(self) -> list[Tensor]:
        out = [t for t in (self.ln.weight, self.ln.bias) if t is not None]
        return out + ([self.proj] if self.proj is not None else [])

    def meta(self) -> list[Any]:
        return super().meta() + [self.skip, self.norm_after_pool]
