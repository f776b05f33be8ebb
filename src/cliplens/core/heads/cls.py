"""CLS pooling (CLIP ViTs, EVA02, MetaCLIP, DFN): the CLS token through ``ln_post`` and the projection.

Decomposition rule: one readout, the CLS token (``ω = e_CLS``), ``ln_post``'s statistics frozen at CLS
(``s = 1/σ``, ``m = μ``), ``M = proj``, ``b`` the projection's bias where it has one (EVA02's head Linear). Only the CLS row of every attention pattern is ever needed. Dense
output: every token through ``ln_post`` (its own statistics) and the projection.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from cliplens.core.heads.base import PoolHead, Readout, ln_stats
from cliplens.core.layers import LayerNormView

__all__ = ["ClsHead"]


class ClsHead(PoolHead):
    """``z = ln_post(x[:, 0]) · proj (+ proj_bias)`` (``proj`` ``[D, E]``; ``None``: the identity)."""

    kind: ClassVar[str] = "cls"
    reads_cls_only: ClassVar[bool] = True

    def __init__(self, ln_post: LayerNormView, proj: Tensor | None, proj_bias: Tensor | None = None) -> None:
        self.ln_post = ln_post
        self.proj = proj
        self.proj_bias = proj_bias

    def bias(self) -> Tensor | None:
        return self.proj_bias

    @property
    def norm(self) -> LayerNormView:
        return self.ln_post

    def readout_out(self) -> Tensor:
        if self.proj is not None:
            return self.proj[None]
        w = self.ln_post.weight if self.ln_post.weight is not None else self.ln_post.bias
        d = int(w.shape[0]) if w is not None else 0
        return torch.eye(d, device=None if w is None else w.device, dtype=None if w is None else w.dtype)[None]

    @property
    def embed_dim(self) -> int:
        if self.proj is not None:
            return int(self.proj.shape[1])
        return int(self.readout_out().shape[-1])

    def _project(self, x: Tensor) -> Tensor:
        out = self.ln_post(x)
        out = out if self.proj is None else out @ self.proj.to(out.dtype)
        return out if self.proj_bias is None else out + self.proj_bias.to(out.dtype)

    def __call__(self, x: Tensor, rec: Any = None) -> Tensor:
        pooled = x[:, 0]
        if rec is not None and rec.wants("pooled"):
            pooled = rec("pooled", pooled)
        if rec is not None and (rec.wants("ln_post.mean") or rec.wants("ln_post.std")):
            mean, std = ln_stats(self.ln_post, pooled)
            rec("ln_post.mean", mean)
            rec("ln_post.std", std)
        return self._project(pooled)

    def dense(self, x: Tensor) -> Tensor:
        return self._project(x)

    def readout(self, x: Tensor) -> Readout:
        mean, std = ln_stats(self.ln_post, x[:, 0])
        B, N = x.shape[:2]
        at_cls = torch.zeros(B, 1, N, dtype=mean.dtype, device=mean.device)
        at_cls[:, :, 0] = 1
        return Readout(pooling=at_cls, token_scale=torch.ones_like(at_cls[:, 0]),
                       token_mean=mean[:, None].expand(B, N), scale=(1 / std)[:, None])

    def parameters(self) -> list[Tensor]:
        out = [t for t in (self.ln_post.weight, self.ln_post.bias) if t is not None]
        return out + [t for t in (self.proj, self.proj_bias) if t is not None]
